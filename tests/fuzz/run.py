"""Hostile-input fuzzing at scale, with a summary table.

    .venv/bin/python -m tests.fuzz.run                       # everything, default counts
    .venv/bin/python -m tests.fuzz.run --parts openapi,hostile --openapi-examples 200
    .venv/bin/python -m tests.fuzz.run --parts templates,layers --template-examples 20000

Parts: `openapi` (schemathesis cases from Azure's specs in tests/fuzz/specs/ against a fresh kumo),
`hostile` (the hand-written hostile requests, tests/fuzz/hostile.py), `templates` (template expressions,
tests/fuzz/expressions.py) and `layers` (OCI layer tars, tests/fuzz/layers.py; needs root). The front-door
parts start their own kumo (tests.conftest.start_server) and stop it, deleting everything, at the end.
Exit status 1 when any row has a 5xx, timeout, envelope violation or crash."""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import KumoServer, start_server, stop_server
from tests.fuzz import expressions, hostile, layers, openapi

API = {"api-version": "2024-11-01"}


@dataclass
class Row:
    part: str
    group: str
    cases: int = 0
    server_errors: int = 0
    timeouts: int = 0
    envelope: int = 0
    crashes: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def bad(self) -> int:
        return self.server_errors + self.timeouts + self.envelope + self.crashes


def _alive(server: KumoServer) -> Callable[[], bool]:
    def alive() -> bool:
        try:
            return httpx.get(f"{server.endpoint}/kumo/health", verify=server.tls(), timeout=10).status_code == 200
        except httpx.HTTPError:
            return False

    return alive


def run_openapi(server: KumoServer, rg: str, examples: int) -> list[Row]:
    t = openapi.Target(server.endpoint, server.ca, server.token(), server.identity["subscription_id"], rg,
                       _alive(server))
    rows = []
    for spec, version in openapi.SPECS.items():
        tally = openapi.Tally()
        names: dict[str, str] = {}
        for op in openapi.operations(spec):
            names[op.label] = f"{op.definition.raw.get('operationId', '')} ({op.label.split(' ')[0]})"
            try:
                openapi.fuzz_operation(op, t, version, tally, examples)
            except Exception as e:  # a crash the operation's run stopped at; tallied already
                tally.failures.append(f"{op.label}: {e}")
            t.token = server.token()  # tokens live an hour; a long run renews them
        openapi.cleanup(t, tally)
        for label in sorted(tally.cases):
            rows.append(Row("openapi", f"{spec.split('-')[0]}: {names[label]}",
                            tally.cases[label], tally.server_errors[label], tally.timeouts[label],
                            tally.envelope[label], tally.crashes[label],
                            [f for f in tally.failures if f.startswith(label)]))
    return rows


def run_hostile(server: KumoServer, rg: str) -> list[Row]:
    t = hostile.Target("127.0.0.1", server.port, server.tls(), server.token(), server.identity["subscription_id"], rg)
    alive = _alive(server)
    pid = server.pid()
    rows: dict[str, Row] = {}
    for case in hostile.cases():
        row = rows.setdefault(case.group, Row("hostile", case.group))
        row.cases += 1
        answer = hostile.run(t, case)
        for problem in hostile.violations(case, answer):
            if problem.startswith("timeout"):
                row.timeouts += 1
            elif problem.startswith("5xx"):
                row.server_errors += 1
            else:
                row.envelope += 1
            row.notes.append(f"{case.name}: {problem}")
        if not alive() or server.pid() != pid:
            row.crashes += 1
            row.notes.append(f"{case.name}: kumo died")
            break
    return list(rows.values())


def _hypothesis(examples: int, strategy: st.SearchStrategy[Any], check: Callable[[Any], str], row: Row) -> None:
    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(strategy)
    def run(value: Any) -> None:
        row.cases += 1
        check(value)

    try:
        run()
    except Exception as e:  # hypothesis re-raises the shrunk failing example
        row.crashes += 1
        row.notes.append("".join(traceback.format_exception_only(type(e), e)).strip()[:2000])


