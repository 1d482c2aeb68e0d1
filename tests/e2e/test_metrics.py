"""Microsoft.Insights metrics for real: a tiny VM made with `az vm create`, loaded through `az vm run-command`
and read back with `az monitor metrics list --interval PT5S` (kumo's short-grain extension); a busy container
group's CPU and memory over REST; Azure's errors and subscription isolation on the metrics paths."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from kumo.compute.marketplace import ImageCatalog
from kumo.config import default_vm_images_dir
from tests.conftest import KumoServer, unique
from tests.e2e.acilib import container, delete, group_body, group_path, put_group
from tests.e2e.test_virtual_machines import SSH_OPTS, wait_ssh

pytestmark = [pytest.mark.e2e]
needs_vm_host = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("qemu-system-x86_64"),
                                   reason="VMs need root and qemu-system-x86 (scripts/setup.sh installs them)")
needs_tiny_image = pytest.mark.skipif(
    ImageCatalog(default_vm_images_dir()).find("kumo", "tiny", "1", "latest") is None,
    reason="the tiny VM image is not built (kumo vm-images build)")

METRICS_API = {"api-version": "2018-01-01"}
VM_METRICS = {"Percentage CPU", "Network In Total", "Network Out Total", "Disk Read Bytes", "Disk Write Bytes"}
# A busy loop for 30 s in the background of the guest: the run command returns at once (its stdio is not
# held open), the loop keeps one vCPU busy, and a second process ends it.
BURN = ("sh -c 'while :; do :; done' </dev/null >/dev/null 2>&1 &\n"
        "p=$!\n"
        "sh -c \"sleep 30; kill $p\" </dev/null >/dev/null 2>&1 &\n"
        "echo burning $p\n")


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def rest_metrics(kumo: KumoServer, resource_id: str, what: str = "metrics", token: str | None = None,
                 **params: str) -> httpx.Response:
    with kumo.http(token) as c:
        return c.get(f"{resource_id}/providers/microsoft.insights/{what}", params={**METRICS_API, **params})


def points(result: dict[str, Any], metric: str, aggregation: str) -> list[tuple[float, float]]:
    """(bucket start, value) of one metric's data points that have a value."""
    entry = next(v for v in result["value"] if v["name"]["value"] == metric)
    return [(_epoch(p["timeStamp"]), p[aggregation]) for p in entry["timeseries"][0]["data"] if aggregation in p]


