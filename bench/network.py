"""Virtual network speed: how long a VNet and 50 attached endpoints take to set up, and TCP
throughput through a public IP (two NATs, host -> VNet) against a direct path inside the VNet.

Starts its own kumo (temporary data dir, free port, root needed). Throughput comes from iperf3
(Debian's `iperf3`), interleaved rounds, median. Usage: .venv/bin/python bench/network.py
[--endpoints 50] [--rounds 5] [--seconds 3]"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.conftest import KumoServer, start_server, stop_server  # noqa: E402

API = {"api-version": "2024-05-01"}


def put_and_wait(c: Any, path: str, body: dict[str, Any]) -> dict[str, Any]:
    r = c.put(path, params=API, json=body)
    r.raise_for_status()
    while True:
        got = c.get(path, params=API).json()
        state = got["properties"]["provisioningState"]
        if state in ("Succeeded", "Failed"):
            assert state == "Succeeded", got
            return got
        time.sleep(0.02)


def iperf(client_netns: str | None, server_netns: str, host: str, seconds: int) -> float:
    """Gbit/s from a client (None: the host) to a one-off iperf3 server in `server_netns`."""
    server = subprocess.Popen(["ip", "netns", "exec", server_netns, "iperf3", "-s", "-1", "-p", "5201"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        argv = ["iperf3", "-c", host, "-p", "5201", "-t", str(seconds), "-J"]
        if client_netns:
            argv = ["ip", "netns", "exec", client_netns, *argv]
        out = json.loads(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)
        return out["end"]["sum_received"]["bits_per_second"] / 1e9
    finally:
        server.kill()
        server.wait()


def setup(server: KumoServer, endpoints: int) -> dict[str, Any]:
    sub = server.identity["subscription_id"]
    base = f"/subscriptions/{sub}/resourceGroups/benchnet"
    net = f"{base}/providers/Microsoft.Network"
    with server.http() as c:
        c.put(base, params={"api-version": "2024-11-01"}, json={"location": "local"}).raise_for_status()
        t0 = time.perf_counter()
        vnet = put_and_wait(c, f"{net}/virtualNetworks/v", {"location": "local", "properties": {
            "addressSpace": {"addressPrefixes": ["10.0.0.0/16"]},
            "subnets": [{"name": "s", "properties": {"addressPrefix": "10.0.0.0/22"}}]}})
        vnet_s = time.perf_counter() - t0
        pip = put_and_wait(c, f"{net}/publicIPAddresses/p", {"location": "local"})
        subnet = vnet["properties"]["subnets"][0]["id"]
        attach_s, eps = [], []
        t1 = time.perf_counter()
        for i in range(endpoints):
            t = time.perf_counter()
            cfg: dict[str, Any] = {"subnet": {"id": subnet}}
            if i == 0:
                cfg["publicIPAddress"] = {"id": pip["id"]}
            nic = put_and_wait(c, f"{net}/networkInterfaces/n{i}", {"location": "local", "properties": {
                "ipConfigurations": [{"name": "c", "properties": cfg}]}})
            r = c.post(f"{nic['id']}/attachHostEndpoint", params=API)
            r.raise_for_status()
            eps.append(r.json())
            attach_s.append(time.perf_counter() - t)
        total = time.perf_counter() - t1
        public = c.get(pip["id"], params=API).json()["properties"]["ipAddress"]
    return {"vnet_s": vnet_s, "attach_s": attach_s, "total_s": total, "eps": eps, "public": public, "base": base}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--endpoints", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=3)
    args = ap.parse_args()
    if shutil.which("iperf3") is None:
        sys.exit("bench/network.py needs iperf3: apt-get install iperf3")
    server = start_server()
    try:
        s = setup(server, args.endpoints)
        target, client = s["eps"][0], s["eps"][1]
        direct, public = [], []
        for _ in range(args.rounds):  # interleaved, so load from elsewhere hits both alike
            direct.append(iperf(client["netns"], target["netns"], target["privateIPAddress"], args.seconds))
            public.append(iperf(None, target["netns"], s["public"], args.seconds))
        with server.http() as c:
            c.delete(s["base"], params={"api-version": "2024-11-01"})
            while c.get(s["base"], params={"api-version": "2024-11-01"}).status_code != 404:
                time.sleep(0.1)
    finally:
        stop_server(server)
    a = s["attach_s"]
    print(f"{'step':<52} {'value':>12}")
    print(f"{'create a VNet (PUT to Succeeded)':<52} {s['vnet_s'] * 1000:>9.0f} ms")
    print(f"{f'create + attach {len(a)} endpoints (NIC PUT to Succeeded + attach)':<52} {s['total_s']:>10.2f} s")
    print(f"{'  per endpoint, median / p90':<52} {statistics.median(a) * 1000:>5.0f} / "
          f"{sorted(a)[int(len(a) * 0.9) - 1] * 1000:.0f} ms")
    d, p = statistics.median(direct), statistics.median(public)
    for label, median, values in (("TCP direct, instance -> instance (Gbit/s, median)", d, direct),
                                  ("TCP host -> public IP (DNAT x2) (Gbit/s, median)", p, public)):
        print(f"{label:<52} {median:>12.2f}   range {min(values):.2f}..{max(values):.2f}")
    print(f"{'ratio public / direct':<52} {p / d:>12.2f}")


if __name__ == "__main__":
    main()
