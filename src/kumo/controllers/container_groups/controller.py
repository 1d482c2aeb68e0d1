"""The container group controller: turns a stored container group into running containers and keeps
its instance view true. One `GroupRunner` task per group does the work; this module plans groups
(image config + the group's spec → OCI container specs), pulls images, wires the group's network
namespace through the network controller, re-adopts running containers after a kumo restart and
removes what no group explains any more.

Host objects of a group are named from its key: runc ids and cgroups `kumo<site>-<hash>-<spec>-<name>`
under `/kumo<site>/g<hash>`, its namespace `kumo<site>-e<hash>`, its files under
`<data dir>/containers/groups/<hash>/` (logs, volumes)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.responses import Response

from kumo.arm.errors import ArmError
from kumo.controllers.container_groups import view, volumes
from kumo.controllers.container_groups.runner import DELETE_GRACE, GroupRunner, PlannedContainer
from kumo.controllers.container_groups.sessions import Sessions
from kumo.controllers.network import INSTANCE_NET_KEY, Instance, NetworkController, short_hash
from kumo.drivers.containers import ContainerRuntime, ContainerSpec, logs
from kumo.images.reference import InvalidReference, parse_reference
from kumo.images.registry_client import Credentials, PullError, RegistryClient
from kumo.images.store import Image, ImageStore
from kumo.providers.lifecycle import with_state
from kumo.store import Resource, Store

if TYPE_CHECKING:
    from kumo.arm.context import RequestContext
    from kumo.store import Tx

log = logging.getLogger("kumo.containers")

GROUP_TYPE = "microsoft.containerinstance/containergroups"
REGISTRY_TYPE = "microsoft.containerregistry/registries"
GIB = 1024 ** 3
PIDS_LIMIT = 4096
SWEEP_SECONDS = 10  # how often containers whose group is gone are looked for
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class GroupPlan:
    """What a group needs on the host, derived from its stored body (and, once pulled, its images)."""

    key: str
    name: str
    body: dict[str, Any]
    spec_hash: str  # changes when anything that needs new containers changes
    netns: str
    vnet_key: str
    restart_policy: str
    root: Path  # the group's files
    init_containers: list[PlannedContainer] = field(default_factory=list)
    containers: list[PlannedContainer] = field(default_factory=list)


def _spec_hash(body: dict[str, Any]) -> str:
    props = body["properties"]
    relevant = {k: props.get(k) for k in ("containers", "initContainers", "volumes", "imageRegistryCredentials",
                                          "restartPolicy", "subnetIds")}
    return hashlib.sha1(_strip_views(relevant).encode()).hexdigest()[:6]


def _strip_views(relevant: dict[str, Any]) -> str:
    def clean(cs: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
        return [{**c, "properties": {k: v for k, v in c["properties"].items() if k != "instanceView"}}
                for c in cs or []]
    doc = {**relevant, "containers": clean(relevant["containers"]), "initContainers": clean(relevant["initContainers"])}
    return json.dumps(doc, sort_keys=True, default=str, separators=(",", ":"))


def _same_netns(netns: str, pids: list[int]) -> bool:
    """Whether running containers are still in the group's namespace (one made again while kumo was
    down is another namespace: such containers are started afresh instead of adopted)."""
    try:
        wanted = os.stat(f"/run/netns/{netns}").st_ino
        return all(os.stat(f"/proc/{pid}/ns/net").st_ino == wanted for pid in pids)
    except OSError:
        return False


class ContainerController:
    def __init__(self, store: Store, data_dir: Path, network: NetworkController, ca_bundle: Path,
                 mirrors: dict[str, str], runtime: ContainerRuntime | None = None) -> None:
        self.store = store
        self.root = data_dir / "containers"
        self.network = network
        self.ca_bundle = ca_bundle
        self.mirrors = mirrors  # registry name -> endpoint (the offline catalog answers for mcr/docker.io)
        self.runtime: ContainerRuntime = runtime  # type: ignore[assignment]  # set in start()
        self.unavailable: str | None = None
        self.runners: dict[str, GroupRunner] = {}
        self.sessions = Sessions(self)
        self._view_locks: dict[str, asyncio.Lock] = {}  # per group: writes of its instance view
        # per group: ensure's set-up vs remove, so a reconcile or re-adoption still setting up when a delete
        # runs (both resume after a kill -9) cannot start containers after the delete removed them
        self._setup_locks: dict[str, asyncio.Lock] = {}
        self._images: ImageStore | None = None
        self._background: set[asyncio.Future[None]] = set()
        network.instance_sources.append(self._instances)

    # -- start: a runtime named after the network site, then re-adopt or clean up ---------------------
    async def start(self) -> None:
        if self.network.unavailable or self.network.site is None:
            self.unavailable = f"container groups need virtual networks: {self.network.unavailable}"
            return
        problem = await ContainerRuntime.probe()
        if problem:
            self.unavailable = problem
            log.warning("container groups unavailable: %s", problem)
            return
        if self.runtime is None:
            self.runtime = ContainerRuntime(self.root / "runtime", f"kumo{self.network.site}")
        client = await asyncio.to_thread(self._client, {})
        self._images = ImageStore(self.root.parent / "images", client)
        async with self.store.read() as tx:
            groups = await tx.resources_of_type(GROUP_TYPE)
        wanted: set[str] = set()
        for group in groups:
            if group.provisioning_state == "Deleting" or (group.body.get("kumo") or {}).get("stopped"):
                continue
            plan = self._plan(group)
            try:
                await self._build_specs(plan, pull=False)
            except ArmError:
                continue  # its image is gone: the reconcile below pulls again
            wanted.update(c.spec.id for c in plan.containers)
        for cid in await self.runtime.list_ids():
            if cid not in wanted:
                log.info("removing orphaned container %s", cid)
                await self.runtime.remove(cid)
        await self.runtime.prune_cgroups()
        sweeper = asyncio.ensure_future(self._sweep_forever())
        self._background.add(sweeper)
        sweeper.add_done_callback(self._background.discard)
        for group in groups:
            if group.provisioning_state == "Deleting" or (group.body.get("kumo") or {}).get("stopped"):
                continue
            task = asyncio.ensure_future(self._readopt(group))
            self._background.add(task)  # held until done: the loop keeps only weak references to tasks
            task.add_done_callback(self._background.discard)

    async def _sweep_forever(self) -> None:
        """Level-triggered safety net: a container whose group row is gone is removed, whatever left it (a
        start that was already under way in runc when its group's delete ran, a crash mid-delete)."""
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            try:
                await self.sweep_orphans()
            except Exception:  # the next pass tries again
                log.exception("sweeping orphaned containers failed")

    async def sweep_orphans(self) -> None:
        # Containers first, then rows: a container exists only after its group's row was committed, so a
        # container listed before the rows are read whose group has no row is an orphan, never a new group's.
        ids = await self.runtime.list_ids()
        async with self.store.read() as tx:
            live = {short_hash(g.key) for g in await tx.resources_of_type(GROUP_TYPE)}
        prefix = f"{self.runtime_prefix}-"
        orphans = [cid for cid in ids if cid.startswith(prefix) and cid[len(prefix):].split("-", 1)[0] not in live]
        for cid in orphans:
            log.info("removing orphaned container %s (its group is gone)", cid)
            await self.runtime.remove(cid)
        if orphans:
            await self.runtime.prune_cgroups()

    async def _readopt(self, group: Resource) -> None:
        try:
            await self.ensure(group, adopt=True)
        except ArmError as e:
            log.error("could not bring back container group %s: %s", group.id, e.message)

    def _require(self) -> None:
        if self.unavailable:
            raise ArmError(400, "ContainerBackendUnavailable", f"kumo cannot run containers on this host: "
                           f"{self.unavailable}")

    # -- the network: a group is an instance with its own namespace ---------------------------------
    async def _instances(self, tx: "Tx") -> list[Instance]:
        import ipaddress

        out = []
        for g in await tx.resources_of_type(GROUP_TYPE):
            state = g.body.get("kumo") or {}
            if g.provisioning_state == "Deleting" or state.get("stopped") or not state.get("privateIP"):
                continue
            ip = g.body["properties"].get("ipAddress") or {}
            subnet = state.get("subnet")
            public = ipaddress.IPv4Address(ip["ip"]) if ip.get("type") == "Public" and ip.get("ip") else None
            out.append(Instance(key=g.key, vnet_key=subnet.split("/subnets/")[0] if subnet else INSTANCE_NET_KEY,
                                subnet_key=subnet, address=ipaddress.IPv4Address(state["privateIP"]), public=public,
                                ports=tuple((p["protocol"], p["port"]) for p in ip.get("ports", []))))
        return out

    # -- planning ------------------------------------------------------------------------------------
    def _plan(self, group: Resource) -> GroupPlan:
        h = short_hash(group.key)
        state = group.body.get("kumo") or {}
        subnet = state.get("subnet")
        return GroupPlan(key=group.key, name=group.name, body=group.body, spec_hash=_spec_hash(group.body),
                         netns=self.network.endpoint_netns(group.key),
                         vnet_key=subnet.split("/subnets/")[0] if subnet else INSTANCE_NET_KEY,
                         restart_policy=group.body["properties"].get("restartPolicy", "Always"),
                         root=self.root / "groups" / h)

    def _container_id(self, plan: GroupPlan, name: str) -> str:
        return f"{self.runtime_prefix}-{short_hash(plan.key)}-{plan.spec_hash}-{name}"

    @property
    def runtime_prefix(self) -> str:
        return f"kumo{self.network.site}"

    def _client(self, credentials: dict[str, Credentials]) -> RegistryClient:
        return RegistryClient(credentials=credentials, mirrors=self.mirrors, ca_bundle=self.ca_bundle)

    async def _registry_mirrors(self) -> dict[str, str]:
        """kumo's own registries are HTTPS on loopback (the client would otherwise assume HTTP there)."""
        async with self.store.read() as tx:
            registries = await tx.resources_of_type(REGISTRY_TYPE)
        out = {}
        for r in registries:
            server = (r.body.get("properties") or {}).get("loginServer")
            if server:
                out[server] = f"https://{server}"
        return out

    async def _pull(self, plan: GroupPlan, image: str, progress: Callable[[str], Any] | None) -> Image:
        assert self._images is not None
        try:
            ref = parse_reference(image)
        except InvalidReference as e:
            raise ArmError(400, "InvalidImageName", f"The image '{image}' in container group '{plan.name}' is not a "
                           f"valid image reference: {e}") from None
        creds = {c["server"]: Credentials(c["username"], c["password"])
                 for c in plan.body["properties"].get("imageRegistryCredentials", [])}
        own = await self._registry_mirrors()
        store = self._images
        if creds or own:
            client = await asyncio.to_thread(lambda: RegistryClient(
                credentials=creds, mirrors={**self.mirrors, **own}, ca_bundle=self.ca_bundle))
            store = ImageStore(self._images.root, client)
        try:
            if progress is not None:
                progress("Pulling")
            return await store.pull(ref)
        except PullError as e:
            raise ArmError(400, "InaccessibleImage", f"The image '{image}' in container group '{plan.name}' is not "
                           f"accessible. Please check the image and registry credential. ({e})") from None
        finally:
            if store is not self._images:
                await store.client.aclose()

    async def _build_specs(self, plan: GroupPlan, pull: bool, runner: GroupRunner | None = None) -> None:
        assert self._images is not None
        props = plan.body["properties"]
        paths = {v["name"]: plan.root / "volumes" / v["name"] for v in props.get("volumes", [])}
        planned: list[PlannedContainer] = []
        for c in (*props.get("initContainers", []), *props["containers"]):
            image_name = c["properties"]["image"]
            if pull:
                if runner is not None:
                    await runner.container_event(c["name"], "Pulling", f"pulling image \"{image_name}\"")
                started = time.monotonic()
                image = await self._pull(plan, image_name, None)
                if runner is not None:
                    await runner.container_event(c["name"], "Pulled", f"Successfully pulled image \"{image_name}\" "
                                                 f"({image.size / 1e6:.1f} MB in {time.monotonic() - started:.2f} s)")
            else:
                image = await self._images.get(image_name)
                if image is None:
                    raise ArmError(400, "InaccessibleImage", f"The image '{image_name}' is not in kumo's image store.")
            planned.append(PlannedContainer(name=c["name"], image=image_name, spec=self._spec(plan, c, image, paths),
                                            probes={k: c["properties"][k] for k in ("livenessProbe", "readinessProbe")
                                                    if c["properties"].get(k)}))
        n_init = len(props.get("initContainers", []))
        plan.init_containers, plan.containers = planned[:n_init], planned[n_init:]

    def _spec(self, plan: GroupPlan, c: dict[str, Any], image: Image, paths: dict[str, Path]) -> ContainerSpec:
        assert self._images is not None
        p = c["properties"]
        config = image.config
        args = tuple(p["command"]) if p.get("command") else (*(config.entrypoint or ()), *(config.cmd or ()))
        if not args:
            raise ArmError(400, "InvalidContainerCommand", f"The image '{p['image']}' of container '{c['name']}' has "
                           "no entrypoint or command, and the container sets no 'command'.")
        env: dict[str, str] = {}
        for item in (*config.env, *(f"{e['name']}={e.get('secureValue', e.get('value', ''))}"
                                    for e in p.get("environmentVariables", []))):
            k, _, v = item.partition("=")
            env[k] = v
        env.setdefault("PATH", DEFAULT_PATH.split("=", 1)[1])
        resources = p.get("resources") or {}
        limit = resources.get("limits") or resources.get("requests") or {}
        return ContainerSpec(
            id=self._container_id(plan, c["name"]), group=f"g{short_hash(plan.key)}",
            layers=tuple(str(d) for d in reversed(self._images.layer_dirs(image))), args=args,
            env=tuple(f"{k}={v}" for k, v in env.items()), cwd=config.working_dir or "/", user=config.user,
            hostname=plan.name, netns=f"/run/netns/{plan.netns}",
            memory_bytes=int(limit["memoryInGB"] * GIB) if limit.get("memoryInGB") else None,
            cpu_millicores=int(limit["cpu"] * 1000) if limit.get("cpu") else None, pids_limit=PIDS_LIMIT,
            mounts=volumes.mounts(c, paths, plan.body["properties"].get("volumes", [])),
            log_path=str(plan.root / "logs" / f"{c['name']}.log"))

    # -- what the runner calls -----------------------------------------------------------------------
    async def prepare_host(self, plan: GroupPlan) -> None:
        try:
            await volumes.prepare(plan.root / "volumes", plan.body["properties"].get("volumes", []))
        except volumes.VolumeError as e:
            raise ArmError(400, "VolumeSetupFailed", f"Container group '{plan.name}': {e}") from None
        await asyncio.to_thread((plan.root / "logs").mkdir, parents=True, exist_ok=True)

    async def pull_images(self, runner: GroupRunner) -> None:
        await self._build_specs(runner.plan, pull=True, runner=runner)

    async def rotate_log(self, path: str) -> None:
        """A restarted container logs afresh, as on ACI; the previous run's log is kept beside it."""
        def rotate() -> None:
            if os.path.exists(path):
                os.replace(path, path + ".previous")
        await asyncio.to_thread(rotate)

    async def save_view(self, runner: GroupRunner, change: Callable[[dict[str, Any]], None]) -> None:
        async with self._view_locks.setdefault(runner.key, asyncio.Lock()):
            if self.runners.get(runner.key) is not runner:
                return  # superseded by a newer spec, a stop or a delete
            async with self.store.write() as tx:
                current = await tx.get_resource(runner.key)
                if current is None or current.provisioning_state == "Deleting":
                    return
                change(current.body)
                props = current.body["properties"]
                group_view = props.get("instanceView") or {"events": []}
                props["instanceView"] = group_view
                group_view["state"] = view.group_state(current.body, bool((current.body.get("kumo") or {})
                                                                           .get("stopped")))
                await tx.put_resource(current)

    async def refresh_group_state(self, runner: GroupRunner) -> None:
        await runner.record(lambda body: None)

    # -- lifecycle entry points (realise, remove, actions) -------------------------------------------
    async def ensure(self, group: Resource, adopt: bool = False) -> None:
        """Make the host run `group` as stored; returns when its containers have started."""
        self._require()
        if (group.body.get("kumo") or {}).get("stopped"):
            await self.stop(group.key)
            return
        async with self._setup_locks.setdefault(group.key, asyncio.Lock()):
            async with self.store.read() as tx:
                latest = await tx.get_resource(group.key)
            if latest is None or latest.provisioning_state == "Deleting":
                return  # deleted meanwhile: its delete removes (or removed) what it has on the host
            runner = await self._setup(group, adopt)
        await asyncio.shield(runner.started)

    async def _setup(self, group: Resource, adopt: bool) -> GroupRunner:
        """The runner that makes the host run `group` (the one running it already, if it does)."""
        plan = self._plan(group)
        current = self.runners.get(group.key)
        if current is not None and current.plan.spec_hash == plan.spec_hash and not current.stopping \
                and current.task is not None and not current.task.done():
            return current
        if current is not None:
            self.runners.pop(group.key, None)
            await current.stop()
        # the network is made while images are pulled; containers start once both are done
        network = asyncio.ensure_future(self.network.sync_instance(group.key, plan.vnet_key))
        if adopt:
            await network
            await self.network.sync_host()
            try:
                await self._build_specs(plan, pull=False)
                statuses = [await self.runtime.status(c.spec.id) for c in plan.containers]
                adopt = all(s.state in ("running", "stopped") for s in statuses) and \
                    await asyncio.to_thread(_same_netns, plan.netns, [s.pid for s in statuses if s.pid])
                if not adopt:  # not as they should be: start the group afresh
                    for c in (*plan.init_containers, *plan.containers):
                        await self.runtime.remove(c.spec.id)
            except ArmError:
                adopt = False
        runner = GroupRunner(self, plan, adopt=adopt, network=network)
        self.runners[group.key] = runner
        runner.task = asyncio.ensure_future(runner.run())
        return runner

    async def stop(self, key: str) -> None:
        """ACI's stop: every container ends, nothing runs, the group says Stopped (its IP is kept)."""
        async with self.store.write() as tx:
            group = await tx.get_resource(key)
            if group is None:
                return
            group.body.setdefault("kumo", {})["stopped"] = True
            await tx.put_resource(group)
        runner = self.runners.get(key)
        if runner is not None:
            await runner.stop()
            self.runners.pop(key, None)
        elif self.runtime is not None:
            for cid in await self.runtime.list_ids():
                if cid.startswith(f"{self.runtime_prefix}-{short_hash(key)}-"):
                    await self.runtime.remove(cid)
        async with self.store.write() as tx:
            group = await tx.get_resource(key)
            if group is not None:
                props = group.body["properties"]
                props["instanceView"] = {**(props.get("instanceView") or {"events": []}), "state": "Stopped"}
                for c in props["containers"]:
                    cv = c["properties"].get("instanceView")
                    if cv and (cv.get("currentState") or {}).get("state") != "Terminated":
                        view.set_state(cv, view.terminated(137, False, None, None))
                await tx.put_resource(group)
        if group is not None:
            await self.network.remove_instance(key, self._plan(group).vnet_key)

    async def begin_start(self, ctx: "RequestContext", group: Resource) -> Response:
        """ACI's start: a stopped group runs again (a long-running operation, answered 202)."""
        self._require()
        services = ctx.services
        async with self.store.write() as tx:
            current = await tx.get_resource(group.key)
            if current is None:
                raise ArmError(404, "ResourceNotFound", f"The container group '{group.name}' was not found.")
            current.body.setdefault("kumo", {})["stopped"] = False
            current.desired_gen += 1
            current.provisioning_state = "Updating"
            current.body = with_state(current.body, "Updating")
            await tx.put_resource(current)
            op = services.operations.new(subscription_id=current.subscription_id,
                                         namespace="Microsoft.ContainerInstance", location=current.location or "local",
                                         kind="resource.reconcile", resource_key=current.key,
                                         params={"generation": current.desired_gen})
            await tx.add_operation(op)
        services.operations.launch(op)
        return Response(status_code=202, headers=services.operations.headers(op, ctx.base_url, ctx.api_version,
                                                                             location=True))

    async def restart(self, key: str) -> None:
        """ACI's restart: every container starts again in place (same IP, same images)."""
        self._require()
        runner = self.runners.pop(key, None)
        if runner is not None:
            await runner.stop()
        async with self.store.read() as tx:
            group = await tx.get_resource(key)
        if group is not None:
            await self.ensure(group)

    async def remove(self, group: Resource) -> None:
        """Everything of the group on the host goes: containers, cgroups, mounts, namespace, files."""
        await self._remove_containers(group.key)
        plan = self._plan(group)
        await self.network.remove_instance(group.key, plan.vnet_key)
        await asyncio.to_thread(shutil.rmtree, plan.root, True)
        self._view_locks.pop(group.key, None)
        self.sessions.forget(group.key)

    async def removed(self, group: Resource) -> None:
        """Again once the row is gone: a resource group's delete does not mark each member Deleting, so
        the pass in `remove` still saw the group."""
        await self._remove_containers(group.key)  # what an ensure that was setting up meanwhile started
        await self.network.remove_instance(group.key, self._plan(group).vnet_key)
        self._setup_locks.pop(group.key, None)

    async def _remove_containers(self, key: str) -> None:
        async with self._setup_locks.setdefault(key, asyncio.Lock()):
            runner = self.runners.pop(key, None)
            if runner is not None:
                await runner.stop(DELETE_GRACE)
            if self.runtime is not None:
                for cid in await self.runtime.list_ids():
                    if cid.startswith(f"{self.runtime_prefix}-{short_hash(key)}-"):
                        await self.runtime.remove(cid)

    async def logs(self, group: Resource, container: str, tail: int | None, timestamps: bool) -> str:
        path = self._plan(group).root / "logs" / f"{container}.log"
        if not path.exists():
            return ""
        return await logs.read_log(path, tail, timestamps)

    def new_session(self, group: Resource, container: str, kind: str, command: str, rows: int, cols: int) -> Any:
        self._require()
        runner = self.runners.get(group.key)
        planned = next((c for c in (runner.plan.containers if runner else []) if c.name == container), None)
        if planned is None:
            raise ArmError(409, "ContainerGroupNotRunning", f"Container '{container}' of container group "
                           f"'{group.name}' is not running.")
        return self.sessions.new(group.key, planned, kind, command, rows, cols)

    async def close(self) -> None:
        """Containers keep running while kumo restarts (conmon supervises them); only the tasks end."""
        for task in list(self._background):
            task.cancel()
        for runner in self.runners.values():
            if runner.task is not None:
                runner.task.cancel()
        await asyncio.gather(*(r.task for r in self.runners.values() if r.task is not None), return_exceptions=True)
        self.runners.clear()
        if self._images is not None:
            await self._images.client.aclose()
