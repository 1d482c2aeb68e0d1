"""The registry data plane as Starlette routes: OCI distribution v2 (`/v2/…`), ACR's token endpoints
(`/oauth2/exchange`, `/oauth2/token`) and the ACR metadata API `az acr repository` uses (`/acr/v1/…`)."""

from __future__ import annotations

import logging
import re
import time
from asyncio import to_thread
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from kumo.registry import manifests
from kumo.registry.errors import (API_VERSION_HEADER, RegistryError, blob_unknown, name_unknown, unsupported,
                                  upload_unknown)
from kumo.registry.storage import check_name, is_digest
from kumo.registry.target import Target

if TYPE_CHECKING:
    from kumo.registry.service import RegistryService

log = logging.getLogger("kumo.registry")
ALL_METHODS = ["GET", "HEAD", "PUT", "PATCH", "POST", "DELETE"]
V2_PATHS = [
    ("uploads", re.compile(r"^(?P<name>.+)/blobs/uploads/(?P<upload>[^/]*)$")),
    ("blob", re.compile(r"^(?P<name>.+)/blobs/(?P<digest>[^/]+)$")),
    ("manifest", re.compile(r"^(?P<name>.+)/manifests/(?P<reference>[^/]+)$")),
    ("tags", re.compile(r"^(?P<name>.+)/tags/list$")),
]
ACR_PATHS = [
    ("acr_tags", re.compile(r"^(?P<name>.+)/_tags(?:/(?P<tag>[^/]+))?$")),
    ("acr_manifests", re.compile(r"^(?P<name>.+)/_manifests(?:/(?P<digest>[^/]+))?$")),
    ("acr_repo", re.compile(r"^(?P<name>[^_].*)$")),
]
CHANGEABLE = {"deleteEnabled": True, "writeEnabled": True, "readEnabled": True, "listEnabled": True}
Handler = Callable[["Call"], Awaitable[Response]]


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Call:
    """One request to one registry."""

    def __init__(self, service: "RegistryService", target: Target, request: Request, params: dict[str, str]) -> None:
        self.service, self.target, self.request, self.params = service, target, request, params
        self.storage = service.storage
        self.name = params.get("name", "")

    async def need(self, action: str, name: str | None = None, kind: str = "repository") -> None:
        await self.service.auth.authorize(self.target, self.request, [(kind, name or self.name, action)])

    def url(self, path: str) -> str:
        return f"https://{self.request.headers.get('host', self.target.login_server)}{path}"

    def query(self, name: str) -> str | None:
        return self.request.query_params.get(name)


def _page(items: list[str], call: Call, path: str, key: str, extra: dict[str, Any]) -> Response:
    """`n`/`last` paging with a `Link: <…>; rel="next"` header, as the distribution spec has it."""
    last = call.query("last")
    if last:
        items = [i for i in items if i > last]
    n_raw = call.query("n")
    headers = dict(API_VERSION_HEADER)
    if n_raw is not None:
        try:
            n = max(0, int(n_raw))
        except ValueError:
            raise RegistryError(400, "PAGINATION_NUMBER_INVALID", "invalid number of results requested",
                                {"n": n_raw}) from None
        if len(items) > n:
            items = items[:n]
            if n:
                headers["Link"] = f'<{path}?last={quote(items[-1], safe="")}&n={n}>; rel="next"'
    return JSONResponse({**extra, key: items}, headers=headers)


# -- /v2/ -------------------------------------------------------------------------------------------

async def base(call: Call) -> Response:
    await call.service.auth.authorize(call.target, call.request, [])
    return JSONResponse({}, headers=API_VERSION_HEADER)


async def catalog(call: Call) -> Response:
    await call.need("*", "catalog", "registry")
    repos = await to_thread(call.storage.repositories, call.target.name)
    return _page(repos, call, "/v2/_catalog", "repositories", {})


async def tags_list(call: Call) -> Response:
    await call.need("pull")
    if not await to_thread(call.storage.repo_exists, call.target.name, call.name):
        raise name_unknown(call.name)
    tags = [t.name for t in await to_thread(call.storage.tags, call.target.name, call.name)]
    return _page(tags, call, f"/v2/{call.name}/tags/list", "tags", {"name": call.name})


