"""Autoscale's webhook notifications: Azure's payload (`{"version":"1.0","status":"Activated",
"operation":"Scale Out"|"Scale In","context":{…},"properties":{…}}`), POSTed to each webhook of the
setting's notifications. Host hygiene: only loopback addresses are accepted at PUT, and checked again
here (a redirect is never followed), so nothing leaves the host."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import httpx

from kumo.arm.ids import parse_resource_id
from kumo.providers.insights.autoscale_schema import loopback_uri
from kumo.store import Resource

log = logging.getLogger("kumo.autoscale")
TIMEOUT = 10.0


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int((t % 1) * 1e7):07d}Z"


def payload(setting: Resource, target: Resource, old: int, new: int, details: str, when: float,
            properties: dict[str, str]) -> dict[str, Any]:
    rid = parse_resource_id(target.id)
    return {
        "version": "1.0",
        "status": "Activated",
        "operation": "Scale Out" if new > old else "Scale In",
        "context": {
            "timestamp": _iso(when),
            "id": setting.id,
            "name": setting.name,
            "details": details,
            "subscriptionId": target.subscription_id,
            "resourceGroupName": rid.resource_group if rid else target.resource_group,
            "resourceName": target.name,
            "resourceType": target.type,
            "resourceId": target.id,
            "portalLink": "",  # kumo has no portal
            "resourceRegion": target.location or "",
            "oldCapacity": str(old),
            "newCapacity": str(new),
        },
        "properties": properties,
    }


def webhooks_of(setting: Resource) -> list[dict[str, Any]]:
    notes = (setting.body.get("properties") or {}).get("notifications") or []
    return [h for n in notes for h in (n.get("webhooks") or []) if h.get("serviceUri")]


async def post(uri: str, body: dict[str, Any], ca_bundle: Path | None) -> None:
    if not loopback_uri(uri):
        log.warning("autoscale webhook %s skipped: kumo posts only to loopback addresses", uri)
        return
    verify: Any = str(ca_bundle) if ca_bundle and ca_bundle.exists() else True
    try:
        async with httpx.AsyncClient(timeout=TIMEOUT, verify=verify, follow_redirects=False) as client:
            r = await client.post(uri, json=body)
        if r.status_code >= 300:
            log.warning("autoscale webhook %s answered %s", uri, r.status_code)
    except httpx.HTTPError as e:
        log.warning("autoscale webhook %s failed: %s", uri, e)
