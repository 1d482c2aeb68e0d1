"""Container groups for real: images from kumo's offline catalog, run by runc under conmon in the
group's own network namespace, driven over ARM's REST API; checks what really runs (ports, logs,
exit codes, OOM kills, files in volumes) and that deleting a group leaves nothing on the host."""

from __future__ import annotations

import base64
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import KumoServer, free_port, unique
from tests.e2e.acilib import (ACI_API, container, delete, get_group, group_body, group_path, host_traces, http_get,
                              key_hash, logs, put_group, state, wait_for, wait_http)

pytestmark = [pytest.mark.e2e]


def test_public_group_serves_its_port_and_nothing_else(kumo: KumoServer, rg: str) -> None:
    path = group_path(kumo, rg, unique("web"))
    web = container("web", ["sh", "-c", "mkdir -p /www && echo hello-from-aci > /www/index.html && "
                                        "echo serving && exec httpd -f -v -p 80 -h /www"], ports=(80, 81))
    got = put_group(kumo, path, group_body(web, public_ports=(80,)))
    ip = got["properties"]["ipAddress"]["ip"]
    assert got["properties"]["instanceView"]["state"] == "Running"
    assert state(got)["currentState"]["state"] == "Running"
    assert [e["name"] for e in state(got)["events"]][:3] == ["Pulling", "Pulled", "Started"]
    assert wait_http(f"http://{ip}/").strip() == "hello-from-aci"
    assert http_get(f"http://{ip}:81/", timeout=1) is None  # not in ipAddress.ports: not reachable
    assert "serving" in logs(kumo, path, "web")
    stamped = logs(kumo, path, "web", timestamps="true", tail=1)
    assert stamped.startswith("20") and "T" in stamped.split()[0]
    traces = key_hash(path)
    assert host_traces(kumo, traces)  # sanity: the probe sees a live group
    delete(kumo, path)
    assert host_traces(kumo, traces) == []
    assert http_get(f"http://{ip}/", timeout=1) is None


def test_containers_of_a_group_share_localhost(kumo: KumoServer, rg: str) -> None:
    path = group_path(kumo, rg, unique("pair"))
    server = container("server", ["sh", "-c", "mkdir -p /w && echo sidecar-ok > /w/x && exec httpd -f -p 8080 -h /w"])
    client = container("client", ["sh", "-c", "until wget -qO- http://127.0.0.1:8080/x; do sleep 0.2; done; "
                                              "exec sleep 3600"])
    put_group(kumo, path, group_body(server, client))
    deadline = time.monotonic() + 20
    while "sidecar-ok" not in logs(kumo, path, "client"):
        assert time.monotonic() < deadline, "the client never reached its neighbour over localhost"
        time.sleep(0.2)
    delete(kumo, path)


@pytest.mark.parametrize("policy,code,group_state,restarts", [
    ("Never", 3, "Failed", 0),
    ("Never", 0, "Succeeded", 0),
    ("OnFailure", 0, "Succeeded", 0),
])
def test_exit_codes_and_terminal_states(kumo: KumoServer, rg: str, policy: str, code: int, group_state: str,
                                        restarts: int) -> None:
    path = group_path(kumo, rg, unique("job"))
    put_group(kumo, path, group_body(container("job", ["sh", "-c", f"echo done; exit {code}"]), restart=policy))
    got = wait_for(kumo, path, lambda g: g["properties"]["instanceView"]["state"] == group_state)
    view = state(got)
    assert view["currentState"]["state"] == "Terminated"
    assert view["currentState"]["exitCode"] == code
    assert view["currentState"]["detailStatus"] == ("Completed" if code == 0 else "Error")
    assert view["restartCount"] == restarts
    assert "done" in logs(kumo, path, "job")
    delete(kumo, path)


