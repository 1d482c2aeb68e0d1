"""Unpacking layer tars into overlayfs layer directories: whiteouts, owners, replacement, and refusal of
every way out of the layer directory. Writes 0:0 devices and trusted.* xattrs, so it needs root."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from kumo.images.reference import parse_reference
from kumo.images.registry_client import DigestMismatch, UnsupportedImage
from kumo.images.store import LayerError, UnsafeLayer, unpack_layer
from tests.imagelib import Entry, layer_tar as tar
from tests.imagelib import entry as e

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="whiteouts and owners need root")
REF = parse_reference("127.0.0.1:5000/unit/layer:1")
class Box:
    """A scratch dir: the blob, the layer's destination, the store's tmp dir, and a sentinel outside."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dest = root / "store" / "layers" / "sha256" / "abc"
        self.tmp = root / "store" / "tmp"
        self.outside = root / "outside"
        self.outside.mkdir()
        (self.outside / "keep").write_text("untouched")

    def unpack(self, data: bytes, compress: bool = True, diff_id: str | None = None) -> str:
        blob = self.root / "blob"
        blob.write_bytes(gzip.compress(data) if compress else data)
        return unpack_layer(blob, self.dest, self.tmp, REF, "sha256:" + "ab" * 32, diff_id)

    def untouched(self) -> bool:
        return (os.listdir(self.outside) == ["keep"] and (self.outside / "keep").read_text() == "untouched"
                and not any(self.tmp.iterdir()) and not self.dest.exists())


@pytest.fixture
def box() -> Iterator[Box]:
    root = Path(tempfile.mkdtemp(prefix="kumo-layer-"))
    yield Box(root)
    shutil.rmtree(root, ignore_errors=True)


def test_gzip_layer_with_whiteouts_owners_links_and_xattrs(box: Box) -> None:
    data = tar(e("./", tarfile.DIRTYPE, mode=0o755), e("./etc/", tarfile.DIRTYPE, mode=0o700, uid=7, gid=8),
               e("./etc/shadow", data=b"secret", mode=0o640, uid=0, gid=42),
               e("./usr/bin/ping", data=b"elf", mode=0o4755, uid=0, gid=0,
                 pax={"SCHILY.xattr.user.kumo": "yes", "SCHILY.xattr.trusted.overlay.opaque": "y"}),
               e("./usr/bin/ping6", tarfile.LNKTYPE, link="./usr/bin/ping"),
               e("./lib", tarfile.SYMTYPE, link="usr/lib"), e("./abs", tarfile.SYMTYPE, link="/etc/passwd"),
               e("./run/fifo", tarfile.FIFOTYPE, mode=0o600), e("./gone/.wh.file"), e("./var/.wh..wh..opq"),
               e("./var/.wh..wh.plnk"), e("./var/keep", data=b"k"))
    assert box.unpack(data) == "sha256:" + hashlib.sha256(data).hexdigest()
    d = box.dest
    st = os.lstat(d / "etc")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode), st.st_mtime) == (7, 8, 0o700, 1_600_000_000)
    st = os.lstat(d / "usr/bin/ping")
    assert stat.S_IMODE(st.st_mode) == 0o4755 and st.st_nlink == 2 and st.st_mtime == 1_600_000_000
    assert os.getxattr(d / "usr/bin/ping", "user.kumo") == b"yes"
    with pytest.raises(OSError):  # overlayfs metadata never comes from image content
        os.getxattr(d / "usr/bin/ping", "trusted.overlay.opaque")
    assert os.lstat(d / "usr/bin/ping6").st_ino == st.st_ino
    assert stat.S_IMODE(os.lstat(d / "usr").st_mode) == 0o755  # implicit directory
    assert os.readlink(d / "lib") == "usr/lib" and os.readlink(d / "abs") == "/etc/passwd"
    assert stat.S_ISFIFO(os.lstat(d / "run/fifo").st_mode)
    wh = os.lstat(d / "gone/file")
    assert stat.S_ISCHR(wh.st_mode) and wh.st_rdev == 0
    assert os.getxattr(d / "var", "trusted.overlay.opaque") == b"y"
    assert sorted(os.listdir(d / "var")) == ["keep"]
    assert not any(box.tmp.iterdir())


