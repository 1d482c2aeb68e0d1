"""Boot diagnostics: the guest's serial console log, handed out as Azure's managed boot diagnostics do it.

`POST …/retrieveBootDiagnosticsData?sasUriExpirationTimeInMinutes=N` answers a time-limited URL (Azure: a
blob SAS URI); here it is `https://<kumo>/kumo/bootDiagnostics/<token>/serialconsole.log`, the token an
HMAC over the VM's key and the expiry, with a key kumo makes at start (URLs end with the process, as
SAS URIs end with their expiry). `az vm boot-diagnostics get-boot-log` fetches it with plain requests,
no bearer token, which is why the URL carries its own signature."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

PATH = "/kumo/bootDiagnostics/{token}/serialconsole.log"
DEFAULT_MINUTES = 120
MAX_MINUTES = 24 * 60


class BootLogUrls:
    def __init__(self, read_log: Callable[[str], Awaitable[str | None]]) -> None:
        self._key = secrets.token_bytes(32)
        self._read_log = read_log  # VM key -> its serial log (None: no such VM now)

    def _sign(self, payload: bytes) -> str:
        return base64.urlsafe_b64encode(hmac.new(self._key, payload, hashlib.sha256).digest()[:20]).decode().rstrip("=")

    def url(self, base_url: str, vm_key: str, minutes: int) -> str:
        payload = json.dumps([vm_key, int(time.time()) + 60 * minutes]).encode()
        token = base64.urlsafe_b64encode(payload).decode().rstrip("=") + "." + self._sign(payload)
        return base_url + PATH.replace("{token}", token)

    def _verify(self, token: str) -> str | None:
        data, _, sig = token.partition(".")
        try:
            payload = base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))
            key, expires = json.loads(payload)
        except (ValueError, TypeError):
            return None
        if not hmac.compare_digest(sig, self._sign(payload)) or time.time() > expires:
            return None
        return str(key)

    async def serve(self, request: Request) -> Response:
        key = self._verify(request.path_params["token"])
        if key is None:  # what a blob store answers to a bad or expired SAS
            return JSONResponse({"error": {"code": "AuthenticationFailed", "message": "The signature is invalid "
                                           "or the URL has expired: ask for a new one (az vm boot-diagnostics "
                                           "get-boot-log-uris)."}}, status_code=403)
        log = await self._read_log(key)
        if log is None:
            return JSONResponse({"error": {"code": "BlobNotFound", "message": "The virtual machine no longer "
                                           "exists."}}, status_code=404)
        return PlainTextResponse(log)
