"""Deterministic initramfs archives: a file tree written as a gzip "newc" cpio (what the kernel unpacks).

The same tree always gives the same bytes: entries sorted so a directory comes before its contents,
owner root, inode numbers counted from 1 in archive order, device 0, one fixed mtime, and gzip with no
name and mtime 0. Written here rather than with GNU cpio, whose inode and device fields come from the
build host's filesystem.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import os
import stat
from pathlib import Path

MTIME = 1686355200  # 2023-06-10T00:00:00Z, Debian 12's release (as the container catalog's layers)
GZIP_LEVEL = 6


@dataclasses.dataclass(frozen=True)
class Entry:
    """One archive member: a directory, a regular file (`data` or a host `source` file) or a symlink."""

    kind: str  # "dir" | "file" | "symlink" | "char"
    mode: int = 0o755
    data: bytes | None = None
    source: str | None = None
    link: str = ""
    rdev: tuple[int, int] = (0, 0)

    def content(self) -> bytes:
        if self.kind == "symlink":
            return self.link.encode()
        if self.data is not None:
            return self.data
        if self.source is not None:
            return Path(self.source).read_bytes()
        return b""


Tree = dict[str, Entry]


def directory(mode: int = 0o755) -> Entry:
    return Entry("dir", mode)


def text(content: str | bytes, mode: int = 0o644) -> Entry:
    return Entry("file", mode, data=content.encode() if isinstance(content, str) else content)


def script(content: str) -> Entry:
    return text(content, 0o755)


def symlink(target: str) -> Entry:
    return Entry("symlink", 0o777, link=target)


def host_file(path: str | os.PathLike[str], mode: int | None = None) -> Entry:
    """A regular file copied from the host, following symlinks (a library's soname link gives its file)."""
    st = os.stat(path)
    return Entry("file", stat.S_IMODE(st.st_mode) if mode is None else mode, source=os.path.realpath(path))


def add_parents(tree: Tree) -> Tree:
    for path in list(tree):
        parent = os.path.dirname(path)
        while parent and parent not in tree:
            tree[parent] = directory()
            parent = os.path.dirname(parent)
    return tree


_TYPE = {"dir": stat.S_IFDIR, "file": stat.S_IFREG, "symlink": stat.S_IFLNK, "char": stat.S_IFCHR}


def _header(ino: int, mode: int, nlink: int, size: int, rdev: tuple[int, int], namesize: int) -> bytes:
    fields = (ino, mode, 0, 0, nlink, MTIME, size, 0, 0, rdev[0], rdev[1], namesize, 0)
    return b"070701" + b"".join(b"%08X" % f for f in fields)


def _pad(n: int) -> bytes:
    return b"\0" * ((4 - n % 4) % 4)


def archive(tree: Tree) -> bytes:
    """The uncompressed newc cpio of `tree` (paths relative, no leading slash)."""
    buf = io.BytesIO()
    for ino, path in enumerate(sorted(tree, key=lambda p: tuple(p.split("/"))), start=1):
        e = tree[path]
        data = b"" if e.kind in ("dir", "char") else e.content()
        name = path.encode() + b"\0"
        head = _header(ino, _TYPE[e.kind] | (e.mode & 0o7777), 2 if e.kind == "dir" else 1, len(data),
                       e.rdev, len(name))
        buf.write(head + name + _pad(len(head) + len(name)))
        buf.write(data + _pad(len(data)))
    trailer = b"TRAILER!!!\0"
    head = _header(0, 0, 1, 0, (0, 0), len(trailer))
    buf.write(head + trailer + _pad(len(head) + len(trailer)))
    return buf.getvalue()


def gzipped(data: bytes) -> bytes:
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=GZIP_LEVEL) as f:
        f.write(data)
    return out.getvalue()
