"""Building image layers for tests: tar entries of every kind, and a tar archive of them."""

from __future__ import annotations

import io
import tarfile

Entry = tuple[tarfile.TarInfo, bytes | None]


def entry(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", mode: int = 0o644, uid: int = 0,
          gid: int = 0, link: str = "", devmajor: int = 0, devminor: int = 0, mtime: int = 1_600_000_000,
          pax: dict[str, str] | None = None) -> Entry:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.uid, info.gid, info.mtime = kind, mode, uid, gid, mtime
    info.linkname, info.devmajor, info.devminor = link, devmajor, devminor
    info.pax_headers = pax or {}
    if kind == tarfile.REGTYPE:
        info.size = len(data)
        return info, data
    return info, None


def layer_tar(*entries: Entry) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()
