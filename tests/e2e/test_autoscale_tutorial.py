"""Azure's "autoscale a scale set" tutorial, end to end with the real az CLI and real load: a Uniform
scale set of 2 behind a Standard load balancer (each instance serves its hostname, started by its
custom data), autoscale min 2 / max 10 on Percentage CPU; busy loops inside the instances drive the
count up, the new instance joins the load balancer and answers; when the load stops the set scales
back in, one cooldown at a time. Windows and cooldowns are seconds long: kumo accepts windows shorter
than Azure's minimums (a documented extension) so this runs in a couple of minutes."""

from __future__ import annotations

import os
import shutil
import time
from collections import Counter
from itertools import pairwise
from pathlib import Path

import httpx
import pytest

from kumo.compute.marketplace import ImageCatalog
from kumo.config import default_vm_images_dir
from tests.conftest import KumoServer

pytestmark = [pytest.mark.e2e, pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("qemu-system-x86_64") or not shutil.which("nft"),
                                 reason="VMs need root, nftables and qemu-system-x86 (scripts/setup.sh installs them)"),
              pytest.mark.skipif(ImageCatalog(default_vm_images_dir()).find("kumo", "tiny", "1", "latest") is None,
                                 reason="the tiny VM image is not built (kumo vm-images build)")]

# the instances' start-up: serve the hostname on port 80 (busybox httpd daemonises itself)
CUSTOM_DATA = "#!/bin/sh\nmkdir -p /www && hostname > /www/index.html && httpd -p 80 -h /www\n"
LOAD = "setsid sh -c 'echo $$ > /run/load.pid; while :; do :; done' </dev/null >/dev/null 2>&1 &"
UNLOAD = "kill $(cat /run/load.pid)"
COOLDOWN = 15.0


def _hits(address: str, n: int) -> Counter[str]:
    seen: Counter[str] = Counter()
    for _ in range(n):
        try:
            seen[httpx.get(f"http://{address}/", timeout=2, headers={"Connection": "close"}).text.strip()] += 1
        except httpx.HTTPError:
            seen["<error>"] += 1
    return seen


def _cpu(kumo: KumoServer, rg: str) -> list[float | None]:
    """The set's Percentage CPU over the last minutes, for failure messages."""
    ss = f"/subscriptions/{kumo.identity['subscription_id']}/resourceGroups/{rg}/providers/Microsoft.Compute/" \
         "virtualMachineScaleSets/ss"
    out = kumo.az("monitor", "metrics", "list", "--resource", ss, "--metric", "Percentage CPU", "--interval", "PT5S",
                  "--offset", "10m", check=False)
    if isinstance(out, dict):
        return [p.get("average") for p in out["value"][0]["timeseries"][0]["data"]]
    return []


