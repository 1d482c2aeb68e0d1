"""Identity and access: login paths, and every way a token or a caller can be refused."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.conftest import KumoServer, start_server, stop_server, unique

pytestmark = [pytest.mark.e2e, pytest.mark.store]
API = {"api-version": "2024-11-01"}
ACR_SCOPE = "https://containerregistry.azure.net/.default"
EMPTY_GUID = "00000000-0000-0000-0000-000000000000"


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


def _delete_group(kumo: KumoServer, group: str) -> None:
    """Delete a resource group (by its URL) as the Owner and wait until it is gone."""
    with kumo.http() as owner:
        owner.delete(group, params=API)
        for _ in range(300):
            if owner.get(group, params=API).status_code == 404:
                break
            time.sleep(0.1)


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


def test_tokens_with_no_or_a_confused_algorithm_or_no_validity_yet_get_401(kumo: KumoServer) -> None:
    """alg=none, HS256 keyed with kumo's public key (the classic RS/HS confusion), a token not yet valid,
    one lacking the tenant id, and a tampered payload under a genuine signature."""
    url = _rg_url(kumo, "anything")
    key_pem = (kumo.data_dir / "identity" / "signing-key.pem").read_bytes()
    header_none = jwt.utils.base64url_encode(json.dumps({"alg": "none", "typ": "JWT"}).encode()).decode()
    body = jwt.utils.base64url_encode(json.dumps(_claims(kumo)).encode()).decode()
    genuine = _signed_by_kumo(kumo, _claims(kumo, oid="00000000-0000-0000-0000-000000000001"))
    head, _, sig = genuine.split(".")
    tampered = f"{head}.{body}.{sig}"  # the default principal's claims under another token's signature
    private = serialization.load_pem_private_key(key_pem, password=None)
    pub = private.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    hs_head = jwt.utils.base64url_encode(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()).decode()
    mac = hmac.new(pub, f"{hs_head}.{body}".encode(), hashlib.sha256).digest()  # PyJWT refuses to do this
    hs256 = f"{hs_head}.{body}.{jwt.utils.base64url_encode(mac).decode()}"
    future = _signed_by_kumo(kumo, _claims(kumo, nbf=int(time.time()) + 3600))
    no_tenant = _signed_by_kumo(kumo, {k: v for k, v in _claims(kumo).items() if k != "tid"})
    with httpx.Client(base_url=kumo.endpoint, verify=kumo.tls()) as c:
        for name, token in (("none", f"{header_none}.{body}."), ("hs256", hs256), ("tampered", tampered),
                            ("not-yet-valid", future), ("no-tid", no_tenant)):
            r = c.get(url, params=API, headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 401 and _error(r) == "InvalidAuthenticationToken", (name, r.text)
            assert r.headers["www-authenticate"].startswith("Bearer "), name
        r = c.get(url, params=API, headers={"Authorization": f"Basic {kumo.token()}"})
        assert r.status_code == 401 and _error(r) == "AuthenticationFailed"


@pytest.mark.slow
def test_valid_token_of_a_principal_without_a_role_is_refused_in_that_subscription(kumo: KumoServer) -> None:
    """An Owner of subscription B holds a perfectly valid token, and still may neither read nor write
    subscription A (kumo's default), nor see it listed; in B it may do both."""
    other = json.loads(kumo.kumo("subscription", "create", "--name", unique("subb")).stdout)["subscriptionId"]
    owner_b = json.loads(kumo.kumo("sp", "create", "--name", unique("ownerb"), "--role", "Owner",
                                   "--subscription", other).stdout)
    token = kumo.token(client_id=owner_b["appId"], secret=owner_b["password"])
    mine = unique("rgmine")
    with kumo.http() as owner:
        assert owner.put(_rg_url(kumo, mine), params=API, json={"location": "local"}).status_code == 201
    try:
        with kumo.http(token) as c:
            for method, path in (("GET", _rg_url(kumo, mine)), ("PUT", _rg_url(kumo, unique("rgx"))),
                                 ("DELETE", _rg_url(kumo, mine)),
                                 ("GET", f"/subscriptions/{kumo.identity['subscription_id']}/resources")):
                r = c.request(method, path, params=API, json={"location": "local"} if method == "PUT" else None)
                assert r.status_code == 403 and _error(r) == "AuthorizationFailed", (method, path, r.text)
                assert owner_b["appId"] in r.json()["error"]["message"]
            subs = [s["subscriptionId"] for s in c.get("/subscriptions", params=API).json()["value"]]
            assert subs == [other]
            own = _rg_url(kumo, unique("rgb"), other)
            assert c.put(own, params=API, json={"location": "local"}).status_code == 201
            assert c.delete(own, params=API).status_code == 202
    finally:
        with kumo.http() as owner:
            assert owner.get(_rg_url(kumo, mine), params=API).status_code == 200  # the refused DELETE did nothing
            owner.delete(_rg_url(kumo, mine), params=API)


@pytest.mark.slow
def test_a_reader_cannot_write_on_any_provider_but_reads(kumo: KumoServer) -> None:
    """PUT, PATCH, DELETE and POST actions of several resource providers are refused with 403
    AuthorizationFailed for a Reader (on resources that exist, and on ones that do not: Azure checks
    the role first), nothing changes, and the same Reader still reads every one of them."""
    reader = json.loads(kumo.kumo("sp", "create", "--name", unique("reader"), "--role", "Reader").stdout)
    token = kumo.token(client_id=reader["appId"], secret=reader["password"])
    group = _rg_url(kumo, unique("rgreader"))
    acr = f"{group}/providers/Microsoft.ContainerRegistry/registries/{unique('readeracr')}"
    vnet = f"{group}/providers/Microsoft.Network/virtualNetworks/vnet"
    nsg = f"{group}/providers/Microsoft.Network/networkSecurityGroups/nsg"
    vm = f"{group}/providers/Microsoft.Compute/virtualMachines/vm1"
    aci = f"{group}/providers/Microsoft.ContainerInstance/containerGroups/cg1"
    deployment = f"{group}/providers/Microsoft.Resources/deployments/d1"
    versions = {"Microsoft.ContainerRegistry": "2023-07-01", "Microsoft.Network": "2024-05-01",
                "Microsoft.Compute": "2024-07-01", "Microsoft.ContainerInstance": "2024-05-01-preview",
                "Microsoft.Resources": "2024-11-01"}

    def api(path: str) -> dict[str, str]:
        return {"api-version": next((v for ns, v in versions.items() if f"/{ns}/" in path), "2024-11-01")}

    with kumo.http() as owner:
        assert owner.put(group, params=API, json={"location": "local"}).status_code == 201
        for path, body in ((acr, {"location": "local", "sku": {"name": "Basic"},
                                  "properties": {"adminUserEnabled": True}}),
                           (vnet, {"location": "local", "properties": {
                               "addressSpace": {"addressPrefixes": ["10.9.0.0/16"]}}}),
                           (nsg, {"location": "local"})):
            assert owner.put(path, params=api(path), json=body).status_code in (200, 201), path
        for path in (acr, vnet, nsg):  # settled first, so that `before` is final
            for _ in range(300):
                if owner.get(path, params=api(path)).json()["properties"]["provisioningState"] == "Succeeded":
                    break
                time.sleep(0.1)
        before = {p: owner.get(p, params=api(p)).json() for p in (group, acr, vnet, nsg)}
        password = owner.post(f"{acr}/listCredentials", params=api(acr)).json()["passwords"][0]["value"]
    try:
        refused = [
            ("PUT", group, {"location": "local", "tags": {"x": "y"}}), ("PATCH", group, {"tags": {"x": "y"}}),
            ("DELETE", group, None),
            ("PUT", acr, {"location": "local", "sku": {"name": "Premium"}}), ("PATCH", acr, {"tags": {"x": "y"}}),
            ("DELETE", acr, None), ("POST", f"{acr}/listCredentials", None),
            ("POST", f"{acr}/regenerateCredential", {"name": "password"}),
            ("PUT", f"{acr}/scopeMaps/sm", {"properties": {"actions": ["repositories/a/content/write"]}}),
            ("PUT", vnet, {"location": "local", "properties": {"addressSpace": {"addressPrefixes": ["10.8.0.0/16"]}}}),
            ("PATCH", vnet, {"tags": {"x": "y"}}), ("DELETE", vnet, None),
            ("PUT", f"{vnet}/subnets/s2", {"properties": {"addressPrefix": "10.9.2.0/24"}}),
            ("PUT", f"{nsg}/securityRules/open", {"properties": {
                "priority": 100, "access": "Allow", "direction": "Inbound", "protocol": "*",
                "sourceAddressPrefix": "*", "sourcePortRange": "*", "destinationAddressPrefix": "*",
                "destinationPortRange": "*"}}),
            ("DELETE", nsg, None),
            ("PUT", vm, {"location": "local"}), ("POST", f"{vm}/start", None), ("POST", f"{vm}/powerOff", None),
            ("POST", f"{vm}/restart", None), ("POST", f"{vm}/deallocate", None), ("DELETE", vm, None),
            ("PUT", aci, {"location": "local"}), ("POST", f"{aci}/restart", None), ("POST", f"{aci}/stop", None),
            ("POST", f"{aci}/start", None),
            ("PUT", deployment, {"properties": {"mode": "Incremental", "template": {
                "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
                "contentVersion": "1.0.0.0", "resources": []}}}),
            ("POST", f"{deployment}/validate", {"properties": {"mode": "Incremental", "template": {}}}),
        ]
        with kumo.http(token) as c:
            for method, path, body in refused:
                r = c.request(method, path, params=api(path), json=body)
                assert r.status_code == 403 and _error(r) == "AuthorizationFailed", (method, path, r.text)
                assert reader["appId"] in r.json()["error"]["message"]
            for path in (group, acr, vnet, nsg, f"{vnet}/subnets", f"{nsg}/securityRules", f"{group}/resources"):
                r = c.get(path, params=api(path))
                assert r.status_code == 200, (path, r.text)
            assert password not in r.text
        with kumo.http() as owner:  # nothing the Reader tried happened
            after = {p: owner.get(p, params=api(p)).json() for p in before}
            assert after == before
            assert owner.post(f"{acr}/listCredentials", params=api(acr)).json()["passwords"][0]["value"] == password
            assert owner.get(f"{acr}/scopeMaps/sm", params=api(acr)).status_code == 404
            assert owner.get(vm, params=api(vm)).status_code == 404
    finally:
        _delete_group(kumo, group)


@pytest.mark.slow
def test_registry_pushes_need_push_scope_for_that_repository_and_pulls_need_credentials(kumo: KumoServer) -> None:
    """Over the registry's own HTTPS port (OCI distribution): anonymous pulls and pushes are challenged;
    a pull-only token, a Reader's AAD login and a push token for repository `app` cannot push to
    `other`, nor can a pull-only one push to `app`; the push token pushes to `app`; a token of one
    registry means nothing to another."""
    group = _rg_url(kumo, unique("rgacrauth"))
    acr_api = {"api-version": "2023-07-01"}
    reader = json.loads(kumo.kumo("sp", "create", "--name", unique("acrreader"), "--role", "Reader").stdout)
    with kumo.http() as owner:
        assert owner.put(group, params=API, json={"location": "local"}).status_code == 201
        registries = []
        for _ in range(2):
            path = f"{group}/providers/Microsoft.ContainerRegistry/registries/{unique('authacr')}"
            assert owner.put(path, params=acr_api, json={"location": "local", "sku": {"name": "Basic"}, "properties": {
                "adminUserEnabled": True}}).status_code in (200, 201)
            registries.append(path)
        acr, acr2 = registries
        creds: dict[str, tuple[str, str]] = {}
        for name, actions in (("tpull", ["content/read"]), ("tpush", ["content/read", "content/write"])):
            sm = owner.put(f"{acr}/scopeMaps/{name}map", params=acr_api, json={"properties": {
                "actions": [f"repositories/app/{a}" for a in actions]}}).json()
            token = owner.put(f"{acr}/tokens/{name}", params=acr_api, json={"properties": {
                "scopeMapId": sm["id"], "status": "enabled"}}).json()
            issued = owner.post(f"{acr}/generateCredentials", params=acr_api,
                                json={"tokenId": token["id"], "name": "password1"}).json()
            creds[name] = (name, issued["passwords"][0]["value"])
        login = owner.get(acr, params=acr_api).json()["properties"]["loginServer"]
        login2 = owner.get(acr2, params=acr_api).json()["properties"]["loginServer"]
        admin = owner.post(f"{acr}/listCredentials", params=acr_api).json()
        creds["admin"] = (admin["username"], admin["passwords"][0]["value"])
    aad = kumo.token(ACR_SCOPE, reader["appId"], reader["password"])
    try:
        with httpx.Client(base_url=f"https://{login}", verify=kumo.tls(), timeout=30) as reg:
            def upload(repo: str, auth: Any = None, bearer: str | None = None) -> httpx.Response:
                headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
                return reg.post(f"/v2/{repo}/blobs/uploads/", auth=auth, headers=headers)

            def access(scope: str, username: str, password: str) -> tuple[str, list[dict[str, Any]]]:
                r = reg.post("/oauth2/token", data={"grant_type": "password", "service": login, "scope": scope,
                                                    "username": username, "password": password})
                assert r.status_code == 200, r.text
                token = r.json()["access_token"]
                return token, jwt.decode(token, options={"verify_signature": False})["access"]

            # anonymous: challenged for pull, push and the catalog alike
            for r in (upload("app"), reg.get("/v2/app/tags/list"), reg.get("/v2/app/manifests/v1"),
                      reg.get("/v2/_catalog")):
                assert r.status_code == 401 and r.json()["errors"][0]["code"] == "UNAUTHORIZED", r.text
                assert r.headers["www-authenticate"].startswith(f'Bearer realm="https://{login}/oauth2/token"')
            assert reg.post("/oauth2/token", data={"grant_type": "password", "service": login,
                                                  "scope": "repository:app:pull"}).status_code == 401
            # pull-only token: may pull app, may push nothing
            assert reg.get("/v2/app/tags/list", auth=creds["tpull"]).status_code not in (401, 403)
            r = upload("app", auth=creds["tpull"])
            assert r.status_code == 403 and r.json()["errors"][0]["code"] == "DENIED"
            token, granted = access("repository:app:pull,push", *creds["tpull"])
            assert granted == [{"type": "repository", "name": "app", "actions": ["pull"]}]
            assert upload("app", bearer=token).status_code == 403
            # push token for app: pushes to app, not to other (Basic or bearer), and is no admin
            assert upload("app", auth=creds["tpush"]).status_code == 202
            assert upload("other", auth=creds["tpush"]).status_code == 403
            token, granted = access("repository:other:pull,push", *creds["tpush"])
            assert granted == [{"type": "repository", "name": "other", "actions": []}]
            assert upload("other", bearer=token).status_code == 403
            app_token, _ = access("repository:app:push", *creds["tpush"])
            assert upload("app", bearer=app_token).status_code == 202
            assert upload("other", bearer=app_token).status_code == 401  # a token for app says nothing of other
            assert reg.get("/v2/_catalog", auth=creds["tpush"]).status_code == 403
            assert upload("app", auth=(creds["tpush"][0], "wrong")).status_code == 401
            # a Reader's AAD login pulls but cannot push
            r = reg.post("/oauth2/exchange", data={"grant_type": "access_token", "service": login, "access_token": aad})
            assert r.status_code == 200, r.text
            token, granted = access("repository:app:pull,push", EMPTY_GUID, r.json()["refresh_token"])
            assert granted[0]["actions"] == ["pull"]
            assert upload("app", bearer=token).status_code == 403
            # the admin user pushes anywhere (so the refusals above were about scope, not the registry)
            assert upload("other", auth=creds["admin"]).status_code == 202
        with httpx.Client(base_url=f"https://{login2}", verify=kumo.tls(), timeout=30) as other_registry:
            assert other_registry.post("/v2/app/blobs/uploads/", auth=creds["tpush"]).status_code == 401
            assert other_registry.post("/v2/app/blobs/uploads/", auth=creds["admin"]).status_code == 401
            r = other_registry.post("/v2/app/blobs/uploads/", headers={"Authorization": f"Bearer {app_token}"})
            assert r.status_code == 401
    finally:
        _delete_group(kumo, group)
