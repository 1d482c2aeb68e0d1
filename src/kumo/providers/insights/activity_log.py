"""The activity log: `GET /subscriptions/{s}/providers/microsoft.insights/eventtypes/management/values`
with Azure's `$filter` (`eventTimestamp ge '…' and eventTimestamp le '…'`, then at most one of
`resourceGroupName`, `resourceUri`/`resourceId`, `resourceProvider`, `correlationId` and optionally
`caller`, `status`, `levels`), answered in Azure's EventData shape from the store's per-resource events,
newest first: autoscale actions (category Autoscale, `Microsoft.Insights/AutoscaleSettings/Scaleup/Action`
and `…/Scaledown/Action`, the reason as the description) and resource writes and deletes
(category Administrative). az sends the timestamps unquoted; both forms are read."""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from starlette.responses import JSONResponse, Response

from kumo.arm.context import RequestContext
from kumo.arm.errors import bad_request
from kumo.arm.ids import parse_resource_id
from kumo.arm.paging import keyset_page
from kumo.providers.base import ProviderRead, ProviderReads, TypeInfo, match_path
from kumo.providers.insights.autoscale_schema import NAMESPACE
from kumo.store import Event

API_VERSIONS = ("2017-03-01-preview", "2015-04-01")
RETENTION_DAYS = 90  # Azure keeps the activity log 90 days and refuses older start times
CLAUSE = re.compile(r"\s*(?P<field>[A-Za-z]+)\s+(?P<op>eq|ge|gt|le|lt)\s+(?P<value>'(?:[^']|'')*'|\S+)\s*"
                    r"(?:(?P<more>and)\s|$)", re.IGNORECASE)
POST_FILTERS = ("resourceprovider", "correlationid", "caller", "status", "levels")
EVENT_NS = uuid.UUID("6b0cbd4e-8f4e-4cf0-9a6f-6b756d6f6c67")  # kumo's namespace for event ids
TICKS_AT_EPOCH = 621355968000000000  # .NET ticks at 1970-01-01, as Azure's event ids carry them
SEQ_SPACE = 10 ** 13  # page keys count down: newest first

AUTOSCALE = {  # event kind -> operation, status, event name, level
    "Autoscale/ScaleOut": ("Microsoft.Insights/AutoscaleSettings/Scaleup/Action", "Succeeded", "AutoscaleAction",
                           "Informational"),
    "Autoscale/ScaleIn": ("Microsoft.Insights/AutoscaleSettings/Scaledown/Action", "Succeeded", "AutoscaleAction",
                          "Informational"),
    "Autoscale/ScaleOutFailed": ("Microsoft.Insights/AutoscaleSettings/Scaleup/Action", "Failed", "AutoscaleAction",
                                 "Error"),
    "Autoscale/ScaleInFailed": ("Microsoft.Insights/AutoscaleSettings/Scaledown/Action", "Failed", "AutoscaleAction",
                                "Error"),
    "Autoscale/Flapping": ("Microsoft.Insights/AutoscaleSettings/Flapping/Action", "Succeeded", "FlappingOccurred",
                           "Warning"),
}
ADMINISTRATIVE = {  # event kind (lower) -> verb, status, HTTP status code
    "accepted": ("write", "Accepted", "Accepted"), "updated": ("write", "Accepted", "OK"),
    "created": ("write", "Succeeded", "Created"), "succeeded": ("write", "Succeeded", "OK"),
    "failed": ("write", "Failed", "InternalServerError"), "canceled": ("write", "Canceled", "OK"),
    "deleting": ("delete", "Accepted", "Accepted"), "deleted": ("delete", "Succeeded", "OK"),
}


@dataclass
class Query:
    start: float
    end: float
    scope: str  # lower-cased id whose events (and its children's) are listed
    where: dict[str, str]  # post-filters: lower-cased field -> lower-cased value


@dataclass
class Item:
    seq: int
    event: Event
    resource_id: str  # as the resource spells it, when it still exists


def _time(value: str, clause: str) -> float:
    text = value.strip().strip("'").replace(" ", "+")  # a '+' of an offset sent unencoded arrives as a space
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise bad_request("BadRequest", f"The $filter clause '{clause}' has no valid date-time: use ISO 8601, "
                          "such as 2024-01-01T00:00:00Z.", "$filter") from None
    return (t if t.tzinfo else t.replace(tzinfo=timezone.utc)).timestamp()


