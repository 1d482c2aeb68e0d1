"""The tiny VM image's building blocks: deterministic cpio archives and the module load order."""

from __future__ import annotations

import gzip
import shutil
import subprocess
from pathlib import Path

import pytest

from kumo.images.vm import BuildError, _module_order, cpio


def _tree(tmp_path: Path) -> cpio.Tree:
    (tmp_path / "f").write_bytes(b"hello")
    return cpio.add_parents({
        "etc/kumo/rc": cpio.script("#!/bin/sh\necho hi\n"),
        "bin/busybox": cpio.host_file(tmp_path / "f", 0o755),
        "bin/sh": cpio.symlink("/bin/busybox"),
        "dev/console": cpio.Entry("char", 0o600, rdev=(5, 1)),
    })


def test_cpio_is_deterministic_and_readable(tmp_path: Path) -> None:
    a = cpio.gzipped(cpio.archive(_tree(tmp_path)))
    b = cpio.gzipped(cpio.archive(dict(reversed(list(_tree(tmp_path).items())))))
    assert a == b
    if shutil.which("cpio") is None:
        pytest.skip("no cpio to cross-check with")
    listing = subprocess.run(["cpio", "-itv"], input=gzip.decompress(a), capture_output=True, check=True).stdout
    lines = listing.decode().splitlines()
    names = [ln.split()[-1] if "->" not in ln else ln.split()[-3] for ln in lines]
    assert names == ["bin", "bin/busybox", "bin/sh", "dev", "dev/console", "etc", "etc/kumo", "etc/kumo/rc"]
    assert any(ln.startswith("-rwxr-xr-x") and "bin/busybox" in ln for ln in lines)
    assert any(ln.startswith("crw-------") for ln in lines)
    out = tmp_path / "x"
    out.mkdir()
    subprocess.run(["cpio", "-id", "--quiet"], input=gzip.decompress(a), cwd=out, check=True)
    assert (out / "etc/kumo/rc").read_text() == "#!/bin/sh\necho hi\n"
    assert (out / "bin/busybox").read_bytes() == b"hello"
    assert (out / "bin/sh").readlink() == Path("/bin/busybox")


def test_module_order_puts_dependencies_first(tmp_path: Path) -> None:
    (tmp_path / "modules.dep").write_text(
        "kernel/drivers/virtio/virtio.ko:\n"
        "kernel/drivers/virtio/virtio_ring.ko:\n"
        "kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko\n"
        "kernel/net/core/failover.ko:\n"
        "kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko\n"
        "kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko "
        "kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko\n"
        "kernel/drivers/char/hw_random/virtio-rng.ko: kernel/drivers/virtio/virtio.ko\n")
    (tmp_path / "modules.builtin").write_text("kernel/drivers/acpi/button.ko\n")
    order = [Path(p).name for p in _module_order(tmp_path, ("virtio_pci", "virtio_net", "virtio-rng", "button"))]
    assert order == ["virtio_ring.ko", "virtio.ko", "virtio_pci.ko", "failover.ko", "net_failover.ko",
                     "virtio_net.ko", "virtio-rng.ko"]
    with pytest.raises(BuildError):
        _module_order(tmp_path, ("nope",))
