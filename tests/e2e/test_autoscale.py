"""Autoscale settings with the real az CLI: `az monitor autoscale create/rule create/show/list/update/
delete` on a tiny scale set, Azure's status codes and validation errors, a setting that really scales the
set from its measured CPU (with kumo's short windows) and tells a loopback webhook, and
`az monitor activity-log list` showing the scale actions and resource writes."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kumo.compute.marketplace import ImageCatalog
from kumo.config import default_vm_images_dir
from tests.conftest import KumoServer

pytestmark = [pytest.mark.e2e]
API = {"api-version": "2022-10-01"}
needs_vm_host = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("qemu-system-x86_64") or not shutil.which("nft"),
    reason="scale sets need root, nftables and qemu-system-x86 (scripts/setup.sh installs them)")
needs_tiny_image = pytest.mark.skipif(
    ImageCatalog(default_vm_images_dir()).find("kumo", "tiny", "1", "latest") is None,
    reason="the tiny VM image is not built (kumo vm-images build)")


def _sub(kumo: KumoServer) -> str:
    return kumo.identity["subscription_id"]


def _vmss_id(kumo: KumoServer, rg: str, name: str) -> str:
    return f"/subscriptions/{_sub(kumo)}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachineScaleSets/{name}"


def _setting_url(kumo: KumoServer, rg: str, name: str) -> str:
    return f"/subscriptions/{_sub(kumo)}/resourceGroups/{rg}/providers/Microsoft.Insights/autoscalesettings/{name}"


def _body(target: str, *rules: dict[str, Any], minimum: int = 1, maximum: int = 3, default: int = 1,
          **props: Any) -> dict[str, Any]:
    return {"location": "local", "properties": {
        "profiles": [{"name": "default", "capacity": {"minimum": str(minimum), "maximum": str(maximum),
                                                      "default": str(default)}, "rules": list(rules)}],
        "enabled": True, "targetResourceUri": target, **props}}


def _rule(target: str, direction: str, operator: str, threshold: float, window: str = "PT10S",
          cooldown: str = "PT10S") -> dict[str, Any]:
    return {"metricTrigger": {"metricName": "Percentage CPU", "metricResourceUri": target, "timeGrain": "PT5S",
                              "statistic": "Average", "timeWindow": window, "timeAggregation": "Average",
                              "operator": operator, "threshold": threshold},
            "scaleAction": {"direction": direction, "type": "ChangeCount", "value": "1", "cooldown": cooldown}}


def _scale_sets_served(kumo: KumoServer) -> bool:
    with kumo.http() as c:
        r = c.get(f"/subscriptions/{_sub(kumo)}/providers/Microsoft.Compute", params={"api-version": "2024-11-01"})
    types = {t["resourceType"].lower() for t in r.json().get("resourceTypes", [])} if r.status_code == 200 else set()
    return "virtualmachinescalesets" in types


def _create_scale_set(kumo: KumoServer, rg: str, ssh_key: Path, name: str = "ss") -> str:
    if not _scale_sets_served(kumo):
        pytest.skip("this kumo serves no Microsoft.Compute/virtualMachineScaleSets yet: nothing to autoscale")
    out = kumo.az("vmss", "create", "-g", rg, "-n", name, "--image", "Tiny", "--instance-count", "1",
                  "--vm-sku", "Standard_B1s", "--admin-username", "azureuser",
                  "--ssh-key-values", str(ssh_key.with_suffix(".pub")), timeout=600)
    assert out["VMSS"]["provisioningState"] == "Succeeded"
    return _vmss_id(kumo, rg, name)


def _capacity(kumo: KumoServer, rg: str, name: str = "ss") -> int:
    return int(kumo.az("vmss", "show", "-g", rg, "-n", name)["sku"]["capacity"])


def _wait(predicate: Any, timeout: float, what: str) -> Any:
    t0 = time.monotonic()
    while not (value := predicate()):
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(2)
    return value


def _error(proc: Any) -> str:
    assert proc.returncode != 0, proc.stdout
    return proc.stderr


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A loopback HTTP server in the test process: its URL and the JSON bodies POSTed to it."""
    received: list[dict[str, Any]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/autoscale", received
    server.shutdown()


def test_errors_and_status_codes_without_a_target(kumo: KumoServer, rg: str) -> None:
    missing = _vmss_id(kumo, rg, "nothere")
    proc = kumo.az("monitor", "autoscale", "create", "-g", rg, "--resource", missing, "--name", "as0",
                   "--min-count", "1", "--max-count", "3", "--count", "1", check=False)
    assert "TargetResourceNotFound" in _error(proc)
    with kumo.http() as c:
        url = _setting_url(kumo, rg, "as0")
        r = c.put(url, params=API, json=_body(missing, minimum=3, default=2))
        assert r.status_code == 400 and r.json()["error"]["code"] == "BadRequest"
        assert "minimum capacity value '3'" in r.json()["error"]["message"]
        bad = _rule(missing, "Increase", "GreaterThan", 70)
        bad["metricTrigger"]["statistic"] = "Median"
        r = c.put(url, params=API, json=_body(missing, bad))
        assert r.status_code == 400 and r.json()["error"]["code"] == "UnsupportedRequestContent"
        r = c.put(url, params=API, json=_body(missing, notifications=[
            {"operation": "Scale", "webhooks": [{"serviceUri": "https://example.com/hook"}]}]))
        assert r.status_code == 400 and "webhooks[0]" in r.json()["error"]["message"]
        r = c.put(url, params=API, json=_body(missing, _rule(missing, "Increase", "GreaterThan", 70, window="PT13H")))
        assert r.status_code == 400 and "timeWindow" in r.json()["error"]["message"]
        r = c.put(url, params=API, json=_body(missing))
        assert r.status_code == 400 and r.json()["error"]["code"] == "TargetResourceNotFound"
        r = c.get(url, params=API)
        assert r.status_code == 404 and r.json()["error"]["code"] == "ResourceNotFound"
        assert c.delete(url, params=API).status_code == 204
        r = c.get(f"/subscriptions/{_sub(kumo)}/resourceGroups/{rg}/providers/Microsoft.Insights/autoscalesettings",
                  params=API)
        assert r.status_code == 200 and r.json()["value"] == []
    assert kumo.az("monitor", "autoscale", "list", "-g", rg) == []
    # the activity log: the group's own creation, as az lists it
    events = kumo.az("monitor", "activity-log", "list", "--resource-group", rg, "--offset", "1h")
    writes = [e for e in events if e["operationName"]["value"] == "Microsoft.Resources/resourceGroups/write"]
    assert writes and writes[0]["category"]["value"] == "Administrative" and writes[0]["status"]["value"]
    with kumo.http() as c:
        r = c.get(f"/subscriptions/{_sub(kumo)}/providers/microsoft.insights/eventtypes/management/values",
                  params={"api-version": "2015-04-01", "$filter": "eventTimestamp ge '2000-01-01T00:00:00Z'"})
        assert r.status_code == 400 and "90 days" in r.json()["error"]["message"]


@pytest.mark.slow
@needs_vm_host
@needs_tiny_image
def test_autoscale_crud_with_az(kumo: KumoServer, rg: str, ssh_key: Path,
                                webhook: tuple[str, list[dict[str, Any]]]) -> None:
    target = _create_scale_set(kumo, rg, ssh_key)
    created = kumo.az("monitor", "autoscale", "create", "-g", rg, "--resource", "ss", "--resource-type",
                      "Microsoft.Compute/virtualMachineScaleSets", "--name", "as1", "--min-count", "1",
                      "--max-count", "3", "--count", "1")
    assert created["name"] == "as1" and created["targetResourceUri"].lower() == target.lower()
    assert created["profiles"][0]["capacity"] == {"minimum": "1", "maximum": "3", "default": "1"}
    rule = kumo.az("monitor", "autoscale", "rule", "create", "-g", rg, "--autoscale-name", "as1",
                   "--condition", "Percentage CPU > 100 avg 5m", "--scale", "out", "1")
    assert rule["metricTrigger"]["operator"] == "GreaterThan" and rule["scaleAction"]["direction"] == "Increase"
    kumo.az("monitor", "autoscale", "rule", "create", "-g", rg, "--autoscale-name", "as1",
            "--condition", "Percentage CPU < 0 avg 5m", "--scale", "in", "1")
    shown = kumo.az("monitor", "autoscale", "show", "-g", rg, "-n", "as1")
    assert [r["scaleAction"]["direction"] for r in shown["profiles"][0]["rules"]] == ["Increase", "Decrease"]
    assert shown["profiles"][0]["rules"][0]["metricTrigger"]["timeWindow"] == "PT5M"
    assert [s["name"] for s in kumo.az("monitor", "autoscale", "list", "-g", rg)] == ["as1"]
    assert [r["scaleAction"]["cooldown"] for r in kumo.az("monitor", "autoscale", "rule", "list", "-g", rg,
                                                          "--autoscale-name", "as1")] == ["PT5M", "PT5M"]
    updated = kumo.az("monitor", "autoscale", "update", "-g", rg, "-n", "as1", "--max-count", "2",
                      "--add-action", "webhook", webhook[0])
    assert updated["profiles"][0]["capacity"]["maximum"] == "2"
    assert updated["notifications"][0]["webhooks"][0]["serviceUri"] == webhook[0]
    proc = kumo.az("monitor", "autoscale", "update", "-g", rg, "-n", "as1", "--add-action", "webhook",
                   "https://example.com/hook", check=False)
    assert "only to http(s) addresses on this host" in _error(proc)
    proc = kumo.az("monitor", "autoscale", "update", "-g", rg, "-n", "as1", "--min-count", "3", check=False)
    assert "BadRequest" in _error(proc) or "capacity" in proc.stderr

    with kumo.http() as c:
        url = _setting_url(kumo, rg, "as1")
        got = c.get(url, params=API)
        assert got.status_code == 200 and "kumo" not in got.json()
        assert "provisioningState" not in got.json()["properties"]
        assert got.json()["type"] == "Microsoft.Insights/autoscaleSettings"
        again = c.put(url, params=API, json=got.json())  # what az PUTs back: read-only fields included
        assert again.status_code == 200 and again.json()["properties"] == got.json()["properties"]
        r = c.patch(url, params=API, json={"tags": {"team": "blue"}})
        assert r.status_code == 200 and r.json()["tags"] == {"team": "blue"}
        other = c.put(_setting_url(kumo, rg, "as2"), params=API, json=_body(target))
        assert other.status_code == 409 and "only one autoscale setting" in other.json()["error"]["message"]
        moved = c.put(url, params=API, json=_body(_vmss_id(kumo, rg, "elsewhere")))
        assert moved.status_code == 400 and moved.json()["error"]["code"] == "TargetResourceIdIsImmutable"
        by_sub = c.get(f"/subscriptions/{_sub(kumo)}/providers/Microsoft.Insights/autoscalesettings", params=API)
        assert url.lower() in {s["id"].lower() for s in by_sub.json()["value"]}

    kumo.az("monitor", "autoscale", "delete", "-g", rg, "-n", "as1")
    with kumo.http() as c:
        assert c.get(_setting_url(kumo, rg, "as1"), params=API).status_code == 404
        assert c.delete(_setting_url(kumo, rg, "as1"), params=API).status_code == 204
    assert _capacity(kumo, rg) == 1  # the rules could not fire: nothing scaled


@pytest.mark.slow
@needs_vm_host
@needs_tiny_image
def test_autoscale_scales_a_scale_set_for_real(kumo: KumoServer, rg: str, ssh_key: Path,
                                               webhook: tuple[str, list[dict[str, Any]]]) -> None:
    target = _create_scale_set(kumo, rg, ssh_key)
    hook_url, received = webhook
    url = _setting_url(kumo, rg, "cpu")
    notes = [{"operation": "Scale", "webhooks": [{"serviceUri": hook_url, "properties": {"run": "e2e"}}]}]
    # any measured CPU fires the scale-out rule (kumo's short windows: 5 s grains over 10 s)
    with kumo.http() as c:
        r = c.put(url, params=API, json=_body(target, _rule(target, "Increase", "GreaterThanOrEqual", 0),
                                              maximum=2, notifications=notes))
        assert r.status_code == 201, r.text
    _wait(lambda: _capacity(kumo, rg) == 2, 180, "scale out to 2 instances")
    _wait(lambda: received, 30, "the scale-out webhook")
    assert received[0]["operation"] == "Scale Out" and received[0]["context"]["oldCapacity"] == "1"
    assert received[0]["context"]["newCapacity"] == "2" and received[0]["properties"] == {"run": "e2e"}

    # now any measured CPU fires the scale-in rule: back to one instance once the cooldown has passed
    with kumo.http() as c:
        r = c.put(url, params=API, json=_body(target, _rule(target, "Decrease", "LessThanOrEqual", 100),
                                              maximum=2, notifications=notes))
        assert r.status_code == 200, r.text
    _wait(lambda: _capacity(kumo, rg) == 1, 240, "scale in to 1 instance")

    def actions() -> list[dict[str, Any]]:
        events = kumo.az("monitor", "activity-log", "list", "--resource-group", rg, "--offset", "1h")
        return [e for e in events if e["category"]["value"] == "Autoscale" and e["status"]["value"] == "Succeeded"]

    found = _wait(lambda: (a := actions()) and len(a) >= 2 and a, 30, "two autoscale events in the activity log")
    ops = [e["operationName"]["value"] for e in found]
    assert ops[:2] == ["Microsoft.Insights/AutoscaleSettings/Scaledown/Action",
                       "Microsoft.Insights/AutoscaleSettings/Scaleup/Action"]  # newest first
    up = found[1]
    assert up["status"]["value"] == "Succeeded" and up["resourceId"].lower() == url.lower()
    assert "Percentage CPU Average over PT10S was" in up["description"]
    assert up["description"].endswith(": scale out from 1 to 2")
    assert up["properties"]["OldInstancesCount"] == "1" and up["properties"]["NewInstancesCount"] == "2"
    writes = [e for e in kumo.az("monitor", "activity-log", "list", "--resource-id", target, "--offset", "1h")
              if e["operationName"]["value"] == "Microsoft.Compute/virtualMachineScaleSets/write"]
    assert any("Microsoft.Insights/autoscaleSettings" in e["caller"] for e in writes)
