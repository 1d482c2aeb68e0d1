"""State survives restarts, including `kill -9`; unfinished operations resume and finish."""

from __future__ import annotations

import os
import signal
import time

import httpx
import pytest

from tests.conftest import start_server, stop_server, unique

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.store]
API = {"api-version": "2024-11-01"}


def _wait_gone(pid: int, timeout: float = 10) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError(f"pid {pid} still alive")


def test_resources_and_operations_survive_kill_9() -> None:
    server = start_server()
    try:
        sub = f"/subscriptions/{server.identity['subscription_id']}"
        keep, doomed = unique("keep"), unique("doomed")
        with server.http() as c:
            c.put(f"{sub}/resourcegroups/{keep}", params=API, json={"location": "local", "tags": {"k": "v"}})
            c.put(f"{sub}/resourcegroups/{doomed}", params=API, json={"location": "local"})
            for i in range(20):
                c.put(f"{sub}/resourcegroups/{doomed}/providers/Microsoft.Resources/templateSpecs/s{i}",
                      params={"api-version": "2022-02-01"}, json={"location": "local"})
            r = c.delete(f"{sub}/resourcegroups/{doomed}", params=API)
            assert r.status_code == 202
            status_url = r.headers["Azure-AsyncOperation"]
        pid = server.pid()
        os.kill(pid, signal.SIGKILL)  # mid-operation, or just after: either way nothing may be lost
        _wait_gone(pid)
        (server.data_dir / "run.json").unlink(missing_ok=True)

        server.start()
        assert server.pid() != pid
        with server.http() as c:
            kept = c.get(f"{sub}/resourcegroups/{keep}", params=API)
            assert kept.status_code == 200 and kept.json()["tags"] == {"k": "v"}
            deadline = time.time() + 20
            while (status := c.get(status_url).json())["status"] == "InProgress" and time.time() < deadline:
                time.sleep(0.1)
            assert status["status"] == "Succeeded"
            assert c.get(f"{sub}/resourcegroups/{doomed}", params=API).status_code == 404
            listed = c.get(f"{sub}/resources", params={**API, "$filter": f"resourceGroup eq '{doomed}'"}).json()
            assert listed["value"] == []
    finally:
        stop_server(server)


def test_clean_stop_and_start_keeps_identity_and_certificates() -> None:
    server = start_server()
    try:
        ident = server.identity
        ca = (server.data_dir / "tls" / "ca.pem").read_bytes()
        token = server.token()
        server.stop()
        server.start()
        assert server.identity == ident
        assert (server.data_dir / "tls" / "ca.pem").read_bytes() == ca
        with server.http(token) as c:  # tokens signed before the restart stay valid
            assert c.get("/subscriptions", params=API).status_code == 200
        status = server.kumo("status", "--json").stdout
        assert '"running": true' in status
    finally:
        stop_server(server)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.endpoint}/kumo/health", verify=False, timeout=2)
