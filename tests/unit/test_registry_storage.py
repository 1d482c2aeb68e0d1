"""Registry storage: uploads hashed while streaming, manifests refused until their blobs are there,
tags, repository deletes, cross-repository mounts, GC of unreferenced blobs, OCI layout import."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kumo.registry.errors import RegistryError
from kumo.registry.storage import RegistryStorage
from tests.ocilayout import add_image


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def upload(storage: RegistryStorage, repo: str, data: bytes, registry: str = "reg") -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    up = storage.start_upload(registry, repo)
    asyncio.run(storage.append(up, _chunks(data[:3], data[3:])))
    storage.finish_upload(up, digest)
    return digest


def manifest(config: str, layer: str) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config,
                                  "size": 2},
                       "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer,
                                   "size": 5}]}).encode()


@pytest.fixture
def storage(tmp_path: Path) -> RegistryStorage:
    s = RegistryStorage(tmp_path / "registries", grace=0)
    s.prepare()
    return s


def test_upload_manifest_tags_and_gc(storage: RegistryStorage) -> None:
    config, layer = upload(storage, "app", b"{}"), upload(storage, "app", b"layer-bytes")
    with pytest.raises(RegistryError) as bad:
        storage.put_manifest("reg", "app", "v1", manifest(config, "sha256:" + "0" * 64), None)
    assert bad.value.code == "MANIFEST_BLOB_UNKNOWN"
    digest = storage.put_manifest("reg", "app", "v1", manifest(config, layer), None)
    info, data = storage.get_manifest("reg", "app", "v1")
    assert info.digest == digest and storage.get_manifest("reg", "app", digest)[1] == data
    assert [t.name for t in storage.tags("reg", "app")] == ["v1"] and storage.repositories("reg") == ["app"]
    assert storage.gc() == (0, 0)  # everything referenced
    # a blob of one repository is not served by another until mounted
    assert storage.blob_in_repo("reg", "other", layer) is None
    assert storage.mount("reg", "other", layer, "app") and storage.blob_in_repo("reg", "other", layer)
    assert storage.delete_repository("reg", "app") == ([digest], ["v1"])
    freed, _ = storage.gc()
    assert freed == 3 and not any(storage.blobs.iterdir())  # manifest, config, layer
    assert storage.repositories("reg") == []


def test_digest_mismatch_and_recent_uploads_survive_gc(tmp_path: Path) -> None:
    storage = RegistryStorage(tmp_path / "r", grace=3600)
    storage.prepare()
    up = storage.start_upload("reg", "app")
    asyncio.run(storage.append(up, _chunks(b"abc")))
    with pytest.raises(RegistryError) as bad:
        storage.finish_upload(up, "sha256:" + "1" * 64)
    assert bad.value.code == "DIGEST_INVALID"
    digest = upload(storage, "app", b"pushed-before-its-manifest")
    assert storage.gc() == (0, 0) and storage.blob_path(digest).exists()


def test_import_oci_layout_is_idempotent(storage: RegistryStorage, tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    first = add_image(layout, "library/busybox:1.36", {"bin/sh": b"x"})
    add_image(layout, "docker.io/library/alpine:3", {"etc/os": b"alpine"})
    assert storage.import_layout(layout, "catalog") == ["library/busybox:1.36", "library/alpine:3"]
    assert storage.resolve("catalog", "library/busybox", "1.36") == first
    before = sorted(p.name for p in storage.blobs.iterdir())
    assert storage.import_layout(layout, "catalog") == ["library/busybox:1.36", "library/alpine:3"]
    assert sorted(p.name for p in storage.blobs.iterdir()) == before
    storage.delete_registry("catalog")
    assert storage.gc()[0] == len(before)