@pytest.mark.parametrize("policy,code", [("OnFailure", 1), ("Always", 0)])
def test_restart_policies_restart(kumo: KumoServer, rg: str, policy: str, code: int) -> None:
    path = group_path(kumo, rg, unique("again"))
    put_group(kumo, path, group_body(container("again", ["sh", "-c", f"sleep 0.3; exit {code}"]), restart=policy))
    got = wait_for(kumo, path, lambda g: state(g).get("restartCount", 0) >= 2, timeout=30)
    assert got["properties"]["instanceView"]["state"] == "Running"
    assert state(got)["previousState"]["exitCode"] == code
    delete(kumo, path)


def test_memory_hog_is_oom_killed_and_reported(kumo: KumoServer, rg: str) -> None:
    path = group_path(kumo, rg, unique("hog"))
    hog = container("hog", ["sh", "-c", "echo eating; tail /dev/zero"], memory=0.1)
    put_group(kumo, path, group_body(hog, restart="Never"))
    got = wait_for(kumo, path, lambda g: g["properties"]["instanceView"]["state"] == "Failed", timeout=60)
    current = state(got)["currentState"]
    assert current["exitCode"] == 137
    assert current["detailStatus"] == "OOMKilled"
    assert any(e["name"] == "OOMKilled" for e in state(got)["events"])
    delete(kumo, path)


def test_wrong_image_fails_clearly(kumo: KumoServer, rg: str) -> None:
    path = group_path(kumo, rg, unique("bad"))
    started = time.monotonic()
    put_group(kumo, path, group_body(container("bad", image="kumo-tests/no-such-image:1")), expect="Failed")
    assert time.monotonic() - started < 30
    with kumo.http() as c:
        events = c.get(f"{path}", params=ACI_API).json()
    assert events["properties"]["provisioningState"] == "Failed"
    delete(kumo, path)


