"""One container group's life on the host, as one asyncio task: pull its images, run its init
containers in order, start its containers, then supervise them (exits, restart policy with back-off,
liveness and readiness probes) until the group is stopped, changed or deleted. Everything it sees
goes into the group's instance view through `GroupRunner.record`."""

from __future__ import annotations

import asyncio
import logging
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kumo.arm.errors import ArmError
from kumo.controllers.container_groups import view
from kumo.drivers.containers.spec import ContainerSpec, ContainerStatus, RuntimeFailure
from kumo.drivers.network import probes

if TYPE_CHECKING:
    from kumo.controllers.container_groups.controller import ContainerController, GroupPlan

log = logging.getLogger("kumo.containers")

BACKOFF_FIRST, BACKOFF_MAX = 1.0, 300.0  # seconds; doubles per restart, reset after BACKOFF_RESET running
BACKOFF_RESET = 600.0
STOP_GRACE = 10.0  # SIGTERM to SIGKILL on stop and restart
DELETE_GRACE = 3.0  # a deleted group's containers get less: nothing of them is kept


@dataclass
class GroupRunner:
    controller: "ContainerController"
    plan: "GroupPlan"
    adopt: bool = False  # containers already run (kumo restarted): supervise them, do not start them
    network: asyncio.Future[str] | None = None  # the group's namespace, being made
    started: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    stopping: bool = False
    task: asyncio.Task[None] | None = None
    _probes: dict[str, list[asyncio.Future[None]]] = field(default_factory=dict)  # container -> its probes

    @property
    def key(self) -> str:
        return self.plan.key

    def record(self, change: Callable[[dict[str, Any]], None]) -> asyncio.Future[None]:
        """Apply `change` to the stored body (instance views) unless this runner was superseded."""
        return asyncio.ensure_future(self.controller.save_view(self, change))

    def container_event(self, name: str, event: str, message: str, kind: str = "Normal") -> asyncio.Future[None]:
        def change(body: dict[str, Any]) -> None:
            cv = view.container_view(body, name)
            if cv is not None:
                view.add_event(cv, event, message, kind)
        return self.record(change)

    def container_state(self, name: str, state: dict[str, Any], restarted: bool = False) -> asyncio.Future[None]:
        def change(body: dict[str, Any]) -> None:
            cv = view.container_view(body, name)
            if cv is not None:
                view.set_state(cv, state)
                if restarted:
                    cv["restartCount"] = cv.get("restartCount", 0) + 1
        return self.record(change)

    # -- the group's life --------------------------------------------------------------------------
    async def run(self) -> None:
        try:
            if self.adopt:
                self._settle_started()
            else:
                await self._prepare_and_start()
            await asyncio.gather(*(self._supervise(c) for c in self.plan.containers))
        except asyncio.CancelledError:
            raise
        except ArmError as e:
            if not self.started.done():
                self.started.set_exception(e)
            else:
                log.error("container group %s: %s", self.key, e.message)
        except Exception as e:  # a host failure must reach the operation, not vanish in a task
            log.exception("container group %s failed", self.key)
            if not self.started.done():
                self.started.set_exception(ArmError(500, "ContainerGroupFailed", f"kumo could not run the container "
                                                    f"group: {e}"))
        finally:
            self._stop_probes()

    def _settle_started(self) -> None:
        if not self.started.done():
            self.started.set_result(None)

    async def _prepare_and_start(self) -> None:
        plan, ctl = self.plan, self.controller
        await self.record(lambda body: body["properties"].update(
            instanceView={"state": "Pending", "events": (body["properties"].get("instanceView") or {}).get("events",
                                                                                                          [])}))
        await ctl.prepare_host(plan)
        try:
            await ctl.pull_images(self)
        finally:
            if self.network is not None:
                await self.network  # also when the pull failed: its errors come after the network's
        for init in plan.init_containers:
            status = await self._start(init)
            if status.state != "stopped":
                status = await ctl.runtime.wait(init.spec.id)
            await self._record_exit(init.name, status)
            await ctl.runtime.remove(init.spec.id)
            if status.exit_code != 0:
                raise ArmError(400, "ContainerGroupInitContainerFailed", f"Init container '{init.name}' of container "
                               f"group '{plan.name}' exited with code {status.exit_code}.")
        host = asyncio.ensure_future(ctl.network.sync_host())  # the public IP, while the containers start
        try:
            for c in plan.containers:
                await self._start(c)
        finally:
            await host
        self._settle_started()

    async def _start(self, c: "PlannedContainer") -> ContainerStatus:
        await self.container_state(c.name, view.waiting("ContainerCreating"))
        try:
            status = await self.controller.runtime.start(c.spec)
        except RuntimeFailure as e:
            await self.container_event(c.name, "Failed", f"Error: failed to start container \"{c.name}\": {e}",
                                       "Warning")
            await self.container_state(c.name, view.terminated(128, False, None, None))
            raise ArmError(400, "ContainerGroupStartFailed", f"Container '{c.name}' of container group "
                           f"'{self.plan.name}' could not start: {e}") from None
        await self.container_event(c.name, "Started", f"Started container {c.name}")
        if status.state == "running":
            await self.container_state(c.name, view.running(status.started_at))
            self._start_probes(c)
        return status

    async def _record_exit(self, name: str, status: ContainerStatus) -> None:
        code = status.exit_code if status.exit_code is not None else 137
        if status.oom_killed:
            await self.container_event(name, "OOMKilled", f"Container {name} was killed: out of memory", "Warning")
        await self.container_state(name, view.terminated(code, status.oom_killed, status.started_at,
                                                         status.finished_at))

    async def _supervise(self, c: "PlannedContainer") -> None:
        runtime = self.controller.runtime
        restarts = 0
        while True:
            status = await runtime.status(c.spec.id)
            if status.state == "running":
                if self.adopt:
                    self._start_probes(c)
                status = await runtime.wait(c.spec.id)
            if self.stopping:
                return
            await self._record_exit(c.name, status)
            code = status.exit_code if status.exit_code is not None else 137
            if not view.should_restart(self.plan.restart_policy, code):
                await self.controller.refresh_group_state(self)
                return
            ran = (status.finished_at - status.started_at).total_seconds() \
                if status.finished_at and status.started_at else 0.0
            restarts = 0 if ran > BACKOFF_RESET else restarts
            delay = min(BACKOFF_FIRST * 2 ** restarts, BACKOFF_MAX)
            restarts += 1
            if restarts > 1:
                await self.container_event(c.name, "BackOff", f"Back-off restarting failed container {c.name}",
                                           "Warning")
            await asyncio.sleep(delay)
            if self.stopping:
                return
            await runtime.remove(c.spec.id)
            await self.controller.rotate_log(c.spec.log_path)
            try:
                status = await runtime.start(c.spec)
            except RuntimeFailure as e:
                await self.container_event(c.name, "Failed", f"Error: {e}", "Warning")
                continue
            await self.container_event(c.name, "Started", f"Started container {c.name}")
            await self.container_state(c.name, view.running(status.started_at), restarted=True)
            if status.state == "running":
                self._start_probes(c)
            self.adopt = False

    # -- probes ------------------------------------------------------------------------------------
    def _start_probes(self, c: "PlannedContainer") -> None:
        """Probes for the container's current run (those of an earlier run end here)."""
        for old in self._probes.pop(c.name, []):
            old.cancel()
        self._probes[c.name] = [asyncio.ensure_future(self._probe_loop(c, kind, c.probes[kind]))
                                for kind in ("livenessProbe", "readinessProbe") if c.probes.get(kind)]

    def _stop_probes(self) -> None:
        for running in self._probes.values():
            for p in running:
                p.cancel()

    async def _probe_loop(self, c: "PlannedContainer", kind: str, probe: dict[str, Any]) -> None:
        await asyncio.sleep(probe["initialDelaySeconds"])
        failures = 0
        while not self.stopping:
            healthy = await self._probe_once(c, probe)
            failures = 0 if healthy else failures + 1
            if not healthy:
                await self.container_event(c.name, "Unhealthy", f"{kind.replace('Probe', '').capitalize()} probe "
                                           "failed", "Warning")
            if kind == "livenessProbe" and failures >= probe["failureThreshold"]:
                await self.container_event(c.name, "Killing", f"Container {c.name} failed liveness probe, will be "
                                           "restarted")
                await self.controller.runtime.stop(c.spec.id, STOP_GRACE)
                return  # the supervisor restarts it and starts new probes
            await asyncio.sleep(probe["periodSeconds"])

    async def _probe_once(self, c: "PlannedContainer", probe: dict[str, Any]) -> bool:
        timeout = float(probe["timeoutSeconds"])
        if "exec" in probe:
            try:
                code, _ = await self.controller.runtime.run(c.spec.id, tuple(probe["exec"]["command"]), timeout)
            except (RuntimeFailure, asyncio.TimeoutError):
                return False
            return code == 0
        get = probe["httpGet"]
        return await probes.probe(self.plan.netns, "https" if get["scheme"] == "https" else "http", "127.0.0.1",
                                  get["port"], get["path"], timeout, source=None)

    async def stop(self, grace: float = STOP_GRACE) -> None:
        """Stop supervising and stop every container (SIGTERM, then SIGKILL after `grace` seconds)."""
        self.stopping = True
        self._stop_probes()
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        runtime = self.controller.runtime

        async def one(c: PlannedContainer) -> None:
            status = await runtime.status(c.spec.id)
            if status.state == "running":
                await self.container_event(c.name, "Killing", f"Killing container {c.name}")
                status = await runtime.stop(c.spec.id, grace)
                await self._record_exit(c.name, status)
            await runtime.remove(c.spec.id)
        await asyncio.gather(*(one(c) for c in (*self.plan.init_containers, *self.plan.containers)))


@dataclass
class PlannedContainer:
    name: str
    image: str
    spec: ContainerSpec
    probes: dict[str, Any]


def command_argv(command: str) -> list[str]:
    """`az container exec --exec-command "ls -l /"`: ACI takes one command; kumo also splits arguments."""
    return shlex.split(command)