def parse_filter(text: str | None, subscription: str, now: float) -> Query:
    if not text or not text.strip():
        raise bad_request("BadRequest", "The $filter query parameter is required, with at least a start time: "
                          "$filter=eventTimestamp ge '2024-01-01T00:00:00Z' and eventTimestamp le '…'.", "$filter")
    start: float | None = None
    end = now
    scope = f"/subscriptions/{subscription}".lower()
    where: dict[str, str] = {}
    pos = 0
    while pos < len(text):
        m = CLAUSE.match(text, pos)
        if m is None:
            raise bad_request("BadRequest", f"The $filter '{text[:200]}' is not supported at position {pos}: it is "
                              "'eventTimestamp ge … and eventTimestamp le …' followed by 'and <field> eq '<value>'' "
                              "clauses (resourceGroupName, resourceUri, resourceProvider, correlationId, caller, "
                              "status, levels).", "$filter")
        field, op, raw = m.group("field").lower(), m.group("op").lower(), m.group("value")
        value = raw[1:-1].replace("''", "'") if raw.startswith("'") else raw
        clause = m.group(0).strip()
        if field == "eventtimestamp" and op in ("ge", "gt"):
            start = _time(value, clause)
        elif field == "eventtimestamp":
            end = _time(value, clause)
        elif op != "eq":
            raise bad_request("BadRequest", f"The $filter clause '{clause}' is not supported: only eventTimestamp "
                              "takes ge/le; other fields take eq.", "$filter")
        elif field == "resourcegroupname":
            scope = f"/subscriptions/{subscription}/resourcegroups/{value}".lower()
        elif field in ("resourceuri", "resourceid"):
            scope = value.rstrip("/").lower()
        elif field in POST_FILTERS:
            where[field] = value.lower()
        else:
            raise bad_request("BadRequest", f"The $filter field '{m.group('field')}' is not supported.", "$filter")
        pos = m.end()
        if not m.group("more") and pos < len(text):
            raise bad_request("BadRequest", f"The $filter '{text[:200]}' has clauses not joined by 'and'.", "$filter")
    if start is None:
        raise bad_request("BadRequest", "The $filter must give a start time: 'eventTimestamp ge <date-time>'.",
                          "$filter")
    if start < now - RETENTION_DAYS * 86400:
        raise bad_request("BadRequest", f"The start time cannot be more than {RETENTION_DAYS} days in the past.",
                          "$filter")
    if end < start:
        raise bad_request("BadRequest", "The end time must not be earlier than the start time.", "$filter")
    return Query(start, end, scope, where)


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int((t % 1) * 1e7):07d}Z"


def _named(value: str) -> dict[str, str]:
    return {"value": value, "localizedValue": value}


def _where(resource_id: str) -> tuple[str, str, str]:
    """(resource group, provider namespace, resource type) of an id."""
    rid = parse_resource_id(resource_id)
    if rid is not None:
        return rid.resource_group or "", rid.namespace, rid.type
    parts = resource_id.strip("/").split("/")
    group = parts[3] if len(parts) >= 4 and parts[2].lower() == "resourcegroups" else ""
    return group, "Microsoft.Resources", ("Microsoft.Resources/resourceGroups" if group
                                          else "Microsoft.Resources/subscriptions")


