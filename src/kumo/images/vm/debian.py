"""The Debian 12 marketplace image: `Debian:debian-12:12-gen2:1.0.0` (alias `Debian12`), a real Debian
bookworm with systemd, cloud-init, OpenSSH and the QEMU guest agent, booted the way kumo boots every VM
(direct kernel boot: no partition table, no bootloader).

`build()` writes `<vm images dir>/debian-debian-12-1.0.0/`:

    image.json   the marketplace manifest; its "kumo" member says how to boot it (see `boot_info()`):
                 cmdline `root=/dev/vda rw console=ttyS0 net.ifnames=0 quiet`, readiness "agent" (no
                 serial marker: the guest agent answering means the guest is up), minimum memory,
                 cloudInit true (the VM needs a NoCloud seed, `kumo.images.vm.seed`), and the recipe key
    disk.qcow2   the root filesystem: ext4 straight on the disk (`mkfs.ext4 -d` of the mmdebstrap root,
                 3 GiB virtual), to be used as the read-only backing file of one qcow2 overlay per VM
    vmlinuz      the Debian cloud kernel and its initramfs (virtio modules only, `MODULES=list`),
    initrd.img   copied out of the root filesystem for direct kernel boot

How a VM boots it: the overlay as the first virtio disk (/dev/vda, grown to the OS disk size with
`qemu-img resize`: cloud-init's resizefs grows the filesystem at first boot), the seed ISO (label
`cidata`) as a second, read-only disk, a virtio NIC (eth0: `net.ifnames=0`), the guest agent's
virtio-serial port, at least `MIN_MEMORY_MIB`. cloud-init then sets the hostname, network (v2
config matched by MAC; static DNS works through resolvconf), the admin user with SSH keys, password
and NOPASSWD sudo, `ssh_pwauth`, and runs write_files, runcmd and user-data scripts (Azure's
customData). Root has no password (no console backdoor) and cannot log in over SSH.

The root comes from `mmdebstrap --mode=root --variant=minbase` against the Debian mirrors the host's
apt uses (bookworm, -updates, -security), so building needs root and a reachable mirror, and takes
about a minute (45-60 s measured here, mostly mmdebstrap). Differences from a stock Debian cloud image,
each for boot time under TCG (see the customize hook below): only an ed25519 host key, generated at
first boot (RSA-3072 takes ~30 s under TCG); no locale generation (minbase has no locales: cloud-init
would end in error); the apt-daily, e2scrub and fstrim timers masked; a 6 MB initramfs instead of 16 MB.

Version: the fixed `VERSION`, bumped by hand when the recipe changes what a guest sees (packages,
hooks, boot contract). The recipe key (the cache) hashes this module's source, the mirrors, and the
candidate versions the host's apt offers now (`apt-cache policy`) of every package installed
explicitly plus the libraries most security updates land in; when the manifest already has that key
and the files are there, `build()` does nothing, in about a second. After `apt-get update` brings a
new kernel or cloud-init, the next build makes a new disk under the same version: VMs whose
overlays use the old disk as backing file must keep it (the VM controller should reference the base
through a hard link of its own, e.g. named by the manifest's sha256, before it makes an overlay).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kumo.images.buildkit import BuildError, locked, run, which, write_atomic
from kumo.images.vm import BuildResult, ImageDef, default_dir

Say = Callable[[str], None]

FORMAT = "kumo-vm-image/1"
VERSION = "1.0.0"  # bump with the recipe (see the module docstring)
DEBIAN = ImageDef("Debian", "debian-12", "12-gen2", VERSION, "Debian12")
SUITE = "bookworm"
DISK_BYTES = 3 * 1024**3  # virtual size of the base disk; VMs grow their overlay to the OS disk size
CMDLINE = "root=/dev/vda rw console=ttyS0 net.ifnames=0 quiet"
MIN_MEMORY_MIB = 512  # systemd + cloud-init's Python on first boot; measured with tests/e2e/test_debian_image.py
TB_SIZE_MIB = 128  # TCG translation cache for a full distro (facts: a Debian guest touched ~330 MB of 1 GiB)
QGA_PORT = "org.qemu.guest_agent.0"  # qemu-guest-agent starts through udev when this port appears

PACKAGES = (
    "systemd", "systemd-sysv", "udev", "dbus", "libpam-systemd", "openssh-server", "qemu-guest-agent",
    "cloud-init", "cloud-guest-utils", "linux-image-cloud-amd64", "initramfs-tools", "ifupdown",
    "isc-dhcp-client", "netbase", "iproute2", "iputils-ping", "sudo", "less", "procps", "ca-certificates",
    "busybox", "e2fsprogs",
    "resolvconf",  # ifupdown's dns-nameservers: the static DNS servers of cloud-init's network config
)
# Not installed explicitly, but where most security updates land: a new candidate means a rebuild.
KEY_LIBRARIES = ("libc6", "libssl3", "libsystemd0", "python3.11")
# The initramfs loads only these (with their dependencies); udev loads the rest from the root.
INITRAMFS_MODULES = ("virtio_pci", "virtio_mmio", "virtio_blk", "virtio_scsi", "virtio_net", "virtio_console",
                     "virtio_balloon", "virtio_rng")
# Smaller root, faster mkfs and boots: no man pages, docs (but copyrights) or translations.
DPKG_OPTIONS = ("path-exclude=/usr/share/man/*", "path-exclude=/usr/share/doc/*",
                "path-include=/usr/share/doc/*/copyright", "path-exclude=/usr/share/info/*",
                "path-exclude=/usr/share/locale/*", "path-include=/usr/share/locale/locale.alias")

CLOUD_CFG = """\
# kumo: the NoCloud seed (an ISO labelled cidata, kumo.images.vm.seed) or nothing
datasource_list: [ NoCloud, None ]
# minbase has no locales: update-locale would fail and leave cloud-init in error. A string: the schema
# wants one, and cc_locale skips on any false-ish value
locale: "false"
# RSA-3072 takes ~30 s under TCG; ed25519 is instant
ssh_genkeytypes: [ ed25519 ]
ssh_deletekeys: true
disable_root: true
# ext4 straight on /dev/vda: no partition to grow, only the filesystem
growpart: { mode: "off" }
resize_rootfs: true
# the hostname in /etc/hosts (sudo resolves it)
manage_etc_hosts: true
"""

SSH_DROPIN = """\
# kumo: no host keys ship in the image. cloud-init makes the ed25519 one on first boot; without a
# seed (datasource None) this makes it. Only ed25519: `ssh-keygen -A` would add RSA-3072 (~30 s under TCG).
[Service]
ExecStartPre=
ExecStartPre=/bin/sh -c 'test -s /etc/ssh/ssh_host_ed25519_key || \\
  ssh-keygen -q -t ed25519 -N "" -f /etc/ssh/ssh_host_ed25519_key'
