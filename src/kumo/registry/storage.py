"""Registry content on disk: content-addressed blobs shared by every registry, and per-registry
repositories (manifests by digest, tag links, the blobs each repository may serve).

    registries/blobs/sha256/<hex>                       a blob (layer, config or manifest bytes)
    registries/uploads/<uuid>                           an upload in progress (same filesystem: renamed in)
    registries/repos/<registry>/<repo>/_manifests/<hex>.json   {mediaType, size, created, blobs, children}
    registries/repos/<registry>/<repo>/_tags/<tag>      {digest, created, updated}
    registries/repos/<registry>/<repo>/_layers/<hex>    an empty file: this repository may serve the blob

Repository path components never start with `_` (the distribution spec's name grammar), so the
`_…` directories cannot collide with nested repositories. The methods here are synchronous and
touch the disk: callers in the event loop run them with `asyncio.to_thread`. A lock orders
manifest writes against garbage collection, and blobs that arrived recently without a manifest
naming them yet are kept by GC for a grace period (a push uploads layers before its manifest)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from kumo.registry import manifests
from kumo.registry.errors import RegistryError, blob_unknown, manifest_unknown, name_unknown

REPO_NAME = re.compile(r"^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$")
TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
REF_NAME = "org.opencontainers.image.ref.name"
WRITE_BATCH = 1 << 20
GRACE_SECONDS = 3600.0


def check_name(name: str) -> str:
    if len(name) > 255 or not REPO_NAME.match(name):
        raise RegistryError(400, "NAME_INVALID", "invalid repository name", {"name": name})
    return name


def is_digest(reference: str) -> bool:
    return ":" in reference


@dataclass
class Upload:
    id: str
    registry: str
    repo: str
    path: Path
    size: int = 0
    started: float = field(default_factory=time.time)
    hasher: Any = field(default_factory=hashlib.sha256)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass(frozen=True)
class ManifestInfo:
    digest: str
    media_type: str
    size: int
    created: float
    children: tuple[str, ...]


@dataclass(frozen=True)
class TagInfo:
    name: str
    digest: str
    created: float
    updated: float


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _hex(digest: str) -> str:
    return manifests.check_digest(digest).split(":", 1)[1]


class RegistryStorage:
    def __init__(self, root: Path, grace: float = GRACE_SECONDS) -> None:
        self.root = root
        self.blobs = root / "blobs" / "sha256"
        self.uploads = root / "uploads"
        self.repos = root / "repos"
        self.grace = grace
        self._lock = threading.RLock()
        self._fresh: dict[str, float] = {}  # blob digest -> when it arrived without a manifest naming it
        self._sessions: dict[str, Upload] = {}

    def prepare(self) -> None:
        """Make the directories; uploads left by a previous process cannot be resumed, so drop them."""
        for d in (self.blobs, self.repos):
            d.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.uploads, ignore_errors=True)
        self.uploads.mkdir(parents=True, exist_ok=True)

    # -- paths ------------------------------------------------------------------------------
    def blob_path(self, digest: str) -> Path:
        return self.blobs / _hex(digest)

    def _repo(self, registry: str, repo: str) -> Path:
        return self.repos / registry / check_name(repo)

    def _meta(self, registry: str, repo: str, digest: str) -> Path:
        return self._repo(registry, repo) / "_manifests" / f"{_hex(digest)}.json"

    def _tag(self, registry: str, repo: str, tag: str) -> Path:
        if not TAG.match(tag):
            raise RegistryError(400, "TAG_INVALID", "manifest tag did not match URI", {"tag": tag})
        return self._repo(registry, repo) / "_tags" / tag

    def _link(self, registry: str, repo: str, digest: str) -> Path:
        return self._repo(registry, repo) / "_layers" / _hex(digest)

    # -- blobs ------------------------------------------------------------------------------
    def blob_in_repo(self, registry: str, repo: str, digest: str) -> Path | None:
        """The blob's file, if this repository may serve it."""
        path = self.blob_path(digest)
        if self._link(registry, repo, digest).exists() and path.exists():
            return path
        return None

    def link(self, registry: str, repo: str, digest: str) -> None:
        link = self._link(registry, repo, digest)
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.touch()

    def unlink(self, registry: str, repo: str, digest: str) -> None:
        """DELETE of a blob: this repository no longer serves it (GC frees it when nothing refers to it)."""
        if self.blob_in_repo(registry, repo, digest) is None:
            raise blob_unknown(digest)
        self._link(registry, repo, digest).unlink(missing_ok=True)

    def mount(self, registry: str, repo: str, digest: str, source: str) -> bool:
        """Cross-repository mount: True when `source` (same registry) holds the blob."""
        with self._lock:
            if self.blob_in_repo(registry, source, digest) is None:
                return False
            self._fresh[digest] = time.time()
            self.link(registry, repo, digest)
            return True

    def _adopt(self, tmp: Path, digest: str) -> None:
        """Move a verified temp file into the blob store (or drop it if the blob is there)."""
        target = self.blob_path(digest)
        with self._lock:
            self._fresh[digest] = time.time()
            if target.exists():
                tmp.unlink(missing_ok=True)
            else:
                os.replace(tmp, target)

    # -- uploads ----------------------------------------------------------------------------
    def start_upload(self, registry: str, repo: str) -> Upload:
        check_name(repo)
        upload_id = uuid.uuid4().hex
        up = Upload(upload_id, registry, repo, self.uploads / upload_id)
        up.path.touch()
        self._sessions[up.id] = up
        return up

    def upload(self, registry: str, repo: str, upload_id: str) -> Upload | None:
        up = self._sessions.get(upload_id)
        if up is None or up.registry != registry or up.repo != repo:
            return None
        return up

    @staticmethod
    def _write(file: BinaryIO, up: Upload, data: bytes) -> None:
        file.write(data)
        up.hasher.update(data)
        up.size += len(data)

    async def append(self, up: Upload, chunks: AsyncIterator[bytes]) -> int:
        """Stream a request body onto the upload, hashing as it goes; disk writes off the loop."""
        file = await asyncio.to_thread(open, up.path, "ab")
        try:
            buf = bytearray()
            async for chunk in chunks:
                buf += chunk
                if len(buf) >= WRITE_BATCH:
                    data = bytes(buf)
                    buf.clear()
                    await asyncio.to_thread(self._write, file, up, data)
            if buf:
                await asyncio.to_thread(self._write, file, up, bytes(buf))
        finally:
            await asyncio.to_thread(file.close)
        return up.size

    def finish_upload(self, up: Upload, digest: str) -> None:
        manifests.check_digest(digest)
        actual = "sha256:" + up.hasher.hexdigest()
        if actual != digest:
            raise RegistryError(400, "DIGEST_INVALID", "provided digest did not match uploaded content",
                                {"digest": digest, "actual": actual})
        self._adopt(up.path, digest)
        self.link(up.registry, up.repo, digest)
        self._sessions.pop(up.id, None)

    def cancel_upload(self, up: Upload) -> None:
        self._sessions.pop(up.id, None)
        up.path.unlink(missing_ok=True)

    # -- manifests and tags -----------------------------------------------------------------
    def put_manifest(self, registry: str, repo: str, reference: str, data: bytes,
                     content_type: str | None) -> str:
        parsed = manifests.parse(data, content_type)
        digest = manifests.digest_of(data)
        if is_digest(reference) and reference != digest:
            raise RegistryError(400, "DIGEST_INVALID", "provided digest did not match uploaded content",
                                {"digest": reference, "actual": digest})
        tag_path = None if is_digest(reference) else self._tag(registry, repo, reference)
        with self._lock:
            for blob in parsed.blobs:
                if self.blob_in_repo(registry, repo, blob) is None:
                    raise RegistryError(400, "MANIFEST_BLOB_UNKNOWN", "blob unknown to registry", {"digest": blob})
            for child in parsed.children:
                if not self._meta(registry, repo, child).exists():
                    raise RegistryError(400, "MANIFEST_BLOB_UNKNOWN", "manifest unknown to registry",
                                        {"digest": child})
            blob = self.blob_path(digest)
            if not blob.exists():
                _write_atomic(blob, data)
            meta = self._meta(registry, repo, digest)
            if not meta.exists():
                _write_atomic(meta, json.dumps({"mediaType": parsed.media_type, "size": len(data),
                                                "created": time.time(), "blobs": list(parsed.blobs),
                                                "children": list(parsed.children)}).encode())
            for ref in (digest, *parsed.blobs):
                self.link(registry, repo, ref)
                self._fresh.pop(ref, None)
            if tag_path is not None:
                now = time.time()
                old = self._read_tag(tag_path)
                created = old["created"] if old else now
                if not old or old["digest"] != digest:
                    _write_atomic(tag_path, json.dumps({"digest": digest, "created": created,
                                                        "updated": now}).encode())
        return digest

    @staticmethod
    def _read_tag(path: Path) -> dict[str, Any] | None:
        try:
            return json.loads(path.read_bytes())
        except (OSError, ValueError):
            return None

    def resolve(self, registry: str, repo: str, reference: str) -> str | None:
        """A tag or digest -> the digest of a manifest this repository holds."""
        if is_digest(reference):
            manifests.check_digest(reference)
            return reference if self._meta(registry, repo, reference).exists() else None
        tag = self._read_tag(self._tag(registry, repo, reference))
        return tag["digest"] if tag else None

    def manifest_info(self, registry: str, repo: str, digest: str) -> ManifestInfo | None:
        try:
            meta = json.loads(self._meta(registry, repo, digest).read_bytes())
        except (OSError, ValueError):
            return None
        return ManifestInfo(digest, meta["mediaType"], meta["size"], meta["created"], tuple(meta.get("children", ())))

    def get_manifest(self, registry: str, repo: str, reference: str) -> tuple[ManifestInfo, bytes]:
        digest = self.resolve(registry, repo, reference)
        info = self.manifest_info(registry, repo, digest) if digest else None
        if info is None:
            raise manifest_unknown(reference)
        try:
            return info, self.blob_path(info.digest).read_bytes()
        except OSError:
            raise manifest_unknown(reference) from None

    def delete_manifest(self, registry: str, repo: str, digest: str) -> list[str]:
        """Remove a manifest and the tags that point at it; the tags removed."""
        with self._lock:
            meta = self._meta(registry, repo, digest)
            if not meta.exists():
                raise manifest_unknown(digest)
            removed = [t.name for t in self.tags(registry, repo) if t.digest == digest]
            for tag in removed:
                self._tag(registry, repo, tag).unlink(missing_ok=True)
            meta.unlink()
        return removed

    def delete_tag(self, registry: str, repo: str, tag: str) -> None:
        path = self._tag(registry, repo, tag)
        if not path.exists():
            raise manifest_unknown(tag)
        path.unlink()

    def tags(self, registry: str, repo: str) -> list[TagInfo]:
        tag_dir = self._repo(registry, repo) / "_tags"
        out = []
        for path in sorted(tag_dir.iterdir()) if tag_dir.is_dir() else ():
            if path.name.startswith("."):
                continue
            if (t := self._read_tag(path)) is not None:
                out.append(TagInfo(path.name, t["digest"], t["created"], t["updated"]))
        return out

    def manifests_of(self, registry: str, repo: str) -> list[ManifestInfo]:
        man_dir = self._repo(registry, repo) / "_manifests"
        out = []
        for path in sorted(man_dir.glob("*.json")) if man_dir.is_dir() else ():
            if (info := self.manifest_info(registry, repo, "sha256:" + path.stem)) is not None:
                out.append(info)
        return out

    def repo_exists(self, registry: str, repo: str) -> bool:
        man_dir = self._repo(registry, repo) / "_manifests"
        return man_dir.is_dir() and any(man_dir.glob("*.json"))

    # -- repositories and registries --------------------------------------------------------
    def _walk(self, base: Path) -> Iterator[tuple[str, Path]]:
        """(repository name, directory) for every repository under `base` holding a manifest."""
        for dirpath, dirnames, _files in os.walk(base):
            here = Path(dirpath)
            if "_manifests" in dirnames and any((here / "_manifests").glob("*.json")):
                yield here.relative_to(base).as_posix(), here
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("_"))

    def repositories(self, registry: str) -> list[str]:
        base = self.repos / registry
        return sorted(name for name, _ in self._walk(base)) if base.is_dir() else []

    def delete_repository(self, registry: str, repo: str) -> tuple[list[str], list[str]]:
        """Remove a repository: (manifest digests, tags) it held."""
        with self._lock:
            if not self.repo_exists(registry, repo):
                raise name_unknown(repo)
            digests = [m.digest for m in self.manifests_of(registry, repo)]
            tags = [t.name for t in self.tags(registry, repo)]
            path = self._repo(registry, repo)
            for sub in ("_manifests", "_tags", "_layers"):
                shutil.rmtree(path / sub, ignore_errors=True)
            base = self.repos / registry
            while path != base and path.is_dir() and not any(path.iterdir()):
                path.rmdir()
                path = path.parent
        return digests, tags

    def delete_registry(self, registry: str) -> None:
        with self._lock:
            shutil.rmtree(self.repos / registry, ignore_errors=True)

    def gc(self) -> tuple[int, int]:
        """Delete blobs no manifest of any registry references (except recent arrivals):
        (blobs freed, bytes freed)."""
        with self._lock:
            keep: set[str] = set()
            for _name, repo_dir in self._walk(self.repos):
                for meta_path in (repo_dir / "_manifests").glob("*.json"):
                    try:
                        meta = json.loads(meta_path.read_bytes())
                    except (OSError, ValueError):
                        continue
                    keep.add(meta_path.stem)
                    keep.update(d.split(":", 1)[1] for d in meta.get("blobs", ()))
            now = time.time()
            self._fresh = {d: t for d, t in self._fresh.items() if now - t < self.grace}
            keep.update(d.split(":", 1)[1] for d in self._fresh)
            freed = size = 0
            for blob in self.blobs.iterdir():
                if blob.name in keep or blob.name.startswith("."):
                    continue
                try:
                    size += blob.stat().st_size
                    blob.unlink()
                    freed += 1
                except FileNotFoundError:
                    continue
            return freed, size

    # -- OCI image layouts -------------------------------------------------------------------
    def import_layout(self, layout: Path, registry: str) -> list[str]:
        """Import every `repo:tag` an OCI layout's index.json names (annotation
        org.opencontainers.image.ref.name) into `registry`; an image whose tag already points at
        the same digest is skipped, so a second import is quick. Returns the `repo:tag`s present."""
        index = json.loads((layout / "index.json").read_bytes())
        present = []
        for desc in index.get("manifests") or []:
            ref = ((desc.get("annotations") or {}).get(REF_NAME) or "").strip()
            repo, _, tag = ref.rpartition(":")
            if "/" in tag or not repo:
                repo, tag = ref, "latest"
            host = repo.split("/", 1)[0]
            if "/" in repo and ("." in host or ":" in host or host == "localhost"):
                repo = repo.split("/", 1)[1]  # a fully qualified name: the registry host is not ours
            try:
                check_name(repo)
                if self.resolve(registry, repo, tag) != desc.get("digest"):
                    self._import_manifest(layout, registry, repo, desc["digest"], desc.get("mediaType"), tag)
            except (RegistryError, OSError, KeyError) as e:
                raise ValueError(f"cannot import {ref!r} from {layout}: {e}") from e
            present.append(f"{repo}:{tag}")
        return present

    def _import_manifest(self, layout: Path, registry: str, repo: str, digest: str, media_type: str | None,
                         tag: str | None = None) -> None:
        data = (layout / "blobs" / "sha256" / _hex(digest)).read_bytes()
        if manifests.digest_of(data) != digest:
            raise RegistryError(400, "DIGEST_INVALID", "layout blob does not match its digest", {"digest": digest})
        parsed = manifests.parse(data, media_type)
        doc = json.loads(data)
        for child in doc.get("manifests") or []:
            if (layout / "blobs" / "sha256" / _hex(child["digest"])).exists():
                self._import_manifest(layout, registry, repo, child["digest"], child.get("mediaType"))
        for blob in parsed.blobs:
            self._import_blob(layout, blob)
            self.link(registry, repo, blob)
        if parsed.children:
            missing = [c for c in parsed.children if not self._meta(registry, repo, c).exists()]
            if missing:  # a single-platform copy of a multi-platform index: serve what the layout has
                raise RegistryError(400, "MANIFEST_BLOB_UNKNOWN", "layout lacks manifests", {"digests": missing})
        self.put_manifest(registry, repo, tag or digest, data, parsed.media_type)

    def _import_blob(self, layout: Path, digest: str) -> None:
        if self.blob_path(digest).exists():
            return
        tmp = self.uploads / f"import-{uuid.uuid4().hex}"
        hasher = hashlib.sha256()
        with open(layout / "blobs" / "sha256" / _hex(digest), "rb") as src, open(tmp, "wb") as dst:
            while chunk := src.read(WRITE_BATCH):
                hasher.update(chunk)
                dst.write(chunk)
        if "sha256:" + hasher.hexdigest() != digest:
            tmp.unlink(missing_ok=True)
            raise RegistryError(400, "DIGEST_INVALID", "layout blob does not match its digest", {"digest": digest})
        self._adopt(tmp, digest)
