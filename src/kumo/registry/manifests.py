"""Image manifests as a registry sees them: which media type a pushed document is, and which blobs
and child manifests it references (what must exist before it is accepted, and what GC keeps)."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from kumo.registry.errors import RegistryError

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
FOREIGN_LAYERS = ("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                  "application/vnd.oci.image.layer.nondistributable.v1.tar",
                  "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip")
MAX_MANIFEST = 4 * 1024 * 1024
DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def check_digest(digest: str) -> str:
    if not DIGEST.match(digest or ""):
        raise RegistryError(400, "DIGEST_INVALID", "provided digest did not match uploaded content",
                            {"digest": digest, "reason": "only sha256 digests are supported"})
    return digest


@dataclass(frozen=True)
class Parsed:
    media_type: str
    blobs: tuple[str, ...]      # config and layers: must be in the blob store
    children: tuple[str, ...]   # manifests an index names: must be in the same repository
    platform: dict[str, Any] | None = None


def _descriptor(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict) or not isinstance(value.get("digest"), str):
        raise RegistryError(400, "MANIFEST_INVALID", "manifest invalid", {"reason": f"{where} is not a descriptor"})
    check_digest(value["digest"])
    return value


def parse(data: bytes, content_type: str | None) -> Parsed:
    """The manifest's media type and references; MANIFEST_INVALID for anything else."""
    if len(data) > MAX_MANIFEST:
        raise RegistryError(413, "SIZE_INVALID", "manifest too large", {"limit": MAX_MANIFEST})
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise RegistryError(400, "MANIFEST_INVALID", "manifest invalid", {"reason": "not JSON"}) from None
    if not isinstance(doc, dict):
        raise RegistryError(400, "MANIFEST_INVALID", "manifest invalid", {"reason": "not a JSON object"})
    declared = doc.get("mediaType")
    header = (content_type or "").split(";")[0].strip().lower()
    media_type = declared or (header if header in (*INDEX_TYPES, *MANIFEST_TYPES) else None)
    if media_type is None:
        media_type = OCI_INDEX if "manifests" in doc else OCI_MANIFEST
    if declared and header in (*INDEX_TYPES, *MANIFEST_TYPES) and header != declared:
        raise RegistryError(400, "MANIFEST_INVALID", "manifest invalid",
                            {"reason": f"mediaType {declared} does not match Content-Type {header}"})
    if doc.get("schemaVersion") != 2:
        raise RegistryError(400, "MANIFEST_INVALID", "manifest invalid",
                            {"reason": "only schemaVersion 2 manifests are supported"})
    if media_type in INDEX_TYPES:
        entries = doc.get("manifests")
        if not isinstance(entries, list):
            raise RegistryError(400, "MANIFEST_INVALID", "manifest invalid", {"reason": "manifests must be a list"})
        children = tuple(_descriptor(m, "manifests[]")["digest"] for m in entries)
        return Parsed(media_type, (), children)
    if media_type not in MANIFEST_TYPES:
        raise RegistryError(400, "MANIFEST_INVALID", "manifest invalid",
                            {"reason": f"unsupported manifest media type {media_type}"})
    config = _descriptor(doc.get("config"), "config")
    layers = doc.get("layers")
    if not isinstance(layers, list):
        raise RegistryError(400, "MANIFEST_INVALID", "manifest invalid", {"reason": "layers must be a list"})
    blobs = [config["digest"]]
    for layer in layers:
        desc = _descriptor(layer, "layers[]")
        if desc.get("mediaType") not in FOREIGN_LAYERS:
            blobs.append(desc["digest"])
    return Parsed(media_type, tuple(dict.fromkeys(blobs)), ())


def accepts(accept: list[str], media_type: str) -> bool:
    """Whether a client's Accept list takes `media_type` (no list, or */*, takes anything)."""
    types = [t.split(";")[0].strip().lower() for item in accept for t in item.split(",") if t.strip()]
    return not types or "*/*" in types or media_type in types
