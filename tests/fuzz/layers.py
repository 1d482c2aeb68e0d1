"""Generators of hostile OCI layer tars and the check each must pass: unpack_layer either unpacks the
layer or refuses it with a PullError, and nothing outside the layer directory is created, changed or
deleted (a sentinel directory beside the store proves it), with memory bounded."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import stat
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

from hypothesis import strategies as st

from kumo.images.reference import parse_reference
from kumo.images.registry_client import PullError
from kumo.images.store import unpack_layer

REF = parse_reference("127.0.0.1:5000/fuzz/layer:1")
DIGEST = "sha256:" + "ab" * 32


class Box:
    """A scratch dir holding the store (blob, tmp, destination) and a sentinel `outside` beside it.
    The layer is unpacked in store/tmp/<x>/, so '../../../outside' from its root reaches the sentinel."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="kumo-fuzz-layer-"))
        self.store = self.root / "store"
        self.dest = self.store / "layers" / "sha256" / "abc"
        self.tmp = self.store / "tmp"
        self.outside = self.root / "outside"
        try:
            (self.outside / "dir").mkdir(parents=True)
            (self.outside / "keep").write_text("untouched")
            (self.outside / "dir" / "file").write_text("untouched too")
            os.symlink("../keep", self.outside / "dir" / "link")
            self.before = self.snapshot()
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Box:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def snapshot(self) -> dict[str, tuple[int, int, int, int, str]]:
        """Everything under the box except the store: type/mode, size, owner, mtime and content hash."""
        seen: dict[str, tuple[int, int, int, int, str]] = {}
        for dirpath, dirnames, filenames in os.walk(self.root):
            if Path(dirpath) == self.root and "store" in dirnames:
                dirnames.remove("store")
            for name in dirnames + filenames:
                path = os.path.join(dirpath, name)
                st = os.lstat(path)
                digest = hashlib.sha256(Path(path).read_bytes()).hexdigest() if stat.S_ISREG(st.st_mode) else ""
                seen[os.path.relpath(path, self.root)] = (st.st_mode, st.st_size, st.st_uid, int(st.st_mtime), digest)
        return seen

    def unpack(self, blob: bytes) -> str:
        """'unpacked' or 'refused'; any other exception propagates."""
        self.store.mkdir(exist_ok=True)
        path = self.store / "blob"
        path.write_bytes(blob)
        try:
            unpack_layer(path, self.dest, self.tmp, REF, DIGEST)
            return "unpacked"
        except PullError:
            return "refused"

    def check(self, outcome: str) -> None:
        after = self.snapshot()
        assert after == self.before, f"outside the layer changed: {set(after.items()) ^ set(self.before.items())}"
        assert not any(self.tmp.iterdir()), "a refused or finished unpack left its temporary dir"
        if outcome == "refused":
            assert not self.dest.exists(), "a refused layer was kept"
        else:
            self._inside(self.dest)

    def _inside(self, top: Path) -> None:
        """Every entry of an unpacked layer is a real file, dir, link or node under it (walk without
        following symlinks; hardlinks to files outside would show as a shared inode)."""
        outside_inodes = {os.lstat(self.outside / p).st_ino for p in ("keep", "dir/file")}
        for dirpath, dirnames, filenames in os.walk(top):
            for name in dirnames + filenames:
                st = os.lstat(os.path.join(dirpath, name))
                assert st.st_ino not in outside_inodes, f"{name} is a hardlink to a file outside the layer"

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


# --- hostile entries --------------------------------------------------------------------------------

# Mostly ordinary names, so that hostile entries meet earlier ones (a symlink 'a' to outside, then 'a/keep').
_BENIGN = ["a", "b", "etc", "dir", "keep", "outside"]
_HOSTILE = ["..", ".", "", ".wh.a", ".wh.b", ".wh.keep", ".wh..wh..opq", ".wh..", ".wh...", ".wh.", ".wh..wh.plnk",
            "x" * 255, "\u00e9", "a\\b"]
_SEGMENTS = st.sampled_from(_BENIGN * 8 + _HOSTILE)
_PREFIX = st.sampled_from(["", "./"] * 15 + ["/", "../", "../../../", "../../../outside/", "//"])
NAMES = st.builds(lambda prefix, parts: prefix + "/".join(parts), _PREFIX,
                  st.lists(_SEGMENTS, min_size=1, max_size=3))


def _targets(box_outside: str) -> st.SearchStrategy[str]:
    return st.one_of(NAMES, st.sampled_from([
        "/", "..", "../../..", "../../../outside", "../../../outside/keep", box_outside, box_outside + "/keep",
        box_outside + "/dir", "/etc/passwd", "a", "a/b", "etc", "outside/keep", "./a", ""]))


