"""Microsoft.Compute/virtualMachineScaleSets and their instances (`…/virtualMachines`): identical
VMs from one model, Uniform or Flexible, kept at `sku.capacity` by the scale set controller
(kumo.controllers.scale_sets). PUT/PATCH answer at once and the operation ends when every instance
is up; actions on many instances (`start`, `powerOff`, `restart`, `deallocate`, `reimage`,
`reimageAll`, `redeploy`, `delete`, `manualUpgrade`, with an optional `instanceIds`) are one
long-running operation over the instances' own operations."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.responses import JSONResponse, Response

from kumo.arm.errors import ArmError, bad_request
from kumo.arm.ids import ResourceId
from kumo.compute import sizes
from kumo.compute.marketplace import ImageCatalog
from kumo.controllers.scale_sets import VM_TYPE, scale_set_of
from kumo.providers.base import GENERIC_NAME, ResourceType
from kumo.providers.compute import API_VERSIONS, NAMESPACE, vmss_schema
from kumo.providers.compute.virtual_machines import VirtualMachines, start_reimage
from kumo.providers.compute.vm_schema import INTERNAL
from kumo.store import Operation, Resource, Tx

if TYPE_CHECKING:
    from kumo.arm.context import RequestContext, Services

VMSS_TYPE = "Microsoft.Compute/virtualMachineScaleSets"
INSTANCE_TYPE = "Microsoft.Compute/virtualMachineScaleSets/virtualMachines"
# POST actions over many instances (`instanceIds` in the body, all when absent)
INSTANCE_ACTIONS = ("start", "poweroff", "restart", "deallocate", "reimage", "reimageall", "redeploy",
                    "manualupgrade", "delete")


def _instance_ids(body: Any, required: bool) -> list[str] | None:
    ids = body.get("instanceIds") if isinstance(body, dict) else None
    if ids is None:
        if required:
            raise bad_request("InvalidParameter", "Required parameter 'instanceIds' is missing (null).", "instanceIds")
        return None
    if not isinstance(ids, list) or not all(isinstance(i, (str, int)) for i in ids):
        raise bad_request("InvalidParameter", "'instanceIds' must be an array of instance ids.", "instanceIds")
    if "*" in ids:
        return None
    return [str(i) for i in ids]


class VirtualMachineScaleSets(ResourceType):
    # 1. the ARM type
    namespace = NAMESPACE
    type_path = ("virtualMachineScaleSets",)
    api_versions = API_VERSIONS
    name_pattern = GENERIC_NAME

    def __init__(self, vms: VirtualMachines) -> None:
        self.vms = vms

    # 2. normalise + validate
    def normalise(self, rid: ResourceId, body: dict[str, Any], existing: Resource | None) -> dict[str, Any]:
        old_internal = (existing.body.get(INTERNAL) or {}) if existing else {}
        out = vmss_schema.normalise(rid.name, body, existing.body if existing else None, old_internal)
        return out

    async def validate(self, services: "Services", rid: ResourceId, body: dict[str, Any]) -> None:
        """The model is checked as a sample instance would be (image, OS profile), and what it
        references (subnets, pools, NSGs) must exist."""
        sample = vmss_schema.instance_body({**body, "id": str(rid), "location": "", "name": rid.name},
                                           "sample000000", f"{rid.name}_0",
                                           [f"{rid}/virtualMachines/0/networkInterfaces/{c['name']}" for c in
                                            body["properties"]["virtualMachineProfile"]["networkProfile"]
                                            ["networkInterfaceConfigurations"]])
        normalised = self.vms.normalise(rid, sample, None)
        normalised.setdefault(INTERNAL, {})["secrets"] = (body.get(INTERNAL) or {}).get("secrets") or {}
        await self.vms.check_image(services, normalised)
        configs = body["properties"]["virtualMachineProfile"]["networkProfile"]["networkInterfaceConfigurations"]
        async with services.store.read() as tx:
            for config in configs:
                refs = [config["properties"].get("networkSecurityGroup")]
                for ipc in config["properties"]["ipConfigurations"]:
                    p = ipc["properties"]
                    refs += [p["subnet"], *(p.get("loadBalancerBackendAddressPools") or []),
                             *(p.get("loadBalancerInboundNatPools") or [])]
                for ref in refs:
                    if ref and not await _exists(tx, ref["id"]):
                        raise bad_request("InvalidResourceReference", f"Resource {ref['id']} referenced by resource "
                                          f"{rid} was not found. Please make sure that the referenced resource "
                                          "exists, and that both resources are in the same region.",
                                          "virtualMachineProfile.networkProfile")

    async def write_through(self, tx: Tx, resource: Resource, existing: Resource | None) -> None:
        """Each instance learns the scale set's latest model (for `latestModelApplied`)."""
        model = vmss_schema.model_hash(resource.body)
        if existing is None or vmss_schema.model_hash(existing.body) == model:
            return
        if resource.body["properties"]["orchestrationMode"] == "Flexible":
            rows = await tx.list_resources(resource.subscription_id, resource_group=resource.resource_group,
                                           type=VM_TYPE)
        else:
            rows = await tx.list_resources(resource.subscription_id, parent_key=resource.key, type=VM_TYPE)
        for vm in rows:
            if scale_set_of(vm) == resource.key:
                vm.body.setdefault(INTERNAL, {})["latestModel"] = model
                await tx.put_resource(vm)

    # 3. GET shape: no secrets, no bookkeeping
    def view(self, resource: Resource) -> dict[str, Any]:
        return {k: v for k, v in resource.body.items() if k != INTERNAL}

    # 4. host effects
    async def realise(self, services: "Services", resource: Resource) -> None:
        await services.scale_sets.converge(resource.key)

    async def remove(self, services: "Services", resource: Resource) -> None:
        await services.scale_sets.remove(resource)

    actions = {**{a: "instances_action" for a in INSTANCE_ACTIONS},
               "instanceview": "get_instance_view", "skus": "get_skus"}

    async def instances_action(self, ctx: "RequestContext", resource: Resource) -> Response:
        if ctx.method != "POST":
            raise bad_request("InvalidAction", "Scale set actions are invoked with POST.")
        action = ctx.request.url.path.rstrip("/").rsplit("/", 1)[-1].lower()
        body = await ctx.json_body(required=False) or {}
        ids = _instance_ids(body, required=action in ("delete", "manualupgrade"))
        if resource.provisioning_state == "Deleting":
            raise ArmError(409, "OperationNotAllowed", f"Scale set {resource.name} is being deleted.")
        instances = await ctx.services.scale_sets.select(resource, ids)  # 400 for unknown ids, before 202
        services = ctx.services
        params: dict[str, Any] = {"action": action, "instances": [vm.key for vm in instances]}
        if action == "poweroff":
            params["skipShutdown"] = (ctx.query("skipShutdown") or "").lower() == "true"
        op = services.operations.new(subscription_id=resource.subscription_id, namespace=NAMESPACE,
                                     location=resource.location or "local", kind="vmss.instances",
                                     resource_key=resource.key, params=params)
        async with services.store.write() as tx:
            await tx.add_operation(op)
            await tx.add_event(resource.key, "Action", f"{action} on {len(instances)} instance(s) by "
                               f"{ctx.caller.app_id}")
        services.operations.launch(op)
        return Response(status_code=202, headers=services.operations.headers(op, ctx.base_url, ctx.api_version,
                                                                             location=True))

    async def get_instance_view(self, ctx: "RequestContext", resource: Resource) -> Response:
        """Azure's scale set instance view: how many instances are in each provisioning state."""
        if ctx.method != "GET":
            raise bad_request("InvalidAction", "instanceView is read with GET.")
        counts: dict[str, int] = {}
        for vm in await ctx.services.scale_sets.members(resource):
            code = f"ProvisioningState/{vm.provisioning_state.lower()}"
            counts[code] = counts.get(code, 0) + 1
        state = resource.provisioning_state
        return JSONResponse({
            "virtualMachine": {"statusesSummary": [{"code": c, "count": n} for c, n in sorted(counts.items())]},
            "statuses": [{"code": f"ProvisioningState/{state.lower()}", "level": "Info" if state != "Failed"
                          else "Error", "displayStatus": "Provisioning succeeded" if state == "Succeeded" else state}],
            "orchestrationServices": []})

    async def get_skus(self, ctx: "RequestContext", resource: Resource) -> Response:
        """`az vmss list-skus`: the sizes the set may be resized to here."""
        if ctx.method != "GET":
            raise bad_request("InvalidAction", "skus is read with GET.")
        cpus, memory = ctx.services.vms.host_limits()
        limit = vmss_schema.MAX_CUSTOM_IMAGE if resource.body["properties"]["virtualMachineProfile"][
            "storageProfile"]["imageReference"].get("id") else vmss_schema.MAX_MARKETPLACE
        return JSONResponse({"value": [
            {"resourceType": VMSS_TYPE, "sku": {"name": s.name, "tier": "Standard"},
             "capacity": {"minimum": 0, "maximum": limit, "defaultCapacity": 1, "scaleType": "Automatic"}}
            for s in sizes.resize_options(resource.body["sku"]["name"], max_vcpus=cpus, max_memory_mb=memory)]})


