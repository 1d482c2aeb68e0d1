"""kumo's VM images, built from Debian packages and left where the marketplace finds them.

Two images: "kumo tiny" (this module) and Debian 12 (`debian.py`, `Debian:debian-12:12-gen2:1.0.0`, alias
`Debian12`: a real Debian with systemd, cloud-init, OpenSSH and the guest agent on a qcow2 disk, booted with a
NoCloud seed from `seed.py`). `build_all()` (the `kumo vm-images build` command, `--only tiny|debian`)
builds tiny, then Debian; `build()` builds tiny alone, `debian.build()` Debian alone.

`build()` writes into a directory (`Settings.vm_images_dir`, i.e. `$KUMO_VM_IMAGES_DIR` or
/var/cache/kumo/vm-images as root, unless told):

    kumo-tiny-1.0.0/image.json   the marketplace manifest (`kumo.compute.marketplace`), with a "kumo" member
                                 saying how to boot it (cmdline, readiness marker, minimum memory) and the
                                 recipe key it was built from (the cache)
    kumo-tiny-1.0.0/vmlinuz      the Debian cloud kernel (`linux-image-cloud-amd64`'s dependency), as shipped
    kumo-tiny-1.0.0/initrd.img   a gzip cpio: busybox-static, the virtio modules, dropbear and qemu-guest-agent
                                 with their shared libraries, and the boot scripts in `guest.py`
    .cache/debs/                 the kernel package, kept so a rebuild needs no download

"kumo tiny" (`kumo:tiny:1:1.0.0`, alias `Tiny`) is a CirrOS-like image: it runs entirely from its
initramfs (no disk), configures eth0 statically from the kernel cmdline or by DHCP, and runs SSH
(dropbear) and the QEMU guest agent; see `guest.py` for its cmdline and markers. The kernel is extracted
with `dpkg -x` from the .deb (`apt-get download`), never installed on the host; `depmod -b` gives the
module dependencies. The other files come from Debian packages installed on the host (busybox-static,
dropbear-bin, qemu-guest-agent), as the container catalog does.

The output is deterministic (same inputs, same bytes). The recipe key hashes this package's source, the
kernel package version apt offers now, and the host packages' versions and files; when the manifest
already carries that key and the files are there, `build()` does nothing ("up to date"), which takes a
fraction of a second. A newer kernel in the mirror changes the key (one 27 MB download).

The Debian image lives beside it in `debian-debian-12-1.0.0/` (image.json, disk.qcow2, vmlinuz, initrd.img):
mmdebstrap needs root and a reachable Debian mirror, takes about a minute, and is cached by a recipe
key the same way (see `debian.py`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from kumo.images.buildkit import BuildError, locked, run, shared_libraries, which, write_atomic
from kumo.images.vm import cpio, guest
from kumo.images.vm.guest import FW_CFG_KEYS, HOSTKEY_MARKER, QGA_PORT, READY_MARKER

__all__ = ["FW_CFG_KEYS", "HOSTKEY_MARKER", "IMAGES", "QGA_PORT", "READY_MARKER", "TINY", "BuildError",
           "BuildResult", "ImageDef", "build", "build_all", "default_dir", "image_dir"]

Say = Callable[[str], None]
FORMAT = "kumo-vm-image/1"
KERNEL_META = "linux-image-cloud-amd64"
HOST_PACKAGES = ("busybox-static", "dropbear-bin", "qemu-guest-agent", "libc6")
# Loaded at boot in this order (their dependencies, from modules.dep, go first).
MODULES = ("virtio_pci", "virtio_mmio", "virtio_net", "virtio_blk", "virtio_console",
           "virtio_balloon", "virtio-rng", "qemu_fw_cfg", "button", "evdev")





@dataclasses.dataclass(frozen=True)
class ImageDef:
    publisher: str
    offer: str
    sku: str
    version: str
    alias: str

    @property
    def dirname(self) -> str:
        return f"{self.publisher}-{self.offer}-{self.version}".lower()


TINY = ImageDef("kumo", "tiny", "1", "1.0.0", "Tiny")
BOOT_APPEND = "console=ttyS0 panic=-1 quiet"  # the guest's own kumo.* options go after it
MIN_MEMORY_MIB = 96  # the kernel's init_size: 64 MiB guests cannot boot it


@dataclasses.dataclass(frozen=True)
class BuildResult:
    directory: Path  # the image's directory (with image.json)
    up_to_date: bool
    kernel_version: str  # e.g. 6.1.0-56-cloud-amd64
    sizes: dict[str, int]  # file -> bytes
    seconds: float


def default_dir() -> Path:
    from kumo.config import default_vm_images_dir
    return default_vm_images_dir()


def image_dir(out: str | os.PathLike[str] | None = None, image: ImageDef = TINY) -> Path:
    return (Path(out) if out is not None else default_dir()) / image.dirname





def _host_versions() -> dict[str, str]:
    out = subprocess.run(["dpkg-query", "-W", "-f", "${Package}\t${Version}\t${db:Status-Status}\n",
                          *HOST_PACKAGES], capture_output=True, text=True).stdout
    versions = {p: "" for p in HOST_PACKAGES}
    for line in out.splitlines():
        name, version, status = (line.split("\t") + ["", ""])[:3]
        if status == "installed":
            versions[name.split(":")[0]] = version
    return versions


def _kernel_package() -> tuple[str, str]:
    """(package, version) of the kernel image `linux-image-cloud-amd64` depends on, as apt offers it now."""
    out = run("apt-cache", "depends", KERNEL_META)
    m = re.search(r"Depends:\s*(linux-image-[0-9][^\s]*-cloud-amd64)\b", out)
    if not m:
        raise BuildError(f"apt-cache knows no {KERNEL_META} (run apt-get update?)")
    pkg = m.group(1)
    show = run("apt-cache", "show", "--no-all-versions", pkg)
    v = re.search(r"^Version:\s*(\S+)", show, re.M)
    if not v:
        raise BuildError(f"apt-cache show {pkg}: no version")
    return pkg, v.group(1)





def _host_binaries() -> dict[str, str]:
    """Image path -> host path of the programs the guest runs."""
    return {
        "bin/busybox": which("busybox", "/bin/busybox", "/usr/bin/busybox"),
        "usr/sbin/dropbear": which("dropbear", "/usr/sbin/dropbear"),
        "usr/bin/dropbearkey": which("dropbearkey", "/usr/bin/dropbearkey"),
        "usr/bin/dbclient": which("dbclient", "/usr/bin/dbclient"),
        "usr/sbin/qemu-ga": which("qemu-ga", "/usr/sbin/qemu-ga", "/usr/bin/qemu-ga"),
    }


def _fingerprint(paths: list[str]) -> str:
    """Cheap identity of host files for the recipe key: path, size, mtime (packages replace files whole)."""
    h = hashlib.sha256()
    for p in sorted(paths):
        st = os.stat(p)
        h.update(f"{p}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _recipe_key(image: ImageDef, kernel: tuple[str, str], versions: dict[str, str], files: str) -> str:
    src = "".join(inspect.getsource(m) for m in (sys.modules[__name__], guest, cpio))
    doc = {"format": FORMAT, "image": dataclasses.asdict(image), "kernel": list(kernel), "packages": versions,
           "files": files, "modules": MODULES, "source": hashlib.sha256(src.encode()).hexdigest()}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def _download_kernel(cache: Path, pkg: str, version: str, say: Say) -> Path:
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    quoted = version.replace(":", "%3a")
    deb = debs / f"{pkg}_{quoted}_amd64.deb"
    if deb.is_file():
        say(f"[tiny] kernel package {deb.name}: cached")
        return deb
    t0 = time.monotonic()
    say(f"[tiny] downloading {pkg} {version} …")
    with tempfile.TemporaryDirectory(dir=debs) as tmp:
        os.chmod(tmp, 0o755)  # apt's _apt user must be able to write when apt sandboxes the download
        run("apt-get", "download", f"{pkg}={version}", cwd=Path(tmp))
        got = [p for p in Path(tmp).glob("*.deb")]
        if len(got) != 1:
            raise BuildError(f"apt-get download {pkg}: expected one .deb, got {[p.name for p in got]}")
        os.replace(got[0], deb)
    for old in debs.glob("linux-image-*.deb"):
        if old != deb:
            old.unlink()
    say(f"[tiny] downloaded {deb.name} ({deb.stat().st_size / 1e6:.1f} MB, {time.monotonic() - t0:.1f} s)")
    return deb


def _module_order(moddir: Path, wanted: tuple[str, ...]) -> list[str]:
    """Relative paths (under lib/modules/<kver>/) of `wanted` and their dependencies, dependencies first."""
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in (moddir / "modules.dep").read_text().splitlines():
        path, _, rest = line.partition(":")
        deps[path] = rest.split()
        by_name[os.path.basename(path).split(".ko")[0].replace("-", "_")] = path
    order: list[str] = []

    def visit(path: str) -> None:
        if path in order:
            return
        for d in deps.get(path, []):
            visit(d)
        order.append(path)

    for name in wanted:
        path = by_name.get(name.replace("-", "_"))
        if path is None:
            builtin = (moddir / "modules.builtin").read_text() if (moddir / "modules.builtin").exists() else ""
            if re.search(rf"/{re.escape(name)}\.ko$", builtin, re.M):
                continue  # built into this kernel
            raise BuildError(f"kernel module {name} is not in {moddir}")
        visit(path)
    return order


def _initramfs_tree(kroot: Path, kver: str) -> tuple[cpio.Tree, list[str]]:
    moddir = kroot / "lib" / "modules" / kver
    modules = _module_order(moddir, MODULES)
    binaries = _host_binaries()
    busybox = binaries["bin/busybox"]
    if shared_libraries(busybox):
        raise BuildError(f"{busybox} is dynamically linked: install busybox-static")
    applets = run(busybox, "--list-full").split()
    tree: cpio.Tree = {d: cpio.directory() for d in (
        "bin", "sbin", "usr/bin", "usr/sbin", "dev", "proc", "sys", "run", "etc", "etc/kumo", "lib",
        "var", "var/log", "var/lib", "mnt")}
    tree.update({"tmp": cpio.directory(0o1777), "root": cpio.directory(0o700),
                 "dev/console": cpio.Entry("char", 0o600, rdev=(5, 1)),
                 "dev/null": cpio.Entry("char", 0o666, rdev=(1, 3)),
                 "var/run": cpio.symlink("/run"), "init": cpio.symlink("/bin/busybox")})
    for applet in sorted(set(applets)):
        rel = applet.lstrip("/")
        if rel != "bin/busybox" and rel not in tree:
            tree[rel] = cpio.symlink("/bin/busybox")
    for rel, host in binaries.items():
        tree[rel] = cpio.host_file(host, 0o755)
    dynamic = [h for r, h in binaries.items() if r != "bin/busybox"]
    for lib in shared_libraries(*dynamic):
        tree[lib.lstrip("/")] = cpio.host_file(lib, 0o755)
    # /lib64/ld-linux-x86-64.so.2 is a symlink on Debian: keep the loader where the binaries look for it
    for m in modules:
        tree[f"lib/modules/{m}"] = cpio.host_file(moddir / m, 0o644)
    tree.update({
        "etc/kumo/modules": cpio.text("".join(m + "\n" for m in modules)),
        "etc/kumo/rc": cpio.script(guest.RC),
        "etc/kumo/stop": cpio.script(guest.STOP),
        "etc/kumo/udhcpc": cpio.script(guest.UDHCPC),
        "etc/inittab": cpio.text(guest.INITTAB),
        "etc/acpid.conf": cpio.text(guest.ACPID_CONF),
        "etc/acpi/PWRF/00000080": cpio.script(guest.POWER_BUTTON),
        "etc/passwd": cpio.text(guest.PASSWD),
        "etc/group": cpio.text(guest.GROUP),
        "etc/shadow": cpio.text(guest.SHADOW, 0o600),
        "etc/shells": cpio.text(guest.SHELLS),
        "etc/profile": cpio.text(guest.PROFILE),
        "etc/nsswitch.conf": cpio.text("passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n"),
        "etc/os-release": cpio.text('NAME="kumo tiny"\nID=kumo-tiny\nVERSION_ID="1.0.0"\n'
                                    'PRETTY_NAME="kumo tiny 1.0.0 (busybox)"\n'),
    })
    return cpio.add_parents(tree), modules








def _manifest(image: ImageDef, key: str, kver: str, kernel: tuple[str, str], versions: dict[str, str],
              sizes: dict[str, int], modules: list[str]) -> dict[str, Any]:
    return {
        "publisher": image.publisher, "offer": image.offer, "sku": image.sku, "version": image.version,
        "alias": image.alias, "os": "Linux", "hyperVGeneration": "V2", "architecture": "x64",
        "sizeInBytes": sum(sizes.values()),
        "files": {"kernel": "vmlinuz", "initrd": "initrd.img"},
        "kumo": {
            "format": FORMAT, "recipe": key,
            "boot": {"append": BOOT_APPEND, "readyMarker": READY_MARKER, "hostKeyMarker": HOSTKEY_MARKER,
                     "minMemoryMiB": MIN_MEMORY_MIB, "agent": QGA_PORT, "sshKeysFwCfg": FW_CFG_KEYS,
                     "cmdline": ["kumo.ip", "kumo.gw", "kumo.dns", "kumo.host", "kumo.ssh"]},
            "kernel": {"release": kver, "package": kernel[0], "version": kernel[1]},
            "packages": versions, "modules": [os.path.basename(m) for m in modules],
            "sha256": {}, "sizes": sizes,
        },
    }


def build(out: str | os.PathLike[str] | None = None, *, force: bool = False, say: Say = print) -> BuildResult:
    """Build "kumo tiny" into `out` (default `Settings.vm_images_dir`), or do nothing when it is up to date.

    `force`: rebuild even when the recipe key is unchanged. Raises BuildError when it cannot be built (an
    up-to-date image is kept when only the download of a newer kernel fails)."""
    root = Path(out) if out is not None else default_dir()
    root.mkdir(parents=True, exist_ok=True)
    with locked(root):
        return _build_locked(root, TINY, force=force, say=say)


def _build_locked(root: Path, image: ImageDef, *, force: bool, say: Say) -> BuildResult:
    t0 = time.monotonic()
    target = root / image.dirname
    kernel = _kernel_package()
    versions = _host_versions()
    binaries = _host_binaries()
    files = _fingerprint(list(binaries.values()) + shared_libraries(*list(binaries.values())[1:]))
    key = _recipe_key(image, kernel, versions, files)
    try:
        old = json.loads((target / "image.json").read_text())
    except (OSError, ValueError):
        old = {}
    kumo = old.get("kumo") or {}
    if (not force and kumo.get("recipe") == key
            and all((target / n).is_file() and (target / n).stat().st_size == kumo.get("sizes", {}).get(n)
                    for n in ("vmlinuz", "initrd.img"))):
        say(f"vm image {image.publisher}:{image.offer}:{image.sku}:{image.version} up to date in {target} "
            f"(kernel {kumo['kernel']['release']}; checked in {time.monotonic() - t0:.1f} s)")
        return BuildResult(target, True, kumo["kernel"]["release"], dict(kumo["sizes"]), time.monotonic() - t0)

    say(f"vm image {image.publisher}:{image.offer}:{image.sku}:{image.version}: building into {target}"
        + (" (--force)" if force else ""))
    try:
        deb = _download_kernel(root / ".cache", *kernel, say)
    except BuildError as e:
        if not (kumo.get("sizes") and all((target / n).is_file() for n in ("vmlinuz", "initrd.img"))):
            raise
        say(f"[tiny] WARNING: keeping the image built from kernel {kumo['kernel']['release']}: {e}")
        return BuildResult(target, True, kumo["kernel"]["release"], dict(kumo["sizes"]), time.monotonic() - t0)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root))
    try:
        t1 = time.monotonic()
        kroot = staging / "kernel"
        run("dpkg-deb", "-x", str(deb), str(kroot))
        kvers = sorted(p.name for p in (kroot / "lib" / "modules").iterdir())
        if len(kvers) != 1:
            raise BuildError(f"{deb.name}: expected one kernel under lib/modules, found {kvers}")
        kver = kvers[0]
        run(which("depmod", "/usr/sbin/depmod", "/sbin/depmod"), "-b", str(kroot), kver)
        vmlinuz = kroot / "boot" / f"vmlinuz-{kver}"
        say(f"[tiny] kernel {kver} unpacked, depmod done ({time.monotonic() - t1:.1f} s)")
        t1 = time.monotonic()
        tree, modules = _initramfs_tree(kroot, kver)
        raw = cpio.archive(tree)
        initrd = cpio.gzipped(raw)
        say(f"[tiny] initramfs: {len(tree)} entries, {len(modules)} modules, {len(raw) / 1e6:.1f} MB cpio -> "
            f"{len(initrd) / 1e6:.1f} MB gzip ({time.monotonic() - t1:.1f} s)")
        target.mkdir(parents=True, exist_ok=True)
        kernel_bytes = vmlinuz.read_bytes()
        write_atomic(target / "vmlinuz", kernel_bytes)
        write_atomic(target / "initrd.img", initrd)
        sizes = {"vmlinuz": len(kernel_bytes), "initrd.img": len(initrd)}
        manifest = _manifest(image, key, kver, kernel, versions, sizes, modules)
        manifest["kumo"]["sha256"] = {"vmlinuz": hashlib.sha256(kernel_bytes).hexdigest(),
                                      "initrd.img": hashlib.sha256(initrd).hexdigest()}
        write_atomic(target / "image.json", json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    elapsed = time.monotonic() - t0
    say(f"vm image {image.publisher}:{image.offer}:{image.sku}:{image.version} (alias {image.alias}): "
        f"vmlinuz {sizes['vmlinuz'] / 1e6:.1f} MB + initrd.img {sizes['initrd.img'] / 1e6:.1f} MB in {target}; "
        f"{elapsed:.1f} s")
    return BuildResult(target, False, kver, sizes, elapsed)


IMAGES = ("tiny", "debian")  # what build_all() builds, in this order


def build_all(out: str | os.PathLike[str] | None = None, *, force: bool = False, only: Collection[str] = (),
              say: Say = print) -> dict[str, BuildResult]:
    """Build every image (or those named in `only`: "tiny", "debian") in order; name -> result.

    One failing image does not stop the next: each failure is said as it happens, and a BuildError
    naming all of them is raised at the end (the images that did build are in place)."""
    from kumo.images.vm import debian

    unknown = sorted(set(only) - set(IMAGES))
    if unknown:
        raise BuildError(f"unknown VM image {', '.join(unknown)} (known: {', '.join(IMAGES)})")
    builders: dict[str, Callable[..., BuildResult]] = {"tiny": build, "debian": debian.build}
    results: dict[str, BuildResult] = {}
    failed: dict[str, str] = {}
    for name in IMAGES:
        if only and name not in only:
            continue
        try:
            results[name] = builders[name](out, force=force, say=say)
        except BuildError as e:
            failed[name] = str(e)
            say(f"[{name}] FAILED: {e}")
    if failed:
        raise BuildError("; ".join(f"{n}: {e.splitlines()[0] if e else 'failed'}" for n, e in failed.items()))
    return results