ExecStartPre=/usr/sbin/sshd -t
"""

MASKED_UNITS = ("apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_all.timer", "e2scrub_reap.service",
                "fstrim.timer")

CUSTOMIZE = r"""#!/bin/sh
# mmdebstrap's customize hook for kumo's Debian image: $1 is the root, every package is installed.
set -eu
r="$1"

# ext4 straight on the first virtio disk, mounted rw by the kernel (root=/dev/vda rw): nothing to fsck
printf '/dev/vda\t/\text4\trw,relatime,errors=remount-ro\t0\t0\n' > "$r/etc/fstab"
echo debian > "$r/etc/hostname"
cat > "$r/etc/hosts" <<'EOF'
127.0.0.1	localhost
::1		localhost ip6-localhost ip6-loopback
ff02::1		ip6-allnodes
ff02::2		ip6-allrouters
EOF
# resolvconf's file: static DNS (ifupdown dns-nameservers) and DHCP's (dhclient hook) both land there
rm -f "$r/etc/resolv.conf"
ln -s ../run/resolvconf/resolv.conf "$r/etc/resolv.conf"
# every VM gets its own machine-id at boot
: > "$r/etc/machine-id"

# no console backdoor: root has no password (and cloud-init's disable_root refuses it over SSH)
chroot "$r" usermod -p '*' root

printf '%s' "$KUMO_CLOUD_CFG" > "$r/etc/cloud/cloud.cfg.d/90_kumo.cfg"

rm -f "$r"/etc/ssh/ssh_host_*
mkdir -p "$r/etc/systemd/system/ssh.service.d"
printf '%s' "$KUMO_SSH_DROPIN" > "$r/etc/systemd/system/ssh.service.d/kumo-hostkeys.conf"

for unit in $KUMO_MASKED_UNITS; do
  ln -sfn /dev/null "$r/etc/systemd/system/$unit"
done

