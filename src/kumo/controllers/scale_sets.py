"""The scale set controller: keeps a scale set's instances matching its model and capacity.

An instance is an ordinary VM row (booted by the VM controller, like any VM) with its NICs, made
from the scale set's model (`vmss_schema.instance_body`):
- Uniform: the VM is `…/virtualMachineScaleSets/{ss}/virtualMachines/{instanceId}` and its NIC
  `…/virtualMachines/{instanceId}/networkInterfaces/{config}`, both owned by the scale set (hidden
  from `az vm list` / `az network nic list`, as in Azure);
- Flexible: the VM `…/virtualMachines/{ss}_{8 hex}` and its NIC are top-level resources that point
  back to the scale set (`properties.virtualMachineScaleSet`), as in Azure.

Level-triggered: `converge` compares the instances that exist with the capacity and the model,
creates or deletes the difference and upgrades per the upgrade policy, so running it again after a
crash finishes the job. Instance creations are VM and NIC PUTs through the generic lifecycle, so
each has its own operation, events and failure reasons."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from kumo.arm.errors import ArmError
from kumo.arm.ids import ResourceId, parse_resource_id
from kumo.compute import sizes
from kumo.providers.compute import vmss_schema
from kumo.providers.compute.vm_schema import INTERNAL
from kumo.store import Operation, Resource

if TYPE_CHECKING:
    from kumo.arm.context import Services

log = logging.getLogger("kumo.scalesets")

VM_TYPE = "microsoft.compute/virtualmachines"
VMSS_TYPE = "microsoft.compute/virtualmachinescalesets"
NIC_TYPE = "Microsoft.Network/networkInterfaces"
REPAIR_PERIOD = 2.0  # seconds between automatic-repair checks


def scale_set_of(vm: Resource) -> str | None:
    """The key of the scale set a VM row is an instance of."""
    ref = (vm.body.get("properties") or {}).get("virtualMachineScaleSet")
    return ref["id"].lower() if ref else None


def _order(vm: Resource) -> tuple[int, str]:
    return (int(vm.name), "") if vm.name.isdigit() else (0, vm.name)


class ScaleSetController:
    def __init__(self, services: "Services") -> None:
        self.services = services
        self._locks: dict[str, asyncio.Lock] = {}
        self._repaired: dict[str, float] = {}  # instance key -> when it was last repaired
        self._repairer: asyncio.Task[None] | None = None

    def _lock(self, key: str) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    async def start(self) -> None:
        self._repairer = asyncio.get_running_loop().create_task(self._repair_forever(), name="vmss-repairs")

    async def close(self) -> None:
        if self._repairer is not None:
            self._repairer.cancel()
            await asyncio.gather(self._repairer, return_exceptions=True)
            self._repairer = None

    # -- who the instances are -------------------------------------------------------------------
    async def members(self, vmss: Resource, *, include_deleting: bool = False) -> list[Resource]:
        async with self.services.store.read() as tx:
            if vmss.body["properties"].get("orchestrationMode") == "Flexible":
                rows = await tx.list_resources(vmss.subscription_id, resource_group=vmss.resource_group,
                                               type=VM_TYPE)
            else:
                rows = await tx.list_resources(vmss.subscription_id, parent_key=vmss.key, type=VM_TYPE)
        rows = [r for r in rows if scale_set_of(r) == vmss.key
                and (include_deleting or r.provisioning_state != "Deleting")]
        return sorted(rows, key=_order)

    async def member(self, vmss: Resource, instance: str) -> Resource | None:
        return next((m for m in await self.members(vmss) if m.name.lower() == instance.lower()), None)

    @staticmethod
    def latest_model_applied(vmss: Resource, vm: Resource) -> bool:
        return (vm.body.get(INTERNAL) or {}).get("scaleSetModel") == vmss_schema.model_hash(vmss.body)

    # -- converge: capacity, then the model --------------------------------------------------------
    async def converge(self, key: str) -> None:
        async with self._lock(key):
            vmss = await self._get(key)
            if vmss is None:
                raise ArmError(409, "Conflict", "The scale set was deleted before it was provisioned.")
            members = await self.members(vmss)
            wanted = int(vmss.body["sku"]["capacity"])
            if len(members) > wanted:
                await self._delete(vmss, self._victims(vmss, members, len(members) - wanted), "scale in")
            elif len(members) < wanted:
                await self._create(vmss, wanted - len(members), members)
            mode = vmss.body["properties"]["upgradePolicy"]["mode"]
            if mode != "Manual":
                stale = [m for m in await self.members(vmss) if not self.latest_model_applied(vmss, m)]
                await self.upgrade(vmss, stale, rolling=mode == "Rolling")

    async def _get(self, key: str) -> Resource | None:
        async with self.services.store.read() as tx:
            return await tx.get_resource(key)

    @staticmethod
    def _victims(vmss: Resource, members: list[Resource], count: int) -> list[Resource]:
        """Azure's scale-in policy: Default takes the highest instance ids (Flexible: the newest),
        OldestVM the oldest, NewestVM the newest. Failed instances go first whatever the policy."""
        rule = vmss.body["properties"]["scaleInPolicy"]["rules"][0]
        if rule == "OldestVM":
            ranked = sorted(members, key=lambda m: m.created_at)
        elif rule == "NewestVM" or vmss.body["properties"]["orchestrationMode"] == "Flexible":
            ranked = sorted(members, key=lambda m: -m.created_at)
        else:
            ranked = sorted(members, key=_order, reverse=True)
        ranked.sort(key=lambda m: m.provisioning_state != "Failed")  # stable: failed ones first
        return ranked[:count]

    async def _create(self, vmss: Resource, count: int, members: list[Resource]) -> None:
        uniform = vmss.body["properties"]["orchestrationMode"] == "Uniform"
        taken = {m.name.lower() for m in await self.members(vmss, include_deleting=True)}
        names: list[str] = []
        if uniform:
            next_id = max([int(n) + 1 for n in taken if n.isdigit()] +
                          [int((vmss.body.get(INTERNAL) or {}).get("nextInstanceId", 0))])
            names = [str(next_id + i) for i in range(count)]
            await self._set_internal(vmss.key, nextInstanceId=next_id + count)
        else:
            while len(names) < count:
                name = f"{vmss.name}_{secrets.token_hex(4)}"
                if name.lower() not in taken and name not in names:
                    names.append(name)
        size = sizes.lookup(vmss.body["sku"]["name"])
        assert size is not None
        room = await self.services.vms.room_for(size)
        if room < len(names):  # what cannot be placed is not even made: Azure's AllocationFailed names them
            unplaced = names[room:]
            names = names[:room]
            await asyncio.gather(*(self._create_one(vmss, name, uniform) for name in names), return_exceptions=True)
            raise ArmError(409, "AllocationFailed", f"Allocation failed. We do not have sufficient capacity for "
                           f"{len(unplaced)} of the {len(unplaced) + len(names)} requested {size.name} instances: "
                           f"{', '.join(self.display_name(vmss, n) for n in unplaced[:20])}"
                           f"{' …' if len(unplaced) > 20 else ''} could not be placed. (kumo: the host's vCPUs "
                           "times KUMO_VM_OVERCOMMIT and its memory are allocated.)")
        results = await asyncio.gather(*(self._create_one(vmss, name, uniform) for name in names),
                                       return_exceptions=True)
        failed = [(n, r) for n, r in zip(names, results, strict=True) if isinstance(r, BaseException)]
        if failed:
            shown = ", ".join(self.display_name(vmss, n) for n, _ in failed)
            first = failed[0][1]
            code = first.code if isinstance(first, ArmError) else "InternalServerError"
            message = first.message if isinstance(first, ArmError) else str(first)
            raise ArmError(409 if code == "AllocationFailed" else 500, code,
                           f"{len(failed)} of {len(names)} new instances could not be placed ({shown}): {message}")

    @staticmethod
    def display_name(vmss: Resource, instance: str) -> str:
        return f"{vmss.name}_{instance}" if instance.isdigit() else instance

    def _ids(self, vmss: Resource, name: str, uniform: bool) -> tuple[ResourceId, list[ResourceId]]:
        rid = parse_resource_id(vmss.id)
        configs = vmss.body["properties"]["virtualMachineProfile"]["networkProfile"]["networkInterfaceConfigurations"]
        if uniform:
            vm = ResourceId(rid.subscription, rid.resource_group, "Microsoft.Compute",
                            ("virtualMachineScaleSets", "virtualMachines"), (vmss.name, name))
            nics = [ResourceId(rid.subscription, rid.resource_group, "Microsoft.Compute",
                               ("virtualMachineScaleSets", "virtualMachines", "networkInterfaces"),
                               (vmss.name, name, c["name"])) for c in configs]
        else:
            vm = ResourceId(rid.subscription, rid.resource_group, "Microsoft.Compute", ("virtualMachines",), (name,))
            nics = [ResourceId(rid.subscription, rid.resource_group, "Microsoft.Network", ("networkInterfaces",),
                               (f"{name}-{c['name']}"[:80],)) for c in configs]
        return vm, nics

    async def _create_one(self, vmss: Resource, name: str, uniform: bool) -> None:
        from kumo.providers.lifecycle import apply_desired

        services = self.services
        vm_rid, nic_rids = self._ids(vmss, name, uniform)
        configs = vmss.body["properties"]["virtualMachineProfile"]["networkProfile"]["networkInterfaceConfigurations"]
        nic_handler = services.providers.handler(NIC_TYPE)
        vm_handler = services.providers.handler(VM_TYPE)
        assert nic_handler is not None and vm_handler is not None
        why = f"instance of scale set {vmss.name}"
        owner = vmss.key if uniform else None
        ops: list[Operation] = []
        for nic_rid, config in zip(nic_rids, configs, strict=True):
            _, _, op = await apply_desired(services, nic_rid, nic_handler, vmss_schema.nic_body(vmss.body, config),
                                           why, owner=owner)
            if op is not None:
                ops.append(op)
        prefix = vmss.body["properties"]["virtualMachineProfile"]["osProfile"]["computerNamePrefix"]
        body = vmss_schema.instance_body(vmss.body, vmss_schema.computer_name(prefix, name, uniform),
                                         self.display_name(vmss, name), [str(r) for r in nic_rids])
        _, _, op = await apply_desired(services, vm_rid, vm_handler, body, why)
        await self._set_internal(vm_rid.key, scaleSetModel=vmss_schema.model_hash(vmss.body))
        for o in [*ops, *([op] if op else [])]:
            await self._check(await services.operations.wait(o.id))

    @staticmethod
    async def _check(op: Operation) -> None:
        if op.status != "Succeeded":
            error = op.error or {}
            raise ArmError(409 if error.get("code") == "AllocationFailed" else 500,
                           error.get("code") or "InternalServerError", error.get("message") or op.status)

    async def _set_internal(self, key: str, **values: Any) -> None:
        async with self.services.store.write() as tx:
            row = await tx.get_resource(key)
            if row is not None:
                row.body.setdefault(INTERNAL, {}).update(values)
                await tx.put_resource(row)

    async def _delete(self, vmss: Resource, victims: list[Resource], why: str) -> None:
        """Delete instances the scale set itself gives up (its capacity already says so)."""
        from kumo.providers.lifecycle import delete_tree

        for vm in victims:
            await self._set_internal(vm.key, scaleSetRemoval=why)  # not a deletion of its own: capacity stays
        victims = [fresh for vm in victims if (fresh := await self._get(vm.key)) is not None]
        async with self.services.store.write() as tx:
            await tx.add_event(vmss.key, "ScaleIn", f"{why}: deleting {', '.join(v.name for v in victims)}")
        results = await asyncio.gather(*(delete_tree(self.services, v) for v in victims), return_exceptions=True)
        for vm, r in zip(victims, results, strict=True):
            if isinstance(r, BaseException):
                log.error("could not delete instance %s: %s", vm.id, r)
                raise r

    # -- the model: upgrades -----------------------------------------------------------------------
    async def upgrade(self, vmss: Resource, instances: list[Resource], *, rolling: bool) -> None:
        """Apply the latest model: Automatic (and manualUpgrade) all at once; Rolling in batches of
        `maxBatchInstancePercent` (default 20%), one batch after another."""
        if not instances:
            return
        batch = len(instances)
        if rolling:
            policy = vmss.body["properties"]["upgradePolicy"].get("rollingUpgradePolicy") or {}
            percent = int(policy.get("maxBatchInstancePercent") or 20)
            batch = max(1, len(instances) * percent // 100)
        for start in range(0, len(instances), batch):
            results = await asyncio.gather(*(self._upgrade_one(vmss, vm) for vm in instances[start:start + batch]),
                                           return_exceptions=True)
            failed = [r for r in results if isinstance(r, BaseException)]
            if failed:
                raise failed[0]

    async def _upgrade_one(self, vmss: Resource, vm: Resource) -> None:
        from kumo.providers.compute.virtual_machines import start_reimage
        from kumo.providers.lifecycle import apply_desired

        services = self.services
        props = vm.body["properties"]
        nic_ids = [n["id"] for n in props["networkProfile"]["networkInterfaces"]]
        body = vmss_schema.instance_body(vmss.body, props["osProfile"]["computerName"], vm.name, nic_ids)
        new_image = body["properties"]["storageProfile"]["imageReference"]
        reimage = new_image != props["storageProfile"]["imageReference"]
        # the disks it has stay its own (their names and ids), only the size and the image follow the model
        body["properties"]["storageProfile"]["osDisk"] = {**props["storageProfile"]["osDisk"],
                                                         **{k: v for k, v in body["properties"]["storageProfile"]
                                                            ["osDisk"].items() if k in ("diskSizeGB", "caching")}}
        body["properties"]["storageProfile"]["dataDisks"] = props["storageProfile"].get("dataDisks") or []
        vm_handler = services.providers.handler(VM_TYPE)
        assert vm_handler is not None
        _, _, op = await apply_desired(services, parse_resource_id(vm.id), vm_handler, body,
                                       f"upgrade to the latest model of {vmss.name}")
        if op is not None:
            await self._check(await services.operations.wait(op.id))
        if reimage:
            vm = await self._get(vm.key) or vm
            await self._check(await services.operations.wait((await start_reimage(services, vm)).id))
        await self._set_internal(vm.key, scaleSetModel=vmss_schema.model_hash(vmss.body))

    # -- actions on many instances -----------------------------------------------------------------
    async def select(self, vmss: Resource, instance_ids: list[str] | None) -> list[Resource]:
        """The instances named (all when None), or 400 naming the ones that are not there."""
        members = await self.members(vmss)
        if instance_ids is None:
            return members
        by_id = {m.name.lower(): m for m in members}
        missing = [i for i in instance_ids if str(i).lower() not in by_id]
        if missing:
            raise ArmError(400, "InvalidParameter", f"The instance ids {', '.join(map(str, missing))} are not "
                           f"instances of scale set {vmss.name}.", target="instanceIds")
        return [by_id[str(i).lower()] for i in instance_ids]

    async def run_each(self, instances: list[Resource],
                       action: Callable[[Resource], Awaitable[Operation | None]]) -> None:
        """Start an instance operation on each and wait for all; the first failure is the result."""
        async def one(vm: Resource) -> None:
            op = await action(vm)
            if op is not None:
                await self._check(await self.services.operations.wait(op.id))
        results = await asyncio.gather(*(one(vm) for vm in instances), return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            raise failed[0]

    async def delete_instances(self, vmss_key: str, instances: list[Resource]) -> None:
        """`POST …/delete` with instanceIds: the capacity drops by as many, then they go."""
        async with self._lock(vmss_key):
            async with self.services.store.write() as tx:
                row = await tx.get_resource(vmss_key)
                if row is None:
                    return
                row.body["sku"]["capacity"] = max(0, int(row.body["sku"]["capacity"]) - len(instances))
                await tx.put_resource(row)
            vmss = await self._get(vmss_key)
            if vmss is not None:
                await self._delete(vmss, instances, "delete instances")

    async def instance_left(self, vm: Resource) -> None:
        """An instance deleted on its own (`DELETE …/virtualMachines/{id}`, `az vm delete` of a Flexible
        one): as in Azure, the scale set's capacity drops by one."""
        key = scale_set_of(vm)
        if not key or (vm.body.get(INTERNAL) or {}).get("scaleSetRemoval"):
            return
        async with self.services.store.write() as tx:
            row = await tx.get_resource(key)
            if row is None or row.provisioning_state == "Deleting":
                return
            row.body["sku"]["capacity"] = max(0, int(row.body["sku"]["capacity"]) - 1)
            await tx.put_resource(row)
            await tx.add_event(key, "InstanceDeleted", f"instance {vm.name} deleted: capacity is now "
                               f"{row.body['sku']['capacity']}")

    async def remove(self, vmss: Resource) -> None:
        """The scale set goes: every instance with it (Uniform ones are its children and go first)."""
        members = await self.members(vmss, include_deleting=True)
        if members:
            await self._delete(vmss, members, "scale set deleted")
        self._locks.pop(vmss.key, None)

    # -- automatic repairs ---------------------------------------------------------------------------
    async def _repair_forever(self) -> None:
        while True:
            await asyncio.sleep(REPAIR_PERIOD)
            try:
                await self._repair_round()
            except Exception:  # a repair round must never end the loop
                log.exception("automatic repair round failed")

    async def _repair_round(self) -> None:
        async with self.services.store.read() as tx:
            sets = [s for s in await tx.resources_of_type(VMSS_TYPE)
                    if ((s.body.get("properties") or {}).get("automaticRepairsPolicy") or {}).get("enabled")
                    and s.provisioning_state != "Deleting"]
        now = time.time()
        for vmss in sets:
            if self._lock(vmss.key).locked():
                continue  # scaling or upgrading: judge the instances once that is done
            policy = vmss.body["properties"]["automaticRepairsPolicy"]
            grace = vmss_schema.iso_seconds(policy["gracePeriod"], "gracePeriod")
            for vm in await self.members(vmss):
                healthy = await self._healthy(vm)
                if healthy is not False or vm.provisioning_state != "Succeeded":
                    continue
                # Azure's grace period: no repair until it has passed since the instance was made or last
                # repaired (the probe's own interval x threshold already decided it is unhealthy)
                if now - max(vm.created_at, self._repaired.get(vm.key, 0.0)) >= grace:
                    self._repaired[vm.key] = now
                    asyncio.ensure_future(self._repair(vmss, vm, policy["repairAction"]))

    async def _healthy(self, vm: Resource) -> bool | None:
        """What the load balancer's health probes say of the instance's primary address."""
        nics = vm.body["properties"]["networkProfile"]["networkInterfaces"]
        verdicts = []
        async with self.services.store.read() as tx:
            for n in nics:
                nic = await tx.get_resource(n["id"].lower())
                for cfg in ((nic.body.get("properties") or {}).get("ipConfigurations") or []) if nic else []:
                    c = cfg["properties"]
                    if c.get("privateIPAddress"):
                        vnet = c["subnet"]["id"].lower().split("/subnets/")[0]
                        verdicts.append(self.services.network.backend_health(vnet, [c["privateIPAddress"]]))
        known = [v for v in verdicts if v is not None]
        return all(known) if known else None

    async def _repair(self, vmss: Resource, vm: Resource, action: str) -> None:
        from kumo.providers.compute.virtual_machines import start_reimage

        async with self.services.store.write() as tx:
            await tx.add_event(vmss.key, "AutomaticRepair", f"instance {vm.name} failed its health probe: "
                               f"{action.lower()}")
        log.info("automatic repair of %s: %s", vm.id, action)
        try:
            if action == "Restart":
                await self.run_each([vm], lambda v: self.services.vms.start_power(v, "running", restart=True))
            elif action == "Reimage":
                await self.run_each([vm], lambda v: start_reimage(self.services, v))
            else:  # Replace: a new instance takes its place
                async with self._lock(vmss.key):
                    await self._delete(vmss, [vm], "automatic repair")
                await self.converge(vmss.key)
        except ArmError as e:
            log.error("automatic repair of %s failed: %s", vm.id, e.message)
