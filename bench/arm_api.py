"""ARM front-door throughput: GET and PUT of a resource group with concurrent clients over HTTPS.

Starts its own kumo (temporary data dir, free port), drives it with wrk (Debian's `wrk`: a C load
generator, so the client does not starve the server of CPU the way a Python client would) and
prints requests/s with p50/p99 latency. Usage: .venv/bin/python bench/arm_api.py [--seconds 10]"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.conftest import start_server, stop_server  # noqa: E402

LUA_PUT = """
wrk.method = "PUT"
wrk.body = '{"location":"local","tags":{"bench":"put"}}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %s"
counter = 0
request = function()
  counter = counter + 1
  return wrk.format(nil, "%s" .. (counter %% 200) .. "?api-version=2024-11-01")
end
"""

LUA_LATENCY = """
done = function(summary, latency, requests)
  io.write(string.format("P50 %d\\nP99 %d\\n", latency:percentile(50), latency:percentile(99)))
end
"""


def wrk(url: str, seconds: int, connections: int, threads: int, script: str) -> dict[str, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script + LUA_LATENCY)
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "-s", f.name, url],
                         capture_output=True, text=True, check=True).stdout
    Path(f.name).unlink()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = int(re.search(r"P50 (\d+)", out).group(1)) / 1000  # type: ignore[union-attr]
    p99 = int(re.search(r"P99 (\d+)", out).group(1)) / 1000  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50": p50, "p99": p99, "errors": int(non2xx.group(1)) if non2xx else 0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, nargs="+", default=[1, 16, 64])
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench/arm_api.py needs wrk: apt-get install wrk")
    server = start_server()
    try:
        sub = server.identity["subscription_id"]
        token = server.token()
        with server.http(token) as c:
            c.put(f"/subscriptions/{sub}/resourcegroups/bench", params={"api-version": "2024-11-01"},
                  json={"location": "local"}).raise_for_status()
        get_url = f"{server.endpoint}/subscriptions/{sub}/resourcegroups/bench?api-version=2024-11-01"
        get_script = f'wrk.headers["Authorization"] = "Bearer {token}"\n'
        put_script = LUA_PUT % (token, f"/subscriptions/{sub}/resourcegroups/benchput")
        rows = []
        for conns in args.connections:
            threads = min(conns, 2)
            rows.append(("GET resource group", conns, wrk(get_url, args.seconds, conns, threads, get_script)))
            rows.append(("PUT resource group", conns, wrk(server.endpoint, args.seconds, conns, threads, put_script)))
    finally:
        stop_server(server)
    print(f"{'operation':<20} {'clients':>7} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}")
    for name, conns, r in rows:
        print(f"{name:<20} {conns:>7} {r['rps']:>9.0f} {r['p50']:>8.2f} {r['p99']:>8.2f} {r['errors']:>8}")


if __name__ == "__main__":
    main()
