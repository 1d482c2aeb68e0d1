"""The Debian 12 marketplace image (`kumo vm-images build --only debian`) booted for real by the VM driver,
the way the VM controller boots it: a qcow2 overlay grown to 8 GiB, a NoCloud seed from
kumo.images.vm.seed as a read-only second disk, user-mode networking with an SSH port forward, the
manifest's cmdline and minimum memory. Checks, in the guest: the agent answers, cloud-init is done
without errors, the admin user works over SSH with NOPASSWD sudo, the customData script and
cloud-config (write_files, runcmd, an extra user) ran besides kumo's own cloud-config, password
auth is off as asked, root has no password, the static network config (address, DNS) applied, and the
root filesystem grew to the disk. Prints the boot times (to the agent, to SSH)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from pathlib import Path
from typing import Any

import pytest

from kumo.compute.marketplace import ImageCatalog, MarketplaceImage
from kumo.drivers.vms import DiskSpec, NicSpec, PortForward, QemuDriver, VmSpec
from kumo.images import vm as vm_images
from kumo.images.vm import debian, seed
from tests.conftest import free_port
from tests.vmlib import qemu_pids

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("qemu-system-x86_64")
                                 or not shutil.which("qemu-img"),
                                 reason="VMs need root, qemu-system-x86 and qemu-utils (see scripts/setup.sh)")]

PREFIX = f"kdeb{uuid.uuid4().hex[:4]}"
MAC = "52:54:00:de:b1:01"
HOSTNAME = "kumo-deb-e2e"
ADMIN = "azureuser"
SSH_OPTS = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
            "-o", "BatchMode=yes", "-o", "ConnectTimeout=5"]
BOOT_TIMEOUT = 600  # TCG on 2 shared cores: ~100 s measured, much more when the host is busy


@pytest.fixture(scope="module")
def image() -> MarketplaceImage:
    """The built image from the default images dir; the test is skipped (not failed) when it is not there."""
    found = ImageCatalog(vm_images.default_dir()).find("Debian", "debian-12", "12-gen2", "latest")
    if found is None or not all(found.file(r) and found.file(r).is_file()  # type: ignore[union-attr]
                                for r in ("kernel", "initrd", "disk")):
        pytest.skip(f"the Debian image is not built in {vm_images.default_dir()}: "
                    "run `sudo .venv/bin/kumo vm-images build --only debian` (about a minute)")
    return found


@pytest.fixture(scope="module")
def boot(image: MarketplaceImage) -> dict[str, Any]:
    return image.boot  # the manifest's "kumo"."boot", as the catalogue read it


@pytest.fixture
def work() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="kdeb", dir="/tmp"))  # short: socket paths must fit 107 bytes
    yield d
    assert not qemu_pids(PREFIX), "a QEMU process of this test survived"
    shutil.rmtree(d, ignore_errors=True)


def test_manifest(image: MarketplaceImage, boot: dict[str, Any]) -> None:
    """What the marketplace lists and what the VM controller needs to boot it."""
    assert image.urn == f"Debian:debian-12:12-gen2:{debian.VERSION}" and image.alias == "Debian12"
    assert ImageCatalog(vm_images.default_dir()).aliases()["Debian12"].urn == image.urn
    assert boot["readiness"] == "agent" and boot["cloudInit"] is True and boot["minMemoryMiB"] >= 256
    assert "root=/dev/vda" in boot["append"] and "console=ttyS0" in boot["append"]
    info = subprocess.run(["qemu-img", "info", "--output=json", str(image.file("disk"))],
                          capture_output=True, text=True, check=True).stdout
    assert json.loads(info)["format"] == "qcow2" and json.loads(info)["virtual-size"] == image.size_in_bytes


def _custom_data() -> bytes:
    """Azure customData as a user might give it: their own multipart with a script and a cloud-config
    (write_files, runcmd and one more user), which must apply on top of kumo's admin user."""
    mine = MIMEMultipart()
    mine.attach(MIMEText('#!/bin/sh\necho "customData ran as $(id -un) on $(hostname)" > /var/tmp/custom-data.out\n',
                         "x-shellscript"))
    mine.attach(MIMEText("#cloud-config\n" + json.dumps({
        "write_files": [{"path": "/etc/kumo-e2e.txt", "content": "written by write_files\n", "permissions": "0644"}],
        "runcmd": [["sh", "-c", "cat /etc/kumo-e2e.txt > /var/tmp/runcmd.out"]],
        "users": [{"name": "extrauser", "shell": "/bin/bash", "lock_passwd": True}]}), "cloud-config"))
    return mine.as_bytes()


async def _ssh(key: Path, port: int, command: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ssh", *SSH_OPTS, "-i", str(key), "-p", str(port), f"{ADMIN}@127.0.0.1", command],
                              capture_output=True, text=True, timeout=timeout)
    return await asyncio.to_thread(run)


async def _wait_ssh(key: Path, port: int, t0: float, timeout: float) -> float:
    """Seconds since `t0` until an SSH command as the admin user succeeds."""
    while True:
        try:
            r = await _ssh(key, port, "true")
            if r.returncode == 0:
                return time.monotonic() - t0
            err = r.stderr.strip()
        except subprocess.TimeoutExpired:
            err = "timeout"
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"no SSH as {ADMIN} within {timeout}s: {err}")
        await asyncio.sleep(1)