def run_templates(examples: int) -> list[Row]:
    rows = []
    for name, strategy in (("any text", expressions.ANY_TEXT), ("generated calls", expressions.EXPRESSIONS),
                           ("typed calls, extreme arguments", expressions.TYPED)):
        row = Row("templates", name)
        _hypothesis(examples, strategy, expressions.check, row)
        rows.append(row)
    bombs = Row("templates", "bombs (time and memory)")
    for name, text in expressions.BOMBS.items():
        bombs.cases += 1
        started = time.monotonic()
        try:  # timed on its own: tracemalloc slows evaluation several times over
            if expressions.check(text) != "error":
                bombs.crashes += 1
                bombs.notes.append(f"{name}: evaluated instead of refused")
        except AssertionError as e:  # over the time limit
            bombs.timeouts += 1
            bombs.notes.append(f"{name}: {e}")
        seconds = time.monotonic() - started
        tracemalloc.start()
        try:
            expressions.check(text)
        except AssertionError:
            pass
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        bombs.notes.append(f"{name}: refused in {seconds:.2f}s, peak {peak / 1e6:.1f} MB")
        if peak > 256e6:
            bombs.crashes += 1
    rows.append(bombs)
    return rows


def run_layers(examples: int, scale: int) -> list[Row]:
    if os.geteuid() != 0:
        return [Row("layers", "skipped: needs root")]
    sentinel = "/tmp/kumo-fuzz-sentinel"
    row = Row("layers", "hostile tar entries")

    def check(drawn: tuple[list, bool, int]) -> str:
        members, compress, truncate = drawn
        with layers.Box() as box:
            for info, _ in members:
                info.linkname = info.linkname.replace(sentinel, str(box.outside))
            outcome = box.unpack(layers.build_tar(members, compress=compress, truncate=truncate))
            box.check(outcome)
        return "ok"

    _hypothesis(examples, st.tuples(layers.entries(sentinel), st.booleans(), st.sampled_from([0, 0, 0, 100, 600])),
                check, row)
    bombs = Row("layers", "bombs (memory)")
    for name, make in layers.BOMBS.items():
        bombs.cases += 1
        blob = make(scale)
        with layers.Box() as box:
            tracemalloc.start()
            started = time.monotonic()
            try:
                outcome = box.unpack(blob)
                box.check(outcome)
            except Exception as e:
                bombs.crashes += 1
                bombs.notes.append(f"{name}: {type(e).__name__}: {e}")
                outcome = "error"
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            bombs.notes.append(f"{name} ({len(blob) / 1e3:.0f} KB blob): {outcome} in "
                               f"{time.monotonic() - started:.1f}s, peak {peak / 1e6:.1f} MB")
            if peak > layers.PEAK_LIMIT.get(name, 32 << 20) * scale:
                bombs.crashes += 1
    return [row, bombs]


def table(rows: list[Row]) -> str:
    head = ("part", "group", "cases", "5xx", "timeouts", "envelope", "crashes")
    lines = [head] + [(r.part, r.group[:90], str(r.cases), str(r.server_errors), str(r.timeouts), str(r.envelope),
                       str(r.crashes)) for r in rows]
    total = ("total", "", *(str(sum(int(x[i]) for x in lines[1:])) for i in range(2, 7)))
    lines.append(total)
    widths = [max(len(x[i]) for x in lines) for i in range(len(head))]
    out = ["| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + " |" for line in lines]
    out.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="openapi,hostile,templates,layers")
    ap.add_argument("--openapi-examples", type=int, default=50, help="positive (and as many negative) per operation")
    ap.add_argument("--template-examples", type=int, default=3000)
    ap.add_argument("--layer-examples", type=int, default=1000)
    ap.add_argument("--bomb-scale", type=int, default=5, help="multiplies the layer bombs' sizes")
    ap.add_argument("--notes", action="store_true", help="print every note, not only failures")
    args = ap.parse_args(argv)
    parts = set(args.parts.split(","))
    rows: list[Row] = []
    started = time.monotonic()
    if parts & {"openapi", "hostile"}:
        server = start_server()
        try:
            sub = server.identity["subscription_id"]
            rg = "fuzz-run"
            with server.http() as c:
                assert c.put(f"/subscriptions/{sub}/resourcegroups/{rg}", params=API,
                             json={"location": "local"}).status_code in (200, 201)
            if "openapi" in parts:
                rows += run_openapi(server, rg, args.openapi_examples)
            if "hostile" in parts:
                with server.http() as c:  # again: the openapi part may have deleted or changed it
                    c.put(f"/subscriptions/{sub}/resourcegroups/{rg}", params=API, json={"location": "local"})
                rows += run_hostile(server, rg)
        finally:
            stop_server(server)
    if "templates" in parts:
        rows += run_templates(args.template_examples)
    if "layers" in parts:
        rows += run_layers(args.layer_examples, args.bomb_scale)
    print(table(rows))
    print(f"\n{sum(r.cases for r in rows)} cases in {time.monotonic() - started:.0f}s")
    for r in rows:
        for note in r.notes if (args.notes or r.bad) else []:
            print(f"  [{r.part}/{r.group}] {note}")
    return 1 if any(r.bad for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
