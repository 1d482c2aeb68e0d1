"""The container registry service: storage, auth and one HTTPS listener per registry, plus the
built-in public catalog registry served on kumo's main port.

How other parts of kumo reach a registry:
- `RegistryService.of(services)` gives the service (None when kumo runs without registries);
- `endpoint(name)` is `https://localhost:<port>` of a registry (kumo's CA signs its certificate),
  `catalog_endpoint` the built-in catalog's (anonymous pull);
- `target_by_login_server(host)` tells whether a login server is one of kumo's registries;
- `pull_token(name, repository)` mints a short bearer token allowed to pull one repository, for
  kumo's own pullers (send it as `Authorization: Bearer …`); user-supplied credentials (admin
  user, scoped tokens, `00000000-…` + refresh token) work through the ordinary token flow;
- `import_oci_layout(layout_dir, registry)` imports an OCI image layout's `repo:tag`s."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

from kumo.config import Settings
from kumo.identity.tokens import TokenSigner
from kumo.registry.app import registry_routes
from kumo.registry.auth import ACCESS_LIFETIME, RegistryAuth
from kumo.registry.listeners import RegistryListeners
from kumo.registry.storage import RegistryStorage
from kumo.registry.target import CATALOG, REGISTRY_TYPE, Target
from kumo.store import Resource, Store

if TYPE_CHECKING:
    from kumo.arm.context import Services

log = logging.getLogger("kumo.registry")


def port_of(resource: Resource) -> int | None:
    server = str((resource.body.get("properties") or {}).get("loginServer") or "")
    _, _, port = server.rpartition(":")
    return int(port) if port.isdigit() else None


class RegistryService:
    def __init__(self, settings: Settings, store: Store, signer: TokenSigner) -> None:
        self.settings = settings
        self.store = store
        self.storage = RegistryStorage(settings.paths.registries)
        self.auth = RegistryAuth(signer, store)
        self.listeners = RegistryListeners(settings)
        self.catalog = Target(CATALOG, f"{settings.public_host}:{settings.port}", anonymous_pull=True,
                              read_only=True)
        self._targets: dict[str, Target] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._catalog_import: asyncio.Task[Any] | None = None
        self._gc_task: asyncio.Task[Any] | None = None
        self._gc_again = False
        self._prepared = False

    @staticmethod
    def of(services: "Services") -> "RegistryService | None":
        handler = services.providers.handler(REGISTRY_TYPE)
        return getattr(handler, "service", None)

    # -- the Python API -------------------------------------------------------------------------
    @property
    def catalog_endpoint(self) -> str:
        return f"https://{self.catalog.login_server}"

    def target(self, name: str) -> Target | None:
        if name.lower() == CATALOG:
            return self.catalog
        return self._targets.get(name.lower())

    def target_by_login_server(self, login_server: str) -> Target | None:
        wanted = login_server.lower().removeprefix("https://").rstrip("/")
        for target in (self.catalog, *self._targets.values()):
            if target.login_server.lower() == wanted:
                return target
        return None

    def endpoint(self, name: str) -> str | None:
        target = self.target(name)
        return f"https://{target.login_server}" if target else None

    def pull_token(self, name: str, repository: str, lifetime: int = ACCESS_LIFETIME) -> str:
        target = self.target(name)
        if target is None:
            raise KeyError(name)
        token, _ = self.auth.sign(target, "acr_access", "kumo", lifetime, kind="kumo",
                                   access=[{"type": "repository", "name": repository, "actions": ["pull"]}])
        return token

    async def import_oci_layout(self, layout_dir: Path, registry: str = CATALOG) -> list[str]:
        await self._prepare()
        return await asyncio.to_thread(self.storage.import_layout, layout_dir, registry.lower())

    async def gc(self) -> tuple[int, int]:
        """Free blobs no manifest references (on demand; deletes schedule it by themselves)."""
        await self._prepare()
        return await asyncio.to_thread(self.storage.gc)

    # -- life cycle -----------------------------------------------------------------------------
    async def _prepare(self) -> None:
        if not self._prepared:
            await asyncio.to_thread(self.storage.prepare)
            self._prepared = True

    async def start(self) -> None:
        await self._prepare()
        async with self.store.read() as tx:
            registries = await tx.resources_of_type(REGISTRY_TYPE)
        for resource in registries:
            try:
                await self.open(resource)
            except OSError as e:
                log.warning("registry %s cannot listen on its port: %s", resource.name, e)
        if (self.settings.catalog_dir / "index.json").exists():
            self._catalog_import = self._spawn(self._import_catalog())
        self.schedule_gc()

    async def _import_catalog(self) -> None:
        try:
            names = await self.import_oci_layout(self.settings.catalog_dir, CATALOG)
            log.info("catalog: %d image(s) from %s", len(names), self.settings.catalog_dir)
        except (OSError, ValueError) as e:
            log.warning("catalog import from %s failed: %s", self.settings.catalog_dir, e)

    async def ready(self, target: Target) -> None:
        """The catalog answers once its start-up import is done."""
        task = self._catalog_import
        if target is self.catalog and task is not None and not task.done():
            await asyncio.shield(task)

    async def open(self, resource: Resource) -> None:
        """Serve a registry (its ARM resource realised, or kumo starting): idempotent."""
        await self._prepare()
        port = port_of(resource)
        if port is None:
            return
        name = resource.name.lower()
        self._targets[name] = Target(name, f"{self.settings.public_host}:{port}", key=resource.key)
        await self.listeners.open(port, self._app(name))

    async def remove(self, resource: Resource) -> None:
        """Stop serving a deleted registry and drop its content; GC frees the blobs."""
        name = resource.name.lower()
        target = self._targets.pop(name, None)
        port = port_of(resource)
        if port is not None and (target is None or target.key == resource.key):
            await self.listeners.close(port)
        await self._prepare()
        await asyncio.to_thread(self.storage.delete_registry, name)
        self.schedule_gc()

    def _app(self, name: str) -> Starlette:
        def target_of(_request: Request) -> Target | None:
            return self._targets.get(name)

        return Starlette(routes=registry_routes(self, target_of))

    def catalog_routes(self) -> list[Route]:
        """The built-in catalog's `/v2/…` routes, for kumo's main app."""
        return registry_routes(self, lambda _r: self.catalog, token_endpoints=False, acr_api=False)

    def schedule_gc(self) -> None:
        if self._gc_task is not None and not self._gc_task.done():
            self._gc_again = True
            return
        self._gc_task = self._spawn(self._gc_loop())

    async def _gc_loop(self) -> None:
        while True:
            self._gc_again = False
            try:
                freed, size = await self.gc()
                if freed:
                    log.info("registry GC freed %d blob(s), %d bytes", freed, size)
            except OSError as e:
                log.warning("registry GC failed: %s", e)
            if not self._gc_again:
                return

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.listeners.close_all()
