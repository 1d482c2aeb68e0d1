"""The store under concurrent clients, on whichever backend the suite runs (SQLite, or PostgreSQL in
`make test`'s second pass): racing creates of one name, more clients than the connection pool holds,
and `kumo status` naming the store the server really uses."""

from __future__ import annotations

import asyncio
import collections
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from tests.conftest import KumoServer, database_query, unique

pytestmark = [pytest.mark.e2e, pytest.mark.store]
API = {"api-version": "2024-11-01"}
TS_API = {"api-version": "2022-02-01"}


async def _concurrently(kumo: KumoServer, calls: list[Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]],
                        timeout: float = 120) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=kumo.endpoint, verify=kumo.tls(), timeout=timeout,
                                 headers={"Authorization": f"Bearer {kumo.token()}"},
                                 limits=httpx.Limits(max_connections=len(calls))) as c:
        return await asyncio.wait_for(asyncio.gather(*(call(c) for call in calls)), timeout)


def _no_server_errors(responses: list[httpx.Response]) -> collections.Counter[int]:
    codes = collections.Counter(r.status_code for r in responses)
    bad = [r.text for r in responses if r.status_code >= 500]
    assert not bad, f"{codes}: {bad[0]}"
    return codes


async def test_racing_creates_of_one_name_make_one_resource(kumo: KumoServer) -> None:
    sub = f"/subscriptions/{kumo.identity['subscription_id']}"
    name = unique("race")
    group = f"{sub}/resourcegroups/{name}"

    def put_group(i: int) -> Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]:
        return lambda c: c.put(group, params=API, json={"location": "local", "tags": {"i": str(i)}})

    try:
        codes = _no_server_errors(await _concurrently(kumo, [put_group(i) for i in range(20)]))
        assert codes[201] == 1 and codes[200] == 19, codes  # one create, the rest updates of it

        spec = f"{group}/providers/Microsoft.Resources/templateSpecs/ts"

        def put_spec(i: int) -> Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]:
            return lambda c: c.put(spec, params=TS_API, json={"location": "local", "tags": {"i": str(i)}})

        _no_server_errors(await _concurrently(kumo, [put_spec(i) for i in range(20)]))
        with kumo.http() as c:
            assert c.get(group, params=API).json()["tags"]["i"] in {str(i) for i in range(20)}
            listed = c.get(f"{group}/resources", params=API).json()["value"]
            assert [r["name"] for r in listed] == ["ts"]
    finally:
        with kumo.http() as c:
            c.delete(group, params=API)


async def test_more_clients_than_the_pool_holds(kumo: KumoServer) -> None:
    """Writers and listers well beyond the store's connection pool: every request is answered, none fails."""
    sub = f"/subscriptions/{kumo.identity['subscription_id']}"
    names = [unique("many") for _ in range(30)]
    calls: list[Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]] = []
    for n in names:
        calls.append(lambda c, n=n: c.put(f"{sub}/resourcegroups/{n}", params=API, json={"location": "local"}))
        calls.append(lambda c: c.get(f"{sub}/resourcegroups", params={**API, "$top": "1000"}))
        calls.append(lambda c: c.get(f"{sub}/resources", params=API))
    try:
        codes = _no_server_errors(await _concurrently(kumo, calls))
        assert set(codes) <= {200, 201}, codes
        with kumo.http() as c:
            for n in names:
                assert c.get(f"{sub}/resourcegroups/{n}", params=API).status_code == 200
    finally:
        with kumo.http() as c:
            for n in names:
                c.delete(f"{sub}/resourcegroups/{n}", params=API)


def test_status_names_the_store_in_use(kumo: KumoServer) -> None:
    report: dict[str, Any] = json.loads(kumo.kumo("status", "--json").stdout)
    if kumo.database_url is None:
        assert report["store"] == f"sqlite {kumo.data_dir / 'kumo.db'}"
        assert (kumo.data_dir / "kumo.db").exists()
        return
    db = kumo.database_url.rsplit("/", 1)[1]
    assert report["store"].startswith("postgresql kumo@") and report["store"].endswith(f"/{db}"), report["store"]
    assert "kumo:kumo" not in json.dumps(report)  # the password stays out of it


def test_resources_live_in_the_servers_own_database(kumo: KumoServer) -> None:
    """On PostgreSQL: the group the API made is a row in this server's database (and no SQLite file exists)."""
    if kumo.database_url is None:
        pytest.skip("SQLite run (KUMO_TEST_DATABASE_URL unset)")
    sub = kumo.identity["subscription_id"]
    name = unique("pgrow")
    with kumo.http() as c:
        assert c.put(f"/subscriptions/{sub}/resourcegroups/{name}", params=API,
                     json={"location": "local"}).status_code == 201
    try:
        rows = database_query(kumo.database_url, "SELECT name, provisioning_state FROM resources WHERE key = $1",
                              f"/subscriptions/{sub}/resourcegroups/{name}")
        assert rows == [{"name": name, "provisioning_state": "Succeeded"}]
    finally:
        with kumo.http() as c:
            c.delete(f"/subscriptions/{sub}/resourcegroups/{name}", params=API)
    sqlite = kumo.data_dir / "kumo.db"  # nothing (no `kumo` subcommand either) fell back to SQLite
    assert not sqlite.exists(), (time.time(), sqlite.stat(), sorted(p.name for p in kumo.data_dir.iterdir()))


@pytest.mark.parametrize("bad", ["%00", "%ed%a0%80"])  # NUL (PostgreSQL's text cannot hold it), a lone surrogate
def test_unstorable_characters_in_names_are_not_found_not_errors(kumo: KumoServer, bad: str) -> None:
    sub = f"/subscriptions/{kumo.identity['subscription_id']}"
    with kumo.http() as c:
        for method, path in [("GET", f"{sub}/resourcegroups/a{bad}b"), ("DELETE", f"{sub}/resourcegroups/a{bad}b"),
                             ("GET", f"/subscriptions/a{bad}b/resourcegroups/x"),
                             ("PUT", f"/subscriptions/a{bad}b/resourcegroups/x"),
                             ("GET", f"{sub}/resourcegroups/a{bad}b/providers/Microsoft.Network/virtualNetworks/v")]:
            r = c.request(method, path, params=API, json={"location": "local"})
            assert r.status_code in (400, 404) and r.json()["error"]["code"], (method, path, r.status_code, r.text)
        # a NUL inside a JSON body is data like any other (the body is stored as escaped JSON text)
        name = unique("nul")
        try:
            r = c.put(f"{sub}/resourcegroups/{name}", params=API, json={"location": "local", "tags": {"k": "a\x00b"}})
            assert r.status_code == 201, r.text
            assert c.get(f"{sub}/resourcegroups/{name}", params=API).json()["tags"] == {"k": "a\x00b"}
        finally:
            c.delete(f"{sub}/resourcegroups/{name}", params=API)
