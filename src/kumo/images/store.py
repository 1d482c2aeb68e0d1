"""A content-addressed image store on disk: verified blobs, each layer unpacked once, and image records.

Layout under the store's root (digests appear as `<algorithm>/<hex>`, never `sha256:<hex>`, because a
colon separates overlayfs `lowerdir=` entries):

    blobs/sha256/<hex>           blobs exactly as the registry served them (layers, configs)
    layers/sha256/<hex>/         a layer blob unpacked as an overlayfs layer (whiteouts as 0:0 char devices,
                                 opaque dirs with trusted.overlay.opaque=y)
    images/sha256/<hex>.json     an image record by manifest digest: config, ordered layers
    refs/<sha256 of ref>.json    which manifest a reference (name:tag or name@digest) resolved to
    tmp/                         partial unpacks, renamed into place when complete

A layer is unpacked into a temporary directory and renamed, so a layer directory that exists is complete.
Within one process an asyncio lock per digest makes two concurrent pulls of one layer download and
unpack it once; across processes the rename decides and the loser's copy is dropped. Unpacking runs in
a worker thread; it refuses entries that would land outside the layer (absolute paths, `..`, paths
through symlinks, hardlinks to outside) and keeps numeric owners, modes, device numbers and xattrs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import gzip
import hashlib
import json
import logging
import os
import posixpath
import shutil
import stat
import tarfile
import tempfile
import weakref
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from kumo.images.reference import ImageReference, parse_reference
from kumo.images.registry_client import (
    Descriptor, DigestMismatch, Manifest, ProgressCallback, PullError, RegistryClient, UnsupportedImage)

log = logging.getLogger("kumo.images")

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
COPY_CHUNK = 1 << 20
META_HEADER_LIMIT = 1 << 20  # bytes of one pax/GNU long-name header, or of all global pax headers together


class LayerError(PullError):
    """A layer blob that cannot be unpacked: not a tar, an unsupported compression, a failed syscall."""


class UnsafeLayer(LayerError):
    """A layer entry that would escape the layer directory; nothing of the layer is kept."""


@dataclasses.dataclass(frozen=True)
class ImageConfig:
    """What a runtime needs from the image config to start a container."""

    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    env: tuple[str, ...] = ()
    working_dir: str = ""
    user: str = ""
    exposed_ports: tuple[str, ...] = ()  # "80/tcp"
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    stop_signal: str | None = None

    @classmethod
    def from_config(cls, doc: Mapping[str, Any]) -> ImageConfig:
        """From an OCI/Docker image config JSON (its `config` member may be absent or null)."""
        c = doc.get("config") or {}
        if not isinstance(c, dict):
            c = {}

        def strings(value: Any) -> tuple[str, ...] | None:
            return tuple(str(v) for v in value) if isinstance(value, list) else None

        ports = c.get("ExposedPorts") if isinstance(c.get("ExposedPorts"), dict) else {}
        labels = c.get("Labels") if isinstance(c.get("Labels"), dict) else {}
        return cls(entrypoint=strings(c.get("Entrypoint")), cmd=strings(c.get("Cmd")),
                   env=strings(c.get("Env")) or (), working_dir=str(c.get("WorkingDir") or ""),
                   user=str(c.get("User") or ""), exposed_ports=tuple(sorted(ports)),
                   labels={str(k): str(v) for k, v in labels.items()},
                   stop_signal=str(c["StopSignal"]) if c.get("StopSignal") else None)

    @classmethod
    def from_record(cls, doc: Mapping[str, Any]) -> ImageConfig:
        def opt(value: Any) -> tuple[str, ...] | None:
            return tuple(value) if value is not None else None
        return cls(entrypoint=opt(doc.get("entrypoint")), cmd=opt(doc.get("cmd")), env=tuple(doc.get("env", ())),
                   working_dir=doc.get("working_dir", ""), user=doc.get("user", ""),
                   exposed_ports=tuple(doc.get("exposed_ports", ())), labels=dict(doc.get("labels", {})),
                   stop_signal=doc.get("stop_signal"))


@dataclasses.dataclass(frozen=True)
class Image:
    """A pulled image: where it came from and its layers, base first."""

    reference: str
    manifest_digest: str
    config_digest: str
    platform: str
    config: ImageConfig
    layers: tuple[str, ...]
    diff_ids: tuple[str, ...]
    size: int  # bytes of layer blobs, as downloaded
    index_digest: str | None = None

    def to_record(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_record(cls, doc: Mapping[str, Any]) -> Image:
        return cls(reference=doc["reference"], manifest_digest=doc["manifest_digest"],
                   config_digest=doc["config_digest"], platform=doc["platform"],
                   config=ImageConfig.from_record(doc["config"]), layers=tuple(doc["layers"]),
                   diff_ids=tuple(doc["diff_ids"]), size=int(doc["size"]), index_digest=doc.get("index_digest"))


def _digest_path(base: Path, digest: str, suffix: str = "") -> Path:
    algo, hexpart = digest.split(":", 1)
    return base / algo / (hexpart + suffix)


class ImageStore:
    """Pulls images through `client` into `root`; see the module docstring for the layout."""

    def __init__(self, root: str | os.PathLike[str], client: RegistryClient, *, concurrency: int = 3) -> None:
        self.root = Path(root)
        self.client = client
        self.concurrency = concurrency
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._prepared = False

    # -- paths (pure, no I/O) ----------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        return _digest_path(self.root / "blobs", digest)

    def layer_path(self, digest: str) -> Path:
        return _digest_path(self.root / "layers", digest)

    def layer_dirs(self, image: Image) -> list[Path]:
        """The unpacked layers, base first."""
        return [self.layer_path(d) for d in image.layers]

    def lowerdir(self, image: Image) -> str:
        """The `lowerdir=` value for an overlay mount of `image`: top-most layer first."""
        return ":".join(str(p) for p in reversed(self.layer_dirs(image)))

    def _record_path(self, manifest_digest: str) -> Path:
        return _digest_path(self.root / "images", manifest_digest, ".json")

    def _ref_path(self, ref: ImageReference) -> Path:
        return self.root / "refs" / (hashlib.sha256(str(ref).encode()).hexdigest() + ".json")

    # -- pulling -----------------------------------------------------------------------------------

    async def pull(self, reference: str | ImageReference, progress: ProgressCallback | None = None) -> Image:
        """Pull `reference` (resolving a tag on every call), downloading and unpacking only missing layers."""
        ref = reference if isinstance(reference, ImageReference) else parse_reference(reference)
        await self._prepare()
        if ref.digest:
            # A digest names immutable content: what is already here needs no registry at all.
            known = await self.get(ref)
            if known is not None:
                return known
        manifest = await self.client.get_manifest(ref)
        config_doc = await self._config(ref, manifest.config)
        diff_ids = _diff_ids(ref, config_doc, manifest)
        for desc in manifest.layers:
            if "zstd" in desc.media_type:
                raise UnsupportedImage(ref, f"layer {desc.digest} is zstd-compressed ({desc.media_type}); "
                                            "only gzip and uncompressed layers are supported")
        await self._ensure_layers(ref, manifest.layers, diff_ids, progress)
        platform = "/".join(str(config_doc[k]) for k in ("os", "architecture", "variant") if config_doc.get(k))
        image = Image(reference=str(ref), manifest_digest=manifest.digest, config_digest=manifest.config.digest,
                      platform=platform, config=ImageConfig.from_config(config_doc),
                      layers=tuple(d.digest for d in manifest.layers), diff_ids=diff_ids,
                      size=sum(d.size for d in manifest.layers), index_digest=manifest.index_digest)
        await asyncio.to_thread(self._write_records, ref, image)
        return image

    async def get(self, reference: str | ImageReference) -> Image | None:
        """The image last pulled under `reference`, if it and all its layers are still here."""
        ref = reference if isinstance(reference, ImageReference) else parse_reference(reference)
        await self._prepare()
        return await asyncio.to_thread(self._read_records, ref)

    async def config_json(self, image: Image) -> dict[str, Any]:
        """The image's full config JSON as the registry served it (verified when it was pulled)."""
        raw = await asyncio.to_thread(self.blob_path(image.config_digest).read_bytes)
        return json.loads(raw)

    async def ensure_layer(self, ref: ImageReference, desc: Descriptor, diff_id: str | None = None,
                           progress: ProgressCallback | None = None) -> Path:
        """The unpacked directory of layer `desc`, downloading and unpacking it if it is not here yet."""
        path = self.layer_path(desc.digest)
        lock = self._locks.get(desc.digest)
        if lock is None:
            lock = self._locks[desc.digest] = asyncio.Lock()
        async with lock:
            if await asyncio.to_thread(path.is_dir):
                if progress:
                    progress(desc.digest, desc.size, desc.size)
                return path
            blob = self.blob_path(desc.digest)
            if not await asyncio.to_thread(_exists_in, blob):
                await self.client.download_blob(ref, desc, blob, progress)
            elif progress:
                progress(desc.digest, desc.size, desc.size)
            await asyncio.to_thread(unpack_layer, blob, path, self.root / "tmp", ref, desc.digest, diff_id)
            return path

    async def _ensure_layers(self, ref: ImageReference, layers: tuple[Descriptor, ...], diff_ids: tuple[str, ...],
                             progress: ProgressCallback | None) -> None:
        """All layers, a few at a time; the first failure cancels the rest and is raised as it is."""
        sem = asyncio.Semaphore(self.concurrency)

        async def one(desc: Descriptor, diff_id: str | None) -> None:
            async with sem:
                await self.ensure_layer(ref, desc, diff_id, progress)

        tasks = [asyncio.create_task(one(d, diff_ids[i] if diff_ids else None)) for i, d in enumerate(layers)]
        if not tasks:
            return
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for t in tasks:
            if t.done() and not t.cancelled() and t.exception() is not None:
                raise t.exception()  # type: ignore[misc]

    async def _config(self, ref: ImageReference, desc: Descriptor) -> dict[str, Any]:
        path = self.blob_path(desc.digest)
        raw = await asyncio.to_thread(_read_if_exists, path)
        if raw is None:
            raw = await self.client.get_blob(ref, desc)
            await asyncio.to_thread(_write_atomic, path, raw)
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            raise UnsupportedImage(ref, f"image config {desc.digest} is not a JSON object")
        return doc

    # -- records -----------------------------------------------------------------------------------

    async def _prepare(self) -> None:
        if not self._prepared:
            await asyncio.to_thread(self._make_dirs)
            self._prepared = True

    def _make_dirs(self) -> None:
        for sub in ("blobs/sha256", "blobs/sha512", "layers/sha256", "layers/sha512", "images/sha256",
                    "images/sha512", "refs", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def _write_records(self, ref: ImageReference, image: Image) -> None:
        _write_atomic(self._record_path(image.manifest_digest), json.dumps(image.to_record(), indent=1).encode())
        # The name as pulled, and the name by digest (of the manifest and of the index it came from), so a
        # later pull by digest is answered here.
        names = {ref, ImageReference(ref.registry, ref.repository, digest=image.manifest_digest)}
        if image.index_digest:
            names.add(ImageReference(ref.registry, ref.repository, digest=image.index_digest))
        for name in names:
            _write_atomic(self._ref_path(name), json.dumps({"reference": str(name),
                                                            "manifest": image.manifest_digest}).encode())

    def _read_records(self, ref: ImageReference) -> Image | None:
        try:
            pointer = json.loads(self._ref_path(ref).read_bytes())
            image = Image.from_record(json.loads(self._record_path(pointer["manifest"]).read_bytes()))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not all(self.layer_path(d).is_dir() for d in image.layers):
            return None
        return dataclasses.replace(image, reference=str(ref))


def _diff_ids(ref: ImageReference, config: Mapping[str, Any], manifest: Manifest) -> tuple[str, ...]:
    rootfs = config.get("rootfs")
    ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(ids, list):
        return ()
    if len(ids) != len(manifest.layers):
        raise UnsupportedImage(ref, f"the config lists {len(ids)} layer diff_ids for {len(manifest.layers)} layers")
    return tuple(str(i) for i in ids)


def _exists_in(path: Path) -> bool:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.exists()


def _read_if_exists(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# -- unpacking (runs in a worker thread) -------------------------------------------------------------


class _HashingReader:
    """Hashes what tarfile reads, so the uncompressed stream can be checked against the config's diff_id."""

    def __init__(self, inner: IO[bytes], algo: str) -> None:
        self.inner, self.hasher = inner, hashlib.new(algo)

    def read(self, n: int = -1) -> bytes:
        data = self.inner.read(n)
        self.hasher.update(data)
        return data

    def drain(self) -> None:
        while self.read(COPY_CHUNK):
            pass


def _open_layer(raw: IO[bytes], ref: ImageReference, digest: str) -> IO[bytes]:
    """Decompress by magic number, as docker does, rather than trusting the media type."""
    head = raw.read(6)
    raw.seek(0)
    if head[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    if head[:4] == b"\x28\xb5\x2f\xfd":
        raise UnsupportedImage(ref, f"layer {digest} is zstd-compressed; only gzip and plain tar are supported")
    if head[:3] == b"BZh" or head == b"\xfd7zXZ\x00":
        raise UnsupportedImage(ref, f"layer {digest} uses bzip2/xz compression; only gzip and plain tar are supported")
    return raw


def unpack_layer(blob: Path, dest: Path, tmp_root: Path, ref: ImageReference, digest: str,
                 diff_id: str | None = None) -> str:
    """Unpack the layer tar `blob` into the directory `dest` atomically; return its diff_id.

    Blocking: call it through asyncio.to_thread. If `dest` appears meanwhile (another process), the
    result is the same content and this copy is dropped.
    """
    tmp_root.mkdir(parents=True, exist_ok=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=digest.split(":")[-1][:16] + ".", dir=tmp_root))
    try:
        os.chmod(tmp, 0o755)
        algo = diff_id.split(":", 1)[0] if diff_id and ":" in diff_id else "sha256"
        try:
            with open(blob, "rb") as raw:
                reader = _HashingReader(_open_layer(raw, ref, digest), algo)
                _Extractor(tmp, ref, digest).run(reader)
                reader.drain()
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise LayerError(ref, f"layer {digest} is not a valid tar archive: {exc}") from exc
        actual = f"{algo}:{reader.hasher.hexdigest()}"
        if diff_id and actual != diff_id:
            raise DigestMismatch(ref, f"layer {digest} unpacks to content {actual}, the config says {diff_id}")
        try:
            os.rename(tmp, dest)
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY) or not dest.is_dir():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
        return actual
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class _BoundedTarInfo(tarfile.TarInfo):
    """tarfile reads a pax or GNU long-name header into memory whole, whatever size it declares, so a
    gzip bomb of one header would take gigabytes: refuse large ones before they are read. Old-style GNU
    sparse members chain extension headers without limit; no image builder writes them."""

    def _proc_member(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:  # type: ignore[override]
        if self.type == tarfile.GNUTYPE_SPARSE:
            raise tarfile.ReadError(f"{self.name!r} is an old-style GNU sparse file, which is not supported")
        if self.type in (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE, tarfile.GNUTYPE_LONGNAME,
                         tarfile.GNUTYPE_LONGLINK):
            budget = META_HEADER_LIMIT
            if self.type == tarfile.XGLTYPE:  # global headers accumulate for the rest of the archive
                budget -= sum(len(k) + len(v) for k, v in tarfile_.pax_headers.items())
            if self.size > budget:
                raise tarfile.ReadError(f"a metadata header of {self.size} bytes exceeds {META_HEADER_LIMIT} bytes")
        return super()._proc_member(tarfile_)  # type: ignore[misc]


class _Extractor:
    """Writes one layer's entries under `root`, never following a symlink and never leaving `root`."""

    def __init__(self, root: Path, ref: ImageReference, digest: str) -> None:
        self.root = str(root)
        self.ref, self.digest = ref, digest
        self.known_dirs: set[str] = {""}  # relative dirs already checked to be real directories
        self.dir_meta: dict[str, tarfile.TarInfo] = {}  # by path: a repeated entry must not grow it
        self.as_root = os.geteuid() == 0

    def _unsafe(self, name: str, why: str) -> UnsafeLayer:
        return UnsafeLayer(self.ref, f"layer {self.digest} has an unsafe entry {name!r}: {why}; refusing the layer")

    def _abs(self, rel: str) -> str:
        return os.path.join(self.root, rel) if rel else self.root

    def clean(self, name: str, what: str = "path") -> str:
        """The entry's path relative to the layer root; absolute paths and `..` are refused, not rewritten."""
        if "\0" in name:
            raise self._unsafe(name, f"{what} contains a NUL byte")
        if name.startswith("/"):
            raise self._unsafe(name, f"absolute {what}")
        parts = [p for p in name.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise self._unsafe(name, f"{what} with '..' escapes the layer")
        return "/".join(parts)

    def run(self, reader: _HashingReader) -> None:
        with tarfile.open(fileobj=reader, mode="r|", tarinfo=_BoundedTarInfo) as tar:  # type: ignore[call-overload]
            for member in tar:
                tar.members.clear()  # a stream needs no index of past members; millions of entries would fill memory
                rel = self.clean(member.name)
                try:
                    self.entry(tar, member, rel)
                except PullError:
                    raise
                except OSError as exc:
                    if exc.errno == errno.EPERM and not self.as_root:
                        raise LayerError(self.ref, f"layer {self.digest}: {rel!r} needs root to unpack "
                                                   f"(whiteouts, devices, owners): {exc}") from exc
                    raise LayerError(self.ref, f"layer {self.digest}: cannot unpack {rel!r}: {exc}") from exc
        # Directory modes and times last: writing children would change the mtimes again.
        for rel, member in reversed(self.dir_meta.items()):
            path = self._abs(rel)
            self._owner(path, member)
            os.chmod(path, member.mode & 0o7777)
            os.utime(path, (member.mtime, member.mtime), follow_symlinks=False)

    def entry(self, tar: tarfile.TarFile, m: tarfile.TarInfo, rel: str) -> None:
        base = posixpath.basename(rel)
        if base.startswith(WHITEOUT_PREFIX):
            self.whiteout(rel, base)
            return
        if m.isdir():
            self.directory(rel, m)
            return
        if not rel:
            raise self._unsafe(m.name, "the layer root must be a directory")
        path = self._abs(rel)
        self.parents(rel)
        if m.islnk():
            target = self.clean(m.linkname, "hardlink target")
            self.no_symlink_on_the_way(target, m.name)
            tpath = self._abs(target)
            st = os.lstat(tpath) if os.path.lexists(tpath) else None
            if st is None:
                raise self._unsafe(m.name, f"hardlink to {m.linkname!r}, which is not in this layer")
            if stat.S_ISDIR(st.st_mode):
                raise self._unsafe(m.name, f"hardlink to the directory {m.linkname!r}")
            if target == rel:
                return
            self.remove(rel)
            os.link(tpath, path, follow_symlinks=False)
            return
        self.remove(rel)
        if m.issym():
            os.symlink(m.linkname, path)  # any target: it is only resolved inside the container's root
            self._owner(path, m)
        elif m.isreg():
            self.regular(tar, m, path)
            return
        elif m.ischr() or m.isblk() or m.isfifo():
            kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK if m.isblk() else stat.S_IFIFO
            os.mknod(path, kind | 0o600, os.makedev(m.devmajor, m.devminor) if kind != stat.S_IFIFO else 0)
            self._owner(path, m)
            os.chmod(path, m.mode & 0o7777)
        else:
            log.debug("layer %s: skipping %r of tar type %r", self.digest, rel, m.type)
            return
        os.utime(path, (m.mtime, m.mtime), follow_symlinks=False)

    def regular(self, tar: tarfile.TarFile, m: tarfile.TarInfo, path: str) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            src = tar.extractfile(m)
            if src is not None:
                while chunk := src.read(COPY_CHUNK):
                    _write_all(fd, chunk)
            if self.as_root:
                os.fchown(fd, m.uid, m.gid)
            os.fchmod(fd, m.mode & 0o7777)  # after chown, which clears setuid/setgid
            self.xattrs(path, m)
            os.utime(fd, (m.mtime, m.mtime))
        finally:
            os.close(fd)

    def directory(self, rel: str, m: tarfile.TarInfo) -> None:
        if rel:
            self.parents(rel)
            path = self._abs(rel)
            if rel not in self.known_dirs:
                st = os.lstat(path) if os.path.lexists(path) else None
                if st is not None and not stat.S_ISDIR(st.st_mode):
                    self.remove(rel)
                    st = None
                if st is None:
                    os.mkdir(path, 0o700)
                self.known_dirs.add(rel)
        self.xattrs(self._abs(rel), m)
        self.dir_meta[rel] = m  # a later entry for the same directory wins, as in tar

    def whiteout(self, rel: str, base: str) -> None:
        parent = posixpath.dirname(rel)
        self.parents(rel)
        if base == OPAQUE_MARKER:
            os.setxattr(self._abs(parent), OPAQUE_XATTR, b"y", follow_symlinks=False)
            return
        if base.startswith(WHITEOUT_PREFIX + WHITEOUT_PREFIX):
            return  # other aufs metadata (.wh..wh.plnk, …): meaningless for overlayfs
        name = base[len(WHITEOUT_PREFIX):]
        if name in ("", ".", ".."):
            raise self._unsafe(rel, "whiteout without a valid name")
        target = posixpath.join(parent, name)
        self.remove(target)
        os.mknod(self._abs(target), stat.S_IFCHR | 0o000, os.makedev(0, 0))

    def parents(self, rel: str) -> None:
        """Make sure every parent of `rel` is a real directory inside the layer, creating missing ones."""
        parent = posixpath.dirname(rel)
        if parent in self.known_dirs:
            return
        cur = ""
        for part in parent.split("/"):
            cur = f"{cur}/{part}" if cur else part
            if cur in self.known_dirs:
                continue
            path = self._abs(cur)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                os.mkdir(path, 0o700)
                os.chmod(path, 0o755)  # implicit directories get docker's default, whatever the umask
                self.known_dirs.add(cur)
                continue
            if stat.S_ISLNK(st.st_mode):
                raise self._unsafe(rel, f"its parent {cur!r} is a symlink, which could lead outside the layer")
            if not stat.S_ISDIR(st.st_mode):
                raise LayerError(self.ref, f"layer {self.digest}: {rel!r} is inside {cur!r}, which is not a directory")
            self.known_dirs.add(cur)

    def no_symlink_on_the_way(self, rel: str, name: str) -> None:
        cur = ""
        for part in rel.split("/")[:-1]:
            cur = f"{cur}/{part}" if cur else part
            if os.path.islink(self._abs(cur)):
                raise self._unsafe(name, f"hardlink through the symlink {cur!r}")

    def remove(self, rel: str) -> None:
        """Whatever is at `rel` goes; a later entry for a path replaces an earlier one, as in tar."""
        path = self._abs(rel)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(path)
            self.known_dirs = {d for d in self.known_dirs if d != rel and not d.startswith(rel + "/")}
            self.dir_meta = {d: m for d, m in self.dir_meta.items() if d != rel and not d.startswith(rel + "/")}
        else:
            os.unlink(path)

    def _owner(self, path: str, m: tarfile.TarInfo) -> None:
        if self.as_root:  # numeric ids as recorded; names in the tar are ignored, as docker does
            os.lchown(path, m.uid, m.gid)

    def xattrs(self, path: str, m: tarfile.TarInfo) -> None:
        for key, value in m.pax_headers.items():
            if not key.startswith("SCHILY.xattr."):
                continue
            name = key.removeprefix("SCHILY.xattr.")
            if name.startswith("trusted.overlay."):
                continue  # overlayfs' own metadata comes from whiteouts, never from image content
            try:
                os.setxattr(path, name, value.encode("utf-8", "surrogateescape"), follow_symlinks=False)
            except OSError as exc:
                log.warning("layer %s: cannot set xattr %s on %s: %s", self.digest, name, path, exc)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