# a small initramfs: only the virtio drivers (the cloud kernel has ext4 built in)
echo MODULES=list > "$r/etc/initramfs-tools/conf.d/kumo"
printf '%s\n' $KUMO_INITRAMFS_MODULES > "$r/etc/initramfs-tools/modules"
chroot "$r" update-initramfs -u -k all
"""


def _stream(argv: list[str], say: Say, env: dict[str, str]) -> None:
    """A long host command (mmdebstrap): its progress lines (`I:`/`W:`/`E:`) go to `say`, the last
    lines of everything it printed into the BuildError when it fails."""
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                text=True, errors="replace", env={**os.environ, **env})
    except FileNotFoundError:
        raise BuildError(f"{argv[0]} not found: install it (scripts/setup.sh does)") from None
    assert proc.stdout is not None
    tail: list[str] = []
    for line in proc.stdout:
        line = line.rstrip()
        if not line:
            continue
        tail = (tail + [line])[-25:]
        if line[:2] in ("I:", "W:", "E:"):
            say(f"[debian]   {line}")
    if proc.wait() != 0:
        raise BuildError(f"{os.path.basename(argv[0])} failed (exit {proc.returncode}):\n" + "\n".join(tail))


def mirrors() -> tuple[str, str]:
    """(Debian, Debian security) mirror URLs the host's apt uses: there is no internet here, but they work."""
    from kumo.images.catalog.recipes import debian_mirrors
    return debian_mirrors()


def _candidates(packages: tuple[str, ...]) -> dict[str, str]:
    """The version apt would install now of each package (the host's lists: same mirrors as the build)."""
    out = run("apt-cache", "policy", *packages)
    found: dict[str, str] = {}
    current = None
    for line in out.splitlines():
        if line and not line[0].isspace() and line.endswith(":"):
            current = line[:-1].split(":")[0]
        elif current and line.strip().startswith("Candidate:"):
            found[current] = line.split(":", 1)[1].strip()
    missing = [p for p in packages if found.get(p) in (None, "(none)")]
    if missing:
        raise BuildError(f"apt knows no {', '.join(missing)} (run apt-get update?)")
    return found


def recipe_key(main: str, security: str, candidates: dict[str, str]) -> str:
    """What the image is made of: this module (packages, hooks, cloud-init config, cmdline), the
    mirrors and the candidate versions. Cheap (one `apt-cache policy`) and honest for what apt knows."""
    src = inspect.getsource(sys.modules[__name__])
    doc = {"format": FORMAT, "version": VERSION, "suite": SUITE, "mirrors": [main, security],
           "candidates": candidates, "source": hashlib.sha256(src.encode()).hexdigest()}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def boot_info() -> dict[str, Any]:
    """The manifest's "kumo"."boot": what the VM controller needs to boot this image."""
    return {"append": CMDLINE, "readiness": "agent", "agent": QGA_PORT, "minMemoryMiB": MIN_MEMORY_MIB,
            "tbSizeMiB": TB_SIZE_MIB, "cloudInit": True, "rootDevice": "/dev/vda",
            "disks": ["disk: qcow2 overlay of disk.qcow2 (resized to the OS disk size) as the 1st virtio disk",
                      "seed: NoCloud ISO labelled cidata (kumo.images.vm.seed), read-only, as the 2nd"],
            "nic": "virtio-net; eth0 in the guest (net.ifnames=0); network-config v2 matched by MAC"}


