"""Provisioning a cloud-init image as Azure does: the osProfile (admin user, SSH keys, password,
customData) and the NIC's address go to the guest in a NoCloud seed (`kumo.images.vm.seed`), and the VM
is provisioned when cloud-init has finished its boot (`/run/cloud-init/result.json`, on tmpfs: written
anew by every boot)."""

from __future__ import annotations

import asyncio
import base64
import time
from pathlib import Path
from typing import Any

from kumo.arm.errors import ArmError
from kumo.drivers.vms import QemuDriver, VmFailure
from kumo.images.vm import seed
from kumo.providers.compute.vm_schema import INTERNAL
from kumo.store import Resource

SEED = "seed.iso"
RESULT = "/run/cloud-init/result.json"


def _user_data(vm: Resource) -> bytes:
    profile = vm.body["properties"]["osProfile"]
    secrets = (vm.body.get(INTERNAL) or {}).get("secrets") or {}
    linux = profile.get("linuxConfiguration") or {}
    keys = [(k.get("path"), k["keyData"]) for k in (linux.get("ssh") or {}).get("publicKeys") or []]
    try:
        config = seed.azure_user_config(profile["adminUsername"], keys, secrets.get("adminPassword"),
                                        bool(linux.get("disablePasswordAuthentication", True)))
    except ValueError as e:
        raise ArmError(400, "InvalidParameter", f"osProfile: {e}", target="osProfile") from None
    custom = base64.b64decode(secrets["customData"]) if secrets.get("customData") else None
    return seed.compose_user_data(config, custom)


async def write_seed(path: str | Path, vm: Resource, endpoint: dict[str, Any], instance_id: str | None = None) -> None:
    """The VM's seed: instance-id (the vmId: cloud-init provisions once per VM; a clone keeps its
    golden's), hostname, user-data and a static network config for the primary NIC."""
    props = vm.body["properties"]
    mac = endpoint["macAddress"].lower().replace("-", ":")
    network = seed.network_config(mac, address=f"{endpoint['privateIPAddress']}/{endpoint['prefixLength']}",
                                  gateway=endpoint["gateway"])

    def write() -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        seed.write_seed(path, instance_id=instance_id or props["vmId"], hostname=props["osProfile"]["computerName"],
                        user_data=_user_data(vm), network_config=network)
    await asyncio.to_thread(write)


async def wait_cloud_init(driver: QemuDriver, vid: str, timeout: float) -> None:
    """Until cloud-init has finished this boot (TimeoutError after `timeout` seconds)."""
    deadline = time.monotonic() + max(timeout, 10.0)
    while True:
        try:
            code, _out, _err = await driver.agent_exec(vid, ["/bin/test", "-f", RESULT], timeout=10)
            if code == 0:
                return
        except (VmFailure, TimeoutError):
            pass  # the agent restarts while systemd settles
        if time.monotonic() > deadline:
            raise TimeoutError(f"cloud-init did not finish within {timeout:.0f}s")
        await asyncio.sleep(1.0)
