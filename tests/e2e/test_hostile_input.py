"""Hostile input at the ARM front door: hand-written malformed, oversize, deeply nested and badly encoded
bodies, path tricks, abusive queries and headers (tests/fuzz/hostile.py), sent as raw bytes; and
schemathesis cases generated from Azure's own OpenAPI specifications (tests/fuzz/openapi.py). Every one
gets an answer within the deadline, never a 5xx, ARM's error envelope with Azure's code on every error
kumo sends, and kumo stays up (same process) throughout. tests/fuzz/run.py runs the same at scale."""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import KumoServer, unique
from tests.fuzz import hostile, openapi

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.store]
API = {"api-version": "2024-11-01"}
CASES = hostile.cases()
OPERATIONS = [(spec, op) for spec in openapi.SPECS for op in openapi.operations(spec)]
EXAMPLES = 4  # positive and as many negative cases per operation; tests/fuzz/run.py runs more


@pytest.fixture(scope="module")
def target(kumo: KumoServer) -> Iterator[hostile.Target]:
    sub = kumo.identity["subscription_id"]
    rg = unique("fuzzhostile")
    with kumo.http() as c:
        assert c.put(f"/subscriptions/{sub}/resourcegroups/{rg}", params=API, json={"location": "local"}).status_code \
            in (200, 201)
        yield hostile.Target("127.0.0.1", kumo.port, kumo.tls(), kumo.token(), sub, rg)
        for name in (rg, "fuzz-hostile-new"):
            c.delete(f"/subscriptions/{sub}/resourcegroups/{name}", params=API)


@pytest.mark.parametrize("case", CASES, ids=[f"{c.group}:{c.name}" for c in CASES])
def test_hostile_request(kumo: KumoServer, target: hostile.Target, case: hostile.Case) -> None:
    pid = kumo.pid()
    answer = hostile.run(target, case)
    assert hostile.violations(case, answer) == []
    assert kumo.pid() == pid and _alive(kumo), "kumo died or restarted"


def _alive(kumo: KumoServer) -> bool:
    os.kill(kumo.pid(), 0)
    with kumo.http() as c:
        return c.get("/kumo/health").status_code == 200


@pytest.mark.parametrize("spec,op", OPERATIONS, ids=[f"{spec.split('-')[0]}:{op.label}" for spec, op in OPERATIONS])
def test_openapi_cases(kumo: KumoServer, target: hostile.Target, spec: str, op) -> None:
    def alive() -> bool:
        try:
            return httpx.get(f"{kumo.endpoint}/kumo/health", verify=kumo.tls(), timeout=10).status_code == 200
        except httpx.HTTPError:
            return False

    t = openapi.Target(kumo.endpoint, kumo.ca, target.token, target.sub, target.rg, alive)
    tally = openapi.Tally()
    try:
        openapi.fuzz_operation(op, t, openapi.SPECS[spec], tally, EXAMPLES)
    finally:
        openapi.cleanup(t, tally)
    assert tally.cases[op.label] >= EXAMPLES
    assert tally.failures == []
