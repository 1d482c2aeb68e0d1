"""Shared fixtures: a real kumo server (HTTPS, its own data dir and port) and real clients."""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
KUMO = [sys.executable, "-m", "kumo"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class KumoServer:
    """A running kumo: where it is, who the default principal is, and how to drive it."""

    data_dir: Path
    port: int
    extra_args: tuple[str, ...] = ()
    database_url: str | None = None  # its own PostgreSQL database (KUMO_TEST_DATABASE_URL), else SQLite

    @property
    def endpoint(self) -> str:
        return f"https://localhost:{self.port}"

    @property
    def ca(self) -> str:
        return str(self.data_dir / "tls" / "ca.pem")

    def tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca)

    @property
    def ca_bundle(self) -> str:
        return str(self.data_dir / "tls" / "bundle.pem")

    @property
    def identity(self) -> dict[str, str]:
        return json.loads((self.data_dir / "identity" / "default.json").read_text())

    def env(self) -> dict[str, str]:
        # Every `kumo` subcommand and every restart after a kill -9 uses the same database.
        env = {**os.environ, "KUMO_DATA_DIR": str(self.data_dir)}
        if self.database_url:
            env["KUMO_DATABASE_URL"] = self.database_url
        return env

    def kumo(self, *args: str, check: bool = True, timeout: float = 300,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([*KUMO, *args], env={**self.env(), **(env or {})}, capture_output=True, text=True,
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"kumo {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def start(self) -> None:
        self.kumo("up", "--detach", "--port", str(self.port), *self.extra_args)

    def stop(self) -> None:
        self.kumo("down")

    def purge(self) -> None:
        """Delete every resource group of the default subscription (and so what runs for them)."""
        api = {"api-version": "2024-11-01"}
        base = f"/subscriptions/{self.identity['subscription_id']}/resourcegroups"
        with self.http() as c:
            names: list[str] = []
            url: str | None = base
            params: dict[str, str] | None = api
            while url:  # every page (the session kumo pages by 5)
                page = c.get(url, params=params).json()
                names += [g["name"] for g in page.get("value", [])]
                url, params = page.get("nextLink"), None
            operations = []
            for name in names:
                r = c.delete(f"{base}/{name}", params=api)
                if r.status_code == 202 and r.headers.get("Azure-AsyncOperation"):
                    operations.append(r.headers["Azure-AsyncOperation"])
            for name in names:
                for _ in range(600):
                    if c.get(f"{base}/{name}", params=api).status_code == 404:
                        break
                    time.sleep(0.1)
            # A group is 404 as soon as its rows are gone; its delete operation ends once the host objects of
            # what it held are gone too (a VNet's namespace, say): stopping kumo before then would leave them.
            for status_url in operations:
                for _ in range(600):
                    r = c.get(status_url)
                    if r.status_code != 200 or r.json().get("status") not in ("InProgress", "Running", "Accepted"):
                        break
                    time.sleep(0.1)

    def pid(self) -> int:
        return int(json.loads((self.data_dir / "run.json").read_text())["pid"])

    def az(self, *args: str, check: bool = True, timeout: float = 300, env: dict[str, str] | None = None) -> Any:
        """Run the real az CLI through `kumo az` and return its JSON output."""
        proc = self.kumo("az", *args, "-o", "json", check=False, timeout=timeout, env=env)
        if check and proc.returncode != 0:
            raise AssertionError(f"az {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        if not check:
            return proc
        return json.loads(proc.stdout) if proc.stdout.strip() else None

    def token(self, scope: str | None = None, client_id: str | None = None, secret: str | None = None,
              tenant: str | None = None) -> str:
        ident = self.identity
        r = httpx.post(f"{self.endpoint}/{tenant or ident['tenant_id']}/oauth2/v2.0/token", verify=self.tls(), data={
            "grant_type": "client_credentials", "client_id": client_id or ident["client_id"],
            "client_secret": secret or ident["client_secret"], "scope": scope or f"{self.endpoint}/.default"})
        assert r.status_code == 200, r.text
        return r.json()["access_token"]

    def http(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token or self.token()}"}
        return httpx.Client(base_url=self.endpoint, verify=self.tls(), headers=headers, timeout=30)


def public_pool() -> str:
    """Each test server its own slice of loopback for public IPs: two kumos may not share one, so
    skip the slices that running kumos hold (their site files name their pools)."""
    taken = set()
    for site in Path("/run/kumo/sites").glob("*.lock"):
        try:
            info = json.loads(site.read_text() or "{}")
            os.kill(int(info["pid"]), 0)
            taken.add(info["public_pool"])
        except (OSError, ValueError, KeyError):
            continue
    free = [f"127.78.{n}.0/24" for n in range(256) if f"127.78.{n}.0/24" not in taken]
    return random.choice(free)


def database_query(url: str, sql: str, *args: Any) -> list[dict[str, Any]]:
    """Run one statement on the PostgreSQL database `url` names, outside any transaction (CREATE/DROP
    DATABASE need that), and return its rows. In a thread of its own: a caller may be inside a running
    event loop (an async test)."""
    import asyncpg

    async def run() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(url, timeout=30)
        try:
            if args or sql.lstrip().upper().startswith("SELECT"):
                return [dict(r) for r in await conn.fetch(sql, *args)]
            await conn.execute(sql)
            return []
        finally:
            await conn.close()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, run()).result()


def new_database(data_dir: Path) -> str | None:
    """With KUMO_TEST_DATABASE_URL (a PostgreSQL server's URL), a fresh database for one kumo server, named
    after its data dir (kumo_t_<suffix>); its URL. None without it: the server uses SQLite in its data dir."""
    admin = os.environ.get("KUMO_TEST_DATABASE_URL")
    if not admin:
        return None
    from sqlalchemy.engine import make_url

    name = "kumo_t_" + "".join(ch if ch.isalnum() else "_" for ch in data_dir.name.removeprefix("kumo-test-").lower())
    database_query(admin, f'CREATE DATABASE "{name}"')
    return make_url(admin).set(database=name).render_as_string(hide_password=False)


def drop_database(url: str) -> None:
    from sqlalchemy.engine import make_url

    admin = os.environ.get("KUMO_TEST_DATABASE_URL") or make_url(url).set(database="postgres").render_as_string(
        hide_password=False)
    name = make_url(url).database
    database_query(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def start_server(*extra_args: str) -> KumoServer:
    data_dir = Path(tempfile.mkdtemp(prefix="kumo-test-"))
    server = KumoServer(data_dir, free_port(), ("--public-ip-pool", public_pool(), *extra_args))
    try:
        server.database_url = new_database(data_dir)
        server.start()
    except BaseException:
        # a server that never came up leaves nothing either
        if server.database_url:
            drop_database(server.database_url)
        shutil.rmtree(data_dir, ignore_errors=True)
        raise
    return server


def stop_server(server: KumoServer) -> None:
    """Delete every resource group first: containers outlive kumo by design (conmon supervises them),
    so a test server that stopped with groups left would leave them running without their state."""
    try:
        try:
            server.purge()
        finally:
            server.stop()
    finally:
        try:
            if server.database_url:
                drop_database(server.database_url)
        finally:
            shutil.rmtree(server.data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def kumo() -> Iterator[KumoServer]:
    """One kumo for the session, with small pages so paging is exercised by ordinary lists."""
    server = start_server("--page-size", "5")
    yield server
    stop_server(server)


@pytest.fixture(scope="session")
def sdk_credential(kumo: KumoServer) -> Any:
    from azure.identity import ClientSecretCredential

    os.environ["REQUESTS_CA_BUNDLE"] = kumo.ca_bundle
    ident = kumo.identity
    return ClientSecretCredential(ident["tenant_id"], ident["client_id"], ident["client_secret"],
                                  authority=kumo.endpoint, disable_instance_discovery=True)


@pytest.fixture(scope="session")
def resource_client(kumo: KumoServer, sdk_credential: Any) -> Any:
    from azure.mgmt.resource.resources import ResourceManagementClient

    return ResourceManagementClient(sdk_credential, kumo.identity["subscription_id"], base_url=kumo.endpoint,
                                    credential_scopes=[f"{kumo.endpoint}/.default"], polling_interval=0.2)


@pytest.fixture(scope="session")
def deployments_client(kumo: KumoServer, sdk_credential: Any) -> Any:
    from azure.mgmt.resource.deployments import DeploymentsMgmtClient

    return DeploymentsMgmtClient(sdk_credential, kumo.identity["subscription_id"], base_url=kumo.endpoint,
                                 credential_scopes=[f"{kumo.endpoint}/.default"], polling_interval=0.2)


@pytest.fixture(scope="session")
def network_client(kumo: KumoServer, sdk_credential: Any) -> Any:
    from azure.mgmt.network import NetworkManagementClient

    return NetworkManagementClient(sdk_credential, kumo.identity["subscription_id"], base_url=kumo.endpoint,
                                   credential_scopes=[f"{kumo.endpoint}/.default"], polling_interval=0.2)


@pytest.fixture
def rg(resource_client: Any) -> Iterator[str]:
    """A resource group of the test's own, deleted (with the host objects of all it holds) at the end."""
    name = unique("rg")
    resource_client.resource_groups.create_or_update(name, {"location": "local"})
    try:
        yield name
    finally:
        if resource_client.resource_groups.check_existence(name):  # a test may have deleted it itself
            resource_client.resource_groups.begin_delete(name).result()


@pytest.fixture(scope="module")
def ssh_key() -> Iterator[Path]:
    """One SSH key pair for a test module's guests (`<dir>/id` and `id.pub`)."""
    from tests.vmlib import new_ssh_key

    d = Path(tempfile.mkdtemp(prefix="kumo-vmkey-"))
    yield new_ssh_key(d)
    shutil.rmtree(d, ignore_errors=True)


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"
