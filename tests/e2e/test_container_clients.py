"""Container groups driven by the real clients: Azure's quickstart with `az container` (create, show,
logs, exec over the websocket, stop/start/restart, delete), azure-mgmt-containerinstance, a private
group in a delegated subnet reached from another endpoint of the VNet, and groups that keep running
(the same process) across a `kill -9` of kumo."""

from __future__ import annotations

import os
from pathlib import Path
import signal
import ssl
import subprocess
import time
from typing import Any

import pytest

from tests.conftest import KumoServer, start_server, stop_server, unique
from tests.e2e.acilib import (container, delete, group_body, group_path, host_traces, http_get, key_hash,
                              put_group, state, wait_for, wait_http)
from tests.e2e.netlib import attach, put_and_wait

pytestmark = [pytest.mark.e2e]
HELLO = "mcr.microsoft.com/azuredocs/aci-helloworld"


@pytest.mark.slow
def test_azure_quickstart_with_az(kumo: KumoServer, rg: str) -> None:
    name, label = unique("aci"), unique("dns")
    out = kumo.az("container", "create", "-g", rg, "-n", name, "--image", HELLO, "--ports", "80",
                  "--dns-name-label", label, "--ip-address", "Public")
    assert out["provisioningState"] == "Succeeded"
    assert out["ipAddress"]["fqdn"] == f"{label}.local.azurecontainer.io"
    ip = out["ipAddress"]["ip"]
    page = wait_http(f"http://{ip}/")
    assert "Welcome to Azure Container Instances" in page
    shown = kumo.az("container", "show", "-g", rg, "-n", name)
    assert shown["instanceView"]["state"] == "Running"
    assert shown["containers"][0]["instanceView"]["currentState"]["state"] == "Running"
    logs = kumo.kumo("az", "container", "logs", "-g", rg, "-n", name).stdout
    assert "GET /" in logs
    proc = subprocess.run([*kumo_az(kumo), "container", "exec", "-g", rg, "-n", name, "--exec-command",
                           "cat /etc/hostname"], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=60, env=kumo.env())
    assert proc.returncode == 0, proc.stderr
    assert name in proc.stdout
    kumo.az("container", "stop", "-g", rg, "-n", name, check=False)
    assert kumo.az("container", "show", "-g", rg, "-n", name)["instanceView"]["state"] == "Stopped"
    assert http_get(f"http://{ip}/", timeout=1) is None
    kumo.az("container", "start", "-g", rg, "-n", name)
    assert "Welcome" in wait_http(f"http://{ip}/")
    kumo.az("container", "restart", "-g", rg, "-n", name, check=False)
    assert "Welcome" in wait_http(f"http://{ip}/")
    listed = kumo.az("container", "list", "-g", rg)
    assert [g["name"] for g in listed] == [name]
    path = group_path(kumo, rg, name)
    kumo.az("container", "delete", "-g", rg, "-n", name, "--yes")
    assert host_traces(kumo, key_hash(path)) == []


def kumo_az(kumo: KumoServer) -> list[str]:
    from tests.conftest import KUMO

    return [*KUMO, "az"]


