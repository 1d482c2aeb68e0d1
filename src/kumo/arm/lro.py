"""Long-running operations, one mechanism for every provider.

A handler that accepts work writes the desired state and an `Operation` row in one transaction,
then `launch`es it. The operation's kind names a registered async function that does the work
(idempotently: after a crash, `resume` runs every unfinished operation again). Clients poll
`Azure-AsyncOperation` (status) and `Location` (result) URLs served from the rows."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from starlette.responses import JSONResponse, Response

from kumo.arm.errors import ArmError
from kumo.store import Operation

if TYPE_CHECKING:
    from kumo.arm.context import Services

log = logging.getLogger("kumo.lro")


@dataclass
class OperationRun:
    """What an operation handler gets: its row and the services, plus progress reporting."""

    op: Operation
    services: "Services"

    async def progress(self, percent: float) -> None:
        async with self.services.store.write() as tx:
            await tx.set_operation_progress(self.op.id, percent)


Handler = Callable[[OperationRun], Awaitable[Any]]


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f0Z")


class Operations:
    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.services: "Services | None" = None

    def register(self, kind: str, handler: Handler) -> None:
        if kind in self._handlers:
            raise ValueError(f"operation kind {kind} registered twice")
        self._handlers[kind] = handler

    @staticmethod
    def new(*, subscription_id: str, namespace: str, location: str, kind: str,
            resource_key: str | None, params: dict[str, Any] | None = None) -> Operation:
        return Operation(id=str(uuid.uuid4()), subscription_id=subscription_id, namespace=namespace,
                         location=location, kind=kind, resource_key=resource_key, params=params or {},
                         created_at=time.time())

    def launch(self, op: Operation) -> None:
        """Start the operation's work in the background; call after its row has committed."""
        if op.id in self._tasks:
            return
        task = asyncio.get_running_loop().create_task(self._run(op), name=f"op-{op.kind}-{op.id}")
        self._tasks[op.id] = task
        task.add_done_callback(lambda _t: self._tasks.pop(op.id, None))

    async def _run(self, op: Operation) -> None:
        assert self.services is not None
        store = self.services.store
        handler = self._handlers.get(op.kind)
        try:
            if handler is None:
                raise ArmError(500, "InternalServerError", f"No handler for operation kind '{op.kind}'.")
            result = await handler(OperationRun(op, self.services))
        except ArmError as e:
            async with store.write() as tx:
                await tx.finish_operation(op.id, "Failed", error=e.body()["error"], error_status=e.status)
            return
        except asyncio.CancelledError:
            raise  # shutting down: the row stays InProgress and is resumed at the next start
        except Exception as e:  # a bug or a host failure: report it, never leave the client polling forever
            log.exception("operation %s (%s) failed", op.id, op.kind)
            async with store.write() as tx:
                await tx.finish_operation(op.id, "Failed", error={"code": "InternalServerError",
                                                                   "message": f"{type(e).__name__}: {e}"},
                                          error_status=500)
            return
        async with store.write() as tx:
            await tx.finish_operation(op.id, "Succeeded", result=result)

    async def wait(self, op_id: str) -> Operation:
        """The operation's row once it has finished (for work that waits on other work)."""
        assert self.services is not None
        while True:
            task = self._tasks.get(op_id)
            if task is not None:
                await asyncio.shield(asyncio.wait([task]))
            async with self.services.store.read() as tx:
                op = await tx.get_operation(op_id)
            if op is None or op.done:
                assert op is not None, f"operation {op_id} vanished"
                return op
            await asyncio.sleep(0.05)  # launched by someone else and not yet registered

    async def resume(self) -> int:
        """Re-run every operation a previous process left unfinished (handlers are idempotent)."""
        assert self.services is not None
        async with self.services.store.read() as tx:
            pending = await tx.unfinished_operations()
        for op in pending:
            self.launch(op)
        return len(pending)

    async def drain(self) -> None:
        """Wait for running operations (used on shutdown after cancelling, and by tests)."""
        tasks = list(self._tasks.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- what the client sees ----------------------------------------------------------------
    @staticmethod
    def urls(op: Operation, base_url: str, api_version: str) -> tuple[str, str]:
        prefix = (f"{base_url}/subscriptions/{op.subscription_id}/providers/{op.namespace}"
                  f"/locations/{op.location}")
        return (f"{prefix}/operations/{op.id}?api-version={api_version}",
                f"{prefix}/operationResults/{op.id}?api-version={api_version}")

    def headers(self, op: Operation, base_url: str, api_version: str, *, location: bool) -> dict[str, str]:
        status_url, result_url = self.urls(op, base_url, api_version)
        h = {"Azure-AsyncOperation": status_url, "Retry-After": "1"}
        if location:
            h["Location"] = result_url
        return h

    @staticmethod
    def status_body(op: Operation, status_url: str) -> dict[str, Any]:
        body: dict[str, Any] = {"id": urlsplit(status_url).path, "name": op.id, "status": op.status,
                                "startTime": iso(op.created_at), "percentComplete": round(op.percent_complete, 1)}
        if op.ended_at:
            body["endTime"] = iso(op.ended_at)
        if op.error:
            body["error"] = op.error
        return body

    def status_response(self, op: Operation, base_url: str, api_version: str) -> Response:
        status_url, _ = self.urls(op, base_url, api_version)
        headers = {} if op.done else {"Retry-After": "1"}
        return JSONResponse(self.status_body(op, status_url), headers=headers)

    def result_response(self, op: Operation, base_url: str, api_version: str) -> Response:
        """The `Location` URL: 202 while running, then the result (200), nothing (204) or the error."""
        if not op.done:
            return Response(status_code=202, headers=self.headers(op, base_url, api_version, location=True))
        if op.status == "Failed" and op.error:
            raise ArmError(op.error_status or 400, op.error.get("code", "Failed"), op.error.get("message", ""),
                           target=op.error.get("target"), details=op.error.get("details"))
        if op.result is None:
            return Response(status_code=204)
        return JSONResponse(op.result)
