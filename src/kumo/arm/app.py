"""The ASGI application: identity endpoints, cloud metadata, and the ARM front door
(parse -> authenticate -> api-version -> route -> respond, with ARM's headers and error envelope)."""

from __future__ import annotations

import logging
import re
import uuid

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from kumo.arm import router
from kumo.arm.context import RequestContext, Services, check_api_version
from kumo.arm.errors import ArmError
from kumo.providers.compute.marketplace import ALIAS_DOC_PATH, Marketplace
from kumo.registry.service import RegistryService
from kumo.controllers.container_groups import sessions
from kumo.controllers.virtual_machines import boot_diagnostics

log = logging.getLogger("kumo.arm")
ALL_METHODS = ["GET", "HEAD", "PUT", "PATCH", "POST", "DELETE", "OPTIONS"]


def _request_headers(request: Request) -> dict[str, str]:
    return {
        "x-ms-request-id": str(uuid.uuid4()),
        "x-ms-correlation-request-id": request.headers.get("x-ms-correlation-request-id") or str(uuid.uuid4()),
        **({"x-ms-client-request-id": cid} if (cid := request.headers.get("x-ms-client-request-id")) else {}),
    }


def error_response(e: ArmError) -> Response:
    return JSONResponse(e.body(), status_code=e.status, headers=e.headers)


def build_app(services: Services) -> ASGIApp:
    async def arm(request: Request) -> Response:
        base_url = f"https://{request.headers.get('host', request.url.netloc)}"
        try:
            caller = await services.auth.authenticate(request, base_url)
            api_version = check_api_version(request.query_params.get("api-version")
                                            or _ci_query(request, "api-version"))
            ctx = RequestContext(services, request, caller, api_version)
            response = await router.dispatch(ctx)
        except ArmError as e:
            response = error_response(e)
        except Exception:
            log.exception("unhandled error on %s %s", request.method, request.url.path)
            response = error_response(ArmError(500, "InternalServerError",
                                               "kumo hit an internal error; see kumo's log for details."))
        response.headers.update(_request_headers(request))
        if request.method == "HEAD":
            response.body = b""
        return response

    async def metadata_endpoints(request: Request) -> Response:
        base = f"https://{request.headers.get('host', request.url.netloc)}"
        return JSONResponse({
            "name": "kumo",
            "resourceManager": f"{base}/",
            "portal": f"{base}/",
            "authentication": {"loginEndpoint": f"{base}/", "audiences": [f"{base}/"], "tenant": "common",
                               "identityProvider": "AAD"},
            "media": f"{base}/", "graphAudience": f"{base}/", "graph": f"{base}/", "batch": f"{base}/",
            "microsoftGraphResourceId": f"{base}/", "sqlManagement": f"{base}/", "gallery": f"{base}/",
            "activeDirectoryDataLake": f"{base}/",
            # az reads image aliases (`az vm create --image Debian12`) from here: kumo's own images
            "vmImageAliasDoc": f"{base}{ALIAS_DOC_PATH}",
            "suffixes": {"acrLoginServer": "azurecr.kumo.local", "keyVaultDns": "vault.kumo.local",
                         "storage": "core.kumo.local", "sqlServerHostname": "database.kumo.local"},
        }, headers=_request_headers(request))

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    routes = [
        Route("/metadata/endpoints", metadata_endpoints),
        Route("/kumo/health", health),
        *([Route(ALIAS_DOC_PATH, market.serve_alias_doc)] if (market := Marketplace.of(services)) else []),
        *services.identity.routes(),
        WebSocketRoute(sessions.PATH, services.containers.sessions.serve),
        Route(boot_diagnostics.PATH, services.vms.boot_logs.serve),
        *(registry.catalog_routes() if (registry := RegistryService.of(services)) else []),  # catalog at /v2/
        Route("/{path:path}", arm, methods=ALL_METHODS),
    ]
    # Paths no route matches (the catch-all's pattern stops at a newline, e.g. `%0A` in a name) get ARM's envelope.
    handlers = {404: _not_found, 405: _method_not_allowed}
    return CollapseSlashes(RefuseUnknownMethods(Starlette(routes=routes, exception_handlers=handlers)))


async def _not_found(request: Request, exc: Exception) -> Response:
    return error_response(ArmError(404, "NotFound", "No HTTP resource was found that matches the request URI."))


async def _method_not_allowed(request: Request, exc: Exception) -> Response:
    return error_response(_method_error(request.method))


def _method_error(method: str) -> ArmError:
    return ArmError(405, "MethodNotAllowed", f"The requested resource does not support http method '{method[:32]}'.")


class CollapseSlashes:
    """`https://host:port//metadata/endpoints` (an endpoint with a trailing slash joined to a path) is
    the same resource as with one slash, as on Azure."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and "//" in scope["path"]:
            scope = dict(scope)
            scope["path"] = re.sub("/{2,}", "/", scope["path"])
            scope["raw_path"] = scope["path"].encode()
        await self.app(scope, receive, send)


class RefuseUnknownMethods:
    """Methods no route serves (TRACE, PROPFIND, …) get ARM's 405 envelope rather than Starlette's text."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in ALL_METHODS:
            await error_response(_method_error(scope["method"]))(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _ci_query(request: Request, name: str) -> str | None:
    for k, v in request.query_params.multi_items():
        if k.lower() == name:
            return v
    return None