async def _exists(tx: Tx, rid: str) -> bool:
    """A resource, or a part of one (a load balancer's pool) that its parent's body lists."""
    key = rid.lower()
    if await tx.get_resource(key) is not None:
        return True
    for marker, collection in (("/backendaddresspools/", "backendAddressPools"),
                               ("/inboundnatpools/", "inboundNatPools")):
        if marker in key:
            lb = await tx.get_resource(key.split(marker)[0])
            parts = ((lb.body.get("properties") or {}).get(collection) or []) if lb else []
            return any(p["id"].lower() == key for p in parts)
    return False


async def instances_operation(run: Any) -> None:
    """The work behind a scale set action over many instances."""
    services: "Services" = run.services
    controller = services.scale_sets
    params = run.op.params
    action = params["action"]
    async with services.store.read() as tx:
        vmss = await tx.get_resource(run.op.resource_key)
        instances = [vm for key in params["instances"] if (vm := await tx.get_resource(key)) is not None]
    if vmss is None:
        raise ArmError(404, "ResourceNotFound", "The scale set was deleted.")
    if action == "delete":
        await controller.delete_instances(vmss.key, instances)
        return None
    if action == "manualupgrade":
        await controller.upgrade(vmss, instances, rolling=False)
        return None
    starter = _starter(services, action, bool(params.get("skipShutdown")))
    await controller.run_each(instances, starter)
    return None