async def manifest(call: Call) -> Response:
    ref, method, reg = call.params["reference"], call.request.method, call.target.name
    if method in ("GET", "HEAD"):
        await call.need("pull")
        info, data = await to_thread(call.storage.get_manifest, reg, call.name, ref)
        headers = {**API_VERSION_HEADER, "Docker-Content-Digest": info.digest, "Content-Type": info.media_type,
                   "Content-Length": str(len(data)), "ETag": f'"{info.digest}"'}
        return Response(b"" if method == "HEAD" else data, headers=headers)
    if method == "PUT":
        await call.need("push")
        data = await call.request.body()
        digest = await to_thread(call.storage.put_manifest, reg, call.name, ref, data,
                                 call.request.headers.get("content-type"))
        headers = {**API_VERSION_HEADER, "Docker-Content-Digest": digest,
                   "Location": call.url(f"/v2/{call.name}/manifests/{digest}")}
        return Response(status_code=201, headers=headers)
    if method == "DELETE":
        await call.need("delete")
        if is_digest(ref):
            await to_thread(call.storage.delete_manifest, reg, call.name, ref)
        else:
            await to_thread(call.storage.delete_tag, reg, call.name, ref)
        call.service.schedule_gc()
        return Response(status_code=202, headers=API_VERSION_HEADER)
    raise unsupported()


async def blob(call: Call) -> Response:
    digest, method = call.params["digest"], call.request.method
    manifests.check_digest(digest)
    if method in ("GET", "HEAD"):
        await call.need("pull")
        path = await to_thread(call.storage.blob_in_repo, call.target.name, call.name, digest)
        if path is None:
            raise blob_unknown(digest)
        headers = {**API_VERSION_HEADER, "Docker-Content-Digest": digest, "ETag": f'"{digest}"',
                   "Cache-Control": "max-age=31536000"}
        if method == "HEAD":
            size = (await to_thread(path.stat)).st_size
            return Response(headers={**headers, "Content-Length": str(size),
                                     "Content-Type": "application/octet-stream"})
        return FileResponse(path, media_type="application/octet-stream", headers=headers)
    if method == "DELETE":
        await call.need("delete")
        await to_thread(call.storage.unlink, call.target.name, call.name, digest)
        call.service.schedule_gc()
        return Response(status_code=202, headers=API_VERSION_HEADER)
    raise unsupported()


def _upload_headers(call: Call, upload_id: str, size: int) -> dict[str, str]:
    return {**API_VERSION_HEADER, "Location": call.url(f"/v2/{call.name}/blobs/uploads/{upload_id}"),
            "Docker-Upload-UUID": upload_id, "Range": f"0-{max(size - 1, 0)}", "Content-Length": "0"}


def _blob_created(call: Call, digest: str) -> Response:
    return Response(status_code=201, headers={**API_VERSION_HEADER, "Docker-Content-Digest": digest,
                                              "Location": call.url(f"/v2/{call.name}/blobs/{digest}"),
                                              "Content-Length": "0"})


async def uploads(call: Call) -> Response:
    storage, reg, method = call.storage, call.target.name, call.request.method
    upload_id = call.params["upload"]
    await call.need("push")
    if not upload_id:
        if method != "POST":
            raise unsupported()
        check_name(call.name)
        mount, source = call.query("mount"), call.query("from")
        if mount and source:
            manifests.check_digest(mount)
            try:
                await call.need("pull", source)
                if await to_thread(storage.mount, reg, call.name, mount, source):
                    return _blob_created(call, mount)
            except RegistryError:
                pass  # no access to the source: an ordinary upload instead, as the spec says
        up = await to_thread(storage.start_upload, reg, call.name)
        digest = call.query("digest")
        if digest is not None:  # monolithic upload in the POST itself
            manifests.check_digest(digest)
            try:
                await storage.append(up, call.request.stream())
                await to_thread(storage.finish_upload, up, digest)
            except BaseException:
                await to_thread(storage.cancel_upload, up)
                raise
            return _blob_created(call, digest)
        return Response(status_code=202, headers=_upload_headers(call, up.id, 0))
    up = storage.upload(reg, call.name, upload_id)
    if up is None:
        raise upload_unknown(upload_id)
    if method == "GET":
        return Response(status_code=204, headers=_upload_headers(call, up.id, up.size))
    if method == "DELETE":
        await to_thread(storage.cancel_upload, up)
        return Response(status_code=204, headers=API_VERSION_HEADER)
    if method not in ("PATCH", "PUT"):
        raise unsupported()
    async with up.lock:
        content_range = call.request.headers.get("content-range")
        if content_range and method == "PATCH":
            start = content_range.removeprefix("bytes ").split("-")[0].strip()
            if not start.isdigit() or int(start) != up.size:
                return Response(status_code=416, headers=_upload_headers(call, up.id, up.size))
        await storage.append(up, call.request.stream())
        if method == "PATCH":
            return Response(status_code=202, headers=_upload_headers(call, up.id, up.size))
        digest = call.query("digest")
        if not digest:
            raise RegistryError(400, "DIGEST_INVALID", "provided digest did not match uploaded content",
                                {"reason": "the digest query parameter is required"})
        await to_thread(storage.finish_upload, up, digest)
        return _blob_created(call, digest)


