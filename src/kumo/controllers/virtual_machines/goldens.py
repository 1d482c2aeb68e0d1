"""The fast path of VM creation: golden snapshots and clones.

A golden is an image booted once per machine shape (image recipe, vCPUs, memory, number of disks) by
kumo itself, on a tap in a network namespace of its own, saved with file-backed RAM (the driver's
`save_golden`) under `<data dir>/vm-goldens/<key>/`. A VM of that shape is then started by restoring
the golden (`start_clone`: a private copy-on-write mapping of its RAM, ~0.1 s) with its cable unplugged;
the VM's own identity (MAC, address, gateway, hostname, SSH host key, authorized keys, clock) is applied
through the guest agent and the cable plugged in. Where a golden cannot serve (another disk layout, an
image whose guest kumo cannot re-identify, `KUMO_VM_SNAPSHOTS=0`) the VM cold-boots as before.

Two kinds of images are cloned. The tiny image runs from its initramfs: its golden's disk is blank and a
clone keeps its own OS disk. A cloud-init image (Debian) is booted once with a seed of the golden's own
(no users; instance-id `kumo-golden-<key>`), and its OS disk is frozen with the snapshot: a clone's OS
disk is a fresh overlay on the golden's disk (so golden dirs stay while any disk is backed by them),
grown to the VM's size with `block_resize` and `resize2fs`, and the identity cloud-init would have
applied (admin user, keys, password, sudo, hostname, network, SSH host key, machine-id) is applied by
a script through the agent and persisted in the guest's files. The clone's own seed carries the golden's
instance-id, so cloud-init sees no new instance when the VM later reboots and leaves that identity be
(the one visible difference from a cold boot: `cloud-init query instance-id` is the golden's). VMs with
customData (cloud-init must run it), data disks, or a first boot already behind them cold-boot.

Host objects of a golden being made: QEMU `kumo<site>v-g<hash>`, netns `kumo<site>g<hash>`, tap
`tg<hash>`; all go once it is saved (or failed). A golden whose key no longer matches an image is
removed at start."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import json
import logging
import secrets
import shlex
import shutil
import tempfile
import time
import uuid
from pathlib import Path

from kumo.compute import disk_files
from kumo.compute.marketplace import MarketplaceImage
from kumo.drivers import hostcmd
from kumo.drivers.vms import DiskSpec, GoldenSnapshot, NicSpec, QemuDriver, VmFailure, VmSpec
from kumo.drivers.vms.spec import clone_mismatches
from kumo.controllers.virtual_machines import provisioning
from kumo.images.vm import READY_MARKER, seed

log = logging.getLogger("kumo.vms")

GOLDEN_ADDRESS = ("169.254.77.2/30", "169.254.77.1")  # the golden's own: every clone replaces it
BOOT_TIMEOUT = 120.0
CLOUD_INIT_BOOT_TIMEOUT = 900.0
BOOT_LOG = "boot-serial.log"  # in a clone's state dir: the golden's serial console up to the snapshot


@dataclasses.dataclass(frozen=True)
class Identity:
    mac: str
    address: str  # CIDR
    gateway: str
    hostname: str
    root_keys: str  # authorized_keys text (the tiny image: root's)
    admin: str = ""  # cloud-init images: the admin user, its keys and password hash, as cloud-init makes them
    admin_keys: str = ""
    password_hash: str | None = None
    password_auth: bool = False
    host_key: bytes = b""  # the SSH host key's private file, made on the host (see _host_key)


def clonable(image: MarketplaceImage) -> bool:
    return image.cloud_init or bool(image.boot.get("readyMarker"))


def golden_instance_id(golden: GoldenSnapshot) -> str:
    return f"kumo-golden-{Path(golden.directory).name}"


def _shape_key(image: MarketplaceImage, spec: VmSpec) -> str:
    doc = {"image": image.urn, "recipe": (image.boot or {}).get("append"), "files": {
        r: str(image.file(r)) for r in ("kernel", "initrd")}, "stamp": [_mtime(image.file("initrd"))],
        "vcpus": spec.vcpus, "memory": spec.memory_mib, "machine": spec.machine, "disks": len(spec.disks),
        "nics": len(spec.nics), "tb": spec.tb_size_mib}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def _mtime(path: Path | None) -> int:
    try:
        return path.stat().st_mtime_ns if path else 0
    except OSError:
        return 0


class Goldens:
    def __init__(self, driver: QemuDriver, root: Path, site: int) -> None:
        self.driver = driver
        self.root = root
        self.site = site
        self._locks: dict[str, asyncio.Lock] = {}

    def _dir(self, key: str) -> Path:
        return self.root / key

    async def get(self, image: MarketplaceImage, spec: VmSpec) -> GoldenSnapshot | None:
        """The golden for this VM's shape, made now (one cold boot) when there is none yet; None when
        this VM cannot be cloned or making the golden failed (the VM then cold-boots)."""
        if not clonable(image) or len(spec.nics) != 1 or len(spec.disks) != (2 if image.cloud_init else 1):
            return None  # data disks: a golden's kernel has seen other disks (sizes, tables); cold boot
        key = _shape_key(image, spec)
        async with self._locks.setdefault(key, asyncio.Lock()):
            with contextlib.suppress(VmFailure):
                golden = await self.driver.load_golden(self._dir(key))
                if not clone_mismatches(golden.spec, spec):
                    return golden
            try:
                return await self._make(key, image, spec)
            except (VmFailure, TimeoutError, hostcmd.HostCommandError, disk_files.DiskFileError) as e:
                log.warning("no golden snapshot for %s (%s): cold boots instead", image.urn, e)
                return None

    async def _make(self, key: str, image: MarketplaceImage, spec: VmSpec) -> GoldenSnapshot:
        t0 = time.monotonic()
        dest = self._dir(key)
        await asyncio.to_thread(shutil.rmtree, dest, True)
        await asyncio.to_thread(dest.mkdir, parents=True, exist_ok=True)
        vid = f"kumo{self.site}v-g{key[:9]}"
        netns, tap = f"kumo{self.site}g{key[:8]}", f"tg{key[:8]}"
        address, gateway = GOLDEN_ADDRESS
        disks = [DiskSpec(str(dest / "disk0.qcow2"))]
        base = image.file("disk")
        if image.cloud_init and base is not None:
            await disk_files.create_overlay(dest / "disk0.qcow2", base)
            seed_path = dest / "seed.iso"
            await asyncio.to_thread(
                seed.write_seed, seed_path, instance_id=f"kumo-golden-{key}", hostname="golden",
                user_data=seed.cloud_config({"ssh_pwauth": False, "disable_root": True}),
                network_config=seed.network_config(spec.nics[0].mac, address=address, gateway=gateway))
            disks.append(DiskSpec(str(seed_path), format="raw", readonly=True))
            append = str(image.boot.get("append") or "")
        else:
            await disk_files.create_empty(dest / "disk0.qcow2", 1)
            append = f"{image.boot.get('append', '')} kumo.ip={address} kumo.gw={gateway} kumo.host=golden"
        keys = dest / "authorized_keys"
        await asyncio.to_thread(keys.write_text, "")
        golden_spec = dataclasses.replace(
            spec, id=vid, append=append, disks=tuple(disks), netns=netns, fw_cfg=((spec.fw_cfg[0][0], str(keys)),)
            if spec.fw_cfg else (), nics=(NicSpec(spec.nics[0].mac, tap=tap),), ram_file=str(dest / "ram"),
            ram_shared=True)
        await self._netns(netns, tap, create=True)
        try:
            await self.driver.start(golden_spec)
            if image.cloud_init:
                await self.driver.wait_agent(vid, CLOUD_INIT_BOOT_TIMEOUT)
                await provisioning.wait_cloud_init(self.driver, vid, CLOUD_INIT_BOOT_TIMEOUT)
                await self.driver.agent_exec(vid, ["/bin/sync"], timeout=30)
            else:
                await self.driver.wait_serial(vid, READY_MARKER, BOOT_TIMEOUT)
                await self.driver.wait_agent(vid, 30)
            golden = await self.driver.save_golden(vid, dest)
            await asyncio.to_thread(shutil.copyfile, self.driver.paths(vid).serial, dest / BOOT_LOG)
        except BaseException:
            await self.driver.remove(vid)
            await asyncio.to_thread(shutil.rmtree, dest, True)
            raise
        finally:
            await self._netns(netns, tap, create=False)
        await self.driver.remove(vid)  # QEMU quit in save_golden; its state dir goes
        log.info("golden snapshot of %s (%d vCPU, %d MiB) made in %.1fs", image.urn, spec.vcpus, spec.memory_mib,
                 time.monotonic() - t0)
        return golden

    async def _netns(self, netns: str, tap: str, *, create: bool) -> None:
        if create:
            await hostcmd.run("ip", "netns", "add", netns)
            await hostcmd.run("ip", "-n", netns, "tuntap", "add", "name", tap, "mode", "tap")
            await hostcmd.run("ip", "-n", netns, "link", "set", tap, "up")
        else:
            await hostcmd.run("ip", "netns", "del", netns, check=False)

    async def clean(self, disks_dir: Path) -> None:
        """At start: remove the goldens no disk is backed by (they are made again on demand; images
        may have changed) and what a crash left of goldens being made."""
        def unused() -> list[Path]:
            if not self.root.is_dir():
                return []
            backing = {disk_files.qcow2_backing_file(p) or "" for p in disks_dir.glob("*.qcow2")} \
                if disks_dir.is_dir() else set()
            used = {Path(b).parent.name for b in backing if b.startswith(str(self.root))}
            return [p for p in self.root.iterdir() if p.is_dir() and p.name not in used]
        for path in await asyncio.to_thread(unused):
            await asyncio.to_thread(shutil.rmtree, path, True)
        out = await hostcmd.run("ip", "netns", "list", check=False)
        for line in out.splitlines():
            name = line.split()[0] if line.split() else ""
            if name.startswith(f"kumo{self.site}g"):
                await hostcmd.run("ip", "netns", "del", name, check=False)

    async def start_clone(self, spec: VmSpec, golden: GoldenSnapshot, who: Identity, *, cloud_init: bool,
                          disk_bytes: int = 0) -> None:
        """Restore `golden` as VM `spec` and give it its own identity before its cable is plugged in.
        A cloud-init image's OS disk (spec.disks[0], not booted yet) is made anew on the golden's disk."""
        if cloud_init:
            await disk_files.create_overlay(Path(spec.disks[0].path), Path(golden.disks[0].path))
        await self.driver.start_clone(spec, golden, link_down=True)
        with contextlib.suppress(OSError):  # the boot a clone's console log begins with: the golden's
            await asyncio.to_thread(shutil.copyfile, Path(golden.directory) / BOOT_LOG,
                                    self.driver.paths(spec.id).state_dir / BOOT_LOG)
        try:
            await self.driver.agent_call(spec.id, "guest-set-time", None, 10)  # the clock stood still in the golden
            grow = False
            if cloud_init and disk_bytes > (disk_files.qcow2_virtual_size(Path(spec.disks[0].path)) or 0):
                await self.driver.block_resize(spec.id, 0, disk_bytes)
                grow = True
            who = dataclasses.replace(who, host_key=await _host_key(dropbear=not cloud_init))
            script = _cloud_init_identity(who, grow) if cloud_init else _tiny_identity(who)
            code, out, err = await self.driver.agent_exec(spec.id, ["/bin/sh", "-c", script], timeout=60)
            if code != 0:
                raise VmFailure(f"re-identifying the clone failed ({code}): {(err or out).decode(errors='replace')}")
            await self.driver.set_link(spec.id, 0, True)
        except BaseException:
            await self.driver.kill(spec.id)
            raise


def _reseed() -> str:
    """Every clone resumes with the golden's kernel RNG state: mix fresh host randomness in and, where
    python3 is there, make the kernel reseed its CRNG at once (RNDRESEEDCRNG) instead of within a minute.
    SSH host keys are made on the host (_host_key), never drawn from a clone's RNG."""
    return (f"echo {secrets.token_hex(64)} > /dev/urandom; command -v python3 >/dev/null && python3 -c "
            "'import fcntl,os; fcntl.ioctl(os.open(\"/dev/random\", os.O_WRONLY), 0x5207)' 2>/dev/null || true")


