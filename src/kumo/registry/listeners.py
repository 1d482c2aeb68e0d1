"""One HTTPS listener per registry (its loginServer is localhost:<port>): a uvicorn server per port
on kumo's event loop, with kumo's certificate, opened and closed while kumo runs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

import uvicorn
from starlette.types import ASGIApp

from kumo.config import Settings

log = logging.getLogger("kumo.registry")


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(256)
    return sock


def port_free(host: str, port: int) -> bool:
    try:
        bind(host, port).close()
    except OSError:
        return False
    return True


class RegistryListeners:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._servers: dict[int, tuple[uvicorn.Server, socket.socket]] = {}
        self._ticker: asyncio.Task[None] | None = None

    def ports(self) -> list[int]:
        return sorted(self._servers)

    async def open(self, port: int, app: ASGIApp) -> None:
        if port in self._servers:
            return
        paths = self.settings.paths
        sock = bind(self.settings.host, port)
        config = uvicorn.Config(app, ssl_certfile=str(paths.server_cert), ssl_keyfile=str(paths.server_key),
                                log_level="warning", access_log=False, lifespan="off", loop="none",
                                timeout_keep_alive=120, timeout_graceful_shutdown=2)
        config.load()
        server = uvicorn.Server(config)
        server.lifespan = config.lifespan_class(config)
        try:
            await server.startup(sockets=[sock])
        except BaseException:
            sock.close()
            raise
        await server.on_tick(0)
        self._servers[port] = (server, sock)
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.create_task(self._tick())
        log.info("registry listener on port %d", port)

    async def _tick(self) -> None:
        """uvicorn's per-second housekeeping (the Date header) for every listener, in one task."""
        while self._servers:
            await asyncio.sleep(1)
            for server, _sock in list(self._servers.values()):
                await server.on_tick(0)

    async def close(self, port: int) -> None:
        entry = self._servers.pop(port, None)
        if entry is None:
            return
        server, sock = entry
        server.should_exit = True
        await server.shutdown(sockets=[sock])

    async def close_all(self) -> None:
        for port in list(self._servers):
            await self.close(port)
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
