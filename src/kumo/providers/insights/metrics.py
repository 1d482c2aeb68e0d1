"""Azure Monitor's metrics API on any resource: `{resource id}/providers/microsoft.insights/metrics`,
`…/metricDefinitions` and `…/metricNamespaces` (GET, any api-version), answered from what kumo measured
(`services.metrics`, see docs/metrics.md) in the shapes of Azure's published spec (2018-01-01 metrics and
definitions, 2017-12-01-preview namespaces). Served as an extension of the resource (arm.router._extension),
which has already checked the caller's role on the resource's subscription.

Not served: dimensions (kumo's series are never split, so `$filter`, `top` and `orderby` are accepted and
ignored) and the "None" aggregation."""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.responses import JSONResponse, Response

from kumo.arm.context import RequestContext
from kumo.arm.errors import ArmError, bad_request
from kumo.arm.ids import Extension
from kumo.controllers.metrics.base import MetricDefinition, MetricSource
from kumo.controllers.metrics.buffer import RETENTION_SECONDS
from kumo.controllers.metrics.service import MetricsService
from kumo.providers.insights import metrics_query as q
from kumo.store import Resource

NAMESPACE = "microsoft.insights"
STANDARD_GRAINS = (60.0, 300.0, 900.0, 1800.0, 3600.0)  # Azure's grains that fit in kumo's retention

View = Callable[[RequestContext, MetricsService, Resource, "MetricSource | None"], Awaitable[dict[str, Any]]]


async def serve(ctx: RequestContext, ext: Extension) -> Response:
    """The extension handler for Microsoft.Insights (registered in server.build_services)."""
    view = VIEWS.get(ext.rest[0].lower()) if len(ext.rest) == 1 else None
    if view is None:
        raise bad_request("InvalidResourceType", f"The resource type '{'/'.join(ext.rest)}' could not be found in "
                          f"the namespace '{ext.namespace}' for api version '{ctx.api_version}'.")
    if ctx.method not in ("GET", "HEAD"):
        raise ArmError(405, "MethodNotAllowed",
                       f"The requested resource does not support http method '{ctx.method}'.")
    metrics = ctx.services.metrics
    assert metrics is not None, "build_services sets services.metrics"
    row, source = await metrics.resource(str(ext.scope))
    return JSONResponse(await view(ctx, metrics, row, source))


def _check_namespace(ctx: RequestContext, source: MetricSource | None) -> None:
    asked = ctx.query("metricnamespace")
    if asked and (source is None or asked.strip().lower() != source.namespace.lower()):
        known = f"; this resource's is '{source.namespace}'" if source else ""
        raise bad_request("BadRequest", f"Metric namespace '{asked}' is not found for this resource{known}.")


async def metric_values(ctx: RequestContext, metrics: MetricsService, row: Resource,
                        source: MetricSource | None) -> dict[str, Any]:
    _check_namespace(ctx, source)
    start, end = q.parse_timespan(ctx.query("timespan"), time.time())
    interval = ctx.query("interval")
    grain = q.parse_interval(interval, start, end)
    full = (interval or "").strip().upper() == "FULL"
    first = start if full else math.floor(start / grain) * grain  # Azure's buckets start on whole grains
    asked = q.parse_metric_names(ctx.query("metricnames")) or ([source.definitions[0].name] if source else [])
    aggregations = q.parse_aggregations(ctx.query("aggregation"))
    metadata_only = (ctx.query("resultType") or "").lower() == "metadata"
    definitions: list[MetricDefinition] = []
    for name in asked:
        d = metrics.definition(row, source, name)
        if d not in definitions:
            definitions.append(d)
    value = []
    for d in definitions:
        timeseries = []
        if not metadata_only:
            points = {a: await metrics.series(row.id, d.name, first, end, grain, a)
                      for a in aggregations or [d.primary_aggregation]}
            timeseries = [{"metadatavalues": [], "data": _data(points)}]
        value.append({"id": f"{row.id}/providers/Microsoft.Insights/metrics/{d.name}",
                      "type": "Microsoft.Insights/metrics",
                      "name": {"value": d.name, "localizedValue": d.display_name},
                      "displayDescription": d.description, "unit": d.unit, "timeseries": timeseries,
                      "errorCode": "Success"})
    body: dict[str, Any] = {"cost": 0, "timespan": f"{q.format_time(start)}/{q.format_time(end)}"}
    if not metadata_only:
        body["interval"] = q.format_duration(grain)
    body.update({"namespace": source.namespace if source else row.type, "resourceregion": row.location or "",
                 "value": value})
    return body


def _data(points: dict[str, list[tuple[float, float | None]]]) -> list[dict[str, Any]]:
    """Data points as Azure writes them: each asked aggregation under its lower-case name, left out where the
    bucket had no sample, except `count`, which is then 0."""
    stamps = [t for t, _v in next(iter(points.values()))]
    data = []
    for i, t in enumerate(stamps):
        point: dict[str, Any] = {"timeStamp": q.format_time(t)}
        for aggregation, series in points.items():
            v = series[i][1]
            if v is not None or aggregation == "Count":
                point[aggregation.lower()] = v if v is not None else 0.0
        data.append(point)
    return data


async def metric_definitions(ctx: RequestContext, metrics: MetricsService, row: Resource,
                             source: MetricSource | None) -> dict[str, Any]:
    _check_namespace(ctx, source)
    if source is None:
        return {"value": []}
    grains = sorted({metrics.period, *STANDARD_GRAINS})
    availabilities = [{"timeGrain": q.format_duration(g), "retention": q.format_duration(RETENTION_SECONDS)}
                      for g in grains]
    return {"value": [{
        "id": f"{row.id}/providers/microsoft.insights/metricdefinitions/{d.name}", "resourceId": row.id,
        "namespace": source.namespace, "name": {"value": d.name, "localizedValue": d.display_name},
        "displayDescription": d.description, "isDimensionRequired": False, "unit": d.unit,
        "primaryAggregationType": d.primary_aggregation, "supportedAggregationTypes": list(d.supported_aggregations),
        "metricAvailabilities": availabilities} for d in source.definitions]}


async def metric_namespaces(ctx: RequestContext, metrics: MetricsService, row: Resource,
                            source: MetricSource | None) -> dict[str, Any]:
    if source is None:
        return {"value": []}
    name = source.namespace.replace("/", "-")
    return {"value": [{"id": f"{row.id}/providers/microsoft.insights/metricNamespaces/{name}", "name": name,
                       "type": "Microsoft.Insights/metricNamespaces", "classification": "Platform",
                       "properties": {"metricNamespaceName": source.namespace}}]}


VIEWS: dict[str, View] = {"metrics": metric_values, "metricdefinitions": metric_definitions,
                          "metricnamespaces": metric_namespaces}