async def _host_key(*, dropbear: bool) -> bytes:
    """A new ed25519 host key made with the host's RNG: dropbear's format for the tiny image, OpenSSH's
    for the others (the guest derives the public half)."""
    d = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="kumo-hostkey-"))
    try:
        key = d / "key"
        if dropbear:
            await hostcmd.run("dropbearkey", "-t", "ed25519", "-f", str(key))
        else:
            await hostcmd.run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(key))
        return await asyncio.to_thread(key.read_bytes)
    finally:
        await asyncio.to_thread(shutil.rmtree, d, True)


def _tiny_identity(who: Identity) -> str:
    """The tiny guest's identity, as its boot script would have set it from the kernel command line."""
    q = shlex.quote
    keys = base64.b64encode(who.root_keys.encode()).decode()
    host_key = "/etc/dropbear/dropbear_ed25519_host_key"
    ip = who.address.split("/")[0]
    return "\n".join([
        "set -e", _reseed(),
        "ip link set eth0 down", f"ip link set eth0 address {q(who.mac)}", "ip addr flush dev eth0",
        f"ip addr add {q(who.address)} dev eth0", "ip link set eth0 up",
        f"ip route replace default via {q(who.gateway)}",
        f"hostname {q(who.hostname)}", f"echo {q(who.hostname)} > /etc/hostname",
        f"printf '127.0.0.1 localhost\\n127.0.1.1 %s\\n' {q(who.hostname)} > /etc/hosts",
        f"echo {keys} | base64 -d > /root/.ssh/authorized_keys", "chmod 600 /root/.ssh/authorized_keys",
        # every clone would share the golden's SSH host key: a new one, and dropbear restarted with it
        "[ -r /run/dropbear.pid ] && kill $(cat /run/dropbear.pid) 2>/dev/null || true",
        f"echo {base64.b64encode(who.host_key).decode()} | base64 -d > {host_key}", f"chmod 600 {host_key}",
        f"dropbear -s -r {host_key} -p 22 -P /run/dropbear.pid 2>>/var/log/dropbear.log",
        f"(arping -q -U -c 2 -w 1 -I eth0 {q(ip)} >/dev/null 2>&1 &)",
        f"echo \"kumo: restored from a snapshot; {READY_MARKER} host={who.hostname} ip={who.address}\" > /dev/ttyS0",
    ])


