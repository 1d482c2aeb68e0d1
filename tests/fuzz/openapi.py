"""Property-based fuzzing of the ARM front door from Azure's own OpenAPI specifications (vendored in
tests/fuzz/specs/, see its README) with schemathesis: for every operation, cases that follow the schema
(positive) and cases that break it (negative), with the subscription and resource group pinned to real
ones so that cases reach the providers. Every answer must come within the deadline, never be a 5xx,
carry ARM's error envelope when it is an error, and leave kumo alive.

Cases that would start real workloads are defused before they are sent: container images point at a
name kumo's offline catalog does not have (so a group fails its pull instead of running, and no
registry outside loopback is asked), and gitRepo volumes at a path that does not exist."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.core import NOT_SET

SPECS_DIR = Path(__file__).parent / "specs"
SPECS = {  # spec file -> the api-version its operations are sent with
    "resources-2024-11-01.json": "2024-11-01",
    "containerInstance-2023-05-01.json": "2023-05-01",
    "networkSecurityGroup-2024-05-01.json": "2024-05-01",
}
TIMEOUT = 30.0
NO_IMAGE = "kumo-fuzz/no-such-image:1"


@dataclass
class Target:
    endpoint: str
    ca: str
    token: str
    sub: str
    rg: str
    alive: Callable[[], bool]


@dataclass
class Tally:
    """Outcomes per operation, for the summary table."""

    cases: Counter[str] = field(default_factory=Counter)
    server_errors: Counter[str] = field(default_factory=Counter)
    timeouts: Counter[str] = field(default_factory=Counter)
    envelope: Counter[str] = field(default_factory=Counter)
    crashes: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    created_groups: set[str] = field(default_factory=set)


def operations(spec: str) -> Iterator[Any]:
    schema = schemathesis.openapi.from_path(SPECS_DIR / spec)
    for result in schema.get_all_operations():
        yield result.ok()


def _defuse(value: Any) -> Any:
    """Images to a name the catalog lacks; gitRepo to nowhere (no pulls from, or clones of, the outside)."""
    if isinstance(value, dict):
        out = {k: _defuse(v) for k, v in value.items()}
        if isinstance(out.get("image"), str):
            out["image"] = NO_IMAGE
        if isinstance(out.get("gitRepo"), dict):
            out["gitRepo"] = {**out["gitRepo"], "repository": "/nonexistent/kumo-fuzz.git"}
        return out
    if isinstance(value, list):
        return [_defuse(v) for v in value]
    return value


def _pin(case: Any, t: Target, api_version: str, keep_names: bool) -> None:
    params = case.path_parameters or {}
    if "subscriptionId" in params:
        params["subscriptionId"] = t.sub
    # The group itself is neither deleted nor re-created: those cases, and half of all other PUTs, keep
    # their generated names (fresh groups, cleaned up at the end).
    own_group = case.path.lower().endswith("/resourcegroups/{resourcegroupname}")
    method = case.method.upper()
    if "resourceGroupName" in params and not (own_group and method in ("PUT", "DELETE")) and not (
            keep_names and method == "PUT"):
        params["resourceGroupName"] = t.rg
    if isinstance(case.query, dict):
        case.query["api-version"] = api_version
    if case.body is not NOT_SET:
        case.body = _defuse(case.body)


def violations(response: requests.Response | None, method: str) -> list[str]:
    if response is None:
        return ["timeout"]
    problems = []
    if response.status_code >= 500:
        problems.append(f"5xx {response.status_code}: {response.text[:200]}")
    if response.status_code >= 400 and method.upper() != "HEAD":
        try:
            err = json.loads(response.content).get("error")
        except (ValueError, AttributeError):
            err = None
        if not (isinstance(err, dict) and isinstance(err.get("code"), str) and isinstance(err.get("message"), str)):
            problems.append(f"no ARM envelope on {response.status_code}: {response.text[:200]}")
    return problems


def fuzz_operation(op: Any, t: Target, api_version: str, tally: Tally, examples: int) -> None:
    """Run `examples` positive and as many negative cases of one operation, tallying what happened."""
    label = op.label
    session = requests.Session()
    strategy = st.tuples(st.one_of(op.as_strategy(generation_mode=GenerationMode.POSITIVE),
                                   op.as_strategy(generation_mode=GenerationMode.NEGATIVE)), st.booleans())

    @settings(max_examples=examples * 2, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def run(drawn: tuple[Any, bool]) -> None:
        case, keep_names = drawn
        _pin(case, t, api_version, keep_names)
        tally.cases[label] += 1
        started = time.monotonic()
        try:
            response = case.call(base_url=t.endpoint, session=session, verify=t.ca, timeout=TIMEOUT,
                                 headers={"Authorization": f"Bearer {t.token}"})
        except requests.Timeout:
            response = None
        except requests.RequestException as e:  # the server dropped the connection: a crash unless alive
            if not t.alive():
                tally.crashes[label] += 1
                tally.failures.append(f"{label}: kumo died: {e}")
                raise AssertionError(f"kumo died on {case.method} {case.formatted_path}") from e
            return
        elapsed = time.monotonic() - started
        if response is not None:
            tally.statuses[response.status_code] += 1
            if case.method.upper() == "PUT" and response.status_code in (200, 201) and "resourceGroupName" in (
                    case.path_parameters or {}):
                tally.created_groups.add(case.path_parameters["resourceGroupName"])
        for problem in violations(response, case.method):
            bucket = (tally.timeouts if problem == "timeout" else tally.server_errors if problem.startswith("5xx")
                      else tally.envelope)
            bucket[label] += 1
            tally.failures.append(f"{label} ({elapsed:.1f}s) {case.method} {case.formatted_path} "
                                  f"query={str(case.query)[:200]} body={str(case.body)[:300]}: {problem}")

    run()
    if not t.alive():
        tally.crashes[label] += 1
        tally.failures.append(f"{label}: kumo is not alive after the operation's cases")


def cleanup(t: Target, tally: Tally) -> None:
    """Delete the resource groups fuzzed PUTs created (and so whatever they hold)."""
    with requests.Session() as s:
        for name in tally.created_groups:
            if name.lower() == t.rg.lower():
                continue
            s.delete(f"{t.endpoint}/subscriptions/{t.sub}/resourcegroups/{name}", params={"api-version": "2024-11-01"},
                     headers={"Authorization": f"Bearer {t.token}"}, verify=t.ca, timeout=TIMEOUT)
