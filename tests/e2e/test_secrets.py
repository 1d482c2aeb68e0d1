"""Secrets go in and never come out: container groups' secure environment values, secret volumes and
registry passwords, registries' admin and token passwords, deployments' secureString/secureObject
parameters and outputs, VMs' adminPassword and customData. Every API answer these tests receive
(PUT/PATCH/GET/list responses, LRO status and results, deployment operations, the activity log,
ARM error messages, container logs) and every log file in kumo's data dir are searched for the
secret strings; the secrets still reach the workload, so hiding them did not drop them."""

from __future__ import annotations

import base64
import contextlib
import os
import sqlite3
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import KumoServer, unique
from tests.e2e.acilib import ACI_API, container, group_body, group_path, logs, root_only

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
API = {"api-version": "2024-11-01"}
ACR_API = {"api-version": "2023-07-01"}
INSIGHTS_API = {"api-version": "2015-04-01"}
FULL_BOOT = os.environ.get("KUMO_TEST_FULL_BOOT") == "1"  # the VM test waits for the Debian guest's boot


def secret(kind: str) -> str:
    """A value no other text could contain by chance."""
    return f"S3cret-{kind}-{uuid.uuid4().hex}!"


class Sweep:
    """Every answer kumo gave, kept to be searched for the secrets at the end."""

    def __init__(self, kumo: KumoServer) -> None:
        self.kumo = kumo
        self.seen: list[tuple[str, str]] = []

    def keep(self, what: str, r: httpx.Response) -> httpx.Response:
        self.seen.append((what, r.text))
        return r

    def get(self, c: httpx.Client, path: str, params: dict[str, str]) -> httpx.Response:
        r = self.keep(f"GET {path}", c.get(path, params=params))
        assert r.status_code == 200, (path, r.text)
        return r

    def follow_lro(self, c: httpx.Client, r: httpx.Response) -> None:
        """Poll the operation a write returned until it ends, keeping every status and result answer."""
        for header in ("azure-asyncoperation", "location"):
            url = r.headers.get(header)
            if not url:
                continue
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                got = self.keep(f"LRO {url}", c.get(url))
                if got.status_code != 202 and (got.status_code != 200 or header == "location" or
                                               got.json().get("status") not in ("InProgress", "Accepted")):
                    break
                time.sleep(0.2)

    def activity_log(self, c: httpx.Client, rg: str) -> list[dict[str, Any]]:
        start = (datetime.now(timezone.utc) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        path = f"/subscriptions/{self.kumo.identity['subscription_id']}/providers/microsoft.insights/eventtypes/" \
               "management/values"
        r = self.get(c, path, {**INSIGHTS_API, "$filter": f"eventTimestamp ge '{start}' and "
                                                        f"resourceGroupName eq '{rg}'"})
        events = r.json()["value"]
        while r.json().get("nextLink"):
            r = self.keep("activity log page", c.get(r.json()["nextLink"]))
            events += r.json()["value"]
        return events

    def events(self) -> list[tuple[str, str]]:
        """The store's event log, read directly when it is SQLite (the activity log shows only some kinds)."""
        db = self.kumo.data_dir / "kumo.db"
        if not db.exists():
            return []
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)) as conn:
            rows = conn.execute("SELECT kind, message FROM events").fetchall()
        assert rows, "the event log has events"
        return rows

    def logs_in_data_dir(self) -> list[Path]:
        """kumo's own log files (kumo.log, the daemons' and VMs' logs), not what containers printed."""
        return [p for p in self.kumo.data_dir.rglob("*.log")
                if p.is_file() and "/containers/groups/" not in str(p)]

    def assert_clean(self, *secrets: str) -> None:
        assert self.seen, "nothing was searched"
        for what, text in self.seen:
            for s in secrets:
                assert s not in text, f"{s} in {what}: {text[:2000]}"
                assert base64.b64encode(s.encode()).decode() not in text, f"base64 of {s} in {what}"
        for kind, message in self.events():
            assert not any(s in message for s in secrets), (kind, message)
        files = self.logs_in_data_dir()
        assert any(p.name == "kumo.log" for p in files)
        for path in files:
            data = path.read_bytes()
            for s in secrets:
                assert s.encode() not in data, f"{s} in {path}"