# -- /acr/v1/ ---------------------------------------------------------------------------------------

def _tag_view(tag: Any) -> dict[str, Any]:
    return {"name": tag.name, "digest": tag.digest, "createdTime": iso(tag.created),
            "lastUpdateTime": iso(tag.updated), "signed": False, "changeableAttributes": CHANGEABLE}


async def acr_catalog(call: Call) -> Response:
    if call.request.method not in ("GET", "HEAD"):
        raise unsupported()
    await call.need("*", "catalog", "registry")
    repos = await to_thread(call.storage.repositories, call.target.name)
    return _page(repos, call, "/acr/v1/_catalog", "repositories", {})


async def _require_repo(call: Call) -> None:
    if not await to_thread(call.storage.repo_exists, call.target.name, call.name):
        raise name_unknown(call.name)


async def _acr_delete(call: Call, remove: Any, what: str) -> Response:
    """ACR's DELETE of a tag or manifest: 202, and unreferenced blobs are collected soon after."""
    await call.need("delete")
    await to_thread(remove, call.target.name, call.name, what)
    call.service.schedule_gc()
    return Response(status_code=202, headers=API_VERSION_HEADER)


async def acr_tags(call: Call) -> Response:
    tag_name, method, reg = call.params.get("tag"), call.request.method, call.target.name
    if method == "DELETE" and tag_name:
        return await _acr_delete(call, call.storage.delete_tag, tag_name)
    if method not in ("GET", "HEAD", "PATCH"):
        raise unsupported()
    await call.need("metadata_write" if method == "PATCH" else "metadata_read")
    await _require_repo(call)
    tags = await to_thread(call.storage.tags, reg, call.name)
    extra = {"registry": call.target.login_server, "imageName": call.name}
    if tag_name:
        found = next((t for t in tags if t.name == tag_name), None)
        if found is None:
            raise RegistryError(404, "TAG_UNKNOWN", "the specified tag does not exist", {"tag": tag_name})
        return JSONResponse({**extra, "tag": _tag_view(found)}, headers=API_VERSION_HEADER)
    if call.query("orderby") == "timedesc":
        tags.sort(key=lambda t: t.updated, reverse=True)
    elif call.query("orderby") == "timeasc":
        tags.sort(key=lambda t: t.updated)
    last, n = call.query("last"), call.query("n")
    if last:
        tags = [t for t in tags if t.name > last]
    headers = dict(API_VERSION_HEADER)
    if n and n.isdigit() and len(tags) > int(n):
        tags = tags[:int(n)]
        headers["Link"] = f'</acr/v1/{call.name}/_tags?last={quote(tags[-1].name, safe="")}&n={n}>; rel="next"'
    return JSONResponse({**extra, "tags": [_tag_view(t) for t in tags]}, headers=headers)


async def _manifest_view(call: Call, info: Any, tags: list[Any]) -> dict[str, Any]:
    return {"digest": info.digest, "imageSize": info.size, "createdTime": iso(info.created),
            "lastUpdateTime": iso(info.created), "mediaType": info.media_type,
            "tags": [t.name for t in tags if t.digest == info.digest], "changeableAttributes": CHANGEABLE}


async def acr_manifests(call: Call) -> Response:
    digest, method, reg = call.params.get("digest"), call.request.method, call.target.name
    if method == "DELETE" and digest:
        return await _acr_delete(call, call.storage.delete_manifest, digest)
    if method not in ("GET", "HEAD"):
        raise unsupported()
    await call.need("metadata_read")
    await _require_repo(call)
    infos = await to_thread(call.storage.manifests_of, reg, call.name)
    tags = await to_thread(call.storage.tags, reg, call.name)
    extra = {"registry": call.target.login_server, "imageName": call.name}
    if digest:
        found = next((i for i in infos if i.digest == digest), None)
        if found is None:
            raise RegistryError(404, "MANIFEST_UNKNOWN", "manifest unknown", {"digest": digest})
        return JSONResponse({**extra, "manifest": await _manifest_view(call, found, tags)}, headers=API_VERSION_HEADER)
    return JSONResponse({**extra, "manifests": [await _manifest_view(call, i, tags) for i in infos]},
                        headers=API_VERSION_HEADER)


