"""Identity and access: login paths, and every way a token or a caller can be refused."""

from __future__ import annotations

import json
import time

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.conftest import KumoServer, start_server, stop_server, unique

pytestmark = pytest.mark.e2e
API = {"api-version": "2024-11-01"}


def _rg_url(kumo: KumoServer, name: str, sub: str | None = None) -> str:
    return f"/subscriptions/{sub or kumo.identity['subscription_id']}/resourcegroups/{name}"


def _claims(kumo: KumoServer, **overrides) -> dict:
    ident = kumo.identity
    now = int(time.time())
    claims = {"aud": f"{kumo.endpoint}/", "iss": f"{kumo.endpoint}/{ident['tenant_id']}/v2.0", "iat": now,
              "nbf": now, "exp": now + 600, "tid": ident["tenant_id"], "oid": ident["object_id"],
              "appid": ident["client_id"]}
    claims.update(overrides)
    return claims


def _signed_by_kumo(kumo: KumoServer, claims: dict) -> str:
    key = (kumo.data_dir / "identity" / "signing-key.pem").read_bytes()
    return jwt.encode(claims, key, algorithm="RS256")


def _error(r: httpx.Response) -> str:
    return r.json()["error"]["code"]


def test_openid_discovery_and_jwks_verify_issued_tokens(kumo: KumoServer) -> None:
    tid = kumo.identity["tenant_id"]
    with httpx.Client(verify=kumo.tls()) as c:
        conf = c.get(f"{kumo.endpoint}/{tid}/v2.0/.well-known/openid-configuration").json()
        assert conf["token_endpoint"] == f"{kumo.endpoint}/{tid}/oauth2/v2.0/token"
        jwks = c.get(conf["jwks_uri"]).json()
    token = kumo.token()
    key = jwt.PyJWK(jwks["keys"][0])
    claims = jwt.decode(token, key.key, algorithms=["RS256"], audience=kumo.endpoint)
    assert claims["tid"] == tid and claims["oid"] == kumo.identity["object_id"]


def test_missing_forged_expired_and_wrong_audience_tokens_get_401(kumo: KumoServer) -> None:
    url = _rg_url(kumo, "anything")
    with httpx.Client(base_url=kumo.endpoint, verify=kumo.tls()) as c:
        r = c.get(url, params=API)
        assert r.status_code == 401 and _error(r) == "AuthenticationFailed"
        assert r.headers["www-authenticate"].startswith("Bearer ")

        other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        forged = jwt.encode(_claims(kumo), other_key, algorithm="RS256")
        r = c.get(url, params=API, headers={"Authorization": f"Bearer {forged}"})
        assert r.status_code == 401 and _error(r) == "InvalidAuthenticationToken"

        r = c.get(url, params=API, headers={"Authorization": "Bearer not-a-jwt"})
        assert r.status_code == 401 and _error(r) == "InvalidAuthenticationToken"

        expired = _signed_by_kumo(kumo, _claims(kumo, iat=1000, nbf=1000, exp=2000))
        r = c.get(url, params=API, headers={"Authorization": f"Bearer {expired}"})
        assert r.status_code == 401 and _error(r) == "ExpiredAuthenticationToken"

        acr_token = kumo.token(scope="https://containerregistry.azure.net/.default")
        r = c.get(url, params=API, headers={"Authorization": f"Bearer {acr_token}"})
        assert r.status_code == 401 and _error(r) == "InvalidAuthenticationTokenAudience"