@pytest.mark.slow
def test_sdk_create_logs_exec_and_power(kumo: KumoServer, rg: str, sdk_credential: Any) -> None:
    from azure.mgmt.containerinstance import ContainerInstanceManagementClient
    from azure.mgmt.containerinstance.models import (Container, ContainerExecRequest, ContainerGroup,
                                                     ContainerExecRequestTerminalSize, ResourceRequests,
                                                     ResourceRequirements)
    import websocket

    client = ContainerInstanceManagementClient(sdk_credential, kumo.identity["subscription_id"], base_url=kumo.endpoint,
                                               credential_scopes=[f"{kumo.endpoint}/.default"], polling_interval=0.2)
    name = unique("sdk")
    group = ContainerGroup(location="local", os_type="Linux", restart_policy="Always", containers=[Container(
        name="main", image="busybox", command=["sh", "-c", "echo sdk-says-hi; exec sleep 3600"],
        resources=ResourceRequirements(requests=ResourceRequests(cpu=0.5, memory_in_gb=0.5)))])
    created = client.container_groups.begin_create_or_update(rg, name, group).result()
    assert created.provisioning_state == "Succeeded"
    assert created.containers[0].instance_view.current_state.state == "Running"
    assert name in [g.name for g in client.container_groups.list_by_resource_group(rg)]
    assert name in [g.name for g in client.container_groups.list()]
    for _ in range(50):
        if "sdk-says-hi" in client.containers.list_logs(rg, name, "main", tail=5).content:
            break
        time.sleep(0.1)
    assert "sdk-says-hi" in client.containers.list_logs(rg, name, "main", tail=5).content
    answer = client.containers.execute_command(rg, name, "main", ContainerExecRequest(
        command="/bin/sh", terminal_size=ContainerExecRequestTerminalSize(rows=30, cols=100)))
    ws = websocket.create_connection(answer.web_socket_uri,
                                     sslopt={"ca_certs": kumo.ca, "cert_reqs": ssl.CERT_REQUIRED})
    ws.send(answer.password)
    ws.send_binary(b"stty size; echo marker-$((6*7)); exit\n")
    seen = b""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and b"marker-42" not in seen:
        frame = ws.recv()
        seen += frame.encode() if isinstance(frame, str) else frame
    ws.close()
    assert b"30 100" in seen and b"marker-42" in seen
    bad = client.containers.execute_command(rg, name, "main", ContainerExecRequest(command="/bin/sh"))
    ws = websocket.create_connection(bad.web_socket_uri, sslopt={"ca_certs": kumo.ca})
    ws.send("wrong-password")
    with pytest.raises(websocket.WebSocketConnectionClosedException):
        for _ in range(5):
            ws.recv()
    client.container_groups.stop(rg, name)
    assert client.container_groups.get(rg, name).instance_view.state == "Stopped"
    client.container_groups.begin_start(rg, name).result()
    assert client.container_groups.get(rg, name).instance_view.state == "Running"
    client.container_groups.begin_delete(rg, name).result()


def test_private_group_in_a_delegated_subnet(kumo: KumoServer, rg: str) -> None:
    base = f"/subscriptions/{kumo.identity['subscription_id']}/resourceGroups/{rg}/providers/Microsoft.Network"
    put_and_wait(kumo, f"{base}/virtualNetworks/vnet", {"location": "local", "properties": {
        "addressSpace": {"addressPrefixes": ["10.50.0.0/16"]},
        "subnets": [{"name": "aci", "properties": {"addressPrefix": "10.50.1.0/24", "delegations": [
            {"name": "d", "properties": {"serviceName": "Microsoft.ContainerInstance/containerGroups"}}]}},
            {"name": "vms", "properties": {"addressPrefix": "10.50.2.0/24"}}]}})
    subnet = f"{base}/virtualNetworks/vnet/subnets/aci"
    vms = f"{base}/virtualNetworks/vnet/subnets/vms"
    nic = put_and_wait(kumo, f"{base}/networkInterfaces/client", {"location": "local", "properties": {
        "ipConfigurations": [{"name": "ip", "properties": {"subnet": {"id": vms}}}]}})
    path = group_path(kumo, rg, unique("private"))
    web = container("web", ["sh", "-c", "mkdir -p /w; echo private-ok > /w/i; exec httpd -f -p 80 -h /w"], ports=(80,))
    body = group_body(web, subnetIds=[{"id": subnet}])
    body["properties"]["ipAddress"] = {"type": "Private", "ports": [{"port": 80, "protocol": "TCP"}]}
    got = put_group(kumo, path, body)
    ip = got["properties"]["ipAddress"]["ip"]
    assert ip.startswith("10.50.1.")
    endpoint = attach(kumo, nic["id"])
    for _ in range(50):
        answer = subprocess.run(["ip", "netns", "exec", endpoint.netns, "curl", "-s", "-m", "2", f"http://{ip}/i"],
                                capture_output=True, text=True).stdout
        if answer:
            break
        time.sleep(0.2)
    assert answer == "private-ok\n"
    not_delegated = group_body(web, subnetIds=[{"id": vms}])
    not_delegated["properties"]["ipAddress"] = body["properties"]["ipAddress"]
    with kumo.http() as c:
        r = c.put(group_path(kumo, rg, unique("nodel")), params={"api-version": "2024-05-01-preview"},
                  json=not_delegated)
    assert r.status_code == 400 and r.json()["error"]["code"] == "SubnetMissingRequiredDelegation"
    delete(kumo, path)


