"""Deterministic OCI layers: a file tree (in memory or read from a staging root) written as a gzip tar blob.

A `Tree` maps paths (relative, no leading slash) to `Node`s. The same tree always gives the same bytes:
entries are sorted so that a directory comes before its contents, owners are numeric (no user or group
names), the tar is PAX with integer mtimes, and gzip carries no name and mtime 0.

Mtimes: a file read from disk keeps its mtime when it is older than the build (files dpkg unpacked from a
package carry the package's mtimes, and Python's `.pyc` files check their source's mtime); anything made
or changed during the build gets `EPOCH`. Content made here always gets `EPOCH`.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import os
import stat
import tarfile
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

EPOCH = 1686355200  # 2023-06-10T00:00:00Z, Debian 12's release: the mtime of everything the build makes
GZIP_LEVEL = 6
CHUNK = 1 << 20

Ignore = Callable[[str], bool]


@dataclasses.dataclass(frozen=True)
class Node:
    """One entry of a layer. Regular files carry `data` or a `source` file to read; links carry `link`."""

    kind: str  # "dir" | "file" | "symlink" | "hardlink" | "char" | "block" | "fifo"
    mode: int = 0o755
    uid: int = 0
    gid: int = 0
    mtime: int = EPOCH
    data: bytes | None = None
    source: str | None = None
    link: str = ""
    dev: tuple[int, int] = (0, 0)
    size: int = 0  # of `source`, recorded when read from disk

    def content(self) -> bytes:
        if self.data is not None:
            return self.data
        assert self.source is not None
        return Path(self.source).read_bytes()


Tree = dict[str, Node]


def directory(mode: int = 0o755, uid: int = 0, gid: int = 0) -> Node:
    return Node("dir", mode, uid, gid)


def text(content: str | bytes, mode: int = 0o644, uid: int = 0, gid: int = 0) -> Node:
    data = content.encode() if isinstance(content, str) else content
    return Node("file", mode, uid, gid, data=data, size=len(data))


def symlink(target: str) -> Node:
    return Node("symlink", 0o777, link=target)


def host_file(path: str | os.PathLike[str], mode: int | None = None) -> Node:
    """A regular file copied from the host, following symlinks (a library's soname link gives its file)."""
    st = os.stat(path)
    return Node("file", stat.S_IMODE(st.st_mode) if mode is None else mode, mtime=min(int(st.st_mtime), _now()),
                source=os.path.realpath(path), size=st.st_size)


def _now() -> int:
    import time
    return int(time.time())


def add_parents(tree: Tree) -> Tree:
    """Every entry's parent directories, as 0755 root dirs unless the tree has them already."""
    for path in list(tree):
        parent = os.path.dirname(path)
        while parent and parent not in tree:
            tree[parent] = directory()
            parent = os.path.dirname(parent)
    return tree


def sort_key(path: str) -> tuple[str, ...]:
    """Tar order: a directory right before its contents ("a", "a/b", "a-b")."""
    return tuple(path.split("/"))


def tree_from_dir(root: Path, *, since: float, ignore: Ignore = lambda _p: False) -> Tree:
    """Read a staging root into a tree. Entries modified at or after `since` get `EPOCH` as mtime.

    Hard links become tar hard links to the first path (in tar order) of the same inode. `ignore(path)`
    drops a path and everything under it.
    """
    tree: Tree = {}
    inodes: dict[tuple[int, int], str] = {}

    def walk(rel: str) -> None:
        full = root / rel if rel else root
        with os.scandir(full) as it:
            names = sorted(e.name for e in it)
        for name in names:
            path = f"{rel}/{name}" if rel else name
            if ignore(path):
                continue
            st = os.lstat(root / path)
            mtime = int(st.st_mtime) if st.st_mtime < since else EPOCH
            common = dict(mode=stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid, mtime=mtime)
            if stat.S_ISDIR(st.st_mode):
                tree[path] = Node("dir", **common)
                walk(path)
            elif stat.S_ISREG(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if st.st_nlink > 1 and key in inodes:
                    tree[path] = Node("hardlink", **common, link=inodes[key])
                else:
                    inodes[key] = path
                    tree[path] = Node("file", **common, source=str(root / path), size=st.st_size)
            elif stat.S_ISLNK(st.st_mode):
                tree[path] = Node("symlink", **{**common, "mode": 0o777}, link=os.readlink(root / path))
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                kind = "char" if stat.S_ISCHR(st.st_mode) else "block"
                tree[path] = Node(kind, **common, dev=(os.major(st.st_rdev), os.minor(st.st_rdev)))
            elif stat.S_ISFIFO(st.st_mode):
                tree[path] = Node("fifo", **common)
            # sockets are not kept

    walk("")
    return tree


def _same_content(a: Node, b: Node) -> bool:
    if a.data is not None and b.data is not None:
        return a.data == b.data
    if a.size != b.size:
        return False
    if a.source and b.source and os.path.samefile(a.source, b.source):
        return True
    return _file_digest(a) == _file_digest(b)


def _file_digest(node: Node) -> str:
    if node.data is not None:
        return hashlib.sha256(node.data).hexdigest()
    h = hashlib.sha256()
    with open(node.source or "", "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _same(a: Node, b: Node) -> bool:
    meta = ("kind", "mode", "uid", "gid", "mtime", "link", "dev")
    if any(getattr(a, k) != getattr(b, k) for k in meta):
        return False
    return a.kind != "file" or _same_content(a, b)


def diff_trees(lower: Tree, upper: Tree) -> Tree:
    """The layer that turns `lower` into `upper`: new and changed entries (with their parent dirs as they
    are in `upper`), and `.wh.NAME` whiteouts for what `upper` removed (one for a removed directory)."""
    out: Tree = {}
    for path, node in upper.items():
        old = lower.get(path)
        if old is None or not _same(old, node):
            out[path] = node
    # Hard links travel with their target: a new link needs its target in this layer to link to, and a
    # changed target must take its links along (they share the new content).
    for path, node in upper.items():
        if node.kind == "hardlink" and (path in out or node.link in out):
            out[path] = node
            out[node.link] = upper[node.link]
    for path in lower:
        if path not in upper:
            parent = os.path.dirname(path)
            if parent and parent not in upper:
                continue  # its directory is gone: the directory's whiteout covers it
            wh = f"{parent}/.wh.{os.path.basename(path)}" if parent else f".wh.{path}"
            out[wh] = Node("file", 0o644, data=b"")
    for path in list(out):
        parent = os.path.dirname(path)
        while parent and parent not in out:
            out[parent] = upper.get(parent, directory())
            parent = os.path.dirname(parent)
    return out


@dataclasses.dataclass(frozen=True)
class LayerBlob:
    digest: str  # of the gzip blob
    diff_id: str  # of the uncompressed tar
    size: int  # gzip bytes
    tar_size: int
    files: int


class _Sink(io.RawIOBase):
    """Hashes and counts what is written, passing it on."""

    def __init__(self, out: io.BufferedIOBase | gzip.GzipFile) -> None:
        self.out, self.sha, self.count = out, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def write(self, b: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self.sha.update(b)
        self.count += len(b)
        self.out.write(b)
        return len(b)


def _tarinfo(path: str, node: Node) -> tarfile.TarInfo:
    info = tarfile.TarInfo(path)
    info.mode, info.uid, info.gid, info.mtime = node.mode, node.uid, node.gid, node.mtime
    info.uname = info.gname = ""
    if node.kind == "dir":
        info.type = tarfile.DIRTYPE
    elif node.kind == "file":
        info.type = tarfile.REGTYPE
        info.size = len(node.data) if node.data is not None else os.stat(node.source or "").st_size
    elif node.kind == "symlink":
        info.type, info.linkname = tarfile.SYMTYPE, node.link
    elif node.kind == "hardlink":
        info.type, info.linkname = tarfile.LNKTYPE, node.link
    elif node.kind in ("char", "block"):
        info.type = tarfile.CHRTYPE if node.kind == "char" else tarfile.BLKTYPE
        info.devmajor, info.devminor = node.dev
    elif node.kind == "fifo":
        info.type = tarfile.FIFOTYPE
    else:
        raise ValueError(f"unknown node kind {node.kind!r} for {path}")
    return info


def write_layer(tree: Tree, blobs: Path) -> LayerBlob:
    """Write `tree` as a gzip tar into `blobs` (the `blobs/sha256` dir), named by its digest."""
    blobs.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".layer-", dir=blobs)
    try:
        with os.fdopen(fd, "wb") as raw:
            gz_sink = _Sink(raw)  # type: ignore[arg-type]
            with gzip.GzipFile(filename="", mode="wb", fileobj=gz_sink, mtime=0, compresslevel=GZIP_LEVEL) as gz:
                tar_sink = _Sink(gz)
                with tarfile.open(fileobj=tar_sink, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                    for path in sorted(tree, key=sort_key):
                        node = tree[path]
                        info = _tarinfo(path, node)
                        if node.kind == "file":
                            if node.data is not None:
                                tar.addfile(info, io.BytesIO(node.data))
                            else:
                                with open(node.source or "", "rb") as f:
                                    tar.addfile(info, f)
                        else:
                            tar.addfile(info)
        digest = "sha256:" + gz_sink.sha.hexdigest()
        os.chmod(tmp, 0o644)
        os.replace(tmp, blobs / digest.split(":", 1)[1])
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return LayerBlob(digest, "sha256:" + tar_sink.sha.hexdigest(), gz_sink.count, tar_sink.count, len(tree))


def tree_fingerprint(tree: Tree) -> Iterable[str]:
    """Lines describing a tree's inputs cheaply (host files by path, size and mtime), for recipe hashes."""
    for path in sorted(tree, key=sort_key):
        n = tree[path]
        body = (hashlib.sha256(n.data).hexdigest() if n.data is not None
                else f"{n.source}:{n.size}:{n.mtime}" if n.source else "")
        yield f"{path} {n.kind} {n.mode:o} {n.uid}:{n.gid} {n.mtime} {n.link} {n.dev} {body}"
