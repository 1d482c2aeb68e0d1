"""The OCI distribution error envelope: `{"errors": [{"code", "message", "detail"}]}` with the spec's codes."""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

API_VERSION_HEADER = {"Docker-Distribution-API-Version": "registry/2.0"}


class RegistryError(Exception):
    def __init__(self, status: int, code: str, message: str, detail: Any = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.detail = status, code, message, detail
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.detail is not None:
            error["detail"] = self.detail
        return JSONResponse({"errors": [error]}, status_code=self.status,
                            headers={**API_VERSION_HEADER, **self.headers})


def blob_unknown(digest: str) -> RegistryError:
    return RegistryError(404, "BLOB_UNKNOWN", "blob unknown to registry", {"digest": digest})


def manifest_unknown(reference: str) -> RegistryError:
    return RegistryError(404, "MANIFEST_UNKNOWN", "manifest unknown", {"reference": reference})


def name_unknown(name: str) -> RegistryError:
    return RegistryError(404, "NAME_UNKNOWN", "repository name not known to registry", {"name": name})


def upload_unknown(upload: str) -> RegistryError:
    return RegistryError(404, "BLOB_UPLOAD_UNKNOWN", "blob upload unknown to registry", {"uuid": upload})


def unsupported(message: str = "The operation is unsupported.") -> RegistryError:
    return RegistryError(405, "UNSUPPORTED", message)


def denied(message: str = "requested access to the resource is denied") -> RegistryError:
    return RegistryError(403, "DENIED", message)