def _cloud_init_identity(who: Identity, grow: bool) -> str:
    """What cloud-init does at a VM's first boot, done in the restored golden and kept in its files."""
    q = shlex.quote
    user, home = who.admin, f"/home/{who.admin}"
    keys = base64.b64encode(who.admin_keys.encode()).decode()
    ip = who.address
    interfaces = (f"auto lo\niface lo inet loopback\n\nauto eth0\niface eth0 inet static\n    address {ip}\n"
                  f"    gateway {who.gateway}\n")
    lines = [
        "set -e", _reseed(),
        # network: the address now, and in ifupdown's file for the next boots
        "ip link set eth0 down", f"ip link set eth0 address {q(who.mac)}", "ip addr flush dev eth0",
        f"ip addr add {q(ip)} dev eth0", "ip link set eth0 up", f"ip route replace default via {q(who.gateway)}",
        f"printf %s {q(interfaces)} > /etc/network/interfaces.d/50-cloud-init",
        "rm -f /etc/udev/rules.d/70-persistent-net.rules",
        # hostname
        f"echo {q(who.hostname)} > /etc/hostname", f"hostname {q(who.hostname)}",
        f"sed -i '/^127.0.1.1/d' /etc/hosts && echo {q('127.0.1.1 ' + who.hostname)} >> /etc/hosts",
        # the admin user as cloud-init's users module makes it
        f"id -u {q(user)} >/dev/null 2>&1 || useradd -m -s /bin/bash -G adm,sudo -c {q(user)} {q(user)}",
        f"echo {q(user + ' ALL=(ALL) NOPASSWD:ALL')} > /etc/sudoers.d/90-cloud-init-users",
        "chmod 440 /etc/sudoers.d/90-cloud-init-users",
        f"install -d -m 700 -o {q(user)} -g {q(user)} {q(home + '/.ssh')}",
        f"echo {keys} | base64 -d > {q(home + '/.ssh/authorized_keys')}",
        f"chown {q(user)}: {q(home + '/.ssh/authorized_keys')}", f"chmod 600 {q(home + '/.ssh/authorized_keys')}",
        f"usermod -p {q(who.password_hash)} {q(user)}" if who.password_hash else f"passwd -l {q(user)} >/dev/null",
        # where cloud-init keeps ssh_pwauth (sshd takes the first value it reads, and this file is first)
        f"echo 'PasswordAuthentication {'yes' if who.password_auth else 'no'}' > "
        "/etc/ssh/sshd_config.d/50-cloud-init.conf",
        # what every clone shares with the golden: SSH host key, machine-id
        "rm -f /etc/ssh/ssh_host_*", "umask 077",
        f"echo {base64.b64encode(who.host_key).decode()} | base64 -d > /etc/ssh/ssh_host_ed25519_key",
        "ssh-keygen -y -f /etc/ssh/ssh_host_ed25519_key > /etc/ssh/ssh_host_ed25519_key.pub", "umask 022",
        "chmod 644 /etc/ssh/ssh_host_ed25519_key.pub",
        f"echo {uuid.uuid4().hex} > /etc/machine-id",
        "systemctl restart ssh",
    ]
    if grow:
        lines.append("resize2fs /dev/vda >/dev/null 2>&1")
    lines.append(f"echo \"kumo: restored from a snapshot as {who.hostname} ({ip})\" > /dev/ttyS0")
    return "\n".join(lines)
