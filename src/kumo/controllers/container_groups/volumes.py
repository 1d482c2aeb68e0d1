"""A container group's volumes on the host: an emptyDir is a directory that lives as long as the
group, a secret volume is a read-only directory of files, a gitRepo volume is a clone made before
the containers start. They live under the group's directory in kumo's data dir."""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
from pathlib import Path
from typing import Any

from kumo.drivers import hostcmd
from kumo.drivers.containers.spec import Mount
from kumo.providers.container_instance.schema import GIT_SCHEMES

GIT_PROTOCOLS = [arg for scheme in GIT_SCHEMES for arg in ("-c", f"protocol.{scheme}.allow=always")]


class VolumeError(Exception):
    """A volume could not be prepared; the message says why and what to do."""


def _write_secret(path: Path, files: dict[str, str]) -> None:
    tmp = path.with_name(path.name + ".new")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True, mode=0o755)
    for name, value in files.items():
        target = tmp / name
        target.write_bytes(base64.b64decode(value))
        os.chmod(target, 0o444)
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)


async def _clone(path: Path, spec: dict[str, Any]) -> None:
    if hostcmd.missing("git"):
        raise VolumeError("gitRepo volumes need git on the host: apt-get install git")
    if path.exists():
        return  # cloned before (the group restarted): ACI clones once per group
    tmp = path.with_name(path.name + ".new")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    directory = spec.get("directory") or Path(spec["repository"].rstrip("/")).stem or "repo"
    target = tmp / directory if directory != "." else tmp
    try:
        # Only the transports the schema allows, for redirects and submodules too; never a prompt for credentials.
        await hostcmd.run("env", "GIT_TERMINAL_PROMPT=0", "git", "-c", "protocol.allow=never", *GIT_PROTOCOLS,
                          "clone", "--quiet", "--", spec["repository"], str(target))
        if spec.get("revision"):
            await hostcmd.run("git", "-C", str(target), "checkout", "--quiet", spec["revision"])
    except hostcmd.HostCommandError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise VolumeError(f"cloning {spec['repository']} failed: {e.stderr[:300]}") from None
    tmp.rename(path)


async def prepare(root: Path, volumes: list[dict[str, Any]]) -> dict[str, Path]:
    """Make every volume of a group under `root`; returns volume name -> host directory."""
    out: dict[str, Path] = {}
    for v in volumes:
        path = root / v["name"]
        if "secret" in v:
            await asyncio.to_thread(_write_secret, path, v["secret"])
        elif "gitRepo" in v:
            await _clone(path, v["gitRepo"])
        else:
            await asyncio.to_thread(path.mkdir, parents=True, exist_ok=True)
            await asyncio.to_thread(os.chmod, path, 0o777)  # any user of the image may write, as in ACI
        out[v["name"]] = path
    return out


def mounts(container: dict[str, Any], paths: dict[str, Path], volumes: list[dict[str, Any]]) -> tuple[Mount, ...]:
    secret = {v["name"] for v in volumes if "secret" in v}
    return tuple(Mount(source=str(paths[m["name"]]), destination=m["mountPath"],
                       readonly=m["readOnly"] or m["name"] in secret)
                 for m in container["properties"].get("volumeMounts", []))


async def remove(root: Path) -> None:
    await asyncio.to_thread(shutil.rmtree, root, True)