def test_volumes_secrets_and_init_containers(kumo: KumoServer, rg: str, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "README").write_text("from-git\n")
    subprocess.run(["git", "-C", str(repo), "-c", "user.email=t@k", "-c", "user.name=t", "add", "README"], check=True)
    subprocess.run(["git", "-C", str(repo), "-c", "user.email=t@k", "-c", "user.name=t", "commit", "-qm", "x"],
                   check=True)
    # served over git:// on loopback, as a repository is on Azure (a path or file:// URL is refused)
    port = free_port()
    daemon = subprocess.Popen(["git", "daemon", "--reuseaddr", "--listen=127.0.0.1", f"--port={port}", "--export-all",
                               f"--base-path={tmp_path}", str(tmp_path)], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while subprocess.run(["git", "ls-remote", f"git://127.0.0.1:{port}/repo"], capture_output=True).returncode:
            assert time.monotonic() < deadline, "git daemon did not come up"
            time.sleep(0.1)
        _volumes_secrets_and_init_containers(kumo, rg, port)
    finally:
        daemon.terminate()
        daemon.wait(10)


def _volumes_secrets_and_init_containers(kumo: KumoServer, rg: str, port: int) -> None:
    path = group_path(kumo, rg, unique("vol"))
    mounts = [{"name": "scratch", "mountPath": "/scratch"}, {"name": "creds", "mountPath": "/creds"},
              {"name": "code", "mountPath": "/code"}]
    init = {"name": "seed", "properties": {"image": "busybox", "command": ["sh", "-c", "echo seeded > /scratch/s"],
                                           "volumeMounts": [mounts[0]]}}
    main = container("main", ["sh", "-c", "cat /scratch/s /creds/token /code/repo/README; echo token=$TOKEN; "
                                          "echo plain=$PLAIN; exec sleep 3600"],
                     volumeMounts=mounts, environmentVariables=[{"name": "TOKEN", "secureValue": "s3cr3t-v4lue"},
                                                                {"name": "PLAIN", "value": "visible"}])
    body = group_body(main, initContainers=[init], volumes=[
        {"name": "scratch", "emptyDir": {}},
        {"name": "creds", "secret": {"token": base64.b64encode(b"from-secret\n").decode()}},
        {"name": "code", "gitRepo": {"repository": f"git://127.0.0.1:{port}/repo", "directory": "repo"}}])
    got = put_group(kumo, path, body)
    deadline = time.monotonic() + 20
    while "plain=visible" not in (out := logs(kumo, path, "main")):
        assert time.monotonic() < deadline, out
        time.sleep(0.2)
    assert out.split("\n")[:5] == ["seeded", "from-secret", "from-git", "token=s3cr3t-v4lue", "plain=visible"]
    text = str(got) + str(get_group(kumo, path))
    assert "s3cr3t-v4lue" not in text and "from-secret" not in text  # write-only, as on Azure
    init_view = got["properties"]["initContainers"][0]["properties"]["instanceView"]
    assert init_view["currentState"]["state"] == "Terminated" and init_view["currentState"]["exitCode"] == 0
    delete(kumo, path)


@pytest.mark.parametrize("change,code", [
    ({"osType": "Windows"}, "UnsupportedFeature"),
    ({"sku": "Confidential"}, "UnsupportedFeature"),
    ({"volumes": [{"name": "share", "azureFile": {"shareName": "s", "storageAccountName": "a"}}]},
     "UnsupportedFeature"),
    ({"volumes": [{"name": "code", "gitRepo": {"repository": "/etc"}}]}, "InvalidVolume"),
    ({"volumes": [{"name": "code", "gitRepo": {"repository": "file:///root/.ssh"}}]}, "InvalidVolume"),
    ({"volumes": [{"name": "code", "gitRepo": {"repository": "ssh://git@127.0.0.1/x"}}]}, "InvalidVolume"),
    ({"containers": [container("Bad_Name")]}, "InvalidContainerName"),
    ({"containers": [container("a"), container("a")]}, "DuplicateContainerName"),
    ({"containers": []}, "ContainerGroupContainersRequired"),
    ({"ipAddress": {"type": "Public", "ports": [{"port": 9999}]}}, "InvalidIpAddressPorts"),
    ({"containers": [container("gpu", resources={"requests": {"cpu": 1, "memoryInGB": 1, "gpu": {"count": 1,
                                                                                                  "sku": "K80"}}})]},
     "UnsupportedFeature"),
])
def test_what_kumo_cannot_do_is_refused_by_name(kumo: KumoServer, rg: str, change: dict, code: str) -> None:
    body = group_body(container("c", ports=(80,)))
    body["properties"].update(change)
    with kumo.http() as c:
        r = c.put(group_path(kumo, rg, unique("no")), params=ACI_API, json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == code


def test_stop_start_restart(kumo: KumoServer, rg: str) -> None:
    path = group_path(kumo, rg, unique("power"))
    web = container("web", ["sh", "-c", "trap 'exit 0' TERM; mkdir -p /w; echo up > /w/i; httpd -f -p 80 -h /w & "
                                        "wait"], ports=(80,))
    got = put_group(kumo, path, group_body(web, public_ports=(80,)))
    ip = got["properties"]["ipAddress"]["ip"]
    wait_http(f"http://{ip}/i")
    with kumo.http() as c:
        assert c.post(f"{path}/stop", params=ACI_API).status_code == 204
        got = get_group(kumo, path)
        assert got["properties"]["instanceView"]["state"] == "Stopped"
        assert http_get(f"http://{ip}/i", timeout=1) is None
        assert not subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.count(
            key_hash(path))
        r = c.post(f"{path}/start", params=ACI_API)
        assert r.status_code == 202
        wait_for(kumo, path, lambda g: g["properties"]["instanceView"]["state"] == "Running")
        assert wait_http(f"http://{ip}/i").strip() == "up"
        assert c.post(f"{path}/restart", params=ACI_API).status_code == 204
        assert wait_http(f"http://{ip}/i").strip() == "up"
    delete(kumo, path)


def test_quota() -> None:
    """Azure's quota error once a subscription holds its limit of groups in a region."""
    from tests.conftest import start_server, stop_server

    server = start_server("--container-group-quota", "1")
    try:
        with server.http() as c:
            base = f"/subscriptions/{server.identity['subscription_id']}/resourceGroups/q"
            assert c.put(base, params={"api-version": "2024-11-01"}, json={"location": "local"}).status_code == 201
        body = group_body(container("j", ["true"]), restart="Never")
        put_group(server, group_path(server, "q", "one"), body)
        with server.http() as c:
            r = c.put(group_path(server, "q", "two"), params=ACI_API, json=body)
        assert r.status_code == 409 and r.json()["error"]["code"] == "ContainerGroupQuotaReached", r.text
        delete(server, group_path(server, "q", "one"))
    finally:
        stop_server(server)


@pytest.mark.slow
def test_liveness_probe_restarts_an_unhealthy_container(kumo: KumoServer, rg: str) -> None:
    path = group_path(kumo, rg, unique("live"))
    probe = {"exec": {"command": ["test", "-f", "/tmp/healthy"]}, "periodSeconds": 1, "failureThreshold": 2,
             "initialDelaySeconds": 1}
    ready = {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1}
    sick = container("sick", ["sh", "-c", "touch /tmp/healthy; sleep 2; rm /tmp/healthy; exec sleep 3600"],
                     livenessProbe=probe, readinessProbe=ready)
    put_group(kumo, path, group_body(sick))
    got = wait_for(kumo, path, lambda g: state(g).get("restartCount", 0) >= 1, timeout=40)
    names = [e["name"] for e in state(got)["events"]]
    assert "Unhealthy" in names and "Killing" in names
    delete(kumo, path)


def test_attach_streams_the_output(kumo: KumoServer, rg: str) -> None:
    import ssl

    import websocket

    path = group_path(kumo, rg, unique("attach"))
    ticker = container("ticker", ["sh", "-c", "i=0; while [ $i -lt 4 ]; do echo tick-$i; i=$((i+1)); sleep 0.5; "
                                              "done"])
    put_group(kumo, path, group_body(ticker, restart="Never"))
    with kumo.http() as c:
        r = c.post(f"{path}/containers/ticker/attach", params=ACI_API)
    assert r.status_code == 200, r.text
    answer = r.json()
    ws = websocket.create_connection(answer["webSocketUri"], sslopt={"ca_certs": kumo.ca,
                                                                     "cert_reqs": ssl.CERT_REQUIRED})
    ws.send(answer["password"])
    seen = b""
    try:
        while True:
            frame = ws.recv()
            seen += frame.encode() if isinstance(frame, str) else frame
    except websocket.WebSocketConnectionClosedException:
        pass
    assert seen.decode().split() == ["tick-0", "tick-1", "tick-2", "tick-3"]  # all of it, then the end
    delete(kumo, path)


def test_a_reused_address_reaches_the_new_group_at_once(kumo: KumoServer, rg: str) -> None:
    """Delete a group and create another: it gets the freed addresses, and its port answers at once
    (the VNet's router must not keep sending to the old group's MAC)."""
    web = container("web", ["sh", "-c", "trap 'exit 0' TERM; mkdir -p /w; hostname > /w/i; httpd -f -p 80 -h /w & "
                                        "wait"], ports=(80,))
    keep = put_group(kumo, group_path(kumo, rg, unique("keep")), group_body(web, public_ports=(80,)))
    first_path = group_path(kumo, rg, "first")
    first = put_group(kumo, first_path, group_body(web, public_ports=(80,)))
    assert wait_http(f"http://{first['properties']['ipAddress']['ip']}/i").strip() == "first"
    delete(kumo, first_path)
    second = put_group(kumo, group_path(kumo, rg, "second"), group_body(web, public_ports=(80,)))
    assert second["properties"]["ipAddress"]["ip"] == first["properties"]["ipAddress"]["ip"]
    started = time.monotonic()
    assert wait_http(f"http://{second['properties']['ipAddress']['ip']}/i").strip() == "second"
    assert time.monotonic() - started < 3
    assert keep["properties"]["ipAddress"]["ip"] != second["properties"]["ipAddress"]["ip"]


def test_kumo_images_pull_shows_progress(kumo: KumoServer) -> None:
    out = kumo.kumo("images", "pull", "nginx")
    assert "blob(s):" in out.stdout and "pulled docker.io/library/nginx:latest" in out.stdout
    missing = kumo.kumo("images", "pull", "kumo-tests/not-there:1", check=False)
    assert missing.returncode == 1 and "not found" in missing.stderr
