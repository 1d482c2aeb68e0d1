"""A tiny TCP server and client for data-plane tests, run inside network namespaces.

  python netprobe.py serve PORTS NAME     listen on every port (comma-separated), answer each
                                          connection with NAME (or, for NAME "@peer", the client's IP)
  python netprobe.py connect HOST PORT    print what the server says; exit 1 if it cannot connect
"""

from __future__ import annotations

import socket
import sys
import threading


def serve(ports: list[int], name: str) -> None:
    def loop(port: int) -> None:
        srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("0.0.0.0", port))
        srv.listen(64)
        while True:
            conn, peer = srv.accept()
            with conn:
                conn.sendall((peer[0] if name == "@peer" else name).encode())

    threads = [threading.Thread(target=loop, args=(p,), daemon=True) for p in ports]
    for t in threads:
        t.start()
    print("ready", flush=True)
    threads[0].join()


def connect(host: str, port: int, timeout: float = 1.5) -> int:
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            print(s.recv(100).decode(), end="")
        return 0
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve([int(p) for p in sys.argv[2].split(",")], sys.argv[3])
    else:
        sys.exit(connect(sys.argv[2], int(sys.argv[3])))