KINDS = [tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.BLKTYPE,
         tarfile.FIFOTYPE, tarfile.CONTTYPE, b"V", b"Z"]


@st.composite
def entries(draw: st.DrawFn, box_outside: str) -> list[tuple[tarfile.TarInfo, bytes]]:
    """A list of tar members; symlinks and hardlinks point anywhere, including at the sentinel."""
    out = []
    for _ in range(draw(st.integers(1, 8))):
        info = tarfile.TarInfo(draw(NAMES))
        info.type = draw(st.sampled_from(KINDS))
        info.mode = draw(st.sampled_from([0o644, 0o755, 0o4755, 0o000, 0o7777]))
        info.uid, info.gid = draw(st.sampled_from([(0, 0), (1000, 1000), (65534, 65534), (2**21 - 1, 0)]))
        data = b""
        if info.type in (tarfile.SYMTYPE, tarfile.LNKTYPE):
            info.linkname = draw(_targets(box_outside))
        elif info.type in (tarfile.CHRTYPE, tarfile.BLKTYPE):
            info.devmajor, info.devminor = draw(st.sampled_from([(0, 0), (1, 3), (8, 0), (4095, 255)]))
        elif info.type in (tarfile.REGTYPE, tarfile.CONTTYPE):
            data = draw(st.binary(max_size=64))
        if draw(st.integers(0, 9)) == 0:
            info.pax_headers = {"SCHILY.xattr.user.k": "v", "SCHILY.xattr.trusted.overlay.opaque": "y"}
        info.size = len(data)
        out.append((info, data))
    return out


def build_tar(members: list[tuple[tarfile.TarInfo, bytes]], *, compress: bool, truncate: int = 0) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            try:
                tar.addfile(info, io.BytesIO(data))
            except ValueError:  # a name tarfile itself can't write (e.g. NUL): leave it out
                continue
    raw = buf.getvalue()
    if truncate:
        raw = raw[:-truncate]
    return gzip.compress(raw, 1) if compress else raw


# --- bombs: small blobs that would take unbounded memory or disk if trusted ----------------------

def _header(name: str, kind: bytes, size: int, fmt: int = tarfile.USTAR_FORMAT) -> bytes:
    info = tarfile.TarInfo(name)
    info.type, info.size = kind, size
    return info.tobuf(format=fmt)


def _gzip(chunks: Iterator[bytes]) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    return b"".join(c.compress(ch) for ch in chunks) + c.flush()


def _filler(n: int, byte: bytes = b"a") -> Iterator[bytes]:
    while n > 0:
        yield byte * min(n, 1 << 20)
        n -= 1 << 20


def _global_pax(i: int) -> bytes:
    record = f"k{i}=".encode() + b"a" * (64 * 1024 - 20) + b"\n"
    record = f"{len(record) + 6:05d} ".encode() + record  # '<length> key=value\n', length counting itself
    return _header("pax_global_header", tarfile.XGLTYPE, len(record)) + record + b"\0" * (-len(record) % 512)


MIB = 1 << 20
# Each a few hundred KB of gzip at most; what it would cost if read naively is in its name.
BOMBS: dict[str, Callable[[int], bytes]] = {
    "pax header 256 MiB": lambda s: _gzip(iter([_header("././@PaxHeader", tarfile.XHDTYPE, 256 * MIB * s),
                                                *_filler(256 * MIB * s)])),
    "gnu long name 256 MiB": lambda s: _gzip(iter([_header("././@LongLink", tarfile.GNUTYPE_LONGNAME, 256 * MIB * s),
                                                   *_filler(256 * MIB * s)])),
    "global pax headers 4 MiB": lambda s: _gzip(iter([_global_pax(i) for i in range(64 * s)])),
    "declared 1 TiB, truncated": lambda s: _header("big", tarfile.REGTYPE, 1 << 40, tarfile.GNU_FORMAT) + b"a" * 4096,
    "zeros file 64 MiB": lambda s: _gzip(iter([_header("zeros", tarfile.REGTYPE, 64 * MIB * s),
                                               *_filler(64 * MIB * s, b"\0"), b"\0" * 1024])),
    "many entries (40k x scale)": lambda s: _gzip(iter([*(_header(f"d{i % 7}/", tarfile.DIRTYPE, 0)
                                                          for i in range(40_000 * s)), b"\0" * 1024])),
    "sparse member": lambda s: _gzip(iter([_header("sparse", tarfile.GNUTYPE_SPARSE, 0), b"\0" * 1024])),
}
UNPACKED_BOMBS = ("zeros file 64 MiB", "many entries (40k x scale)")  # legitimate, only large: unpacked
# Peak memory allowed per bomb (tarfile used to keep ~440 bytes per entry, 17 MB for 40k).
PEAK_LIMIT = {"many entries (40k x scale)": 8 << 20}
