"""Load balancer health probes, run from inside a VNet's namespace with Azure's probe source address
(168.63.129.16), so they take the path and the NSG rules Azure's probes take.

A socket belongs to the network namespace of the thread that creates it, so a worker thread enters
the namespace (setns), makes the socket and comes back; the asyncio loop then drives it."""

from __future__ import annotations

import asyncio
import ctypes
import os
import socket
import ssl

from kumo.drivers.network.spec import AZURE_PLATFORM_IP

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL("libc.so.6", use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def socket_in_netns(netns: str, source: str | None = AZURE_PLATFORM_IP) -> socket.socket:
    """A non-blocking TCP socket inside `netns`, bound to `source` (Azure's probe address unless told
    otherwise). Blocking: run it in a thread."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    try:
        _setns(target)
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            if source:
                sock.bind((source, 0))
        finally:
            _setns(own)
    finally:
        os.close(own)
        os.close(target)
    return sock


async def probe(netns: str, protocol: str, address: str, port: int, path: str | None, timeout: float,
                source: str | None = AZURE_PLATFORM_IP) -> bool:
    """True when the backend answers as Azure requires: a TCP connection, or an HTTP 200."""
    loop = asyncio.get_running_loop()
    try:
        sock = await asyncio.to_thread(socket_in_netns, netns, source)
    except OSError:
        return False
    try:
        await asyncio.wait_for(loop.sock_connect(sock, (address, port)), timeout)
        if protocol.lower() == "tcp":
            return True
        tls = None
        if protocol.lower() == "https":  # Azure checks for a 200 over TLS, not the certificate
            tls = ssl.create_default_context()
            tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE
        reader, writer = await asyncio.wait_for(asyncio.open_connection(sock=sock, ssl=tls,
                                                                        server_hostname=address if tls else None),
                                                timeout)
        writer.write(f"GET {path or '/'} HTTP/1.1\r\nHost: {address}\r\nUser-Agent: Load Balancer Agent\r\n"
                     "Connection: close\r\n\r\n".encode())
        head = await asyncio.wait_for(reader.readline(), timeout)
        writer.close()
        return head.split(b" ", 2)[1:2] == [b"200"]
    except (OSError, asyncio.TimeoutError, IndexError, ssl.SSLError):
        return False
    finally:
        sock.close()