async def acr_repo(call: Call) -> Response:
    method, reg = call.request.method, call.target.name
    if method == "DELETE":
        await call.need("delete")
        digests, tags = await to_thread(call.storage.delete_repository, reg, call.name)
        call.service.schedule_gc()
        return JSONResponse({"manifestsDeleted": digests, "tagsDeleted": tags}, status_code=202,
                            headers=API_VERSION_HEADER)
    if method not in ("GET", "HEAD", "PATCH"):
        raise unsupported()
    await call.need("metadata_write" if method == "PATCH" else "metadata_read")
    await _require_repo(call)
    infos = await to_thread(call.storage.manifests_of, reg, call.name)
    tags = await to_thread(call.storage.tags, reg, call.name)
    created = min((i.created for i in infos), default=time.time())
    updated = max([i.created for i in infos] + [t.updated for t in tags], default=created)
    return JSONResponse({"registry": call.target.login_server, "imageName": call.name,
                         "createdTime": iso(created), "lastUpdateTime": iso(updated),
                         "manifestCount": len(infos), "tagCount": len(tags), "changeableAttributes": CHANGEABLE},
                        headers=API_VERSION_HEADER)


# -- wiring -----------------------------------------------------------------------------------------

HANDLERS: dict[str, Handler] = {"uploads": uploads, "blob": blob, "manifest": manifest, "tags": tags_list,
                                "acr_tags": acr_tags, "acr_manifests": acr_manifests, "acr_repo": acr_repo}


def registry_routes(service: "RegistryService", target_of: Callable[[Request], Target | None], *,
                    token_endpoints: bool = True, acr_api: bool = True) -> list[Route]:
    """The routes of one registry; `target_of` says which registry a request is for."""

    async def run(request: Request, pick: Callable[[Call], Awaitable[Response]] | None,
                  paths: list[tuple[str, re.Pattern[str]]], prefix: str) -> Response:
        try:
            target = target_of(request)
            if target is None:
                raise RegistryError(404, "NAME_UNKNOWN", "this registry no longer exists")
            path = request.url.path.removeprefix(prefix)
            call = Call(service, target, request, {})
            handler = pick
            if handler is None:
                for kind, pattern in paths:
                    if (m := pattern.match(path)) is not None:
                        call = Call(service, target, request, {k: v or "" for k, v in m.groupdict().items()})
                        handler = HANDLERS[kind]
                        break
            if handler is None:
                raise RegistryError(404, "NAME_UNKNOWN", "no such registry API", {"path": request.url.path})
            if call.name:
                check_name(call.name)
            await service.ready(target)
            return await handler(call)
        except RegistryError as e:
            return e.response()
        except Exception:
            log.exception("registry error on %s %s", request.method, request.url.path)
            return RegistryError(500, "UNKNOWN", "kumo hit an internal error; see kumo's log").response()

    async def v2_base(request: Request) -> Response:
        return await run(request, base, [], "")

    async def v2(request: Request) -> Response:
        if request.url.path.rstrip("/") == "/v2/_catalog":
            return await run(request, catalog, [], "")
        return await run(request, None, V2_PATHS, "/v2/")

    async def acr(request: Request) -> Response:
        if request.url.path.rstrip("/") == "/acr/v1/_catalog":
            return await run(request, acr_catalog, [], "")
        return await run(request, None, ACR_PATHS, "/acr/v1/")

    async def exchange(request: Request) -> Response:
        async def go(call: Call) -> Response:
            form = await request.form()
            return JSONResponse(await service.auth.exchange(call.target, {k: str(v) for k, v in form.items()}))
        return await run(request, go, [], "")

    async def token(request: Request) -> Response:
        async def go(call: Call) -> Response:
            return JSONResponse(await service.auth.token(call.target, request))
        return await run(request, go, [], "")

    routes = [Route("/v2/", v2_base, methods=["GET", "HEAD"]), Route("/v2", v2_base, methods=["GET", "HEAD"]),
              Route("/v2/{path:path}", v2, methods=ALL_METHODS)]
    if token_endpoints:
        routes += [Route("/oauth2/exchange", exchange, methods=["POST"]),
                   Route("/oauth2/token", token, methods=["GET", "POST"])]
    if acr_api:
        routes.append(Route("/acr/v1/{path:path}", acr, methods=ALL_METHODS))
    return routes
