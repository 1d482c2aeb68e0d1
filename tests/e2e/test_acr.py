"""Azure Container Registry for real: az acr create/login/update/credential/token/repository, pushes
and pulls with skopeo and podman (TLS verified with kumo's CA) using admin credentials, the refresh
token `az acr login` exchanges, and a repository-scoped token; the built-in catalog registry on
kumo's main port; GC of blobs after deletes; the SDK (azure-mgmt-containerregistry)."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import KumoServer, start_server, stop_server, unique
from tests.ocilayout import add_image

TOOLS = {t: shutil.which(t) for t in ("skopeo", "podman")}
pytestmark = pytest.mark.skipif(not all(TOOLS.values()), reason="needs skopeo and podman (scripts/setup.sh)")
EMPTY_GUID = "00000000-0000-0000-0000-000000000000"
ACR_SCOPE = "https://containerregistry.azure.net/.default"
CATALOG_IMAGE = "library/busybox:1.36"


class Clients:
    """skopeo and podman with kumo's CA as their only trust (a cert dir) and podman storage of their own."""

    def __init__(self, kumo: KumoServer, root: Path) -> None:
        self.certs = root / "certs"
        self.certs.mkdir(parents=True)
        shutil.copy(kumo.ca, self.certs / "ca.crt")
        self.layout = root / "layout"
        self.digests = {ref: add_image(self.layout, ref, {f"{ref.split(':')[0]}.txt": ref.encode()})
                        for ref in ("app:v1", "other:v1")}
        podman = self.podman_dir = Path(tempfile.mkdtemp(prefix="kpod-", dir="/tmp"))  # runroot: < 50 chars
        (podman / "containers.conf").write_text('[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n')
        (podman / "storage.conf").write_text(f'[storage]\ndriver = "vfs"\ngraphroot = "{podman}/root"\n'
                                             f'runroot = "{podman}/run"\n')
        self.env = {**os.environ, "CONTAINERS_CONF": str(podman / "containers.conf"),
                    "CONTAINERS_STORAGE_CONF": str(podman / "storage.conf")}
        self.podman_args = ["podman", "--root", str(podman / "root"), "--runroot", str(podman / "run"),
                            "--storage-driver", "vfs"]

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(list(args), env=self.env, capture_output=True, text=True, timeout=120)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(args[:3])} … failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    def skopeo_push(self, ref: str, dest: str, creds: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("skopeo", "copy", "--dest-creds", creds, "--dest-cert-dir", str(self.certs),
                        f"oci:{self.layout}:{ref}", f"docker://{dest}", check=check)

    def skopeo_digest(self, image: str, creds: str | None) -> str:
        args = ["skopeo", "inspect", "--cert-dir", str(self.certs)]
        args += ["--creds", creds] if creds else ["--no-creds"]
        return json.loads(self.run(*args, f"docker://{image}").stdout)["Digest"]

    def podman(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run(*self.podman_args, *args, check=check)


@pytest.fixture(scope="module")
def acr_kumo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KumoServer]:
    """A kumo of this module's own: its registry ports and a catalog layout to import at start-up."""
    catalog = tmp_path_factory.mktemp("catalog")
    add_image(catalog, CATALOG_IMAGE, {"bin/busybox": b"#!/bin/sh\necho busybox\n"})
    base = random.randrange(20000, 40000, 20)
    old = os.environ.get("KUMO_CATALOG_DIR")
    os.environ["KUMO_CATALOG_DIR"] = str(catalog)
    try:
        server = start_server("--registry-ports", f"{base}-{base + 19}")
    finally:
        if old is None:
            os.environ.pop("KUMO_CATALOG_DIR")
        else:
            os.environ["KUMO_CATALOG_DIR"] = old
    yield server
    stop_server(server)


@pytest.fixture(scope="module")
def clients(acr_kumo: KumoServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clients]:
    made = Clients(acr_kumo, tmp_path_factory.mktemp("acr-clients"))
    yield made
    made.podman("rmi", "--all", "--force", check=False)
    shutil.rmtree(made.podman_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def acr(acr_kumo: KumoServer) -> Iterator[dict[str, Any]]:
    """`az acr create` in a group of its own; the group (and registry) deleted at the end."""
    group, name = unique("rg"), unique("kumoacr")
    acr_kumo.az("group", "create", "-n", group, "-l", "local")
    registry = acr_kumo.az("acr", "create", "-n", name, "-g", group, "--sku", "Basic")
    yield {**registry, "group": group}
    acr_kumo.az("group", "delete", "-n", group, "--yes")


def admin_creds(kumo: KumoServer, name: str) -> str:
    kumo.az("acr", "update", "-n", name, "--admin-enabled", "true")
    cred = kumo.az("acr", "credential", "show", "-n", name)
    return f"{cred['username']}:{cred['passwords'][0]['value']}"


def blob_files(kumo: KumoServer) -> set[str]:
    return {p.name for p in (kumo.data_dir / "registries" / "blobs" / "sha256").iterdir()}


def test_create_login_and_credentials(acr_kumo: KumoServer, acr: dict[str, Any]) -> None:
    name, login = acr["name"], acr["loginServer"]
    assert login.startswith("localhost:") and acr["provisioningState"] == "Succeeded"
    assert acr["sku"]["name"] == "Basic" and acr["adminUserEnabled"] is False and acr["creationDate"]
    token = acr_kumo.az("acr", "login", "-n", name, "--expose-token")
    assert token["loginServer"] == login and token["username"] == EMPTY_GUID and token["accessToken"]
    refused = acr_kumo.az("acr", "credential", "show", "-n", name, check=False)
    assert refused.returncode != 0 and "admin" in refused.stderr
    assert acr_kumo.az("acr", "update", "-n", name, "--admin-enabled", "true")["adminUserEnabled"] is True
    first = acr_kumo.az("acr", "credential", "show", "-n", name)
    assert first["username"] == name and [p["name"] for p in first["passwords"]] == ["password", "password2"]
    renewed = acr_kumo.az("acr", "credential", "renew", "-n", name, "--password-name", "password2")
    assert renewed["passwords"][0] == first["passwords"][0]
    assert renewed["passwords"][1]["value"] != first["passwords"][1]["value"]
    # secrets never in a GET, list or event
    with acr_kumo.http() as http:
        shown = http.get(acr["id"], params={"api-version": "2023-07-01"}).text
        listed = http.get(f"/subscriptions/{acr_kumo.identity['subscription_id']}/resources",
                          params={"api-version": "2024-11-01",
                                  "$filter": "resourceType eq 'Microsoft.ContainerRegistry/registries'"}).json()
    assert all(p["value"] not in shown for p in renewed["passwords"]) and "_secrets" not in shown
    assert name in [r["name"] for r in listed["value"]]
    # the registry challenges as ACR does (no space after the comma: az splits on spaces)
    challenge = httpx.get(f"https://{login}/v2/", verify=acr_kumo.tls())
    assert challenge.status_code == 401
    assert challenge.headers["www-authenticate"] == f'Bearer realm="https://{login}/oauth2/token",service="{login}"'
    assert challenge.json()["errors"][0]["code"] == "UNAUTHORIZED"


def test_push_and_pull_with_skopeo_and_podman(acr_kumo: KumoServer, acr: dict[str, Any], clients: Clients) -> None:
    name, login = acr["name"], acr["loginServer"]
    admin = admin_creds(acr_kumo, name)
    clients.skopeo_push("app:v1", f"{login}/app:v1", admin)
    assert clients.skopeo_digest(f"{login}/app:v1", admin) == clients.digests["app:v1"]
    # podman with the refresh token `az acr login --expose-token` gives (what docker login uses)
    refresh = acr_kumo.az("acr", "login", "-n", name, "--expose-token")["accessToken"]
    aad = f"{EMPTY_GUID}:{refresh}"
    clients.podman("pull", "--creds", aad, "--cert-dir", str(clients.certs), f"{login}/app:v1")
    clients.podman("tag", f"{login}/app:v1", f"{login}/team/copy:v2")
    digest_file = clients.podman_dir / "pushed.digest"
    clients.podman("push", "--creds", admin, "--cert-dir", str(clients.certs), "--digestfile", str(digest_file),
                   f"{login}/team/copy:v2")
    clients.skopeo_push("other:v1", f"{login}/other:v1", aad)
    pulled = clients.podman("pull", "--creds", admin, "--cert-dir", str(clients.certs), f"{login}/other:v1").stdout
    assert pulled.strip()
    inspected = clients.podman("image", "inspect", f"{login}/other:v1").stdout
    assert clients.digests["other:v1"] in inspected
    assert clients.skopeo_digest(f"{login}/team/copy:v2", aad) == digest_file.read_text().strip()
    assert acr_kumo.az("acr", "repository", "list", "-n", name) == ["app", "other", "team/copy"]
    assert acr_kumo.az("acr", "repository", "show-tags", "-n", name, "--repository", "app") == ["v1"]
    shown = acr_kumo.az("acr", "repository", "show", "-n", name, "--image", "app:v1")
    assert shown["digest"] == clients.digests["app:v1"]
    # without credentials: challenged
    anonymous = clients.run("skopeo", "inspect", "--no-creds", "--cert-dir", str(clients.certs),
                            f"docker://{login}/app:v1", check=False)
    assert anonymous.returncode != 0 and "unauthorized" in anonymous.stderr.lower()


def test_scoped_token_pushes_only_to_its_repository(acr_kumo: KumoServer, acr: dict[str, Any],
                                                    clients: Clients) -> None:
    name, login = acr["name"], acr["loginServer"]
    token = acr_kumo.az("acr", "token", "create", "-r", name, "-n", "apptoken", "--repository", "app",
                        "content/write", "content/read")
    creds = f"apptoken:{token['credentials']['passwords'][0]['value']}"
    assert token["scopeMapId"].endswith("/scopeMaps/apptoken-scope-map")
    clients.skopeo_push("other:v1", f"{login}/app:v2", creds)
    assert clients.skopeo_digest(f"{login}/app:v2", creds) == clients.digests["other:v1"]
    refused = clients.skopeo_push("app:v1", f"{login}/elsewhere:v1", creds, check=False)
    assert refused.returncode != 0 and ("403" in refused.stderr or "denied" in refused.stderr)
    wrong = clients.skopeo_push("app:v1", f"{login}/app:v3", "apptoken:not-the-password", check=False)
    assert wrong.returncode != 0
    shown = acr_kumo.az("acr", "token", "show", "-r", name, "-n", "apptoken")
    assert all(p.get("value") is None for p in shown["credentials"]["passwords"])
    acr_kumo.az("acr", "token", "delete", "-r", name, "-n", "apptoken", "--yes")
    gone = clients.skopeo_push("other:v1", f"{login}/app:v4", creds, check=False)
    assert gone.returncode != 0


def test_other_subscription_cannot_exchange(acr_kumo: KumoServer, acr: dict[str, Any]) -> None:
    login = acr["loginServer"]
    sub = json.loads(acr_kumo.kumo("subscription", "create", "--name", unique("sub")).stdout)
    sp = json.loads(acr_kumo.kumo("sp", "create", "--name", unique("sp"), "--role", "Owner", "--subscription",
                                  sub["subscriptionId"]).stdout)
    aad = acr_kumo.token(ACR_SCOPE, sp["appId"], sp["password"])
    refused = httpx.post(f"https://{login}/oauth2/exchange", verify=acr_kumo.tls(), data={
        "grant_type": "access_token", "service": login, "tenant": sp["tenant"], "access_token": aad})
    assert refused.status_code == 401 and refused.json()["errors"][0]["code"] == "UNAUTHORIZED"
    own = acr_kumo.token(ACR_SCOPE)
    ok = httpx.post(f"https://{login}/oauth2/exchange", verify=acr_kumo.tls(), data={
        "grant_type": "access_token", "service": login, "tenant": acr_kumo.identity["tenant_id"],
        "access_token": own})
    assert ok.status_code == 200 and ok.json()["refresh_token"]
    # an ARM token is not an ACR token, and the ACR refresh token is no ARM token
    assert httpx.post(f"https://{login}/oauth2/exchange", verify=acr_kumo.tls(), data={
        "grant_type": "access_token", "service": login, "access_token": acr_kumo.token()}).status_code == 401
    with acr_kumo.http(ok.json()["refresh_token"]) as http:
        assert http.get(acr["id"], params={"api-version": "2023-07-01"}).status_code == 401
    # the same name in another subscription: taken (names are global)
    with acr_kumo.http() as http:
        group = f"/subscriptions/{sub['subscriptionId']}/resourceGroups/{unique('rg')}"
        assert http.put(group, params={"api-version": "2022-09-01"}, json={"location": "local"}).status_code == 201
        taken = http.put(f"{group}/providers/Microsoft.ContainerRegistry/registries/{acr['name']}",
                         params={"api-version": "2023-07-01"}, json={"location": "local", "sku": {"name": "Basic"}})
        assert taken.status_code == 409 and taken.json()["error"]["code"] == "AlreadyInUse"
        http.delete(group, params={"api-version": "2022-09-01"})


def test_check_name_availability(acr_kumo: KumoServer, acr: dict[str, Any]) -> None:
    url = f"/subscriptions/{acr_kumo.identity['subscription_id']}/providers/Microsoft.ContainerRegistry/" \
          "checkNameAvailability"
    with acr_kumo.http() as http:
        def check(name: str) -> dict[str, Any]:
            r = http.post(url, params={"api-version": "2023-07-01"},
                          json={"name": name, "type": "Microsoft.ContainerRegistry/registries"})
            assert r.status_code == 200, r.text
            return r.json()

        assert check(acr["name"]) == {"nameAvailable": False, "reason": "AlreadyExists",
                                      "message": f"The registry {acr['name']} is already in use."}
        assert check(unique("free"))["nameAvailable"] is True
        assert check("no-dashes")["reason"] == "Invalid"
        assert check("catalog")["nameAvailable"] is False
        assert http.get(url, params={"api-version": "2023-07-01"}).status_code == 405


def test_repository_delete_frees_blobs(acr_kumo: KumoServer, acr: dict[str, Any], clients: Clients) -> None:
    name, login = acr["name"], acr["loginServer"]
    admin = admin_creds(acr_kumo, name)
    only = add_image(clients.layout, "gc:v1", {"gc.txt": os.urandom(64)})
    clients.skopeo_push("gc:v1", f"{login}/gcrepo:v1", admin)
    manifest = json.loads((clients.layout / "blobs" / "sha256" / only.split(":")[1]).read_bytes())
    mine = {d.split(":")[1] for d in (only, manifest["config"]["digest"], manifest["layers"][0]["digest"])}
    assert mine <= blob_files(acr_kumo)
    deleted = acr_kumo.az("acr", "repository", "delete", "-n", name, "--repository", "gcrepo", "--yes")
    assert deleted["manifestsDeleted"] == [only] and deleted["tagsDeleted"] == ["v1"]
    for _ in range(50):
        if not mine & blob_files(acr_kumo):
            break
        time.sleep(0.1)
    assert not mine & blob_files(acr_kumo)
    assert "gcrepo" not in acr_kumo.az("acr", "repository", "list", "-n", name)


def test_catalog_is_public_and_read_only(acr_kumo: KumoServer, clients: Clients) -> None:
    main = f"localhost:{acr_kumo.port}"
    digest = clients.skopeo_digest(f"{main}/{CATALOG_IMAGE}", None)
    assert digest.startswith("sha256:")
    tags = httpx.get(f"{acr_kumo.endpoint}/v2/library/busybox/tags/list", verify=acr_kumo.tls()).json()
    assert tags == {"name": "library/busybox", "tags": ["1.36"]}
    refused = clients.skopeo_push("app:v1", f"{main}/library/busybox:evil", "someone:pw", check=False)
    assert refused.returncode != 0
    unknown = httpx.get(f"{acr_kumo.endpoint}/v2/library/nothing/manifests/latest", verify=acr_kumo.tls())
    assert unknown.status_code == 404 and unknown.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    # ARM still answers beside it
    with acr_kumo.http() as http:
        assert http.get("/subscriptions", params={"api-version": "2022-12-01"}).status_code == 200


def test_sdk_registry_lifecycle(acr_kumo: KumoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    from azure.identity import ClientSecretCredential
    from azure.mgmt.containerregistry import ContainerRegistryManagementClient
    from azure.mgmt.containerregistry.models import (Registry, RegistryNameCheckRequest, RegistryUpdateParameters,
                                                     Sku)

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", acr_kumo.ca_bundle)  # this server's CA, for this test only
    ident = acr_kumo.identity
    credential = ClientSecretCredential(ident["tenant_id"], ident["client_id"], ident["client_secret"],
                                        authority=acr_kumo.endpoint, disable_instance_discovery=True)
    client = ContainerRegistryManagementClient(credential, ident["subscription_id"], base_url=acr_kumo.endpoint,
                                               credential_scopes=[f"{acr_kumo.endpoint}/.default"],
                                               polling_interval=0.2)
    group, name = unique("rg"), unique("sdkacr")
    acr_kumo.az("group", "create", "-n", group, "-l", "local")
    try:
        created = client.registries.begin_create(group, name, Registry(location="local", sku=Sku(name="Standard"),
                                                                       admin_user_enabled=True)).result()
        assert created.login_server.startswith("localhost:") and created.provisioning_state == "Succeeded"
        creds = client.registries.list_credentials(group, name)
        assert creds.username == name and len(creds.passwords) == 2
        check = client.registries.check_name_availability(
            RegistryNameCheckRequest(name=name, type="Microsoft.ContainerRegistry/registries"))
        assert check.name_available is False
        updated = client.registries.begin_update(group, name, RegistryUpdateParameters(tags={"k": "v"})).result()
        assert updated.tags == {"k": "v"} and updated.admin_user_enabled is True
        assert name in [r.name for r in client.registries.list_by_resource_group(group)]
        assert httpx.get(f"https://{created.login_server}/v2/", verify=acr_kumo.tls()).status_code == 401
        client.registries.begin_delete(group, name).result()
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"https://{created.login_server}/v2/", verify=acr_kumo.tls())
    finally:
        acr_kumo.az("group", "delete", "-n", group, "--yes")