async def _sh(driver: QemuDriver, vid: str, script: str, timeout: float = 60) -> str:
    code, out, err = await driver.agent_exec(vid, ["sh", "-c", script], timeout=timeout)
    assert code == 0, f"{script}: exit {code}: {err.decode(errors='replace')}"
    return out.decode()


@pytest.mark.slow
async def test_boot_cloud_init_ssh_resize(image: MarketplaceImage, boot: dict[str, Any], work: Path,
                                          ssh_key: Path) -> None:
    overlay, seed_iso = work / "os.qcow2", work / "seed.iso"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(image.file("disk")), "-F", "qcow2",
                    str(overlay)], check=True)
    subprocess.run(["qemu-img", "resize", "-q", str(overlay), "8G"], check=True)
    config = seed.azure_user_config(ADMIN, [(None, ssh_key.with_suffix(".pub").read_text())], "Kumo-e2e-Passw0rd",
                                    disable_password_auth=True)
    seed.write_seed(seed_iso, instance_id=str(uuid.uuid4()), hostname=HOSTNAME,
                    user_data=seed.compose_user_data(config, _custom_data()),
                    network_config=seed.network_config(MAC, address="10.0.2.15/24", gateway="10.0.2.2",
                                                       dns=["10.0.2.3"]))
    port = free_port()
    vid = f"{PREFIX}-d0"
    spec = VmSpec(id=vid, kernel=str(image.file("kernel")), initrd=str(image.file("initrd")), append=boot["append"],
                  vcpus=2, memory_mib=boot["minMemoryMiB"], tb_size_mib=boot.get("tbSizeMiB", 128),
                  disks=(DiskSpec(str(overlay)), DiskSpec(str(seed_iso), "raw", readonly=True)),
                  nics=(NicSpec(MAC, forwards=(PortForward(port, 22),)),))
    driver = QemuDriver(work / "vms", PREFIX)
    t0 = time.monotonic()
    try:
        await driver.start(spec)
        t_agent, t_ssh = await asyncio.gather(
            driver.wait_agent(vid, BOOT_TIMEOUT), _wait_ssh(ssh_key, port, t0, BOOT_TIMEOUT))
        status = await _sh(driver, vid, "cloud-init status --wait --long", timeout=BOOT_TIMEOUT)
        t_done = time.monotonic() - t0
        assert "status: done" in status, status
        result = json.loads(await _sh(driver, vid, "cat /run/cloud-init/result.json"))
        assert result["v1"]["errors"] == [], result
        assert "NoCloud" in result["v1"]["datasource"]
        log = await _sh(driver, vid, "grep -E 'WARNING|ERROR' /var/log/cloud-init.log || true")
        assert "Invalid cloud-config" not in log and "Traceback" not in log, log  # image and seed pass the schema

        # customData: the script (scripts-user), the cloud-config's write_files, runcmd and user
        assert await _sh(driver, vid, "cat /var/tmp/custom-data.out") == f"customData ran as root on {HOSTNAME}\n"
        assert await _sh(driver, vid, "cat /var/tmp/runcmd.out") == "written by write_files\n"
        assert "extrauser" in await _sh(driver, vid, "getent passwd extrauser")
        # kumo's part: the admin user, hashed password, sudo, password auth off, root without password
        groups = (await _sh(driver, vid, f"id -nG {ADMIN}")).split()
        assert "sudo" in groups, groups
        assert (await _sh(driver, vid, f"getent shadow {ADMIN}")).split(":")[1].startswith("$6$")
        assert (await _sh(driver, vid, "getent shadow root")).split(":")[1] in ("*", "!", "!*")
        assert "passwordauthentication no" in await _sh(driver, vid, "sshd -T")
        assert "debian" not in (await _sh(driver, vid, "ls /home")).split()  # no distro default user

        # network config v2: the static address and DNS (resolvconf), hostname from meta-data
        assert "inet 10.0.2.15/24" in await _sh(driver, vid, "ip -4 addr show eth0")
        assert "nameserver 10.0.2.3" in await _sh(driver, vid, "cat /etc/resolv.conf")
        assert (await _sh(driver, vid, "hostname")).strip() == HOSTNAME

        # the root filesystem grew to the 8 GiB overlay (cloud-init resizefs)
        size = int((await _sh(driver, vid, "df -B1 --output=size / | tail -1")).strip())
        assert size > 7.5 * 1024**3, f"root fs is {size / 1024**3:.2f} GiB"

        # SSH as the admin user with the generated key, NOPASSWD sudo
        r = await _ssh(ssh_key, port, "hostname; sudo -n true && echo sudo-ok")
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == [HOSTNAME, "sudo-ok"], r.stdout

        pid = (await driver.status(vid)).pid
        rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 10**6
        t1 = time.monotonic()
        assert await driver.powerdown(vid, timeout=60) == "acpi"
        t_down = time.monotonic() - t1
        print(f"\nDebian first boot ({await driver.accelerator()}, 2 vCPU, {boot['minMemoryMiB']} MiB): "
              f"agent {t_agent:.1f}s, SSH {t_ssh:.1f}s, cloud-init done {t_done:.1f}s; QEMU RSS {rss} MB; "
              f"ACPI powerdown {t_down:.1f}s")
    finally:
        await driver.remove(vid)
        await driver.close()
