"""`exec` and `attach` sessions: the POST answers a one-time websocket URI and password, as ACI does;
the client connects without a bearer token and sends the password as its first text frame. After
that an exec session is a real terminal in the container (stdin as binary frames, the terminal's
output back), and an attach session streams the container's output. The server closes the socket
when the process (exec) or the container (attach) ends."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from kumo.drivers.containers import logs
from kumo.drivers.containers.spec import RuntimeFailure

if TYPE_CHECKING:
    from kumo.controllers.container_groups.controller import ContainerController
    from kumo.controllers.container_groups.runner import PlannedContainer

log = logging.getLogger("kumo.containers")

SESSION_TTL = 300.0  # seconds a URI stays usable before the client connects
PASSWORD_WAIT = 30.0
PATH = "/kumo/containerGroups/sessions/{session_id}"


@dataclass
class Session:
    id: str
    password: str
    group_key: str
    container: "PlannedContainer"
    kind: str  # exec | attach
    command: str
    rows: int
    cols: int
    expires: float

    def response(self, base_url: str) -> dict[str, Any]:
        uri = base_url.replace("https://", "wss://", 1) + PATH.format(session_id=self.id)
        return {"webSocketUri": uri, "password": self.password}


class Sessions:
    def __init__(self, controller: "ContainerController") -> None:
        self.controller = controller
        self._open: dict[str, Session] = {}

    def new(self, group_key: str, container: "PlannedContainer", kind: str, command: str, rows: int,
            cols: int) -> Session:
        now = time.monotonic()
        for sid in [s for s, v in self._open.items() if v.expires < now]:
            del self._open[sid]
        session = Session(secrets.token_urlsafe(16), secrets.token_urlsafe(24), group_key, container, kind, command,
                          max(1, min(rows, 500)), max(1, min(cols, 1000)), now + SESSION_TTL)
        self._open[session.id] = session
        return session

    def forget(self, group_key: str) -> None:
        for sid in [s for s, v in self._open.items() if v.group_key == group_key]:
            del self._open[sid]

    async def serve(self, websocket: WebSocket) -> None:
        """The websocket endpoint: one session, used once."""
        session = self._open.pop(websocket.path_params["session_id"], None)
        await websocket.accept()
        try:
            first = await asyncio.wait_for(websocket.receive(), PASSWORD_WAIT)
            given = first.get("text") or (first.get("bytes") or b"").decode(errors="replace")
            if session is None or session.expires < time.monotonic() or \
                    not hmac.compare_digest(given.strip(), session.password):
                await websocket.close(code=1008, reason="unknown session or wrong password")
                return
            if session.kind == "exec":
                await self._exec(websocket, session)
            else:
                await self._attach(websocket, session)
        except (WebSocketDisconnect, asyncio.TimeoutError):
            pass
        finally:
            with contextlib.suppress(RuntimeError):
                await websocket.close()

    async def _exec(self, websocket: WebSocket, session: Session) -> None:
        from kumo.controllers.container_groups.runner import command_argv

        runtime = self.controller.runtime
        try:
            proc = await runtime.exec(session.container.spec.id, tuple(command_argv(session.command)), tty=True,
                                      rows=session.rows, cols=session.cols)
        except (RuntimeFailure, ValueError) as e:
            await websocket.send_bytes(f"kumo: could not run '{session.command}': {e}\r\n".encode())
            return
        loop = asyncio.get_running_loop()
        output: asyncio.Queue[bytes | None] = asyncio.Queue()

        def readable() -> None:
            try:
                data = os.read(proc.fd, 65536)
            except OSError:  # EIO: the terminal's last process ended
                data = b""
            if not data:
                loop.remove_reader(proc.fd)
                output.put_nowait(None)
            else:
                output.put_nowait(data)

        loop.add_reader(proc.fd, readable)

        async def pump_out() -> None:
            while (data := await output.get()) is not None:
                await websocket.send_bytes(data)

        async def pump_in() -> None:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                data = message.get("bytes") or (message.get("text") or "").encode()
                if data:
                    await asyncio.to_thread(os.write, proc.fd, data)

        out_task, in_task = asyncio.ensure_future(pump_out()), asyncio.ensure_future(pump_in())
        try:
            done, _ = await asyncio.wait({out_task, in_task}, return_when=asyncio.FIRST_COMPLETED)
            if in_task in done:  # the client left: end the process
                proc.kill()
            else:
                await proc.wait()
        finally:
            for t in (out_task, in_task):
                t.cancel()
            await asyncio.gather(out_task, in_task, return_exceptions=True)
            with contextlib.suppress(OSError, ValueError):
                loop.remove_reader(proc.fd)
            with contextlib.suppress(ProcessLookupError, OSError):
                proc.kill()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(proc.wait(), 5)
            with contextlib.suppress(OSError):
                os.close(proc.fd)

    async def _attach(self, websocket: WebSocket, session: Session) -> None:
        runtime = self.controller.runtime
        spec = session.container.spec

        async def stream() -> None:
            async for chunk in logs.follow(spec.log_path, from_start=True):
                await websocket.send_bytes(chunk)

        task = asyncio.ensure_future(stream())
        try:
            await runtime.wait(spec.id)
            await asyncio.sleep(0.2)  # the last lines reach the log just after the exit
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
