"""The store's API on SQLite, migrations, token signing and certificates."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest
from cryptography import x509

from kumo.config import Paths
from kumo.identity.tls import ensure_certificates
from kumo.identity.tokens import TokenError, TokenSigner
from kumo.store import Operation, Resource, Store

pytestmark = pytest.mark.store


# The store's API must behave the same on every backend: SQLite always, PostgreSQL when
# KUMO_TEST_DATABASE_URL names a database these tests may fill (e.g. postgresql://kumo:kumo@localhost/kumo_t).
BACKENDS = ["sqlite"] + (["postgresql"] if os.environ.get("KUMO_TEST_DATABASE_URL") else [])


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest) -> str | None:
    return os.environ["KUMO_TEST_DATABASE_URL"] if request.param == "postgresql" else None


async def test_store_resources_operations_and_events(tmp_path: Path, db_url: str | None) -> None:
    store = await Store.open(db_url, tmp_path / "kumo.db")
    try:
        sub = uuid.uuid4().hex[:12]  # a fresh scope, so reruns against a kept database do not collide
        r = Resource(key=f"/subscriptions/{sub}/resourcegroups/rg", id=f"/subscriptions/{sub}/resourceGroups/rg",
                     subscription_id=sub, resource_group="rg", type="microsoft.resources/resourcegroups",
                     name="rg", body={"name": "rg"}, location="local")
        async with store.write() as tx:
            await tx.put_resource(r)
            await tx.add_event(r.key, "Created", "test")
            await tx.add_operation(Operation(sub, sub, "Microsoft.Resources", "local", "k", r.key))
        async with store.read() as tx:
            got = await tx.get_resource(r.key)
            assert got is not None and got.body == {"name": "rg"} and got.created_at > 0
            assert [e.kind for e in await tx.events_for(r.key)] == ["Created"]
            assert sub in [o.id for o in await tx.unfinished_operations()]
        async with store.write() as tx:
            await tx.finish_operation(sub, "Succeeded", result={"ok": True})
        async with store.read() as tx:
            op = await tx.get_operation(sub)
            assert op is not None and op.done and op.result == {"ok": True}
            assert sub not in [o.id for o in await tx.unfinished_operations()]
    finally:
        await store.close()
    # Re-opening runs no migration twice and keeps the data.
    again = await Store.open(db_url, tmp_path / "kumo.db")
    try:
        async with again.read() as tx:
            assert await tx.get_resource(r.key) is not None
    finally:
        await again.close()


async def test_a_failed_write_transaction_leaves_nothing(tmp_path: Path, db_url: str | None) -> None:
    store = await Store.open(db_url, tmp_path / "kumo.db")
    key = uuid.uuid4().hex
    try:
        with pytest.raises(RuntimeError):
            async with store.write() as tx:
                await tx.add_event(key, "x", "y")
                raise RuntimeError("boom")
        async with store.read() as tx:
            assert await tx.events_for(key) == []
    finally:
        await store.close()


def test_token_signer_checks_signature_expiry_and_audience(tmp_path: Path) -> None:
    signer = TokenSigner(tmp_path / "key.pem")
    token, _ = signer.issue(issuer="https://localhost/t/v2.0", tenant_id="t", object_id="o", app_id="a",
                            audience="https://localhost:8443/")
    assert signer.verify(token, {"https://localhost:8443"})["oid"] == "o"
    with pytest.raises(TokenError) as e:
        signer.verify(token, {"https://management.azure.com"})
    assert e.value.code == "InvalidAuthenticationTokenAudience"
    old, _ = signer.issue(issuer="i", tenant_id="t", object_id="o", app_id="a", audience="x", lifetime=-3600)
    with pytest.raises(TokenError) as e:
        signer.verify(old, None)
    assert e.value.code == "ExpiredAuthenticationToken"
    other = TokenSigner(tmp_path / "other.pem")
    with pytest.raises(TokenError) as e:
        other.verify(token, None)
    assert e.value.code == "InvalidAuthenticationToken"
    assert TokenSigner(tmp_path / "key.pem").kid == signer.kid  # the key persists


def test_certificates_cover_names_and_are_reissued_when_names_change(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    assert ensure_certificates(paths, ["localhost", "127.0.0.1"]) is True
    assert ensure_certificates(paths, ["localhost", "127.0.0.1"]) is False
    cert = x509.load_pem_x509_certificate(paths.server_cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert ensure_certificates(paths, ["localhost", "127.0.0.1", "kumo.example"]) is True
    assert (paths.ca_key.stat().st_mode & 0o777) == 0o600
    assert cert.not_valid_after_utc.timestamp() > time.time()
