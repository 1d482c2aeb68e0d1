"""Isolation and access: run the tests that show each claim and print a claim -> test -> result table.

The claims (tokens refused, a Reader cannot write, registry push scopes, instances boxed in on the network,
containers without extra privileges, secrets never shown) are each shown by tests in
tests/e2e/test_auth.py, test_acr.py, test_network_dataplane.py, test_container_runtime.py,
test_container_groups.py, test_isolation.py and test_secrets.py; this runs them (each test module
starts or shares real kumo servers, so root, nftables, qemu and the VM images are needed as for the suite)
and summarises. `--full-boot` also boots a Debian VM with a password and customData (minutes).

Usage: .venv/bin/python bench/isolation.py [--full-boot] [--claim N ...] [-- extra pytest args]"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
E2E = "tests/e2e"
CLAIMS: dict[int, tuple[str, list[str]]] = {
    1: ("Tokens: bad signature, wrong audience/tenant, expired, no role in the subscription -> 401/403", [
        "test_auth.py::test_missing_forged_expired_and_wrong_audience_tokens_get_401",
        "test_auth.py::test_tokens_with_no_or_a_confused_algorithm_or_no_validity_yet_get_401",
        "test_auth.py::test_token_from_another_tenant_is_refused",
        "test_auth.py::test_valid_token_of_a_principal_without_a_role_is_refused_in_that_subscription",
        "test_auth.py::test_reader_reads_but_cannot_write_and_other_subscriptions_are_invisible",
        "test_auth.py::test_unknown_resource_scope_is_refused_at_the_token_endpoint"]),
    2: ("A Reader cannot PUT/PATCH/DELETE/POST on any provider (403 AuthorizationFailed), but reads", [
        "test_auth.py::test_a_reader_cannot_write_on_any_provider_but_reads"]),
    3: ("Registry: push needs push scope for that repository; pulls need credentials", [
        "test_auth.py::test_registry_pushes_need_push_scope_for_that_repository_and_pulls_need_credentials",
        "test_acr.py::test_scoped_token_pushes_only_to_its_repository",
        "test_acr.py::test_other_subscription_cannot_exchange"]),
    4: ("Containers and VMs reach neither kumo's API, nor host services, nor another VNet", [
        "test_isolation.py::test_the_host_itself_reaches_kumo_and_its_listener_with_the_same_probe",
        "test_isolation.py::test_containers_reach_neither_kumo_nor_the_host_nor_another_vnet",
        "test_isolation.py::test_a_vm_reaches_neither_kumo_nor_the_host_nor_another_vnet",
        "test_network_dataplane.py::test_instances_cannot_reach_kumo_or_the_host",
        "test_network_dataplane.py::test_vnets_are_isolated_even_with_the_same_prefixes"]),
    5: ("Containers: Docker's capabilities, NoNewPrivs, no host processes/mounts, read-only /sys, no mount", [
        "test_isolation.py::test_containers_have_dockers_capabilities_and_see_nothing_of_the_host",
        "test_container_runtime.py::test_security_defaults"]),
    6: ("Secrets never in GET/LIST, LROs, logs, events, activity log, deployment operations, errors", [
        "test_secrets.py::test_deployment_registry_and_error_secrets_never_come_back",
        "test_secrets.py::test_container_group_secrets_reach_the_container_but_never_come_back",
        "test_secrets.py::test_scale_set_admin_password_and_custom_data_never_come_back",
        "test_secrets.py::test_vm_admin_password_and_custom_data_never_come_back",
        "test_acr.py::test_create_login_and_credentials"]),
}


def _results(junit: Path) -> dict[str, tuple[str, float]]:
    """test id (file::name, parameters dropped) -> (worst outcome, seconds summed over parameters)."""
    rank = {"passed": 0, "skipped": 1, "failed": 2}
    out: dict[str, tuple[str, float]] = {}
    for case in ET.parse(junit).iter("testcase"):
        name = case.get("name", "").split("[")[0]
        key = f"{case.get('classname', '').rsplit('.', 1)[-1]}.py::{name}"
        outcome = ("failed" if case.find("failure") is not None or case.find("error") is not None
                   else "skipped" if case.find("skipped") is not None else "passed")
        old, secs = out.get(key, ("passed", 0.0))
        out[key] = (max(old, outcome, key=rank.__getitem__), secs + float(case.get("time", 0)))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--full-boot", action="store_true", help="also boot a Debian VM for the secrets claim")
    parser.add_argument("--claim", type=int, nargs="*", choices=sorted(CLAIMS), help="only these claims")
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest (after --)")
    args = parser.parse_args()
    claims = {n: CLAIMS[n] for n in (args.claim or sorted(CLAIMS))}
    tests = sorted({f"{E2E}/{t}" for _, ts in claims.values() for t in ts})
    env = {**os.environ, **({"KUMO_TEST_FULL_BOOT": "1"} if args.full_boot else {})}
    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "junit.xml"
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}",
                               *tests, *args.pytest_args], cwd=ROOT, env=env)
        results = _results(junit) if junit.exists() else {}
    print("\n| # | claim | test | result | s |\n|---|---|---|---|---|")
    for n, (claim, ts) in claims.items():
        for i, t in enumerate(ts):
            outcome, secs = results.get(t, ("not run", 0.0))
            print(f"| {n if i == 0 else ''} | {claim if i == 0 else ''} | {t} | {outcome} | {secs:.1f} |")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