def test_autoscale_tutorial(kumo: KumoServer, rg: str, ssh_key: Path, tmp_path: Path) -> None:
    script = tmp_path / "serve.sh"
    script.write_text(CUSTOM_DATA)
    kumo.az("vmss", "create", "-g", rg, "-n", "ss", "--image", "Tiny", "--instance-count", "2",
            "--vm-sku", "Standard_B1s", "--admin-username", "azureuser", "--orchestration-mode", "Uniform",
            "--ssh-key-values", str(ssh_key.with_suffix(".pub")), "--lb-sku", "Standard",
            "--upgrade-policy-mode", "Automatic", "--custom-data", str(script), timeout=600)
    kumo.az("network", "nsg", "rule", "create", "-g", rg, "--nsg-name", "ssNSG", "-n", "http", "--priority", "1001",
            "--destination-port-ranges", "80", "--access", "Allow", "--protocol", "Tcp")
    kumo.az("network", "lb", "probe", "create", "-g", rg, "--lb-name", "ssLB", "-n", "http", "--protocol", "Http",
            "--port", "80", "--path", "/", "--interval", "1", "--probe-threshold", "2")
    kumo.az("network", "lb", "rule", "update", "-g", rg, "--lb-name", "ssLB", "-n", "LBRule", "--probe-name", "http")
    frontend = kumo.az("network", "public-ip", "show", "-g", rg, "-n", "ssLBPublicIP")["ipAddress"]
    names = {i["osProfile"]["computerName"] for i in kumo.az("vmss", "list-instances", "-g", rg, "-n", "ss")}
    deadline = time.monotonic() + 30
    while set(_hits(frontend, 10)) != names:  # both serve, started by their custom data
        assert time.monotonic() < deadline, _hits(frontend, 10)
        time.sleep(1)

    # the tutorial's autoscale profile and rules (with windows of seconds)
    kumo.az("monitor", "autoscale", "create", "-g", rg, "--resource", "ss", "--resource-type",
            "Microsoft.Compute/virtualMachineScaleSets", "--name", "auto", "--min-count", "2", "--max-count", "10",
            "--count", "2")
    kumo.az("monitor", "autoscale", "rule", "create", "-g", rg, "--autoscale-name", "auto", "--condition",
            "Percentage CPU > 50 avg 15s", "--timegrain", "avg 5s", "--scale", "out", "1")
    kumo.az("monitor", "autoscale", "rule", "create", "-g", rg, "--autoscale-name", "auto", "--condition",
            "Percentage CPU < 20 avg 15s", "--timegrain", "avg 5s", "--scale", "in", "1")
    setting = kumo.az("monitor", "autoscale", "show", "-g", rg, "-n", "auto")
    for n in range(2):  # az's --cooldown takes whole minutes: the kumo extension through a generic update
        kumo.az("resource", "update", "--ids", setting["id"], "--set",
                f"properties.profiles[0].rules[{n}].scaleAction.cooldown=PT{int(COOLDOWN)}S")

    # load inside every instance: the count goes up and the new instance serves behind the load balancer
    for i in ("0", "1"):
        kumo.az("vmss", "run-command", "invoke", "-g", rg, "-n", "ss", "--instance-id", i,
                "--command-id", "RunShellScript", "--scripts", LOAD)
    deadline = time.monotonic() + 240
    while kumo.az("vmss", "show", "-g", rg, "-n", "ss")["sku"]["capacity"] < 3:
        assert time.monotonic() < deadline, ("no scale-out under load", _cpu(kumo, rg))
        time.sleep(2)
    while len(instances := kumo.az("vmss", "list-instances", "-g", rg, "-n", "ss")) < 3 or \
            any(i["provisioningState"] != "Succeeded" for i in instances):
        assert time.monotonic() < deadline, instances
        time.sleep(2)
    new = {i["osProfile"]["computerName"] for i in instances} - names
    assert new
    while not new & set(_hits(frontend, 20)):
        assert time.monotonic() < deadline, "the new instance never answered through the load balancer"
        time.sleep(1)

    # the load stops: back to the minimum, one step per cooldown
    for i in ("0", "1"):
        kumo.az("vmss", "run-command", "invoke", "-g", rg, "-n", "ss", "--instance-id", i,
                "--command-id", "RunShellScript", "--scripts", UNLOAD)
    counts: list[tuple[float, int]] = []
    deadline = time.monotonic() + 300
    while True:
        count = kumo.az("vmss", "show", "-g", rg, "-n", "ss")["sku"]["capacity"]
        if not counts or counts[-1][1] != count:
            counts.append((time.monotonic(), count))
        if count == 2:
            break
        assert time.monotonic() < deadline, (counts, _cpu(kumo, rg))
        time.sleep(1)
    steps = [b[1] - a[1] for a, b in pairwise(counts)]
    assert steps and all(s == -1 for s in steps), counts  # one instance at a time
    gaps = [b[0] - a[0] for a, b in pairwise(counts)]
    assert all(g >= COOLDOWN - 3 for g in gaps[1:]), counts  # each step waited out the cooldown
    log = kumo.az("monitor", "activity-log", "list", "-g", rg, "--offset", "1h")
    operations = [e["operationName"]["value"] for e in log]
    assert any(o.endswith("Scaleup/Action") for o in operations) and \
        any(o.endswith("Scaledown/Action") for o in operations), operations
