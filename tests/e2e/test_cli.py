"""The kumo command: status, env, and refusing a second server on one data dir."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.conftest import KUMO, KumoServer

pytestmark = [pytest.mark.e2e, pytest.mark.store]


def test_status_reports_endpoint_identity_and_backends(kumo: KumoServer) -> None:
    report = json.loads(kumo.kumo("status", "--json").stdout)
    assert report["running"] is True
    assert report["endpoint"] == f"{kumo.endpoint}/"
    assert report["subscription_id"] == kumo.identity["subscription_id"]
    assert set(report["backends"]) >= {"qemu", "kvm", "runc", "nftables", "iproute2"}
    human = kumo.kumo("status").stdout
    assert "running" in human and kumo.identity["tenant_id"] in human
    if os.geteuid() == 0:
        net = report["network"]
        assert net["unavailable"] is None and net["public_ip_pool"].startswith("127.78.")
        assert f"site {net['site']}, public IPs from {net['public_ip_pool']}" in human


def test_a_public_ip_pool_must_be_an_ipv4_prefix(kumo: KumoServer) -> None:
    proc = kumo.kumo("up", "--public-ip-pool", "not-a-prefix", check=False)
    assert proc.returncode != 0 and "is not an IPv4 prefix" in proc.stderr


def test_env_exports_work_with_plain_az(kumo: KumoServer) -> None:
    exports = kumo.kumo("env").stdout
    assert "export AZURE_CONFIG_DIR=" in exports and "export REQUESTS_CA_BUNDLE=" in exports
    kumo.az("account", "show")  # makes sure az is set up in AZURE_CONFIG_DIR
    script = f'eval "$({" ".join(KUMO)} env)" && az group list -o json'
    env = {**kumo.env(), "PATH": f"{os.path.dirname(KUMO[0])}:{os.environ['PATH']}"}
    out = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert isinstance(json.loads(out.stdout), list)


def test_second_server_on_same_data_dir_is_refused(kumo: KumoServer) -> None:
    proc = kumo.kumo("up", "--detach", "--port", str(kumo.port + 1), check=False)
    assert proc.returncode != 0 and "already running" in proc.stderr