def event_data(item: Item, subscription: str, tenant: str) -> dict[str, Any]:
    ev, rid = item.event, item.resource_id
    group, namespace, rtype = _where(rid)
    data_id = str(uuid.uuid5(EVENT_NS, f"{subscription.lower()}/{item.seq}"))
    stamp = _iso(ev.time)
    properties: dict[str, str]
    if ev.kind in AUTOSCALE:
        operation, status, name, level = AUTOSCALE[ev.kind]
        try:
            detail = json.loads(ev.message)
        except ValueError:
            detail = {"description": ev.message}
        description, caller, category = str(detail.get("description", "")), "Microsoft.Insights/autoscaleSettings", \
            "Autoscale"
        properties = {"Description": description, "ResourceName": str(detail.get("target") or ""),
                      "OldInstancesCount": str(detail.get("old", "")),
                      "NewInstancesCount": str(detail.get("new") if detail.get("new") is not None else ""),
                      "ActiveAutoscaleProfile": str(detail.get("profile") or ""), "LastScaleActionTime": stamp}
    else:
        verb, status, code = ADMINISTRATIVE.get(ev.kind.lower(), ("action", "Succeeded", "OK"))
        operation = f"{rtype}/{verb}"
        name = "EndRequest" if status in ("Succeeded", "Failed", "Canceled") else "BeginRequest"
        level = "Error" if status == "Failed" else "Informational"
        description, category = ev.message, "Administrative"
        caller = ev.message.rsplit(" by ", 1)[1].strip() if " by " in ev.message else "kumo"
        properties = {"statusCode": code, "message": ev.message, "eventCategory": category,
                      "entity": rid, "hierarchy": tenant}
    return {
        "authorization": {"action": operation, "scope": rid},
        "caller": caller,
        "channels": "Operation",
        "claims": {},
        "correlationId": data_id,
        "description": description,
        "eventDataId": data_id,
        "eventName": _named(name),
        "category": _named(category),
        "eventTimestamp": stamp,
        "id": f"{rid}/events/{data_id}/ticks/{int(ev.time * 1e7) + TICKS_AT_EPOCH}",
        "level": level,
        "operationId": data_id,
        "operationName": _named(operation),
        "resourceGroupName": group,
        "resourceProviderName": _named(namespace),
        "resourceType": _named(rtype),
        "resourceId": rid,
        "status": _named(status),
        "subStatus": _named(""),
        "submissionTimestamp": stamp,
        "subscriptionId": subscription,
        "tenantId": tenant,
        "properties": properties,
    }


def _keep(query: Query, data: dict[str, Any]) -> bool:
    for field, value in query.where.items():
        have = {"resourceprovider": data["resourceProviderName"]["value"], "correlationid": data["correlationId"],
                "caller": data["caller"], "status": data["status"]["value"], "levels": data["level"]}[field]
        if have.lower() not in value.split(","):
            return False
    return True


class ActivityLog(ProviderReads):
    namespace = NAMESPACE
    types = (TypeInfo("eventtypes", API_VERSIONS), TypeInfo("eventtypes/values", API_VERSIONS))

    def match(self, rest: tuple[str, ...]) -> tuple[str, ProviderRead] | None:
        if match_path(rest, ("eventtypes", "management", "values")) is not None:
            return f"{NAMESPACE}/eventtypes/values/read", self.values
        return None

    async def values(self, ctx: RequestContext, sub: str) -> Response:
        query = parse_filter(ctx.query("$filter"), sub, time.time())
        subscription = await ctx.services.auth.subscription(sub)
        tenant = subscription.tenant_id if subscription else ""
        select = [s.strip() for s in (ctx.query("$select") or "").split(",") if s.strip()]
        names: dict[str, str] = {}  # key -> id as the resource spells it (gone resources keep their key)

        async def fetch(after: str | None, n: int) -> list[dict[str, Any]]:
            if after is not None and not after.isdigit():
                raise bad_request("InvalidSkipToken", "The skip token is invalid.")
            before = SEQ_SPACE - int(after) if after else None
            async with ctx.services.store.read() as tx:
                rows = await tx.events_in(query.scope, query.start, query.end, before_seq=before, limit=n)
                for _seq, ev in rows:
                    if ev.resource_key not in names:
                        row = await tx.get_resource(ev.resource_key)
                        names[ev.resource_key] = row.id if row is not None else ev.resource_key
            return [event_data(Item(seq, ev, names[ev.resource_key]), sub, tenant) | {"_seq": seq} for seq, ev in rows]

        def view(data: dict[str, Any]) -> dict[str, Any]:
            out = {k: v for k, v in data.items() if k != "_seq"}
            return {k: v for k, v in out.items() if k in select} if select else out

        page = await keyset_page(ctx, fetch, lambda d: f"{SEQ_SPACE - d['_seq']:013d}", view,
                                 keep=lambda d: _keep(query, d))
        return JSONResponse(page)