@pytest.mark.slow
@needs_vm_host
@needs_tiny_image
def test_vm_metrics_follow_the_guest(kumo: KumoServer, rg: str, ssh_key: Path) -> None:
    out = kumo.az("vm", "create", "-g", rg, "-n", "vm1", "--image", "Tiny", "--size", "Standard_B1s",
                  "--ssh-key-values", str(ssh_key.with_suffix(".pub")), "--admin-username", "azureuser")
    vm_id, target = out["id"], f"azureuser@{out['publicIpAddress']}"
    wait_ssh(ssh_key, target, 60)
    deadline = time.time() + 60
    while not points(rest_metrics(kumo, vm_id, metricnames="Network In Total", aggregation="Total",
                                  interval="PT5S").json(), "Network In Total", "total"):
        assert time.time() < deadline, "the sampler never measured the new VM"
        time.sleep(1)  # counters are measured from the first sample of the VM on: wait for it

    # 1 MB sent to the guest over SSH: Network In (the guest's view), much more than it sends back
    sent = subprocess.run(f"head -c 1000000 /dev/urandom | ssh {' '.join(SSH_OPTS)} -i {ssh_key} {target} "
                          "'cat > /dev/null'", shell=True, capture_output=True, text=True, timeout=120)
    assert sent.returncode == 0, sent.stderr
    time.sleep(8)  # a sampling round (every 5 s) after the transfer
    net = rest_metrics(kumo, vm_id, metricnames="Network In Total,Network Out Total", aggregation="Total",
                       interval="PT1M", timespan=f"{_iso(time.time() - 300)}/{_iso(time.time() + 1)}")
    assert net.status_code == 200, net.text
    received = sum(v for _t, v in points(net.json(), "Network In Total", "total"))
    transmitted = sum(v for _t, v in points(net.json(), "Network Out Total", "total"))
    print(f"\n1 MB sent to the tiny VM over SSH: Network In Total {received:.0f} B, Out {transmitted:.0f} B")
    assert received >= 1_000_000 and transmitted < received / 2, (received, transmitted)

    idle_from = time.time()
    time.sleep(25)  # the idle guest, measured
    burn_from = time.time()
    ran = kumo.az("vm", "run-command", "invoke", "-g", rg, "-n", "vm1", "--command-id", "RunShellScript",
                  "--scripts", BURN)
    assert "burning" in ran["value"][0]["message"], ran
    burn_until = time.time() + 20
    time.sleep(burn_until - time.time())
    listed = kumo.az("monitor", "metrics", "list", "--resource", vm_id, "--metrics", "Percentage CPU",
                     "--interval", "PT5S", "--offset", "5m", "--aggregation", "Average", "Maximum")
    assert listed["interval"] == "PT5S" and listed["namespace"] == "Microsoft.Compute/virtualMachines", listed
    cpu = points(listed, "Percentage CPU", "average")
    idle = [v for t, v in cpu if idle_from + 5 <= t and t + 5 <= burn_from]
    busy = [v for t, v in cpu if burn_from <= t < burn_until]
    assert len(idle) >= 2 and len(busy) >= 2, cpu
    print(f"\nPercentage CPU of the tiny VM: idle {[round(v, 1) for v in idle]}, "
          f"busy {[round(v, 1) for v in busy]}")
    assert max(busy) >= 40 and max(busy) > statistics.fmean(idle) + 25, (idle, busy)
    assert all(0 <= v <= 100 for _t, v in cpu)
    # Azure's own grain, as the docs write the command (`--metric` is az's abbreviation of `--metrics`)
    minutes = kumo.az("monitor", "metrics", "list", "--resource", vm_id, "--metric", "Percentage CPU",
                      "--interval", "PT1M")
    per_minute = points(minutes, "Percentage CPU", "average")
    assert minutes["interval"] == "PT1M" and per_minute and max(v for _t, v in per_minute) > 10, minutes
    assert all(t % 60 == 0 for t, _v in per_minute)

    disk = rest_metrics(kumo, vm_id, metricnames="disk read bytes,Disk Write Bytes", interval="PT5S",
                        timespan=f"{_iso(time.time() - 60)}/{_iso(time.time())}")
    assert disk.status_code == 200, disk.text
    assert [v["name"]["value"] for v in disk.json()["value"]] == ["Disk Read Bytes", "Disk Write Bytes"]
    assert points(disk.json(), "Disk Read Bytes", "total") and points(disk.json(), "Disk Write Bytes", "total")

    definitions = kumo.az("monitor", "metrics", "list-definitions", "--resource", vm_id)
    assert {d["name"]["value"] for d in definitions} == VM_METRICS
    assert next(d for d in definitions if d["name"]["value"] == "Percentage CPU")["unit"] == "Percent"
    namespaces = kumo.az("monitor", "metrics", "list-namespaces", "--resource-uri", vm_id)
    assert [n["properties"]["metricNamespaceName"] for n in namespaces] == ["Microsoft.Compute/virtualMachines"]

    # Azure's errors
    r = rest_metrics(kumo, vm_id, metricnames="Percentage GPU")
    assert r.status_code == 400 and r.json()["error"]["code"] == "BadRequest", r.text
    assert "Valid metrics: Percentage CPU,Network In Total" in r.json()["error"]["message"]
    for bad in ({"interval": "PT0.5S"}, {"interval": "often"}, {"timespan": "today/tomorrow"},
                {"aggregation": "median"}):
        r = rest_metrics(kumo, vm_id, **bad)
        assert r.status_code == 400 and r.json()["error"]["code"] == "BadRequest", (bad, r.text)
    r = rest_metrics(kumo, vm_id.replace("/vm1", "/novm"))
    assert r.status_code == 404 and r.json()["error"]["code"] == "ResourceNotFound", r.text


