"""Starting, finding and stopping a kumo server process."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from kumo.config import Settings


def running(settings: Settings) -> dict[str, Any] | None:
    """The run file of a live server on this data dir, or None."""
    path = settings.paths.run_file
    try:
        info = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if not _is_kumo(int(info.get("pid", 0))):
        return None
    return info


def _is_kumo(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"kumo" in cmdline


def healthy(endpoint: str, ca: Path, timeout: float = 2.0) -> bool:
    ctx = ssl.create_default_context(cafile=str(ca))
    try:
        with urllib.request.urlopen(f"{endpoint}kumo/health", context=ctx, timeout=timeout) as r:
            return r.status == 200
    except OSError:
        return False


def start_detached(settings: Settings, extra_args: list[str], wait: float = 60.0) -> dict[str, Any]:
    """Run `kumo up` in the background with its output in the data dir's log; wait until it answers."""
    paths = settings.paths
    paths.root.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "kumo", "up", "--data-dir", str(paths.root), "--host", settings.host,
           "--port", str(settings.port), *extra_args]
    log = open(paths.log_file, "ab")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    log.close()
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"kumo exited with code {proc.returncode}:\n{_tail(paths.log_file)}")
        info = running(settings)
        if info and info.get("pid") == proc.pid and healthy(info["endpoint"], paths.ca_cert):
            return info
        time.sleep(0.1)
    proc.terminate()
    raise RuntimeError(f"kumo did not answer within {wait:.0f} s:\n{_tail(paths.log_file)}")


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def stop(settings: Settings, timeout: float = 20.0) -> int | None:
    """Stop the server of this data dir by its PID (SIGTERM, then SIGKILL). Returns the PID stopped."""
    info = running(settings)
    if info is None:
        return None
    pid = int(info["pid"])
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _is_kumo(pid):
            return pid
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    return pid