@pytest.mark.slow
def test_groups_survive_kill_9_of_kumo() -> None:
    server = start_server()
    try:
        with server.http() as c:
            base = f"/subscriptions/{server.identity['subscription_id']}/resourceGroups/k"
            assert c.put(base, params={"api-version": "2024-11-01"}, json={"location": "local"}).status_code == 201
        path = group_path(server, "k", "survivor")
        web = container("web", ["sh", "-c", "mkdir -p /w; echo alive > /w/i; exec httpd -f -p 80 -h /w"], ports=(80,))
        job = container("job", ["sh", "-c", "sleep 3; exit 5"])
        got = put_group(server, path, group_body(web, job, public_ports=(80,), restart="Never"))
        ip = got["properties"]["ipAddress"]["ip"]
        started = state(got)["currentState"]["startTime"]
        wait_http(f"http://{ip}/i")
        os.kill(server.pid(), signal.SIGKILL)
        time.sleep(4)  # the job ends while kumo is down
        assert wait_http(f"http://{ip}/i", timeout=10) == "alive\n"  # the data plane never depended on kumo
        (server.data_dir / "run.json").unlink(missing_ok=True)
        server.start()
        got = wait_for(server, path, lambda g: state(g, 1).get("currentState", {}).get("state") == "Terminated")
        assert state(got)["currentState"]["startTime"] == started  # re-adopted, not restarted
        assert state(got)["restartCount"] == 0
        assert state(got, 1)["currentState"]["exitCode"] == 5  # the exit it missed, from conmon's record
        assert wait_http(f"http://{ip}/i", timeout=10) == "alive\n"
        delete(server, path)
        assert host_traces(server, key_hash(path)) == []
    finally:
        stop_server(server)


@pytest.mark.slow
def test_group_from_a_private_registry_with_az(kumo: KumoServer, rg: str, tmp_path: Path) -> None:
    """Push the catalog's busybox into a registry of kumo's with skopeo, run it with the registry's admin
    credentials; wrong credentials end the group in a clear failed state."""
    registry = unique("acr")
    login = kumo.az("acr", "create", "-g", rg, "-n", registry, "--sku", "Basic",
                    "--admin-enabled", "true")["loginServer"]
    creds = kumo.az("acr", "credential", "show", "-n", registry)
    user, password = creds["username"], creds["passwords"][0]["value"]
    certs = tmp_path / "certs"
    certs.mkdir()
    (certs / "ca.crt").write_text(Path(kumo.ca).read_text())
    subprocess.run(["skopeo", "copy", "--src-cert-dir", str(certs), "--dest-cert-dir", str(certs), "--dest-creds",
                    f"{user}:{password}", f"docker://localhost:{kumo.port}/library/busybox:latest",
                    f"docker://{login}/tools/busybox:v1"], check=True, capture_output=True, timeout=120)
    name = unique("fromacr")
    out = kumo.az("container", "create", "-g", rg, "-n", name, "--image", f"{login}/tools/busybox:v1",
                  "--registry-login-server", login, "--registry-username", user, "--registry-password", password,
                  "--command-line", "sh -c 'echo pulled-from-acr; exec sleep 3600'", "--restart-policy", "Never")
    assert out["provisioningState"] == "Succeeded"
    assert all(c.get("password") is None for c in out["imageRegistryCredentials"])
    deadline = time.monotonic() + 20
    while "pulled-from-acr" not in kumo.kumo("az", "container", "logs", "-g", rg, "-n", name).stdout:
        assert time.monotonic() < deadline
        time.sleep(0.3)
    bad = kumo.az("container", "create", "-g", rg, "-n", unique("badcreds"), "--image",
                  f"{login}/tools/busybox:v1", "--registry-login-server", login, "--registry-username", user,
                  "--registry-password", "not-the-password", "--restart-policy", "Never", check=False)
    assert bad.returncode != 0
    assert "InaccessibleImage" in bad.stderr