def test_unknown_resource_scope_is_refused_at_the_token_endpoint(kumo: KumoServer) -> None:
    ident = kumo.identity
    r = httpx.post(f"{kumo.endpoint}/{ident['tenant_id']}/oauth2/v2.0/token", verify=kumo.tls(), data={
        "grant_type": "client_credentials", "client_id": ident["client_id"], "client_secret": ident["client_secret"],
        "scope": "https://vault.azure.net/.default"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_resource"
    r = httpx.post(f"{kumo.endpoint}/{ident['tenant_id']}/oauth2/v2.0/token", verify=kumo.tls(), data={
        "grant_type": "client_credentials", "client_id": ident["client_id"], "client_secret": "wrong",
        "scope": f"{kumo.endpoint}/.default"})
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"


def test_reader_reads_but_cannot_write_and_other_subscriptions_are_invisible(kumo: KumoServer) -> None:
    other_sub = json.loads(kumo.kumo("subscription", "create", "--name", unique("sub")).stdout)["subscriptionId"]
    reader = json.loads(kumo.kumo("sp", "create", "--name", unique("reader"), "--role", "Reader").stdout)
    token = kumo.token(client_id=reader["appId"], secret=reader["password"])
    name = unique("rgrbac")
    with kumo.http() as owner:
        assert owner.put(_rg_url(kumo, name), params=API, json={"location": "local"}).status_code == 201
        assert owner.put(_rg_url(kumo, name, other_sub), params=API, json={"location": "local"}).status_code == 201
    with kumo.http(token) as c:
        assert c.get(_rg_url(kumo, name), params=API).status_code == 200
        r = c.put(_rg_url(kumo, unique("rgw")), params=API, json={"location": "local"})
        assert r.status_code == 403 and _error(r) == "AuthorizationFailed"
        r = c.delete(_rg_url(kumo, name), params=API)
        assert r.status_code == 403
        r = c.get(_rg_url(kumo, name, other_sub), params=API)
        assert r.status_code == 403 and _error(r) == "AuthorizationFailed"
        subs = c.get("/subscriptions", params=API).json()["value"]
        assert [s["subscriptionId"] for s in subs] == [kumo.identity["subscription_id"]]
    with kumo.http() as owner:
        owner.delete(_rg_url(kumo, name), params=API)
        owner.delete(_rg_url(kumo, name, other_sub), params=API)


def test_token_from_another_tenant_is_refused(kumo: KumoServer) -> None:
    tenant = json.loads(kumo.kumo("tenant", "create", "--name", unique("Contoso")).stdout)["tenantId"]
    token = kumo.token(tenant=tenant)
    with kumo.http(token) as c:
        r = c.get(_rg_url(kumo, "x"), params=API)
    assert r.status_code == 401 and _error(r) == "InvalidAuthenticationTokenTenant"


def test_password_and_refresh_grants(kumo: KumoServer) -> None:
    user = json.loads(kumo.kumo("sp", "create", "--name", unique("alice"), "--role", "Contributor").stdout)
    url = f"{kumo.endpoint}/{kumo.identity['tenant_id']}/oauth2/v2.0/token"
    scope = f"{kumo.endpoint}//.default offline_access openid profile"
    with httpx.Client(verify=kumo.tls()) as c:
        r = c.post(url, data={"grant_type": "password", "client_id": "04b07795-8ddb-461a-bbee-02f9e1bf7b46",
                              "username": user["displayName"], "password": user["password"], "scope": scope})
        assert r.status_code == 200, r.text
        body = r.json()
        assert {"access_token", "refresh_token", "id_token", "client_info"} <= set(body)
        r = c.post(url, data={"grant_type": "password", "client_id": "x", "username": user["displayName"],
                              "password": "wrong", "scope": scope})
        assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
        refreshed = c.post(url, data={"grant_type": "refresh_token", "refresh_token": body["refresh_token"],
                                      "scope": scope, "client_id": "x"})
        assert refreshed.status_code == 200
    with kumo.http(refreshed.json()["access_token"]) as arm:
        assert arm.get("/subscriptions", params=API).status_code == 200
    with kumo.http(body["refresh_token"]) as arm:  # a refresh token is no access token
        assert arm.get("/subscriptions", params=API).status_code == 401


def test_managed_identity_endpoint(kumo: KumoServer) -> None:
    header = (kumo.data_dir / "identity" / "msi-header").read_text().strip()
    with httpx.Client(verify=kumo.tls()) as c:
        params = {"api-version": "2019-08-01", "resource": f"{kumo.endpoint}/"}
        assert c.get(f"{kumo.endpoint}/msi/token", params=params).status_code == 401
        r = c.get(f"{kumo.endpoint}/msi/token", params=params, headers={"X-IDENTITY-HEADER": header})
        assert r.status_code == 200
        token = r.json()["access_token"]
        assert int(r.json()["expires_on"]) > time.time()
    with kumo.http(token) as arm:
        assert arm.get("/subscriptions", params=API).status_code == 200


def test_strict_auth_accepts_only_registered_principals() -> None:
    server = start_server("--strict-auth")
    try:
        ident = server.identity
        url = f"{server.endpoint}/{ident['tenant_id']}/oauth2/v2.0/token"
        form = {"grant_type": "client_credentials", "client_id": "11111111-1111-1111-1111-111111111111",
                "client_secret": "anything", "scope": f"{server.endpoint}/.default"}
        r = httpx.post(url, data=form, verify=server.tls())
        assert r.status_code == 400 and r.json()["error"] == "unauthorized_client"
        assert server.token()  # the registered default principal still logs in
    finally:
        stop_server(server)


def test_convenience_login_with_any_client_id(kumo: KumoServer) -> None:
    token = kumo.token(client_id="22222222-2222-2222-2222-222222222222", secret="whatever")
    with kumo.http(token) as c:
        subs = {s["subscriptionId"] for s in c.get("/subscriptions", params=API).json()["value"]}
    assert kumo.identity["subscription_id"] in subs