@pytest.fixture
def group(kumo: KumoServer) -> Iterator[str]:
    name = unique("rgsecret")
    path = f"/subscriptions/{kumo.identity['subscription_id']}/resourcegroups/{name}"
    with kumo.http() as c:
        assert c.put(path, params=API, json={"location": "local"}).status_code == 201
    try:
        yield name
    finally:
        with kumo.http() as c:
            c.delete(path, params=API)
            deadline = time.monotonic() + 180
            while c.get(path, params=API).status_code != 404 and time.monotonic() < deadline:
                time.sleep(0.2)


def _wait_state(sweep: Sweep, c: httpx.Client, path: str, params: dict[str, str], timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = sweep.get(c, path, params).json()
        if body["properties"]["provisioningState"] in ("Succeeded", "Failed", "Canceled"):
            return body
        time.sleep(0.2)
    raise AssertionError(f"{path} did not finish")


def _subnet(sweep: Sweep, c: httpx.Client, vnet: str, prefix: str) -> str:
    """Make the VNet `vnet` (prefix.0.0/16) with a subnet `s` (prefix.0.0/24); returns the subnet's id."""
    net_api = {"api-version": "2024-05-01"}
    c.put(vnet, params=net_api, json={"location": "local", "properties": {
        "addressSpace": {"addressPrefixes": [f"{prefix}.0.0/16"]},
        "subnets": [{"name": "s", "properties": {"addressPrefix": f"{prefix}.0.0/24"}}]}})
    return _wait_state(sweep, c, vnet, net_api)["properties"]["subnets"][0]["id"]


TEMPLATE = {
    "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
    "contentVersion": "1.0.0.0",
    "parameters": {"password": {"type": "secureString"}, "settings": {"type": "secureObject"},
                   "plain": {"type": "string"}},
    "variables": {"derived": "[concat('x-', parameters('password'))]"},
    "resources": [],
    "outputs": {"echo": {"type": "secureString", "value": "[parameters('password')]"},
                "obj": {"type": "secureObject", "value": "[parameters('settings')]"},
                "plainEcho": {"type": "string", "value": "[parameters('plain')]"}},
}


@pytest.mark.store
def test_deployment_registry_and_error_secrets_never_come_back(kumo: KumoServer, group: str) -> None:
    password, inner, derived_fail = secret("param"), secret("object"), secret("int")
    acr_token_name = "apptoken"
    sweep = Sweep(kumo)
    rg = f"/subscriptions/{kumo.identity['subscription_id']}/resourceGroups/{group}"
    with kumo.http() as c:
        # deployments: secure parameters and outputs are typed but valueless, in every view
        dep = f"{rg}/providers/Microsoft.Resources/deployments/secure"
        params = {"password": {"value": password}, "settings": {"value": {"key": inner}}, "plain": {"value": "shown"}}
        r = sweep.keep("PUT deployment", c.put(dep, params=API, json={"properties": {
            "mode": "Incremental", "template": TEMPLATE, "parameters": params}}))
        assert r.status_code in (200, 201), r.text
        sweep.follow_lro(c, r)
        done = _wait_state(sweep, c, dep, API)
        assert done["properties"]["provisioningState"] == "Succeeded", done
        assert done["properties"]["parameters"]["password"] == {"type": "SecureString"}
        assert done["properties"]["parameters"]["settings"] == {"type": "SecureObject"}
        assert done["properties"]["outputs"]["echo"] == {"type": "SecureString"}
        assert done["properties"]["outputs"]["plainEcho"]["value"] == "shown"  # the plain one is shown
        sweep.get(c, f"{dep}/operations", API)
        sweep.get(c, f"{rg}/providers/Microsoft.Resources/deployments", API)
        sweep.keep("export", c.post(f"{dep}/exportTemplate", params=API))
        # a deployment that fails on a secure value: the error names the problem, not the value
        bad = {**TEMPLATE, "outputs": {"n": {"type": "int", "value": "[int(parameters('password'))]"}}}
        failing = f"{rg}/providers/Microsoft.Resources/deployments/failing"
        fail_params = {**params, "password": {"value": derived_fail}}
        r = sweep.keep("PUT failing deployment", c.put(failing, params=API, json={"properties": {
            "mode": "Incremental", "template": bad, "parameters": fail_params}}))
        if r.status_code in (200, 201):
            sweep.follow_lro(c, r)
            failed = _wait_state(sweep, c, failing, API)
            assert failed["properties"]["provisioningState"] == "Failed", failed
            sweep.get(c, f"{failing}/operations", API)
        else:
            assert r.status_code == 400 and r.json()["error"]["code"], r.text
        sweep.keep("validate", c.post(f"{failing}/validate", params=API, json={"properties": {
            "mode": "Incremental", "template": bad, "parameters": fail_params}}))
        # wrong types and unknown parameters around a secure value: the error does not echo it
        r = sweep.keep("PUT wrong type", c.put(f"{rg}/providers/Microsoft.Resources/deployments/wrong", params=API,
                                               json={"properties": {"mode": "Incremental", "template": TEMPLATE,
                                                                    "parameters": {**params, "password": {
                                                                        "value": {"nested": password}}}}}))
        assert r.status_code == 400 and r.json()["error"]["code"] == "InvalidTemplate", r.text

        # a registry: admin passwords and token passwords are shown once, by the actions that make them
        acr = f"{rg}/providers/Microsoft.ContainerRegistry/registries/{unique('secretacr')}"
        r = sweep.keep("PUT registry", c.put(acr, params=ACR_API, json={
            "location": "local", "sku": {"name": "Basic"}, "properties": {"adminUserEnabled": True}}))
        assert r.status_code in (200, 201), r.text
        sweep.follow_lro(c, r)
        _wait_state(sweep, c, acr, ACR_API)
        creds = c.post(f"{acr}/regenerateCredential", params=ACR_API, json={"name": "password2"}).json()
        admin_passwords = [p["value"] for p in creds["passwords"]]
        sm = sweep.keep("scope map", c.put(f"{acr}/scopeMaps/appread", params=ACR_API, json={"properties": {
            "actions": ["repositories/app/content/read"]}})).json()
        assert "id" in sm, sm
        tok = sweep.keep("token", c.put(f"{acr}/tokens/{acr_token_name}", params=ACR_API, json={"properties": {
            "scopeMapId": sm["id"]}})).json()
        issued = c.post(f"{acr}/generateCredentials", params=ACR_API, json={"tokenId": tok["id"]}).json()
        token_passwords = [p["value"] for p in issued["passwords"]]
        assert len(token_passwords) == 2 and len(admin_passwords) == 2
        login = sweep.get(c, acr, ACR_API).json()["properties"]["loginServer"]
        assert httpx.get(f"https://{login}/v2/app/tags/list", verify=kumo.tls(),  # the password works ...
                         auth=(acr_token_name, token_passwords[0])).status_code not in (401, 403)
        sweep.get(c, f"{acr}/tokens/{acr_token_name}", ACR_API)
        sweep.get(c, f"{acr}/tokens", ACR_API)
        sweep.keep("PATCH registry", c.patch(acr, params=ACR_API, json={"tags": {"a": "b"}}))
        sweep.get(c, f"{rg}/providers/Microsoft.ContainerRegistry/registries", ACR_API)
        sweep.get(c, f"{rg}/resources", API)

        # ARM errors around secrets: bad bodies are refused without quoting the secret
        aci = f"{rg}/providers/Microsoft.ContainerInstance/containerGroups/bad"
        for env in ({"name": "A", "secureValue": {"oops": password}}, {"name": "A", "secureValue": [password]},
                    {"name": "bad name!", "secureValue": password}):
            r = sweep.keep("bad container group", c.put(aci, params=ACI_API, json=group_body(
                container("c", ["true"], environmentVariables=[env]))))
            assert r.status_code == 400 and r.json()["error"]["code"], r.text
        for cred in ({"server": "example.com", "username": "u", "password": {"oops": password}},
                     {"username": "u", "password": password}):
            r = sweep.keep("bad registry credential", c.put(aci, params=ACI_API, json=group_body(
                container("c", ["true"]), imageRegistryCredentials=[cred])))
            assert r.status_code == 400 and r.json()["error"]["code"] == "InvalidImageRegistryCredential", r.text
        vm = f"{rg}/providers/Microsoft.Compute/virtualMachines/vm1"
        r = sweep.keep("bad vm", c.put(vm, params={"api-version": "2024-07-01"}, json={
            "location": "local", "properties": {"hardwareProfile": {"vmSize": "Standard_B1s"},
                                                "osProfile": {"computerName": "vm1", "adminUsername": "azureuser",
                                                              "adminPassword": password,
                                                              "customData": base64.b64encode(inner.encode()).decode()},
                                                "storageProfile": {"imageReference": {"id": "/nothing"}},
                                                "networkProfile": {"networkInterfaces": []}}}))
        assert r.status_code == 400, r.text
        events = sweep.activity_log(c, group)
        assert events, "the activity log has the group's writes"
    sweep.assert_clean(password, inner, derived_fail, *admin_passwords, *token_passwords)


@pytest.mark.skipif(not root_only(), reason="containers need root")
def test_container_group_secrets_reach_the_container_but_never_come_back(kumo: KumoServer, group: str) -> None:
    env_secret, volume_secret, registry_password = secret("env"), secret("volume"), secret("registry")
    sweep = Sweep(kumo)
    path = group_path(kumo, group, "secrets")
    # the container compares the values itself (the command is shown by GET, so it names no secret;
    # printing them would put them in the container's own logs)
    check = ('[ "$TOKEN" = "$EXPECT_ENV" ] && echo env-ok; [ "$(cat /creds/token)" = "$EXPECT_VOL" ] && '
             'echo volume-ok; echo plain=$PLAIN; exec sleep 3600')
    main = container("main", ["sh", "-c", check],
                     volumeMounts=[{"name": "creds", "mountPath": "/creds"}],
                     environmentVariables=[{"name": "TOKEN", "secureValue": env_secret},
                                           {"name": "EXPECT_ENV", "secureValue": env_secret},
                                           {"name": "EXPECT_VOL", "secureValue": volume_secret},
                                           {"name": "PLAIN", "value": "visible"}])
    body = group_body(main, volumes=[{"name": "creds", "secret": {
        "token": base64.b64encode(volume_secret.encode()).decode()}}],
        imageRegistryCredentials=[{"server": "registry.example.com", "username": "someone",
                                   "password": registry_password}])
    with kumo.http() as c:
        r = sweep.keep("PUT group", c.put(path, params=ACI_API, json=body))
        assert r.status_code in (200, 201), r.text
        sweep.follow_lro(c, r)
        got = _wait_state(sweep, c, path, ACI_API)
        assert got["properties"]["provisioningState"] == "Succeeded", got
        deadline = time.monotonic() + 60
        while "plain=visible" not in (out := logs(kumo, path, "main")):
            assert time.monotonic() < deadline, out
            time.sleep(0.2)
        assert "env-ok" in out and "volume-ok" in out, out  # the secrets reached the container
        sweep.seen.append(("container logs", out))
        env = {e["name"]: e for e in got["properties"]["containers"][0]["properties"]["environmentVariables"]}
        assert "secureValue" not in env["TOKEN"] and env["PLAIN"]["value"] == "visible"
        assert got["properties"]["imageRegistryCredentials"][0]["username"] == "someone"
        sweep.keep("PATCH group", c.patch(path, params=ACI_API, json={"tags": {"k": "v"}}))
        rg = f"/subscriptions/{kumo.identity['subscription_id']}/resourceGroups/{group}"
        sweep.get(c, f"{rg}/providers/Microsoft.ContainerInstance/containerGroups", ACI_API)
        sweep.get(c, f"/subscriptions/{kumo.identity['subscription_id']}/providers/Microsoft.ContainerInstance/"
                     "containerGroups", ACI_API)
        sweep.get(c, f"{rg}/resources", API)
        sweep.keep("restart", c.post(f"{path}/restart", params=ACI_API))
        _wait_state(sweep, c, path, ACI_API)
        sweep.activity_log(c, group)
        r = sweep.keep("DELETE group", c.delete(path, params=ACI_API))
        sweep.follow_lro(c, r)
    sweep.assert_clean(env_secret, volume_secret, registry_password)


def _debian_image() -> dict[str, str] | None:
    from kumo.compute.marketplace import ImageCatalog
    from kumo.config import default_vm_images_dir

    found = ImageCatalog(default_vm_images_dir()).find("Debian", "debian-12", "12-gen2", "latest")
    return {"publisher": "Debian", "offer": "debian-12", "sku": "12-gen2", "version": "latest"} if found else None


@pytest.mark.store
@pytest.mark.skipif(not root_only() or _debian_image() is None, reason="needs root and the Debian VM image")
def test_scale_set_admin_password_and_custom_data_never_come_back(kumo: KumoServer, group: str) -> None:
    """A scale set's model (capacity 0: no guest boots) with a password login and customData on the Debian
    image: the PUT and PATCH answers, GET, lists, LROs, the activity log, events and logs never show them."""
    password, custom = secret("vmsspw"), secret("vmsscustom")
    sweep = Sweep(kumo)
    rg = f"/subscriptions/{kumo.identity['subscription_id']}/resourceGroups/{group}"
    vm_api = {"api-version": "2024-07-01"}
    vnet = f"{rg}/providers/Microsoft.Network/virtualNetworks/vnet"
    vmss = f"{rg}/providers/Microsoft.Compute/virtualMachineScaleSets/ss"
    with kumo.http() as c:
        subnet = _subnet(sweep, c, vnet, "10.4")
        model = {"location": "local", "sku": {"name": "Standard_B1s", "capacity": 0}, "properties": {
            "orchestrationMode": "Uniform", "upgradePolicy": {"mode": "Manual"}, "virtualMachineProfile": {
                "storageProfile": {"imageReference": _debian_image()},
                "osProfile": {"computerNamePrefix": "web", "adminUsername": "azureuser", "adminPassword": password,
                              "customData": base64.b64encode(f"#!/bin/sh\n# {custom}\n".encode()).decode(),
                              "linuxConfiguration": {"disablePasswordAuthentication": False}},
                "networkProfile": {"networkInterfaceConfigurations": [{"name": "nic", "properties": {
                    "primary": True,
                    "ipConfigurations": [{"name": "ip", "properties": {"subnet": {"id": subnet}}}]}}]}}}}
        r = sweep.keep("PUT vmss", c.put(vmss, params=vm_api, json=model))
        assert r.status_code in (200, 201), r.text
        sweep.follow_lro(c, r)
        done = _wait_state(sweep, c, vmss, vm_api)
        assert done["properties"]["provisioningState"] == "Succeeded", done
        profile = done["properties"]["virtualMachineProfile"]["osProfile"]
        assert "adminPassword" not in profile and "customData" not in profile and profile["adminUsername"]
        r = sweep.keep("PATCH vmss", c.patch(vmss, params=vm_api, json={"tags": {"k": "v"}}))
        sweep.follow_lro(c, r)
        sweep.get(c, f"{rg}/providers/Microsoft.Compute/virtualMachineScaleSets", vm_api)
        sweep.get(c, f"{vmss}/virtualMachines", vm_api)
        sweep.get(c, f"{rg}/resources", API)
        sweep.activity_log(c, group)
    sweep.assert_clean(password, custom)


@pytest.mark.skipif(not FULL_BOOT, reason="boots a Debian guest (minutes): set KUMO_TEST_FULL_BOOT=1")
@pytest.mark.skipif(not root_only() or _debian_image() is None, reason="needs root and the Debian VM image")
def test_vm_admin_password_and_custom_data_never_come_back(kumo: KumoServer, group: str) -> None:
    """A Debian VM with a password login and customData, booted: GET (while creating and after), lists,
    the LROs, the instance view, the activity log, the store's events and kumo's logs (the guest's
    console log included) never show either."""
    password, custom = secret("vmpw"), secret("customdata")
    sweep = Sweep(kumo)
    rg = f"/subscriptions/{kumo.identity['subscription_id']}/resourceGroups/{group}"
    net_api, vm_api = {"api-version": "2024-05-01"}, {"api-version": "2024-07-01"}
    vnet, nic = f"{rg}/providers/Microsoft.Network/virtualNetworks/vnet", f"{rg}/providers/Microsoft.Network/" \
                                                                          "networkInterfaces/nic"
    vm = f"{rg}/providers/Microsoft.Compute/virtualMachines/deb"
    with kumo.http() as c:
        subnet = _subnet(sweep, c, vnet, "10.3")
        c.put(nic, params=net_api, json={"location": "local", "properties": {"ipConfigurations": [
            {"name": "ip", "properties": {"subnet": {"id": subnet}}}]}})
        _wait_state(sweep, c, nic, net_api)
        r = sweep.keep("PUT vm", c.put(vm, params=vm_api, json={"location": "local", "properties": {
            "hardwareProfile": {"vmSize": "Standard_B1s"},
            "storageProfile": {"imageReference": _debian_image(), "osDisk": {"createOption": "FromImage"}},
            "osProfile": {"computerName": "deb", "adminUsername": "azureuser", "adminPassword": password,
                          "customData": base64.b64encode(f"#!/bin/sh\n# {custom}\n".encode()).decode(),
                          "linuxConfiguration": {"disablePasswordAuthentication": False}},
            "networkProfile": {"networkInterfaces": [{"id": nic}]}}}))
        assert r.status_code in (200, 201), r.text
        creating = sweep.get(c, vm, vm_api).json()  # the stored desired state, while it is being created
        assert "adminPassword" not in creating["properties"]["osProfile"]
        assert "customData" not in creating["properties"]["osProfile"]
        sweep.get(c, f"{rg}/providers/Microsoft.Compute/virtualMachines", vm_api)
        sweep.get(c, f"{rg}/resources", API)
        sweep.follow_lro(c, r)
        done = _wait_state(sweep, c, vm, vm_api, timeout=900)
        assert done["properties"]["provisioningState"] == "Succeeded", done
        sweep.get(c, f"{vm}/instanceView", vm_api)
        sweep.get(c, vm, {**vm_api, "$expand": "instanceView"})
        sweep.keep("PATCH vm", c.patch(vm, params=vm_api, json={"tags": {"k": "v"}}))
        console = [p for p in sweep.logs_in_data_dir() if "/vms/" in str(p)]
        assert console, "the VM's own logs are searched while it exists"
        sweep.activity_log(c, group)
        sweep.assert_clean(password, custom)
        r = sweep.keep("DELETE vm", c.delete(vm, params=vm_api))
        sweep.follow_lro(c, r)
    sweep.assert_clean(password, custom)
