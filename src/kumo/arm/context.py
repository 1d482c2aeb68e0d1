"""What a request handler gets: the long-lived services and this request's caller and inputs."""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import json5
from starlette.requests import Request

from kumo.arm.errors import ArmError, invalid_request_content
from kumo.config import Settings
from kumo.store import Store

if TYPE_CHECKING:
    from starlette.responses import Response

    from kumo.arm.auth import Authenticator, Caller
    from kumo.arm.ids import Extension
    from kumo.arm.lro import Operations
    from kumo.controllers.container_groups.controller import ContainerController
    from kumo.controllers.disks import DiskController
    from kumo.controllers.metrics.service import MetricsService
    from kumo.controllers.network import NetworkController
    from kumo.controllers.scale_sets import ScaleSetController
    from kumo.controllers.virtual_machines.controller import VmController
    from kumo.identity.endpoints import IdentityService
    from kumo.providers.base import ProviderRegistry

API_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}(-(preview|alpha|beta|rc|privatepreview))?$", re.IGNORECASE)
MAX_BODY = 4 * 1024 * 1024  # ARM's own request limit (templates included)
MAX_DEPTH = 64
MAX_INT_BITS = 13_000  # about 3,900 decimal digits: Python refuses to print ints over 4,300 digits


@dataclass
class Services:
    settings: Settings
    store: Store
    operations: "Operations"
    providers: "ProviderRegistry"
    auth: "Authenticator"
    identity: "IdentityService"
    network: "NetworkController"
    containers: "ContainerController"
    vms: "VmController"
    disks: "DiskController"
    scale_sets: "ScaleSetController" = None  # type: ignore[assignment]  # made once the other services exist
    metrics: "MetricsService | None" = None  # set by server.build_services
    # `{resource id}/providers/{namespace}/…` handlers by lower-cased namespace (arm.router._extension)
    extensions: dict[str, Callable[["RequestContext", "Extension"], Awaitable["Response"]]] = field(
        default_factory=dict)


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of a JSON value, stopping at `limit` (iterative: no recursion blow-up)."""
    stack = [(value, 1)]
    deepest = 0
    while stack:
        v, d = stack.pop()
        deepest = max(deepest, d)
        if deepest > limit:
            return deepest
        if isinstance(v, dict):
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, d + 1) for x in v)
    return deepest


@dataclass
class RequestContext:
    services: Services
    request: Request
    caller: "Caller"
    api_version: str
    _body: Any = field(default=None, init=False)
    _body_read: bool = field(default=False, init=False)

    @property
    def base_url(self) -> str:
        return f"https://{self.request.headers.get('host', self.request.url.netloc)}"

    @property
    def method(self) -> str:
        return self.request.method

    def query(self, name: str, default: str | None = None) -> str | None:
        """Query parameters, matched case-insensitively (`$filter`, `$Filter`, …)."""
        lname = name.lower()
        for k, v in self.request.query_params.multi_items():
            if k.lower() == lname:
                return v
        return default

    async def json_body(self, *, required: bool = True) -> Any:
        """The request body as JSON, with ARM's InvalidRequestContent for anything malformed."""
        if self._body_read:
            return self._body
        raw = await self._read_body()
        self._body_read = True
        if not raw.strip():
            if required:
                raise invalid_request_content("The request body is empty")
            self._body = None
            return None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise invalid_request_content("The request body is not valid UTF-8") from None
        try:
            self._body = json.loads(text, parse_float=_float, parse_constant=_constant)
        except (json.JSONDecodeError, RecursionError) as e:
            # ARM reads JSON with comments, unquoted names and trailing commas (JSONC), and az sends
            # templates that way; the lenient parser is slower, so it runs off the event loop.
            self._body = await asyncio.to_thread(_lenient_json, text, e)
        except ValueError as e:  # an integer of more than 4,300 digits
            raise invalid_request_content(str(e)[:200]) from None
        if _depth(self._body, MAX_DEPTH) > MAX_DEPTH:
            raise invalid_request_content(f"The JSON nesting depth exceeds the maximum of {MAX_DEPTH}")
        if _SURROGATE_ESCAPE.search(text):  # "\ud800" alone parses but can never be written out again
            try:
                json.dumps(self._body, ensure_ascii=False).encode("utf-8")
            except UnicodeEncodeError:
                raise invalid_request_content("The request body holds an unpaired UTF-16 surrogate") from None
        return self._body

    async def _read_body(self) -> bytes:
        """The body, refused as soon as it is known to exceed MAX_BODY (by Content-Length or while
        streaming a chunked one), so an oversize request never sits whole in memory."""
        declared = self.request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY:
            raise _too_large()
        chunks, size = [], 0
        async for chunk in self.request.stream():
            size += len(chunk)
            if size > MAX_BODY:
                raise _too_large()
            chunks.append(chunk)
        raw = b"".join(chunks)
        self.request._body = raw  # what Request.body() caches, for any later reader of the consumed stream
        return raw

    async def object_body(self) -> dict[str, Any]:
        body = await self.json_body()
        if not isinstance(body, dict):
            raise invalid_request_content("The request body must be a JSON object")
        return body


def _too_large() -> ArmError:
    return ArmError(413, "RequestContentTooLarge",
                    f"The request content size exceeds the maximum allowed size of {MAX_BODY} bytes.")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999: stored as Infinity, which JSON (and PostgreSQL) can't hold
        raise invalid_request_content(f"The number '{text[:32]}' is out of range")
    return value


def _int(text: str, base: int = 10) -> int:
    """JSONC integers (hexadecimal too), no larger than can be written out again."""
    try:
        value = int(text, base)
    except ValueError:
        value = None
    if value is None or value.bit_length() > MAX_INT_BITS:
        raise invalid_request_content(f"The number '{text[:32]}' is out of range")
    return value


def _constant(name: str) -> Any:
    raise invalid_request_content(f"Unexpected character encountered while parsing value: {name}")


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _lenient_json(text: str, strict_error: Exception) -> Any:
    try:
        return json5.loads(text, parse_float=_float, parse_int=_int, parse_constant=_constant)
    except (ValueError, RecursionError):
        raise invalid_request_content(f"Unexpected character encountered while parsing value: {strict_error}") from None


def check_api_version(value: str | None) -> str:
    if not value:
        raise ArmError(400, "MissingApiVersionParameter",
                       "The api-version query parameter (?api-version=) is required for all requests.")
    if not API_VERSION.match(value):
        raise ArmError(400, "InvalidApiVersionParameter",
                       f"The api-version '{value}' is invalid. The supported versions are of the form "
                       "'yyyy-mm-dd' or 'yyyy-mm-dd-preview'.")
    return value
