"""The virtual machine controller: turns a stored VM into a QEMU guest and keeps its instance view true.

`converge(key)` drives one VM to its desired power state (`kumo.power` in the stored body: running,
stopped or deallocated), serialised per VM by a lock; PUT's reconcile and the power actions' operations
both end there. Running means: host capacity claimed, the primary NIC attached as a tap (network
controller) in its VNet's namespace, QEMU started inside that namespace with the NIC's MAC and a static
address, gateway, hostname and the admin's SSH keys on the kernel command line / fw_cfg, the readiness
marker seen, the guest agent answering, and the admin user made in the guest through the agent. A
watcher task per running VM notices a guest that powers itself off (PowerState/stopped).

Host objects of a VM are named from its key: QEMU's id `kumo<site>v-<hash>` with its state dir under
`<data dir>/vms/` (sockets, serial log, authorized_keys for fw_cfg). After a kumo restart running VMs
are re-adopted (the driver finds them by id); state dirs no VM explains are removed."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import logging
import os
import shlex
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.responses import Response

from kumo.arm.errors import ArmError
from kumo.compute import sizes
from kumo.compute.marketplace import ImageCatalog, MarketplaceImage
from kumo.controllers.network import NetworkController, short_hash
from kumo.drivers.vms import DiskSpec, NicSpec, QemuDriver, VmFailure, VmSpec
from kumo.drivers import hostcmd
from kumo.compute import disk_files
from kumo.controllers.virtual_machines import goldens, provisioning, run_command, storage
from kumo.images.vm import seed
from kumo.controllers.virtual_machines.boot_diagnostics import BootLogUrls
from kumo.images.vm import BOOT_APPEND, FW_CFG_KEYS, READY_MARKER
from kumo.providers.compute.vm_schema import INTERNAL, primary_nic
from kumo.providers.network.public_ips import allocate_address, release_address
from kumo.store import Operation, Resource, Store

if TYPE_CHECKING:
    from kumo.arm.context import RequestContext, Services

log = logging.getLogger("kumo.vms")

VM_TYPE = "microsoft.compute/virtualmachines"
NIC_TYPE = "microsoft.network/networkinterfaces"
BOOT_TIMEOUT = 120.0  # readiness marker (TCG on a busy 2-core host)
AGENT_TIMEOUT = 60.0
POWERDOWN_TIMEOUT = 30.0
CLOUD_INIT_TIMEOUT = 900.0  # a cloud-init image's first boot under TCG: ~100 s alone, minutes on a busy host


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.0000000+00:00", time.gmtime())


def _shape(spec: dict[str, Any] | None) -> dict[str, Any] | None:
    """What of a VM's spec needs a new QEMU when it changes (a clone's RAM file and boot line do not)."""
    if spec is None:
        return None
    return {k: v for k, v in spec.items() if k not in ("ram_file", "ram_shared", "accel", "append", "kernel",
                                                       "initrd", "fw_cfg")}


def _host_memory_mb() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 4096


class VmController:
    def __init__(self, store: Store, data_dir: Path, network: NetworkController, catalog: ImageCatalog,
                 overcommit: float | None = None) -> None:
        self.store = store
        self.root = data_dir / "vms"
        self.network = network
        self.catalog = catalog
        env = os.environ.get("KUMO_VM_OVERCOMMIT")
        self.overcommit = overcommit if overcommit is not None else float(env) if env else 4.0
        self.driver: QemuDriver | None = None
        self.unavailable: str | None = None
        self.accelerator: str | None = None
        self._locks: dict[str, asyncio.Lock] = {}
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._expected_exit: set[str] = set()
        self._started: asyncio.Task[None] | None = None
        self.boot_logs = BootLogUrls(self._boot_log)
        self.goldens: goldens.Goldens | None = None  # the snapshot fast path (KUMO_VM_SNAPSHOTS=0: off)
        self.services: "Services | None" = None  # set once the services exist (disks are made through them)

    # -- start: a driver named after the network site, then re-adopt or clean up ---------------------
    async def start(self) -> None:
        if self.network.unavailable or self.network.site is None:
            self.unavailable = f"virtual machines need virtual networks: {self.network.unavailable}"
            return
        canary = next(((i.file("kernel"), i.file("initrd")) for i in self.catalog.images()
                       if i.file("kernel") and i.file("initrd")), None)
        try:
            self.driver = QemuDriver(self.root, f"kumo{self.network.site}v", canary=canary)  # type: ignore[arg-type]
        except ValueError as e:
            self.unavailable = str(e)
            return
        problem = await self.driver.probe()  # QEMU is there; KVM tried with a canary boot (cached)
        if problem:
            self.unavailable = problem
            log.warning("virtual machines unavailable: %s", problem)
            return
        self.accelerator = await self.driver.accelerator()
        if os.environ.get("KUMO_VM_SNAPSHOTS", "1") != "0":
            self.goldens = goldens.Goldens(self.driver, self.root.parent / "vm-goldens", self.network.site)
            await self.goldens.clean(self.root.parent / "disks")  # unused ones: made again on demand
        async with self.store.read() as tx:
            vms = await tx.resources_of_type(VM_TYPE)
        wanted = {self.vm_id(v.key) for v in vms if v.provisioning_state != "Deleting"}
        for vid in await self.driver.list_ids():
            if vid not in wanted:
                log.info("removing orphaned VM %s", vid)
                await self.driver.remove(vid)
        for vm in vms:
            if vm.provisioning_state != "Deleting":
                asyncio.ensure_future(self._readopt(vm.key))

    async def _readopt(self, key: str) -> None:
        try:
            await self.converge(key)
        except (ArmError, VmFailure, TimeoutError) as e:
            log.error("could not bring back virtual machine %s: %s", key, e)

    def _require(self) -> QemuDriver:
        if self.unavailable or self.driver is None:
            raise ArmError(400, "VirtualMachinesUnavailable", f"kumo cannot run virtual machines on this host: "
                           f"{self.unavailable or 'not started'}")
        return self.driver

    def vm_id(self, key: str) -> str:
        return f"kumo{self.network.site}v-{short_hash(key)}"

    def _lock(self, key: str) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    # -- capacity: vCPUs (times the overcommit factor) and memory of allocated VMs ------------------
    def host_limits(self) -> tuple[int, int]:
        """The most one VM may have here: the host's CPUs and memory."""
        return os.cpu_count() or 1, _host_memory_mb()

    def capacity(self) -> tuple[float, int]:
        return (os.cpu_count() or 1) * self.overcommit, _host_memory_mb()

    async def room_for(self, size: sizes.VmSize) -> int:
        """How many more VMs of this size the host's capacity takes now (a scale set places that many)."""
        cpus, memory = self.capacity()
        used_cpu, used_mem = 0, 0
        async with self.store.read() as tx:
            for vm in await tx.resources_of_type(VM_TYPE):
                other = sizes.lookup(vm.body["properties"]["hardwareProfile"]["vmSize"])
                if other and (vm.body.get(INTERNAL) or {}).get("allocated"):
                    used_cpu += other.vcpus
                    used_mem += other.memory_mb
        return max(0, min(int((cpus - used_cpu) // size.vcpus), (memory - used_mem) // size.memory_mb))

    async def _claim(self, key: str, size: sizes.VmSize) -> None:
        """Mark the VM allocated, unless the allocated VMs leave too little: AllocationFailed."""
        cpus, memory = self.capacity()
        async with self.store.write() as tx:
            used_cpu, used_mem = 0, 0
            for vm in await tx.resources_of_type(VM_TYPE):
                st = vm.body.get(INTERNAL) or {}
                if vm.key == key or not st.get("allocated"):
                    continue
                other = sizes.lookup(vm.body["properties"]["hardwareProfile"]["vmSize"])
                if other:
                    used_cpu += other.vcpus
                    used_mem += other.memory_mb
            if used_cpu + size.vcpus > cpus or used_mem + size.memory_mb > memory:
                raise ArmError(409, "AllocationFailed", "Allocation failed. We do not have sufficient capacity for "
                               f"the requested VM size {size.name} in this region. (kumo: allocated VMs hold "
                               f"{used_cpu} of {cpus:g} vCPUs and {used_mem} of {memory} MiB; this size needs "
                               f"{size.vcpus} vCPUs and {size.memory_mb} MiB. KUMO_VM_OVERCOMMIT sets the vCPU "
                               "overcommit factor.)")
            vm = await tx.get_resource(key)
            if vm is not None:
                vm.body.setdefault(INTERNAL, {})["allocated"] = True
                await tx.put_resource(vm)

    # -- the instance view ----------------------------------------------------------------------------
    async def _record(self, key: str, **view: Any) -> None:
        async with self.store.write() as tx:
            vm = await tx.get_resource(key)
            if vm is None:
                return
            state = vm.body.setdefault(INTERNAL, {})
            current = dict(state.get("view") or {})
            current.update(view)
            state["view"] = current
            await tx.put_resource(vm)

    async def _set_internal(self, key: str, **values: Any) -> None:
        async with self.store.write() as tx:
            vm = await tx.get_resource(key)
            if vm is None:
                return
            vm.body.setdefault(INTERNAL, {}).update(values)
            await tx.put_resource(vm)

    # -- planning -------------------------------------------------------------------------------------
    async def _image(self, vm: Resource) -> MarketplaceImage:
        """The marketplace image whose kernel (and, for marketplace VMs, disk) the VM boots."""
        async with self.store.read() as tx:
            image = await storage.boot_image(tx, self.catalog, vm.body["properties"]["storageProfile"]
                                             ["imageReference"])
        if image is None or not image.file("kernel") or not image.file("initrd"):
            raise ArmError(404, "PlatformImageNotFound", "The image of virtual machine "
                           f"{vm.name} is not available (or kumo cannot tell which kernel boots it). "
                           f"{self.catalog.describe()}")
        return image

    def _keys(self, vm: Resource) -> str:
        keys = (vm.body["properties"]["osProfile"].get("linuxConfiguration") or {}).get("ssh") or {}
        return "".join(k["keyData"].strip() + "\n" for k in keys.get("publicKeys") or [])

    def _spec(self, vm: Resource, image: MarketplaceImage, endpoint: dict[str, Any], keys_file: Path) -> VmSpec:
        size = sizes.lookup(vm.body["properties"]["hardwareProfile"]["vmSize"])
        assert size is not None
        assert self.services is not None
        disks = tuple(DiskSpec(str(self.services.disks.path_of(k))) for k in storage.disk_keys(vm))
        nic = NicSpec(endpoint["macAddress"].lower().replace("-", ":"), tap=endpoint["tap"])
        common = dict(id=self.vm_id(vm.key), kernel=str(image.file("kernel")), initrd=str(image.file("initrd")),
                      vcpus=size.vcpus, memory_mib=max(size.memory_mb, int(image.boot.get("minMemoryMiB") or 0)),
                      nics=(nic,), netns=endpoint["vnetNamespace"])
        if image.cloud_init:  # cloud-init provisions it from the seed, the last disk
            seed = self.driver.paths(common["id"]).state_dir / provisioning.SEED  # type: ignore[union-attr]
            return VmSpec(**common, append=str(image.boot.get("append") or ""),  # type: ignore[arg-type]
                          disks=(*disks, DiskSpec(str(seed), format="raw", readonly=True)),
                          tb_size_mib=int(image.boot.get("tbSizeMiB") or 128))
        host = vm.body["properties"]["osProfile"]["computerName"]
        append = (f"{BOOT_APPEND} kumo.ip={endpoint['privateIPAddress']}/{endpoint['prefixLength']} "
                  f"kumo.gw={endpoint['gateway']} kumo.host={host}")
        return VmSpec(**common, append=append, disks=disks,  # type: ignore[arg-type]
                      fw_cfg=((FW_CFG_KEYS, str(keys_file)),))

    def _running_spec(self, vid: str) -> dict[str, Any] | None:
        assert self.driver is not None
        try:  # through VmSpec: a spec.json from an older kumo gets today's defaults
            stored = VmSpec.from_dict(json.loads(self.driver.paths(vid).spec.read_text()))
        except (OSError, ValueError, TypeError, KeyError):
            return None
        return json.loads(json.dumps(dataclasses.asdict(stored)))

    # -- public IPs: a Dynamic one is released on deallocate and allocated again on start ------------
    async def _public_ips(self, vm: Resource, allocate: bool) -> list[str]:
        nics = [n["id"].lower() for n in vm.body["properties"]["networkProfile"]["networkInterfaces"]]
        changed = []
        async with self.store.write() as tx:
            for nic_key in nics:
                nic = await tx.get_resource(nic_key)
                for cfg in (nic.body["properties"].get("ipConfigurations") or []) if nic else []:
                    pip_id = ((cfg.get("properties") or {}).get("publicIPAddress") or {}).get("id")
                    pip = await tx.get_resource(pip_id.lower()) if pip_id else None
                    if pip is None or pip.body["properties"].get("publicIPAllocationMethod") != "Dynamic":
                        continue
                    has = "ipAddress" in pip.body["properties"]
                    if allocate and not has:
                        pip.body["properties"]["ipAddress"] = await allocate_address(tx, self.network.public_pool,
                                                                                     pip.id)
                    elif not allocate and has:
                        await release_address(tx, pip)
                    else:
                        continue
                    await tx.put_resource(pip)
                    changed.append(nic_key)
        return changed

    # -- converge: the desired power state, on the host ---------------------------------------------
    async def converge(self, key: str, *, restart: bool = False, skip_shutdown: bool = False) -> None:
        driver = self._require()
        async with self._lock(key):
            async with self.store.read() as tx:
                vm = await tx.get_resource(key)
            if vm is None or vm.provisioning_state == "Deleting":
                return
            desired = (vm.body.get(INTERNAL) or {}).get("power", "running")
            vid = self.vm_id(key)
            status = await driver.status(vid)
            if desired == "running":
                await self._run(vm, status.running, restart)
            else:
                if status.running:
                    await self._record(key, power="stopping" if desired == "stopped" else "deallocating",
                                       agent="NotReady")
                    await self._halt(vid, skip_shutdown)
                if desired == "deallocated":
                    await self._deallocate(vm)
                await self._record(key, power=desired, agent="NotReady", time=_now())

    async def _halt(self, vid: str, skip_shutdown: bool) -> None:
        assert self.driver is not None
        self._expected_exit.add(vid)
        try:
            if skip_shutdown:
                await self.driver.kill(vid)
            else:
                await self.driver.powerdown(vid, POWERDOWN_TIMEOUT)
        finally:
            self._expected_exit.discard(vid)

    async def _deallocate(self, vm: Resource) -> None:
        nic_key = primary_nic(vm.body["properties"]).lower()
        with contextlib.suppress(ArmError):
            await self.network.detach(nic_key)
        for nic in await self._public_ips(vm, allocate=False):
            await self.network.sync_vnet_of_nic(nic)
        await self._set_internal(vm.key, allocated=False)

    async def _run(self, vm: Resource, running: bool, restart: bool) -> None:
        assert self.driver is not None
        key, vid = vm.key, self.vm_id(vm.key)
        size = sizes.lookup(vm.body["properties"]["hardwareProfile"]["vmSize"])
        assert size is not None
        image = await self._image(vm)
        assert self.services is not None
        vm = await storage.ensure_disks(self.services, vm, image)
        previous = self._running_spec(vid)
        resized = previous is not None and (previous.get("vcpus"), previous.get("memory_mib")) != \
            (size.vcpus, size.memory_mb)
        if resized or not (vm.body.get(INTERNAL) or {}).get("allocated"):
            await self._claim(key, size)  # a resize must fit beside the others too
        for nic in await self._public_ips(vm, allocate=True):
            await self.network.sync_vnet_of_nic(nic)
        endpoint = await self.network.attach_tap(primary_nic(vm.body["properties"]).lower())
        keys_file = self.driver.paths(vid).state_dir / "authorized_keys"
        spec = self._spec(vm, image, endpoint, keys_file)
        wanted = _shape(json.loads(json.dumps(dataclasses.asdict(spec))))
        first_boot_cut = running and not ((vm.body.get(INTERNAL) or {}).get("view") or {}).get("bootPath")
        if first_boot_cut:  # kumo stopped during the VM's first boot (a clone may lack its identity): again
            log.info("virtual machine %s never finished its first boot: booting it again", vm.name)
        if running and (restart or first_boot_cut or _shape(self._running_spec(vid)) != wanted):
            await self._record(key, power="stopping", agent="NotReady")
            await self._halt(vid, skip_shutdown=False)
            running = False
        if running:
            self._watch(key, vid)
            view = (vm.body.get(INTERNAL) or {}).get("view") or {}
            if view.get("power") != "running" or view.get("agent") != "Ready":
                await self._wait_ready(vm, vid, time.monotonic(), marker=False, cloud_init=image.cloud_init)
            return
        await self._record(key, power="starting", agent="NotReady", accelerator=self.accelerator)

        def write_keys() -> None:
            keys_file.parent.mkdir(parents=True, exist_ok=True)
            keys_file.write_text(self._keys(vm))
        await asyncio.to_thread(write_keys)
        if image.cloud_init:  # a clone keeps its golden's instance-id for good (see goldens.py)
            await provisioning.write_seed(spec.disks[-1].path, vm, endpoint,
                                          instance_id=(vm.body.get(INTERNAL) or {}).get("instanceId"))
        t0 = time.monotonic()
        cloned = await self._start_clone(vm, image, spec, endpoint)
        if not cloned:
            await asyncio.to_thread((self.driver.paths(vid).state_dir / goldens.BOOT_LOG).unlink, True)
            try:
                await self.driver.start(spec)
            except VmFailure as e:
                raise ArmError(500, "VMStartFailed", f"QEMU could not start virtual machine {vm.name}: {e}") from None
        self._watch(key, vid)
        await self._wait_ready(vm, vid, t0, marker=not (image.cloud_init or cloned), cloud_init=image.cloud_init)
        custom = ((vm.body.get(INTERNAL) or {}).get("secrets") or {}).get("customData")
        if custom and not image.cloud_init:
            await self._run_custom_data(vm, vid, base64.b64decode(custom).decode(errors="replace"))
        await self._record(key, bootPath="snapshot" if cloned else "cold")

    async def _run_custom_data(self, vm: Resource, vid: str, script: str) -> None:
        """An image without cloud-init (Tiny) runs a custom-data script (`#!…`) as root at each boot kumo
        drives, started through the guest agent in the background, its output in /var/log/custom-data.log."""
        assert self.driver is not None
        launch = ("cat > /run/custom-data && chmod 700 /run/custom-data && "
                  "(setsid /run/custom-data </dev/null >/var/log/custom-data.log 2>&1 &)")
        try:
            code, _out, err = await self.driver.agent_exec(vid, ["/bin/sh", "-c", launch], input=script, timeout=30)
        except (VmFailure, TimeoutError) as e:
            raise ArmError(409, "VMAgentStatusCommunicationError", f"The custom data of virtual machine {vm.name} "
                           f"could not be started: {e}") from None
        if code != 0:
            raise ArmError(409, "VMExtensionProvisioningError", f"The custom data of virtual machine {vm.name} "
                           f"could not be started: {err.strip()[-300:]}")

    async def _start_clone(self, vm: Resource, image: MarketplaceImage, spec: VmSpec,
                           endpoint: dict[str, Any]) -> bool:
        """The fast path: the VM restored from its shape's golden snapshot and re-identified (see
        goldens.py); False when it must cold-boot instead."""
        if self.goldens is None or not goldens.clonable(image):
            return False
        state = vm.body.get(INTERNAL) or {}
        custom_image = bool(vm.body["properties"]["storageProfile"]["imageReference"].get("id"))
        if image.cloud_init and (custom_image or state.get("view", {}).get("bootPath") or
                                 (state.get("secrets") or {}).get("customData")):
            return False  # a disk of its own (a custom image, or booted already), or custom data for cloud-init
        golden = await self.goldens.get(image, spec)
        if golden is None:
            return False
        profile = vm.body["properties"]["osProfile"]
        linux = profile.get("linuxConfiguration") or {}
        password = (state.get("secrets") or {}).get("adminPassword")
        who = goldens.Identity(
            mac=spec.nics[0].mac, gateway=endpoint["gateway"], hostname=profile["computerName"],
            address=f"{endpoint['privateIPAddress']}/{endpoint['prefixLength']}", root_keys=self._keys(vm),
            admin=profile["adminUsername"], admin_keys=self._keys(vm),
            password_hash=await asyncio.to_thread(seed.hash_password, password) if password else None,
            password_auth=not linux.get("disablePasswordAuthentication", True))
        disk_gb = vm.body["properties"]["storageProfile"]["osDisk"].get("diskSizeGB") or 0
        try:
            if image.cloud_init:  # reboots must not look like a new instance to cloud-init
                await self._set_internal(vm.key, instanceId=goldens.golden_instance_id(golden))
                await provisioning.write_seed(spec.disks[-1].path, vm, endpoint,
                                              instance_id=goldens.golden_instance_id(golden))
            await self.goldens.start_clone(spec, golden, who, cloud_init=image.cloud_init,
                                           disk_bytes=int(disk_gb) * 1024**3)
        except (VmFailure, TimeoutError, disk_files.DiskFileError) as e:
            log.warning("restoring %s from its golden snapshot failed (%s): cold boot", vm.name, e)
            if image.cloud_init:  # a seed of its own: cloud-init provisions the disk as a new instance
                await self._set_internal(vm.key, instanceId=None)
                await provisioning.write_seed(spec.disks[-1].path, vm, endpoint)
            return False
        return True

    async def _wait_ready(self, vm: Resource, vid: str, t0: float, marker: bool, cloud_init: bool = False) -> None:
        assert self.driver is not None
        try:
            if marker:
                await self.driver.wait_serial(vid, READY_MARKER, BOOT_TIMEOUT)
            await self.driver.wait_agent(vid, CLOUD_INIT_TIMEOUT if cloud_init else AGENT_TIMEOUT)
            if cloud_init:
                await provisioning.wait_cloud_init(self.driver, vid, CLOUD_INIT_TIMEOUT - (time.monotonic() - t0))
        except (TimeoutError, VmFailure) as e:
            tail = await self.driver.serial_log(vid, 600)
            raise ArmError(500, "OSProvisioningTimedOut", f"Virtual machine {vm.name} did not become ready: {e}. "
                           f"Serial console: {tail[-400:]}") from None
        boot = time.monotonic() - t0
        os_name, os_version = await self._os_info(vid)
        if not cloud_init:
            await self._provision_user(vm, vid)
        await self._record(vm.key, power="running", agent="Ready", agentTime=_now(), time=_now(),
                           agentVersion="qemu-guest-agent", osName=os_name, osVersion=os_version,
                           accelerator=self.accelerator, bootSeconds=round(boot, 2))

    async def _os_info(self, vid: str) -> tuple[str | None, str | None]:
        assert self.driver is not None
        try:
            info = await self.driver.agent_call(vid, "guest-get-osinfo", None, 5)
            return (info.get("pretty-name") or info.get("name") or info.get("kernel-release") or None,
                    info.get("version") or info.get("kernel-release") or None)
        except Exception:  # not every agent has it
            return None, None

    async def _provision_user(self, vm: Resource, vid: str) -> None:
        """The admin user with its SSH keys, made through the guest agent (the tiny image runs from its
        initramfs, so this is done at every boot). Root also accepts the keys (fw_cfg)."""
        assert self.driver is not None
        profile = vm.body["properties"]["osProfile"]
        user = profile["adminUsername"]
        keys = (profile.get("linuxConfiguration") or {}).get("ssh", {}).get("publicKeys") or []
        by_path: dict[str, list[str]] = {}
        for k in keys:
            by_path.setdefault(k["path"], []).append(k["keyData"].strip())
        home = f"/home/{user}"
        script = [
            f"grep -q '^{user}:' /etc/passwd || {{ echo '{user}:x:1000:1000::{home}:/bin/sh' >> /etc/passwd; "
            f"echo '{user}:x:1000:' >> /etc/group; echo '{user}:*:19000:0:99999:7:::' >> /etc/shadow; }}",
            "umask 022",
            f"mkdir -p {home}/.ssh && chmod 755 /home {home} && chmod 700 {home}/.ssh",
        ]
        for path, datas in by_path.items():
            blob = base64.b64encode(("\n".join(datas) + "\n").encode()).decode()
            q = shlex.quote(path)
            script.append(f"mkdir -p $(dirname {q}) && echo {blob} | base64 -d > {q} && chmod 600 {q}")
        script.append(f"chown -R 1000:1000 {home}")
        try:
            code, out, err = await self.driver.agent_exec(vid, ["/bin/sh", "-c", "\n".join(script)], timeout=20)
        except Exception as e:
            raise ArmError(500, "OSProvisioningClientError", f"Could not create user '{user}' in virtual machine "
                           f"{vm.name} through the guest agent: {e}") from None
        if code != 0:
            raise ArmError(500, "OSProvisioningClientError", f"Creating user '{user}' in virtual machine {vm.name} "
                           f"failed ({code}): {(err or out).decode(errors='replace')[-300:]}")

    # -- the watcher: a guest that powers itself off is a stopped VM --------------------------------
    def _watch(self, key: str, vid: str) -> None:
        current = self._watchers.get(key)
        if current is not None and not current.done():
            return
        self._watchers[key] = asyncio.ensure_future(self._watch_pid(key, vid))

    async def _watch_pid(self, key: str, vid: str) -> None:
        assert self.driver is not None
        status = await self.driver.status(vid)
        if status.pid is None:
            return
        await hostcmd.wait_pid(status.pid)
        if self._watchers.get(key) is asyncio.current_task():
            self._watchers.pop(key, None)
        if vid in self._expected_exit or self._lock(key).locked():
            return
        log.info("virtual machine %s powered off from inside", key)
        await self._set_internal(key, power="stopped")
        await self._record(key, power="stopped", agent="NotReady", time=_now())

    # -- actions ---------------------------------------------------------------------------------------
    async def begin_power(self, ctx: "RequestContext", vm: Resource, power: str, *, restart: bool = False,
                          skip_shutdown: bool = False) -> Response:
        op = await self.start_power(vm, power, restart=restart, skip_shutdown=skip_shutdown)
        return Response(status_code=202, headers=self.services.operations.headers(  # type: ignore[union-attr]
            op, ctx.base_url, ctx.api_version, location=True))

    async def start_power(self, vm: Resource, power: str, *, restart: bool = False,
                          skip_shutdown: bool = False) -> Operation:
        """Record the desired power state and launch the operation that brings the guest there."""
        self._require()
        if vm.provisioning_state in ("Creating", "Deleting"):
            raise ArmError(409, "OperationNotAllowed", f"The operation cannot run while virtual machine {vm.name} "
                           f"is in provisioning state {vm.provisioning_state}.")
        current = (vm.body.get(INTERNAL) or {}).get("power", "running")
        if restart and current != "running":
            raise ArmError(409, "OperationNotAllowed", f"Cannot restart virtual machine {vm.name}: it is not running "
                           "(start it instead).")
        assert self.services is not None
        operations = self.services.operations
        async with self.store.write() as tx:
            row = await tx.get_resource(vm.key)
            if row is None:
                raise ArmError(404, "ResourceNotFound", f"The virtual machine '{vm.name}' was not found.")
            row.body.setdefault(INTERNAL, {})["power"] = power
            await tx.put_resource(row)
            op = operations.new(subscription_id=row.subscription_id, namespace="Microsoft.Compute",
                                location=row.location or "local", kind="vm.power", resource_key=row.key,
                                params={"restart": restart, "skipShutdown": skip_shutdown})
            await tx.add_operation(op)
        operations.launch(op)
        return op

    async def reimage_operation(self, run: Any) -> None:
        """Azure's reimage: the OS disk made afresh from the VM's image (everything on it is lost), the VM
        provisioned again as a new instance (a new temporary password may come with the request), and
        started. Data disks are kept."""
        key = run.op.resource_key
        async with self._lock(key):
            async with self.store.read() as tx:
                vm = await tx.get_resource(key)
            if vm is None:
                raise ArmError(404, "ResourceNotFound", "The virtual machine was deleted.")
            if (await self._require().status(self.vm_id(key))).running:
                await self._halt(self.vm_id(key), skip_shutdown=True)
            disk_id = (vm.body["properties"]["storageProfile"]["osDisk"].get("managedDisk") or {}).get("id")
            assert self.services is not None
            if disk_id:
                async with self.store.read() as tx:
                    disk = await tx.get_resource(disk_id.lower())
                if disk is not None:
                    await asyncio.to_thread(self.services.disks.path_of(disk.key).unlink, True)
                    await self.services.disks.realise(disk)
            async with self.store.write() as tx:
                row = await tx.get_resource(key)
                if row is None:
                    return None
                state = row.body.setdefault(INTERNAL, {})
                state.pop("instanceId", None)
                state["view"] = {k: v for k, v in (state.get("view") or {}).items() if k != "bootPath"}
                state["power"] = "running"
                if run.op.params.get("adminPassword"):
                    state.setdefault("secrets", {})["adminPassword"] = run.op.params["adminPassword"]
                await tx.put_resource(row)
        await self.converge(key)
        return None

    async def power_operation(self, run: Any) -> None:
        key = run.op.resource_key
        await self.converge(key, restart=bool(run.op.params.get("restart")),
                            skip_shutdown=bool(run.op.params.get("skipShutdown")))
        return None

    async def begin_run_command(self, ctx: "RequestContext", vm: Resource) -> Response:
        command = run_command.parse(await ctx.json_body())
        self._require()
        if (vm.body.get(INTERNAL) or {}).get("power", "running") != "running" or vm.provisioning_state != "Succeeded":
            raise run_command.not_running(vm.name)
        services = ctx.services
        op = services.operations.new(subscription_id=vm.subscription_id, namespace="Microsoft.Compute",
                                     location=vm.location or "local", kind="vm.runCommand", resource_key=vm.key,
                                     params=command)
        async with self.store.write() as tx:
            await tx.add_operation(op)
        services.operations.launch(op)
        return Response(status_code=202, headers=services.operations.headers(op, ctx.base_url, ctx.api_version,
                                                                             location=True))

    async def run_command_operation(self, run: Any) -> dict[str, Any]:
        driver = self._require()
        key = run.op.resource_key
        vid = self.vm_id(key)
        if not (await driver.status(vid)).running:
            raise run_command.not_running(key.rsplit("/", 1)[-1])
        try:
            code, out, err = await driver.agent_exec(vid, run_command.argv(run.op.params),
                                                     input=run.op.params["script"], timeout=run_command.TIMEOUT)
        except TimeoutError as e:
            raise ArmError(409, "VMAgentStatusCommunicationError", f"The run command did not finish: {e}") from None
        except VmFailure as e:
            raise ArmError(409, "VMAgentStatusCommunicationError", f"The guest agent of the virtual machine did not "
                           f"answer: {e}") from None
        return run_command.result(code, out, err)

    async def _boot_log(self, key: str) -> str | None:
        async with self.store.read() as tx:
            if await tx.get_resource(key) is None:
                return None
        if self.driver is None:
            return ""
        vid = self.vm_id(key)
        boot = self.driver.paths(vid).state_dir / goldens.BOOT_LOG  # a clone's: the golden's boot first

        def read_boot() -> str:
            try:
                return boot.read_text(errors="replace") + "\n"
            except OSError:
                return ""
        return await asyncio.to_thread(read_boot) + await self.driver.serial_log(vid)

    # -- delete ---------------------------------------------------------------------------------------
    async def remove(self, vm: Resource) -> None:
        """Everything of the VM on the host goes: QEMU (killed, as Azure deletes without shutdown), its
        state dir, and the primary NIC's tap."""
        if self.driver is None:
            return
        vid = self.vm_id(vm.key)
        async with self._lock(vm.key):
            self._expected_exit.add(vid)
            try:
                await self.driver.remove(vid)
            finally:
                self._expected_exit.discard(vid)
            watcher = self._watchers.pop(vm.key, None)
            if watcher is not None:
                watcher.cancel()
            with contextlib.suppress(ArmError):
                await self.network.detach(primary_nic(vm.body["properties"]).lower())
        self._locks.pop(vm.key, None)

    async def close(self) -> None:
        """VMs keep running while kumo restarts (QEMU is its own session); only the tasks end."""
        for task in self._watchers.values():
            task.cancel()
        await asyncio.gather(*self._watchers.values(), return_exceptions=True)
        self._watchers.clear()
        if self.driver is not None:
            await self.driver.close()