def test_plain_tar_and_later_entries_replace_earlier_ones(box: Box) -> None:
    data = tar(e("a", data=b"file first"), e("a", tarfile.DIRTYPE), e("a/inner", data=b"1"),
               e("b", tarfile.DIRTYPE), e("b/x", data=b"x"), e("b", data=b"now a file"),
               e("c", data=b"old"), e("c", data=b"new"), e("s", tarfile.SYMTYPE, link="/x"), e("s", data=b"real"))
    box.unpack(data, compress=False)
    d = box.dest
    assert (d / "a" / "inner").read_bytes() == b"1"
    assert (d / "b").read_bytes() == b"now a file"
    assert (d / "c").read_bytes() == b"new"
    assert not (d / "s").is_symlink() and (d / "s").read_bytes() == b"real"


@pytest.mark.parametrize("entries, why", [
    ([e("/etc/passwd", data=b"x")], "absolute path"),
    ([e("../evil", data=b"x")], "'..' escapes"),
    ([e("a/../../evil", data=b"x")], "'..' escapes"),
    ([e("ok/../../../outside/keep", data=b"x")], "'..' escapes"),
    ([e("link", tarfile.SYMTYPE, link="../outside"), e("link/keep", data=b"x")], "parent 'link' is a symlink"),
    ([e("link", tarfile.SYMTYPE, link="/"), e("link/tmp/x", data=b"x")], "parent 'link' is a symlink"),
    ([e("d", tarfile.DIRTYPE), e("d/l", tarfile.SYMTYPE, link="../../outside"), e("d/l/new", data=b"x")],
     "parent 'd/l' is a symlink"),
    ([e("link", tarfile.SYMTYPE, link="../outside"), e("link/.wh.keep")], "parent 'link' is a symlink"),
    ([e("link", tarfile.SYMTYPE, link="../outside"), e("link/.wh..wh..opq")], "parent 'link' is a symlink"),
    ([e("link", tarfile.SYMTYPE, link="../outside"), e("link/sub", tarfile.DIRTYPE)], "parent 'link' is a symlink"),
    ([e("h", tarfile.LNKTYPE, link="../outside/keep")], "hardlink target with '..'"),
    ([e("h", tarfile.LNKTYPE, link="/etc/passwd")], "absolute hardlink target"),
    ([e("h", tarfile.LNKTYPE, link="missing")], "not in this layer"),
    ([e("s", tarfile.SYMTYPE, link="/etc"), e("h", tarfile.LNKTYPE, link="s/passwd")], "hardlink through the symlink"),
    ([e("d", tarfile.DIRTYPE), e("h", tarfile.LNKTYPE, link="d")], "hardlink to the directory"),
    ([e("x/.wh...")], "whiteout without a valid name"),
])
def test_escapes_are_refused_and_leave_nothing(box: Box, entries: list[Entry], why: str) -> None:
    with pytest.raises(UnsafeLayer) as err:
        box.unpack(tar(e("fine", data=b"ok"), *entries))
    assert str(err.value).startswith(f"cannot pull {REF}: layer sha256:{'ab' * 32} has an unsafe entry")
    assert why in str(err.value) and "refusing the layer" in str(err.value)
    assert box.untouched()


def test_diff_id_mismatch_bad_archives_and_other_compressions(box: Box) -> None:
    data = tar(e("f", data=b"x"))
    with pytest.raises(DigestMismatch, match="unpacks to content sha256:.*the config says sha256:0000"):
        box.unpack(data, diff_id="sha256:" + "0" * 64)
    with pytest.raises(LayerError, match="is not a valid tar archive"):
        box.unpack(gzip.compress(b"not a tar at all" * 100), compress=False)
    with pytest.raises(LayerError, match="is not a valid tar archive"):
        box.unpack(gzip.compress(data)[:40], compress=False)
    with pytest.raises(UnsupportedImage, match="zstd-compressed"):
        box.unpack(b"\x28\xb5\x2f\xfd" + b"\0" * 100, compress=False)
    assert box.untouched()


def test_a_layer_unpacked_meanwhile_by_someone_else_wins(box: Box) -> None:
    box.dest.mkdir(parents=True)
    (box.dest / "theirs").write_text("first")
    box.unpack(tar(e("mine", data=b"second")))
    assert os.listdir(box.dest) == ["theirs"] and not any(box.tmp.iterdir())
