"""ARM's error envelope: `{"error": {"code", "message", "target", "details"}}` with Azure's codes."""

from __future__ import annotations

from typing import Any


class ArmError(Exception):
    """An error a client sees as ARM would send it. Raise it anywhere below the front door."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        target: str | None = None,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.target = target
        self.details = details or []
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.target:
            error["target"] = self.target
        if self.details:
            error["details"] = self.details
        return {"error": error}

    @classmethod
    def from_body(cls, status: int, body: dict[str, Any]) -> "ArmError":
        e = body.get("error") or {}
        return cls(status, e.get("code", "InternalServerError"), e.get("message", ""),
                   target=e.get("target"), details=e.get("details"))


# The errors raised in more than one place, so their wording stays Azure's everywhere.

def bad_request(code: str, message: str, target: str | None = None) -> ArmError:
    return ArmError(400, code, message, target=target)


def not_found(resource_type: str, name: str, resource_group: str | None) -> ArmError:
    where = f" under resource group '{resource_group}'" if resource_group else ""
    return ArmError(
        404,
        "ResourceNotFound",
        f"The Resource '{resource_type}/{name}'{where} was not found. "
        "For more details please go to https://aka.ms/ARMResourceNotFoundFix",
    )


def resource_group_not_found(name: str) -> ArmError:
    return ArmError(404, "ResourceGroupNotFound", f"Resource group '{name}' could not be found.")


def invalid_request_content(detail: str) -> ArmError:
    return ArmError(400, "InvalidRequestContent",
                    f"The request content was invalid and could not be deserialized: '{detail}'.")


def conflict(code: str, message: str) -> ArmError:
    return ArmError(409, code, message)