@pytest.mark.slow
def test_deleting_the_resource_group_leaves_nothing_on_the_host() -> None:
    server = start_server()
    try:
        site = (server.data_dir / "network-site").read_text().strip()
        server.az("group", "create", "-n", "gone", "-l", "local")
        web = container("web", ["sh", "-c", "mkdir -p /w; echo x > /w/i; exec httpd -f -p 80 -h /w"], ports=(80,))
        path = group_path(server, "gone", "g1")
        got = put_group(server, path, group_body(web, public_ports=(80,)))
        wait_http(f"http://{got['properties']['ipAddress']['ip']}/i")
        server.az("group", "delete", "-n", "gone", "--yes")
        assert host_traces(server, key_hash(path)) == []
        namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert f"kumo{site}-" not in namespaces  # kumo's instance network went with its last group
        tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
        assert f"kumo_site{site}" not in tables
    finally:
        stop_server(server)


@pytest.mark.slow
def test_az_container_attach_streams_until_the_group_ends(kumo: KumoServer, rg: str) -> None:
    name = unique("attach")
    kumo.az("container", "create", "-g", rg, "-n", name, "--image", "busybox", "--restart-policy", "Never",
            "--command-line", "sh -c 'i=0; while [ $i -lt 8 ]; do echo tick-$i; i=$((i+1)); sleep 1; done'")
    proc = subprocess.run([*kumo_az(kumo), "container", "attach", "-g", rg, "-n", name], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=120, env=kumo.env())
    assert proc.returncode == 0, proc.stderr
    assert f"Container '{name}' is in state 'Running'" in proc.stdout
    assert "tick-0" in proc.stdout and "tick-7" in proc.stdout  # it followed the logs to the end
    shown = kumo.az("container", "show", "-g", rg, "-n", name)
    assert shown["instanceView"]["state"] == "Succeeded"


@pytest.mark.slow
def test_a_group_whose_namespace_went_while_kumo_was_down_starts_afresh() -> None:
    """Containers are re-adopted only where they still are what the group says: if the group's namespace
    was removed while kumo was down (by hand, or a host clean-up), the group is started again."""
    server = start_server()
    try:
        server.az("group", "create", "-n", "ns", "-l", "local")
        path = group_path(server, "ns", "g")
        web = container("web", ["sh", "-c", "mkdir -p /w; echo again > /w/i; exec httpd -f -p 80 -h /w"], ports=(80,))
        got = put_group(server, path, group_body(web, public_ports=(80,)))
        ip = got["properties"]["ipAddress"]["ip"]
        wait_http(f"http://{ip}/i")
        server.stop()
        site = (server.data_dir / "network-site").read_text().strip()
        subprocess.run(["ip", "netns", "del", f"kumo{site}-e{key_hash(path)}"], check=True)
        server.start()
        assert wait_http(f"http://{ip}/i", timeout=30) == "again\n"
        got = wait_for(server, path, lambda g: state(g).get("currentState", {}).get("state") == "Running")
        delete(server, path)
        assert host_traces(server, key_hash(path)) == []
    finally:
        stop_server(server)
