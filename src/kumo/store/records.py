"""Plain records the store hands out; nothing here touches the database."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Resource:
    key: str
    id: str
    subscription_id: str
    resource_group: str
    type: str
    name: str
    body: dict[str, Any]
    provisioning_state: str = "Succeeded"
    location: str | None = None
    parent_key: str | None = None
    desired_gen: int = 1
    observed_gen: int = 0
    created_at: float = 0.0
    updated_at: float = 0.0

    def body_json(self) -> str:
        return json.dumps(self.body, separators=(",", ":"))


@dataclass
class Operation:
    id: str
    subscription_id: str
    namespace: str
    location: str
    kind: str
    resource_key: str | None
    params: dict[str, Any] = field(default_factory=dict)
    status: str = "InProgress"
    percent_complete: float = 0.0
    error: dict[str, Any] | None = None
    error_status: int | None = None
    result: Any = None
    created_at: float = 0.0
    ended_at: float | None = None

    @property
    def done(self) -> bool:
        return self.status in ("Succeeded", "Failed", "Canceled")


@dataclass
class Event:
    resource_key: str
    time: float
    kind: str
    message: str


@dataclass
class Tenant:
    id: str
    display_name: str
    default_domain: str


@dataclass
class Subscription:
    id: str
    tenant_id: str
    display_name: str
    state: str = "Enabled"


@dataclass
class Principal:
    object_id: str
    app_id: str
    tenant_id: str
    display_name: str
    kind: str
    secret_hash: str


@dataclass
class RoleAssignment:
    id: str
    principal_id: str
    scope: str
    role: str