def _installed_versions(rootfs: Path) -> dict[str, str]:
    """Package -> version installed in the root (from dpkg's status file)."""
    out: dict[str, str] = {}
    for para in (rootfs / "var/lib/dpkg/status").read_text().split("\n\n"):
        m = re.search(r"^Package: (\S+)", para, re.M)
        v = re.search(r"^Version: (\S+)", para, re.M)
        if m and v and "Status: install ok installed" in para:
            out[m.group(1)] = v.group(1)
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _mmdebstrap(rootfs: Path, hook: Path, main: str, security: str, say: Say) -> None:
    """The root filesystem, packages installed and customized (needs root: chroot, device nodes). The
    hook's texts go through the environment so the hook script itself stays a fixed file."""
    argv = [which("mmdebstrap"), "--mode=root", "--variant=minbase", "--format=directory",
            f"--include={','.join(PACKAGES)}", *[f"--dpkgopt={o}" for o in DPKG_OPTIONS],
            f"--customize-hook=sh {shlex.quote(str(hook))} \"$1\""]
    if Path("/usr/share/mmdebstrap/hooks/merged-usr").is_dir():
        argv.append("--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr")
    argv += [SUITE, str(rootfs), f"deb {main} {SUITE} main", f"deb {main} {SUITE}-updates main",
             f"deb {security} {SUITE}-security main"]
    env = {"LC_ALL": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive", "KUMO_CLOUD_CFG": CLOUD_CFG,
           "KUMO_SSH_DROPIN": SSH_DROPIN, "KUMO_MASKED_UNITS": " ".join(MASKED_UNITS),
           "KUMO_INITRAMFS_MODULES": " ".join(INITRAMFS_MODULES),
           "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
    _stream(argv, say, env)


def _boot_files(rootfs: Path) -> tuple[str, Path, Path]:
    """(kernel release, vmlinuz, initrd) of the one kernel installed in the root."""
    kernels = sorted((rootfs / "boot").glob("vmlinuz-*"))
    if len(kernels) != 1:
        raise BuildError(f"expected one kernel in the image's /boot, found {[k.name for k in kernels]}")
    kver = kernels[0].name.removeprefix("vmlinuz-")
    initrd = rootfs / "boot" / f"initrd.img-{kver}"
    if not initrd.is_file():
        raise BuildError(f"no initramfs for {kver} in the image's /boot")
    return kver, kernels[0], initrd


def _make_disk(rootfs: Path, staging: Path, out: Path, fs_uuid: str) -> None:
    """ext4 of the root on a raw file (no loop device, no mount: `mkfs.ext4 -d`), then qcow2."""
    raw = staging / "disk.raw"
    with open(raw, "wb") as f:
        f.truncate(DISK_BYTES)
    run(which("mkfs.ext4", "/usr/sbin/mkfs.ext4", "/sbin/mkfs.ext4"), "-q", "-F", "-L", "rootfs", "-U", fs_uuid,
         "-E", f"hash_seed={fs_uuid}", "-d", str(rootfs), str(raw))
    run(which("qemu-img", "/usr/bin/qemu-img"), "convert", "-f", "raw", "-O", "qcow2", str(raw), str(out))
    raw.unlink()


def _remove_staging(staging: Path, say: Say) -> None:
    """Delete the staging dir, but never through a mount left inside it (a failed chroot's /dev or /proc)."""
    from kumo.images.catalog.recipes import mounts_below
    if mounted := mounts_below(staging):
        say(f"[debian] WARNING: leaving {staging}: still mounted there: {', '.join(mounted)}")
        return
    shutil.rmtree(staging, ignore_errors=True)


def _up_to_date(target: Path, key: str) -> dict[str, Any] | None:
    """The manifest's "kumo" member when the image in `target` was built from `key` and its files are intact."""
    try:
        kumo = json.loads((target / "image.json").read_text()).get("kumo") or {}
    except (OSError, ValueError, AttributeError):
        return None
    sizes = kumo.get("sizes") or {}
    if kumo.get("recipe") != key or not sizes:
        return None
    if not all((target / n).is_file() and (target / n).stat().st_size == s for n, s in sizes.items()):
        return None
    return kumo


def _manifest(key: str, kver: str, sizes: dict[str, int], sha: dict[str, str], installed: dict[str, str],
              main: str, security: str, fs_uuid: str) -> dict[str, Any]:
    image = DEBIAN
    return {
        "publisher": image.publisher, "offer": image.offer, "sku": image.sku, "version": image.version,
        "alias": image.alias, "os": "Linux", "hyperVGeneration": "V2", "architecture": "x64",
        "sizeInBytes": DISK_BYTES,  # the OS disk's minimum size
        "files": {"kernel": "vmlinuz", "initrd": "initrd.img", "disk": "disk.qcow2"},
        "kumo": {
            "format": FORMAT, "recipe": key, "boot": boot_info(),
            "disk": {"format": "qcow2", "virtualSize": DISK_BYTES, "filesystem": "ext4", "label": "rootfs",
                     "uuid": fs_uuid, "partitioned": False},
            "kernel": {"release": kver, "package": f"linux-image-{kver}",
                       "version": installed.get(f"linux-image-{kver}", "")},
            "packages": {p: installed.get(p, "") for p in (*PACKAGES, *KEY_LIBRARIES) if p in installed},
            "mirrors": [main, security], "suite": SUITE, "sha256": sha, "sizes": sizes,
        },
    }


def build(out: str | os.PathLike[str] | None = None, *, force: bool = False, say: Say = print) -> BuildResult:
    """Build the Debian image into `out` (default `Settings.vm_images_dir`), or do nothing when it is up
    to date (the recipe key and the files match). Returns a `kumo.images.vm.BuildResult`. Raises
    BuildError when it cannot be built here (not root, no mmdebstrap, an unreachable mirror)."""
    root = Path(out) if out is not None else default_dir()
    root.mkdir(parents=True, exist_ok=True)
    with locked(root):
        return _build_locked(root, force=force, say=say)


def _build_locked(root: Path, *, force: bool, say: Say) -> BuildResult:
    t0 = time.monotonic()
    image = DEBIAN
    urn = f"{image.publisher}:{image.offer}:{image.sku}:{image.version}"
    target = root / image.dirname
    main, security = mirrors()
    key = recipe_key(main, security, _candidates((*PACKAGES, *KEY_LIBRARIES)))
    kumo = None if force else _up_to_date(target, key)
    if kumo is not None:
        say(f"vm image {urn} up to date in {target} (kernel {kumo['kernel']['release']}; "
            f"checked in {time.monotonic() - t0:.1f} s)")
        return BuildResult(target, True, kumo["kernel"]["release"], dict(kumo["sizes"]), time.monotonic() - t0)
    if os.geteuid() != 0:
        raise BuildError("the Debian image needs root to build (mmdebstrap --mode=root): "
                         "run `sudo kumo vm-images build --only debian`")
    say(f"vm image {urn}: building into {target}" + (" (--force)" if force else ""))
    staging = Path(tempfile.mkdtemp(prefix=".staging-debian-", dir=root))
    os.chmod(staging, 0o755)  # apt's _apt user downloads into the root's lists (sandboxed) only if it can get there
    try:
        hook = staging / "customize.sh"
        hook.write_text(CUSTOMIZE)
        rootfs = staging / "rootfs"
        t1 = time.monotonic()
        say(f"[debian] mmdebstrap --variant=minbase {SUITE} from {main} (and {security}), "
            f"{len(PACKAGES)} packages …")
        _mmdebstrap(rootfs, hook, main, security, say)
        installed = _installed_versions(rootfs)
        say(f"[debian] root made: {len(installed)} packages ({time.monotonic() - t1:.1f} s)")
        kver, vmlinuz, initrd = _boot_files(rootfs)
        t1 = time.monotonic()
        fs_uuid = str(uuid.UUID(key[:32]))  # one per recipe: reproducible, and different when it changes
        target.mkdir(parents=True, exist_ok=True)
        disk_tmp = target / f".disk.qcow2.{os.getpid()}"
        try:
            _make_disk(rootfs, staging, disk_tmp, fs_uuid)
            sha = {"disk.qcow2": _sha256(disk_tmp)}
            kernel_bytes, initrd_bytes = vmlinuz.read_bytes(), initrd.read_bytes()
            sha.update({"vmlinuz": hashlib.sha256(kernel_bytes).hexdigest(),
                        "initrd.img": hashlib.sha256(initrd_bytes).hexdigest()})
            sizes = {"disk.qcow2": disk_tmp.stat().st_size, "vmlinuz": len(kernel_bytes),
                     "initrd.img": len(initrd_bytes)}
            say(f"[debian] disk: ext4 {DISK_BYTES >> 30} GiB -> qcow2 {sizes['disk.qcow2'] / 1e6:.0f} MB "
                f"({time.monotonic() - t1:.1f} s)")
            # the manifest goes last: readers see the old image or the new one (see the docstring)
            os.replace(disk_tmp, target / "disk.qcow2")
        finally:
            disk_tmp.unlink(missing_ok=True)
        write_atomic(target / "vmlinuz", kernel_bytes)
        write_atomic(target / "initrd.img", initrd_bytes)
        manifest = _manifest(key, kver, sizes, sha, installed, main, security, fs_uuid)
        write_atomic(target / "image.json", json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n")
    finally:
        _remove_staging(staging, say)
    elapsed = time.monotonic() - t0
    say(f"vm image {urn} (alias {image.alias}): disk.qcow2 {sizes['disk.qcow2'] / 1e6:.0f} MB, kernel {kver}, "
        f"initrd.img {sizes['initrd.img'] / 1e6:.1f} MB in {target}; {elapsed:.1f} s")
    return BuildResult(target, False, kver, sizes, elapsed)
