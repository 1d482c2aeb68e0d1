"""Crash safety, bounded: container groups, a tiny VM and a small scale set under a seeded random mix of ARM
operations while kumo is `kill -9`ed and restarted 8 times. Nothing the API accepted may be lost, every
LRO ends, no host object outlives its resource, running instances are re-adopted (same process), and
after the purge nothing of this kumo is left on the host. `bench/crash.py` runs the same at scale."""

from __future__ import annotations

import os
import shutil
import time

import pytest

from kumo.compute.marketplace import ImageCatalog
from kumo.config import default_vm_images_dir
from tests.conftest import KumoServer, unique
from tests.crashlib import ACI_API, API, census, crash_run, lro_urls, Plan, short_hash

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.store,
              pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("qemu-system-x86_64") or not shutil.which("nft")
                                 or not shutil.which("runc") or not shutil.which("conmon"),
                                 reason="needs root, nftables, runc, conmon and qemu-system-x86"),
              pytest.mark.skipif(ImageCatalog(default_vm_images_dir()).find("kumo", "tiny", "1", "latest") is None,
                                 reason="the tiny VM image is not built (kumo vm-images build)")]


def test_kill_9_loses_nothing_and_leaves_nothing() -> None:
    plan = Plan(seed=8, ops=45, workers=3, max_vms=1, max_scale_sets=1, max_groups=2)
    h, v, table = crash_run(plan, kills=8, interval=(3, 7))
    print(table)
    assert h.stats.kills == 8
    assert h.stats.accepted["cg.create"] > 0, table  # the mix did exercise what it is meant to
    assert not h.stats.server_errors, table
    assert not v.lro_problems, table
    assert not v.losses, table
    assert not v.orphans, table
    assert not h.stats.restarted, table
    assert h.stats.readopted > 0, table
    assert not v.residue, table


def test_delete_while_creating_leaves_nothing(kumo: KumoServer) -> None:
    """A container group deleted while its create is still setting up (what a resumed reconcile and a
    resumed delete do after a kill -9): the delete succeeds and nothing of the group stays on the host."""
    sub = f"/subscriptions/{kumo.identity['subscription_id']}"
    rg = unique("crashrace")
    body = {"location": "local", "properties": {"osType": "Linux", "containers": [{"name": "web", "properties": {
        "image": "nginx", "resources": {"requests": {"cpu": 0.25, "memoryInGB": 0.25}}}}]}}
    with kumo.http() as c:
        assert c.put(f"{sub}/resourcegroups/{rg}", params=API, json={"location": "local"}).status_code in (200, 201)
        paths, statuses = [], []
        try:
            for i in range(4):
                path = f"{sub}/resourceGroups/{rg}/providers/Microsoft.ContainerInstance/containerGroups/race{i}"
                assert c.put(path, params=ACI_API, json=body).status_code in (200, 201)
                time.sleep(0.3 * i)  # at different points of the create
                r = c.delete(path, params=ACI_API)
                assert r.status_code in (200, 202, 204), r.text
                paths.append(path)
                statuses += [u for u in lro_urls(r) if "operationResults" not in u]
            deadline = time.monotonic() + 60
            for url in statuses:
                while (st := c.get(url).json())["status"] == "InProgress" and time.monotonic() < deadline:
                    time.sleep(0.2)
                assert st["status"] == "Succeeded", st
            for path in paths:
                assert c.get(path, params=ACI_API).status_code == 404
            site = int((kumo.data_dir / "network-site").read_text())
            hashes = {short_hash(p) for p in paths}
            left = [o for o in census(kumo.data_dir, site, None) if o.owner in hashes]
            assert left == []
        finally:
            c.delete(f"{sub}/resourcegroups/{rg}", params=API)