def _starter(services: "Services", action: str, skip_shutdown: bool):  # type: ignore[no-untyped-def]
    vms = services.vms

    async def start(vm: Resource) -> Operation | None:
        if action in ("reimage", "reimageall"):
            return await start_reimage(services, vm)
        running = (vm.body.get(INTERNAL) or {}).get("power", "running") == "running"
        if action == "restart" and not running:
            return None  # Azure restarts only what runs
        power = {"start": "running", "restart": "running", "redeploy": "running", "poweroff": "stopped",
                 "deallocate": "deallocated"}[action]
        return await vms.start_power(vm, power, restart=action == "restart" or (action == "redeploy" and running),
                                     skip_shutdown=skip_shutdown)
    return start


class ScaleSetVirtualMachines(VirtualMachines):
    """`…/virtualMachineScaleSets/{ss}/virtualMachines[/{instanceId}]`: the instances as Azure shows
    them. Their rows are VM rows (Uniform ones owned by the scale set), so the VM actions apply as they
    are; a single instance is not updated on its own (the scale set's model is)."""

    type_path = ("virtualMachineScaleSets", "virtualMachines")

    def normalise(self, rid: ResourceId, body: dict[str, Any], existing: Resource | None) -> dict[str, Any]:
        raise bad_request("OperationNotAllowed", "kumo does not update a single scale set instance: change the "
                          "scale set's model, then upgrade the instance (POST …/manualUpgrade).")

    async def list_rows(self, services: "Services", parent: ResourceId) -> list[Resource]:
        async with services.store.read() as tx:
            vmss = await tx.get_resource(parent.key)
        return await services.scale_sets.members(vmss) if vmss is not None else []

    def view(self, resource: Resource) -> dict[str, Any]:
        body = super().view(resource)
        ss_id = (body["properties"].get("virtualMachineScaleSet") or {}).get("id", "")
        ss_name = ss_id.rsplit("/", 1)[-1]
        state = resource.body.get(INTERNAL) or {}
        latest = state.get("scaleSetModel") is not None and \
            state.get("scaleSetModel") == state.get("latestModel", state.get("scaleSetModel"))
        uniform = resource.name.isdigit()
        props = {**body["properties"], "latestModelApplied": latest,
                 "modelDefinitionApplied": "VirtualMachineScaleSet"}
        if uniform:
            props.pop("virtualMachineScaleSet", None)
        out = {**body, "name": f"{ss_name}_{resource.name}" if uniform else resource.name,
               "type": INSTANCE_TYPE if uniform else "Microsoft.Compute/virtualMachines",
               "instanceId": resource.name,
               "sku": {"name": body["properties"]["hardwareProfile"]["vmSize"], "tier": "Standard"},
               "properties": props}
        return out


def register_operations(services: "Services") -> None:
    services.operations.register("vmss.instances", instances_operation)


def handlers(catalog: ImageCatalog) -> list[ResourceType]:
    vms = VirtualMachines(catalog)
    return [VirtualMachineScaleSets(vms), ScaleSetVirtualMachines(catalog)]
