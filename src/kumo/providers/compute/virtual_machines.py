"""Microsoft.Compute/virtualMachines: a QEMU guest booted from an image of kumo's marketplace, on a
tap of its primary NIC (see controllers/virtual_machines). PUT answers at once and the operation ends
when the guest is up and its agent answers; the power actions (start, powerOff, restart, deallocate)
are long-running operations (202 + Azure-AsyncOperation + Location), as Azure answers them.

The instance view lives in the stored body's internal `kumo` member (written by the controller) and is
shown under `properties.instanceView` with `$expand=instanceView`, and at `…/instanceView`."""

from __future__ import annotations

import base64
import re
from typing import TYPE_CHECKING, Any

from starlette.responses import JSONResponse, Response

from kumo.arm.errors import ArmError, bad_request
from kumo.arm.ids import ResourceId
from kumo.compute import sizes
from kumo.compute.marketplace import ImageCatalog
from kumo.controllers.virtual_machines import storage
from kumo.controllers.virtual_machines.boot_diagnostics import DEFAULT_MINUTES, MAX_MINUTES
from kumo.providers.compute.disks import attach_disk, detach_disk
from kumo.providers.base import ResourceType
from kumo.providers.compute import API_VERSIONS, NAMESPACE, vm_schema
from kumo.providers.compute.vm_schema import INTERNAL
from kumo.providers.network.common import set_backref
from kumo.store import Operation, Resource, Tx

if TYPE_CHECKING:
    from kumo.arm.context import RequestContext, Services

TYPE_KEY = "microsoft.compute/virtualmachines"
# Azure's VM name rule for Linux: 1-64 characters, no leading '.' or '-', no trailing '.' or '-'.
VM_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}[A-Za-z0-9_]$|^[A-Za-z0-9]$")


def internal(resource: Resource) -> dict[str, Any]:
    return resource.body.setdefault(INTERNAL, {})