@pytest.mark.slow
def test_container_group_cpu_and_memory(kumo: KumoServer, rg: str) -> None:
    path = group_path(kumo, rg, unique("busy"))
    put_group(kumo, path, group_body(container("busy", ["sh", "-c", "while :; do :; done"])))
    try:
        deadline = time.monotonic() + 60
        while True:
            r = rest_metrics(kumo, path, metricnames="CpuUsage,MemoryUsage,NetworkBytesReceivedPerSecond",
                             interval="PT5S", aggregation="Average,Maximum",
                             timespan=f"{_iso(time.time() - 120)}/{_iso(time.time() + 1)}")
            assert r.status_code == 200, r.text
            cpu, memory = points(r.json(), "CpuUsage", "maximum"), points(r.json(), "MemoryUsage", "maximum")
            if cpu and memory:
                break
            assert time.monotonic() < deadline, f"no CpuUsage and MemoryUsage within 60 s: {r.json()}"
            time.sleep(2)
        print(f"\ncontainer group: CpuUsage {cpu} millicores, MemoryUsage {memory} bytes")
        assert max(v for _t, v in cpu) > 100 and max(v for _t, v in memory) > 0
        assert points(r.json(), "NetworkBytesReceivedPerSecond", "average") is not None
        assert r.json()["namespace"] == "Microsoft.ContainerInstance/containerGroups"
        names = [d["name"]["value"] for d in rest_metrics(kumo, path, "metricDefinitions").json()["value"]]
        assert names == ["CpuUsage", "MemoryUsage", "NetworkBytesReceivedPerSecond",
                         "NetworkBytesTransmittedPerSecond"]

        # a Reader of the subscription reads metrics; nobody reads those of a subscription they hold no role in
        other_sub = json.loads(kumo.kumo("subscription", "create", "--name", unique("sub")).stdout)["subscriptionId"]
        reader = json.loads(kumo.kumo("sp", "create", "--name", unique("reader"), "--role", "Reader").stdout)
        token = kumo.token(client_id=reader["appId"], secret=reader["password"])
        assert rest_metrics(kumo, path, token=token, metricnames="CpuUsage").status_code == 200
        elsewhere = path.replace(kumo.identity["subscription_id"], other_sub)
        r = rest_metrics(kumo, elsewhere, token=token)
        assert r.status_code == 403 and r.json()["error"]["code"] == "AuthorizationFailed", r.text
    finally:
        delete(kumo, path)
    r = rest_metrics(kumo, path)
    assert r.status_code == 404 and r.json()["error"]["code"] == "ResourceNotFound", r.text


@pytest.mark.slow
@needs_vm_host
@needs_tiny_image
def test_scale_set_metrics_aggregate_its_instances(kumo: KumoServer, rg: str, ssh_key: Path) -> None:
    """One of two instances busy: the set's Percentage CPU is the instances' average, about half."""
    out = kumo.az("vmss", "create", "-g", rg, "-n", "ss", "--image", "Tiny", "--instance-count", "2",
                  "--vm-sku", "Standard_B1s", "--admin-username", "azureuser",
                  "--ssh-key-values", str(ssh_key.with_suffix(".pub")), "--orchestration-mode", "Uniform",
                  "--lb-sku", "Standard", timeout=600)
    assert out["VMSS"]["provisioningState"] == "Succeeded", out
    ss_id = kumo.az("vmss", "show", "-g", rg, "-n", "ss")["id"]
    time.sleep(15)  # both instances idle, measured
    burn_from = time.time()
    ran = kumo.az("vmss", "run-command", "invoke", "-g", rg, "-n", "ss", "--instance-id", "0",
                  "--command-id", "RunShellScript", "--scripts", BURN)
    assert "burning" in ran["value"][0]["message"], ran
    burn_until = time.time() + 20
    time.sleep(burn_until - time.time())
    listed = kumo.az("monitor", "metrics", "list", "--resource", ss_id, "--metrics", "Percentage CPU",
                     "Network In Total", "--interval", "PT5S", "--offset", "3m")
    assert listed["namespace"] == "Microsoft.Compute/virtualMachineScaleSets", listed
    cpu = points(listed, "Percentage CPU", "average")
    idle = [v for t, v in cpu if t + 5 <= burn_from]
    busy = [v for t, v in cpu if burn_from + 5 <= t < burn_until]
    print(f"\nPercentage CPU of a scale set of two, one busy: idle {[round(v, 1) for v in idle]}, "
          f"busy {[round(v, 1) for v in busy]}")
    assert idle and busy, cpu
    assert min(idle) < 10 and 20 <= max(busy) <= 60, (idle, busy)  # just booted: the first may be busier
    assert points(listed, "Network In Total", "total")
    # each instance's own metrics (a Uniform instance is …/virtualMachineScaleSets/ss/virtualMachines/{id}):
    # the set's value in a bucket is their average in it
    span = f"{_iso(burn_from - 20)}/{_iso(burn_until)}"
    instances = []
    for i in ("0", "1"):
        r = rest_metrics(kumo, f"{ss_id}/virtualMachines/{i}", metricnames="Percentage CPU", interval="PT5S",
                         timespan=span)
        assert r.status_code == 200, r.text
        instances.append(dict(points(r.json(), "Percentage CPU", "average")))
    assert max(instances[0].values()) >= 40 and max(instances[1].values()) < max(instances[0].values()) / 2
    both = [(t, v) for t, v in cpu if t in instances[0] and t in instances[1]]
    assert len(both) >= 3, (cpu, instances)
    for t, v in both:
        assert abs(v - (instances[0][t] + instances[1][t]) / 2) < 0.5, (t, v, instances)
