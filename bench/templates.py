"""Template engine speed: planning a 500-resource template in-process (parse + evaluate every name,
copy count and dependsOn), and deploying it for real through kumo's API (a copy loop of 500 template
specs, stored resources with no host effects, each with 3 properties expressions), PUT to Succeeded.

Starts its own kumo (temporary data dir, free port). Usage: .venv/bin/python bench/templates.py
[--resources 500] [--rounds 3]"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from kumo.providers.resources.templates.context import DeploymentInfo, TemplateScope  # noqa: E402
from kumo.providers.resources.templates.plan import Planner, evaluate_body  # noqa: E402
from tests.conftest import start_server, stop_server  # noqa: E402

API = {"api-version": "2024-11-01"}


def template(count: int) -> dict[str, Any]:
    return {"$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
            "contentVersion": "1.0.0.0",
            "parameters": {"count": {"type": "int", "defaultValue": count}, "prefix": {"type": "string",
                                                                                      "defaultValue": "spec"}},
            "variables": {"suffix": "[uniqueString(resourceGroup().id)]"},
            "resources": [{
                "type": "Microsoft.Resources/templateSpecs", "apiVersion": "2022-02-01",
                "name": "[format('{0}-{1}-{2}', parameters('prefix'), variables('suffix'), copyIndex())]",
                "location": "[resourceGroup().location]",
                "copy": {"name": "specs", "count": "[parameters('count')]"},
                "properties": {"description": "[concat('spec number ', string(copyIndex()))]",
                               "displayName": "[toUpper(format('{0}{1}', parameters('prefix'), copyIndex()))]",
                               "metadata": {"index": "[copyIndex()]", "rg": "[resourceGroup().name]"}}}],
            "outputs": {"n": {"type": "int", "value": "[parameters('count')]"}}}


def plan_in_process(count: int) -> float:
    info = DeploymentInfo(name="bench", subscription_id="00000000-0000-0000-0000-000000000001", tenant_id="t",
                          subscription_name="s", template={}, mode="Incremental", endpoint="https://localhost/",
                          location="local", resource_group={"id": "/subscriptions/x/resourceGroups/rg", "name": "rg",
                                                            "location": "local"})
    start = time.perf_counter()
    scope = TemplateScope(info, {"count": count, "prefix": "spec"}, {"suffix": "[uniqueString(resourceGroup().id)]"},
                          lambda ns, t: {})
    planned = Planner(scope, "/subscriptions/x/resourceGroups/rg").plan(template(count)["resources"])
    for r in planned:
        evaluate_body(r, scope)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resources", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    plans = [plan_in_process(args.resources) for _ in range(args.rounds)]
    server = start_server()
    deploys = []
    try:
        sub = server.identity["subscription_id"]
        with server.http() as c:
            for i in range(args.rounds):
                group = f"/subscriptions/{sub}/resourceGroups/benchtpl{i}"
                c.put(group, params=API, json={"location": "local"}).raise_for_status()
                path = f"{group}/providers/Microsoft.Resources/deployments/d"
                start = time.perf_counter()
                c.put(path, params=API, json={"properties": {"mode": "Incremental",
                                                             "template": template(args.resources)}}).raise_for_status()
                while (state := c.get(path, params=API).json()["properties"]["provisioningState"]) not in (
                        "Succeeded", "Failed"):
                    time.sleep(0.05)
                deploys.append(time.perf_counter() - start)
                assert state == "Succeeded"
                c.delete(group, params=API)
    finally:
        stop_server(server)
    n = args.resources
    print(f"{'step':<58} {'median':>9} {'range':>17}")
    print(f"{f'plan + evaluate {n} resources in-process':<58} {statistics.median(plans) * 1000:>6.0f} ms "
          f"{min(plans) * 1000:>7.0f}..{max(plans) * 1000:.0f} ms")
    print(f"{f'deploy {n} resources (PUT to Succeeded, over HTTPS)':<58} {statistics.median(deploys):>7.2f} s "
          f"{min(deploys):>8.2f}..{max(deploys):.2f} s")
    print(f"{'  per resource':<58} {statistics.median(deploys) / n * 1000:>6.1f} ms")


if __name__ == "__main__":
    main()