def _bool(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


def _disk_ids(body: dict[str, Any] | None) -> set[str]:
    storage = ((body or {}).get("properties") or {}).get("storageProfile") or {}
    return {d["managedDisk"]["id"].lower() for d in [storage.get("osDisk") or {}, *(storage.get("dataDisks") or [])]
            if (d.get("managedDisk") or {}).get("id")}


def _nic_ids(body: dict[str, Any] | None) -> set[str]:
    if not body:
        return set()
    nics = ((body.get("properties") or {}).get("networkProfile") or {}).get("networkInterfaces") or []
    return {n["id"].lower() for n in nics}


class VirtualMachines(ResourceType):
    # 1. the ARM type
    namespace = NAMESPACE
    type_path = ("virtualMachines",)
    api_versions = API_VERSIONS
    name_pattern = VM_NAME
    name_rule = ("Linux VM names are 1-64 letters, digits, '_', '.' and '-', and may not start with '.' or '-' "
                 "nor end with '.' or '-'.")

    def __init__(self, catalog: ImageCatalog) -> None:
        self.catalog = catalog

    # 2. normalise + validate
    def normalise(self, rid: ResourceId, body: dict[str, Any], existing: Resource | None) -> dict[str, Any]:
        previous = (existing.body.get("properties") or {}) if existing else None
        old_internal = (existing.body.get(INTERNAL) or {}) if existing else {}
        return vm_schema.normalise(rid.name, body, previous, old_internal)

    async def validate(self, services: "Services", rid: ResourceId, body: dict[str, Any]) -> None:
        await self.check_image(services, body)
        await self._check_scale_set(services, rid, body)
        await self._check_nics(services, rid, body)

    async def check_image(self, services: "Services", body: dict[str, Any]) -> None:
        """The image exists, boots here, and suits the OS profile (a scale set checks its model with it)."""
        props = body["properties"]
        image = props["storageProfile"]["imageReference"]
        async with services.store.read() as tx:
            if image.get("id"):
                custom = await tx.get_resource(image["id"].lower())
                if custom is None:
                    raise ArmError(404, "NotFound", f"The Image '{image['id']}' cannot be found in "
                                   "this region.", target="imageReference")
                if custom.provisioning_state != "Succeeded":
                    raise ArmError(409, "OperationNotAllowed", f"The image {custom.name} is still "
                                   f"{custom.provisioning_state}.", target="imageReference")
            found = await storage.boot_image(tx, self.catalog, image)
        if found is None and not image.get("id"):
            urn = f"{image['publisher']}:{image['offer']}:{image['sku']}:{image['version']}"
            raise ArmError(404, "PlatformImageNotFound", f"The platform image '{urn}' is not available. Verify that "
                           f"all fields in the storage profile are correct. {self.catalog.describe()}",
                           target="imageReference")
        if found is None:
            raise vm_schema.unsupported("storageProfile.imageReference.id", "booting this image (kumo cannot tell "
                                        "which of its marketplace images' kernels boots it)")
        if found.os.lower() != "linux":
            raise vm_schema.unsupported("storageProfile.imageReference", f"{found.os} images")
        if not (found.file("kernel") and found.file("initrd")):
            raise vm_schema.unsupported("storageProfile.imageReference",
                                        f"booting '{found.urn}' (only images with a kernel and initrd, such as Tiny)")
        secrets = (body.get(INTERNAL) or {}).get("secrets") or {}
        if secrets.get("customData") and not found.cloud_init and \
                not base64.b64decode(secrets["customData"]).startswith(b"#!"):
            raise vm_schema.unsupported("osProfile.customData", f"custom data other than a script ('#!…') on "
                                        f"'{found.urn}' (it has no cloud-init: use the Debian12 image)")
        linux = props["osProfile"].get("linuxConfiguration") or {}
        if not linux.get("disablePasswordAuthentication", True) and found.urn.lower().startswith("kumo:tiny:"):
            raise vm_schema.unsupported("osProfile.adminPassword", "password logins on the tiny image (its SSH "
                                        "server accepts keys only: use linuxConfiguration.ssh.publicKeys)")
        sec = props.get("securityProfile") or {}
        if str(sec.get("securityType", "")).lower() == "trustedlaunch" and found.hyperv_generation != "V2":
            raise bad_request("InvalidParameter", f"The image '{found.urn}' is generation 1: Trusted Launch needs a "
                              "generation 2 image.", "securityProfile.securityType")

    @staticmethod
    async def _check_scale_set(services: "Services", rid: ResourceId, body: dict[str, Any]) -> None:
        """A VM may join a Flexible scale set; a Uniform one's instances are its own children."""
        ref = body["properties"].get("virtualMachineScaleSet")
        if not ref:
            return
        async with services.store.read() as tx:
            vmss = await tx.get_resource(ref["id"].lower())
        if vmss is None:
            raise bad_request("InvalidParameter", f"The scale set {ref['id']} was not found.",
                              "virtualMachineScaleSet.id")
        mode = vmss.body["properties"].get("orchestrationMode")
        if mode != "Flexible" and not rid.key.startswith(vmss.key + "/"):
            raise bad_request("InvalidParameter", f"Virtual machines can only join scale sets in Flexible "
                              f"orchestration mode; {vmss.name} is {mode}.", "virtualMachineScaleSet.id")

    @staticmethod
    async def _check_nics(services: "Services", rid: ResourceId, body: dict[str, Any]) -> None:
        async with services.store.read() as tx:
            for nic_id in _nic_ids(body):
                nic = await tx.get_resource(nic_id)
                if nic is None:
                    raise bad_request("InvalidResourceReference", f"Resource {nic_id} referenced by resource "
                                      f"{rid} was not found. Please make sure that the referenced resource "
                                      "exists, and that both resources are in the same region.",
                                      "networkProfile.networkInterfaces")
                user = (nic.body.get("properties") or {}).get("virtualMachine")
                if user and user.get("id", "").lower() != rid.key:
                    raise bad_request("NicInUse", f"Network interface {nic.id} is used by virtual machine "
                                      f"{user['id']}.", "networkProfile.networkInterfaces")

    async def write_through(self, tx: Tx, resource: Resource, existing: Resource | None) -> None:
        old_disks, new_disks = _disk_ids(existing.body if existing else None), _disk_ids(resource.body)
        for disk in new_disks - old_disks:  # attached disks must exist and be free (made ones come later)
            await attach_disk(tx, disk, resource.id)
        for disk in old_disks - new_disks:
            await detach_disk(tx, disk, resource.id)
        old, new = _nic_ids(existing.body if existing else None), _nic_ids(resource.body)
        for nic in old - new:
            await set_backref(tx, nic, "virtualMachine", resource.id, False, single=True)
        for nic in new:
            await set_backref(tx, nic, "virtualMachine", resource.id, True, single=True)

    async def unlink(self, tx: Tx, resource: Resource) -> None:
        for disk in _disk_ids(resource.body):
            await detach_disk(tx, disk, resource.id)
        for nic in _nic_ids(resource.body):
            await set_backref(tx, nic, "virtualMachine", resource.id, False, single=True)

    # 3. GET shape: no secrets, no kumo bookkeeping; the instance view only when asked for
    def view(self, resource: Resource) -> dict[str, Any]:
        body = {k: v for k, v in resource.body.items() if k != INTERNAL}
        body["properties"] = {k: v for k, v in (body.get("properties") or {}).items() if k != "instanceView"}
        return body

    def expanded_view(self, resource: Resource, expand: str) -> dict[str, Any]:
        body = self.view(resource)
        if "instanceview" in expand.lower().replace(" ", "").split(","):
            body["properties"]["instanceView"] = instance_view(resource)
        return body

    # 4. host effects
    async def realise(self, services: "Services", resource: Resource) -> None:
        await services.vms.converge(resource.key)

    async def remove(self, services: "Services", resource: Resource) -> None:
        await services.vms.remove(resource)

    async def removed(self, services: "Services", resource: Resource) -> None:
        """Azure's deleteOption: NICs (with their public IPs marked Delete) and disks marked Delete go
        with the VM; the rest is detached and stays."""
        from kumo.providers.lifecycle import delete_tree

        await services.scale_sets.instance_left(resource)
        props = resource.body["properties"]
        doomed = [n["id"] for n in props["networkProfile"]["networkInterfaces"]
                  if (n.get("properties") or {}).get("deleteOption") == "Delete"]
        doomed += storage.disks_to_delete(resource)
        for rid in doomed:
            async with services.store.read() as tx:
                row = await tx.get_resource(rid.lower())
                if row is not None and str(row.body.get("managedBy") or resource.id).lower() != resource.key:
                    continue  # a disk another VM has attached since
                pips = []
                for cfg in ((row.body.get("properties") or {}).get("ipConfigurations") or []) if row else []:
                    pip_id = ((cfg.get("properties") or {}).get("publicIPAddress") or {}).get("id")
                    pip = await tx.get_resource(pip_id.lower()) if pip_id else None
                    if pip is not None and pip.body["properties"].get("deleteOption") == "Delete":
                        pips.append(pip)
            if row is not None:
                await delete_tree(services, row)
            for pip in pips:
                await delete_tree(services, pip)

    actions = {"start": "start", "poweroff": "power_off", "restart": "restart", "deallocate": "deallocate",
               "redeploy": "redeploy", "generalize": "generalize", "runcommand": "run_command", "reimage": "reimage",
               "retrievebootdiagnosticsdata": "boot_diagnostics_data",
               "instanceview": "get_instance_view", "vmsizes": "vm_sizes"}

    async def start(self, ctx: "RequestContext", resource: Resource) -> Response:
        if internal(resource).get("generalized"):
            raise ArmError(409, "OperationNotAllowed", f"Operation 'start' is not allowed on VM '{resource.name}' "
                           "since the VM is generalized.")
        return await ctx.services.vms.begin_power(ctx, resource, "running")

    async def redeploy(self, ctx: "RequestContext", resource: Resource) -> Response:
        """Azure moves the VM to another host and boots it there: here, a cold boot on a new QEMU."""
        if internal(resource).get("generalized"):
            raise ArmError(409, "OperationNotAllowed", f"Operation 'redeploy' is not allowed on VM "
                           f"'{resource.name}' since the VM is generalized.")
        running = internal(resource).get("power", "running") == "running"
        return await ctx.services.vms.begin_power(ctx, resource, "running", restart=running)

    async def reimage(self, ctx: "RequestContext", resource: Resource) -> Response:
        """`az vm reimage`: the OS disk back to the image's state; optionally a new admin password."""
        if internal(resource).get("generalized"):
            raise ArmError(409, "OperationNotAllowed", f"Operation 'reimage' is not allowed on VM "
                           f"'{resource.name}' since the VM is generalized.")
        body = await ctx.json_body(required=False) or {}
        password = body.get("adminPassword") if isinstance(body, dict) else None
        if password is not None and not isinstance(password, str):
            raise bad_request("InvalidParameter", "adminPassword must be a string.", "adminPassword")
        if body.get("tempDisk") if isinstance(body, dict) else False:
            raise vm_schema.unsupported("tempDisk", "temporary disks")
        op = await start_reimage(ctx.services, resource, password)
        return Response(status_code=202, headers=ctx.services.operations.headers(op, ctx.base_url, ctx.api_version,
                                                                                 location=True))

    async def generalize(self, ctx: "RequestContext", resource: Resource) -> Response:
        """Marks the VM generalized (after `waagent -deprovision` in the guest, Azure's step 1): it can no
        longer start, and `Microsoft.Compute/images` can capture it. Azure wants it stopped first."""
        if internal(resource).get("power", "running") == "running":
            raise ArmError(409, "OperationNotAllowed", f"Operation 'generalize' is not allowed on VM "
                           f"'{resource.name}' since the VM is running. Deallocate it first (az vm deallocate).")
        async with ctx.services.store.write() as tx:
            row = await tx.get_resource(resource.key)
            if row is None:
                raise ArmError(404, "ResourceNotFound", f"The virtual machine '{resource.name}' was not found.")
            internal(row)["generalized"] = True
            await tx.put_resource(row)
        return Response(status_code=200)

    async def run_command(self, ctx: "RequestContext", resource: Resource) -> Response:
        if ctx.method != "POST":
            raise bad_request("InvalidAction", "runCommand is invoked with POST.")
        return await ctx.services.vms.begin_run_command(ctx, resource)

    async def boot_diagnostics_data(self, ctx: "RequestContext", resource: Resource) -> Response:
        """`az vm boot-diagnostics get-boot-log[-uris]`: a time-limited URL of the serial console log."""
        boot = ((resource.body["properties"].get("diagnosticsProfile") or {}).get("bootDiagnostics") or {})
        if not _bool(boot.get("enabled")):
            raise ArmError(409, "OperationNotAllowed", f"Boot diagnostics is not enabled for virtual machine "
                           f"'{resource.name}'. Enable it first: az vm boot-diagnostics enable -g <group> "
                           f"-n {resource.name}")
        try:
            minutes = int(ctx.query("sasUriExpirationTimeInMinutes") or DEFAULT_MINUTES)
        except ValueError:
            raise bad_request("InvalidParameter", "sasUriExpirationTimeInMinutes must be an integer.",
                              "sasUriExpirationTimeInMinutes") from None
        if not 1 <= minutes <= MAX_MINUTES:
            raise bad_request("InvalidParameter", f"sasUriExpirationTimeInMinutes must be between 1 and "
                              f"{MAX_MINUTES}.", "sasUriExpirationTimeInMinutes")
        url = ctx.services.vms.boot_logs.url(ctx.base_url, resource.key, minutes)
        return JSONResponse({"serialConsoleLogBlobUri": url})

    async def power_off(self, ctx: "RequestContext", resource: Resource) -> Response:
        skip = (ctx.query("skipShutdown") or "").lower() == "true"
        return await ctx.services.vms.begin_power(ctx, resource, "stopped", skip_shutdown=skip)

    async def restart(self, ctx: "RequestContext", resource: Resource) -> Response:
        return await ctx.services.vms.begin_power(ctx, resource, "running", restart=True)

    async def deallocate(self, ctx: "RequestContext", resource: Resource) -> Response:
        return await ctx.services.vms.begin_power(ctx, resource, "deallocated")

    async def get_instance_view(self, ctx: "RequestContext", resource: Resource) -> Response:
        if ctx.method != "GET":
            raise bad_request("InvalidAction", "instanceView is read with GET.")
        return JSONResponse(instance_view(resource))

    async def vm_sizes(self, ctx: "RequestContext", resource: Resource) -> Response:
        """`az vm list-vm-resize-options`: every size this host can run."""
        if ctx.method != "GET":
            raise bad_request("InvalidAction", "vmSizes is read with GET.")
        cpus, memory = ctx.services.vms.host_limits()
        current = resource.body["properties"]["hardwareProfile"]["vmSize"]
        options = sizes.resize_options(current, max_vcpus=cpus, max_memory_mb=memory)
        return JSONResponse({"value": [s.vm_size_body() for s in options]})


async def start_reimage(services: "Services", vm: Resource, password: str | None = None) -> Operation:
    """Launch the operation that makes the VM's OS disk afresh from its image and boots it."""
    op = services.operations.new(subscription_id=vm.subscription_id, namespace="Microsoft.Compute",
                                 location=vm.location or "local", kind="vm.reimage",
                                 resource_key=vm.key, params={"adminPassword": password} if password else {})
    async with services.store.write() as tx:
        await tx.add_operation(op)
    services.operations.launch(op)
    return op


POWER_DISPLAY = {"starting": "VM starting", "running": "VM running", "stopping": "VM stopping",
                 "stopped": "VM stopped", "deallocating": "VM deallocating", "deallocated": "VM deallocated"}


def instance_view(resource: Resource) -> dict[str, Any]:
    """Azure's instance view from what the controller recorded."""
    state = resource.body.get(INTERNAL) or {}
    iv = state.get("view") or {}
    props = resource.body.get("properties") or {}
    prov = resource.provisioning_state
    prov_status = {"code": f"ProvisioningState/{prov.lower()}", "level": "Info" if prov != "Failed" else "Error",
                   "displayStatus": {"Succeeded": "Provisioning succeeded", "Failed": "Provisioning failed",
                                     "Creating": "Creating", "Updating": "Updating",
                                     "Deleting": "Deleting"}.get(prov, prov)}
    if iv.get("time"):
        prov_status["time"] = iv["time"]
    power = iv.get("power") or ("starting" if prov in ("Creating", "Updating") else "stopped")
    statuses = [prov_status, {"code": f"PowerState/{power}", "level": "Info", "displayStatus": POWER_DISPLAY[power]}]
    if iv.get("accelerator"):
        # kumo's own status: which accelerator runs the guest (KVM or TCG software emulation)
        accel = iv["accelerator"]
        statuses.append({"code": f"Accelerator/{accel}", "level": "Info",
                         "displayStatus": "KVM" if accel == "kvm" else "TCG (software emulation)"})
    agent_ready = power == "running" and iv.get("agent") == "Ready"
    agent = {"vmAgentVersion": iv.get("agentVersion") or "Unknown", "extensionHandlers": [],
             "statuses": [{"code": "ProvisioningState/succeeded" if agent_ready else "ProvisioningState/Unavailable",
                           "level": "Info" if agent_ready else "Warning",
                           "displayStatus": "Ready" if agent_ready else "Not Ready",
                           "message": "Guest Agent is running" if agent_ready else
                           "VM status blob is found but not yet populated.",
                           **({"time": iv["agentTime"]} if iv.get("agentTime") else {})}]}
    disk = props.get("storageProfile", {}).get("osDisk", {})
    out: dict[str, Any] = {
        "computerName": props.get("osProfile", {}).get("computerName"),
        "osName": iv.get("osName"), "osVersion": iv.get("osVersion"),
        "vmAgent": agent,
        "hyperVGeneration": iv.get("hyperVGeneration") or "V2",
        "disks": [{"name": disk.get("name"), "statuses": [{"code": "ProvisioningState/succeeded", "level": "Info",
                                                           "displayStatus": "Provisioning succeeded"}]}],
        "statuses": statuses,
    }
    if iv.get("bootSeconds") is not None:
        out["kumo"] = {"accelerator": iv.get("accelerator"), "bootSeconds": iv["bootSeconds"],
                       "bootPath": iv.get("bootPath", "cold")}  # "snapshot": restored from a golden
    return {k: v for k, v in out.items() if v is not None}
