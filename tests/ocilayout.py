"""Tiny OCI image layouts for registry tests: one gzip layer of given files, a config, a manifest,
and index.json naming it `repo:tag` (org.opencontainers.image.ref.name), as kumo's catalog is delivered."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def _blob(layout: Path, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    path = layout / "blobs" / "sha256" / digest.split(":")[1]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return digest


def _layer(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o755, 1_600_000_000
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(buf.getvalue(), mtime=0)


def add_image(layout: Path, ref: str, files: dict[str, bytes]) -> str:
    """Add an image to the layout (created if need be); returns the manifest digest."""
    layout.mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    layer = _layer(files)
    diff_id = "sha256:" + hashlib.sha256(gzip.decompress(layer)).hexdigest()
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
                         "rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": _blob(layout, config),
                   "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": _blob(layout, layer),
                    "size": len(layer)}]}).encode()
    digest = _blob(layout, manifest)
    index_path = layout / "index.json"
    index = json.loads(index_path.read_text()) if index_path.exists() else {"schemaVersion": 2,
                                                                              "mediaType": OCI_INDEX,
                                                                              "manifests": []}
    index["manifests"] = [m for m in index["manifests"]
                          if (m.get("annotations") or {}).get("org.opencontainers.image.ref.name") != ref]
    index["manifests"].append({"mediaType": OCI_MANIFEST, "digest": digest, "size": len(manifest),
                               "annotations": {"org.opencontainers.image.ref.name": ref}})
    index_path.write_text(json.dumps(index))
    return digest
