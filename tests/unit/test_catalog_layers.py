"""Catalog layers: trees from a staging dir, diffs with whiteouts, and deterministic gzip tars that kumo's own
layer store unpacks."""

from __future__ import annotations

import gzip
import hashlib
import os
import tarfile
from pathlib import Path

from kumo.images.catalog.layers import EPOCH, diff_trees, directory, symlink, text, tree_from_dir, write_layer
from kumo.images.reference import parse_reference
from kumo.images.store import unpack_layer


def make_root(root: Path) -> None:
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "bin").mkdir()
    (root / "bin" / "tool").write_bytes(b"\x7fELF tool")
    os.link(root / "bin" / "tool", root / "bin" / "tool-link")
    os.symlink("tool", root / "bin" / "alias")
    (root / "gone").mkdir()
    (root / "gone" / "file").write_text("x")
    (root / "old").write_text("old")


def test_tree_from_dir_and_diff(tmp_path: Path) -> None:
    lower_dir, upper_dir = tmp_path / "lower", tmp_path / "upper"
    make_root(lower_dir)
    lower = tree_from_dir(lower_dir, since=0)
    assert lower["bin/tool-link"].kind == "hardlink" and lower["bin/tool-link"].link == "bin/tool"
    assert lower["bin/alias"].kind == "symlink" and lower["bin/alias"].link == "tool"
    assert lower["etc/passwd"].mtime == EPOCH  # made during the "build" (since=0: everything is new)

    make_root(upper_dir)
    (upper_dir / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\nnginx:x:101:101::/:/bin/false\n")
    (upper_dir / "gone" / "file").unlink()
    (upper_dir / "gone").rmdir()
    (upper_dir / "old").unlink()
    (upper_dir / "usr" / "lib").mkdir(parents=True)
    (upper_dir / "usr" / "lib" / "new.so").write_bytes(b"lib")
    upper = tree_from_dir(upper_dir, since=0)
    diff = diff_trees(lower, upper)
    assert set(diff) == {"etc", "etc/passwd", ".wh.gone", ".wh.old", "usr", "usr/lib", "usr/lib/new.so"}
    assert diff[".wh.gone"].data == b""


def test_write_layer_is_deterministic_and_unpacks_in_the_store(tmp_path: Path) -> None:
    tree = {
        "bin": directory(), "bin/busybox": text(b"\x7fELF", 0o755), "bin/sh": symlink("/bin/busybox"),
        "tmp": directory(0o1777), "var/log/app.log": symlink("/dev/stdout"), "var": directory(),
        "var/log": directory(), "etc/passwd": text("root:x:0:0::/root:/bin/sh\n"), "etc": directory(),
        ".wh.removed": text(b""),
    }
    a = write_layer(dict(tree), tmp_path / "a")
    b = write_layer(dict(reversed(list(tree.items()))), tmp_path / "b")
    assert a == b
    data = (tmp_path / "a" / a.digest.split(":")[1]).read_bytes()
    assert "sha256:" + hashlib.sha256(data).hexdigest() == a.digest and len(data) == a.size
    assert "sha256:" + hashlib.sha256(gzip.decompress(data)).hexdigest() == a.diff_id
    with tarfile.open(fileobj=gzip.open(tmp_path / "a" / a.digest.split(":")[1])) as tar:
        members = tar.getmembers()
    assert [m.name for m in members][:4] == [".wh.removed", "bin", "bin/busybox", "bin/sh"]
    assert all(m.mtime == EPOCH and m.uid == 0 and m.uname == "" for m in members)

    if os.geteuid() == 0:  # the store keeps owners and makes whiteout devices: root only
        dest = tmp_path / "unpacked"
        diff_id = unpack_layer(tmp_path / "a" / a.digest.split(":")[1], dest, tmp_path / "tmp",
                               parse_reference("library/busybox"), a.digest, a.diff_id)
        assert diff_id == a.diff_id
        assert os.readlink(dest / "bin" / "sh") == "/bin/busybox"
        assert (dest / "tmp").stat().st_mode & 0o7777 == 0o1777
