"""kumo's offline image catalog: real OCI images built from Debian packages, written as an OCI image layout.

`build()` (the `kumo catalog build` command) writes into a directory (`default_catalog_dir()` unless told):

    oci-layout                 {"imageLayoutVersion": "1.0.0"}
    index.json                 one OCI manifest descriptor per repository:tag, annotated with
                               org.opencontainers.image.ref.name = "library/busybox:latest" and so on
    blobs/sha256/<hex>         gzip tar layers, image configs (amd64/linux), OCI manifests
    kumo-catalog.json          what was built from which recipe (the cache), not part of the layout

The images (see `recipes.IMAGES`): `library/busybox`, `library/nginx`, `azuredocs/aci-helloworld`,
`azuredocs/aci-hellofiles`, `azuredocs/aci-wordcount` from files of Debian packages installed on the host, and
`library/debian` and `library/python` from `mmdebstrap` against the Debian mirror the host's apt uses (root
only). Layers are content-addressed, so a layer two images share (busybox, debian, python) is one blob.

Layers are deterministic: the same recipe and the same package versions give the same digests. Every
builder has a key (its code, its inputs, the versions of the packages it copies from); a builder whose key
and blobs are unchanged is not run again, and when the whole catalog's key is unchanged `build()` does
nothing ("catalog up to date"). The Debian images are not rebuilt when the mirror moves on: use `force`.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import inspect
import json
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from kumo.images.catalog import layers as layers_mod
from kumo.images.catalog import recipes
from kumo.images.catalog.layers import EPOCH, LayerBlob, write_layer
from kumo.images.buildkit import BuildError, locked, write_atomic
from kumo.images.catalog.recipes import Context, ImageRecipe

__all__ = ["DEFAULT_MIRRORED_REGISTRIES", "BuildError", "BuildResult", "build", "default_catalog_dir",
           "repositories"]

DEFAULT_MIRRORED_REGISTRIES = ("mcr.microsoft.com", "docker.io")
"""Registries whose names kumo's built-in registry answers from the catalog, as a pull-through mirror would.

A reference on one of these hosts resolves to the catalog repository of the same path, with Docker Hub's
normalization: `nginx`, `library/nginx`, `docker.io/nginx` and `docker.io/library/nginx:latest` all resolve
to the catalog's `library/nginx`, and `mcr.microsoft.com/azuredocs/aci-helloworld` to
`azuredocs/aci-helloworld` (tag `latest` when none is given). Names the catalog does not hold are not found.
"""

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME = "org.opencontainers.image.ref.name"
STATE_FILE = "kumo-catalog.json"
FORMAT = "kumo-catalog/1"

Say = Callable[[str], None]


def default_catalog_dir() -> Path:
    """`$KUMO_CATALOG_DIR`, else /var/cache/kumo/catalog as root, else ~/.cache/kumo/catalog."""
    env = os.environ.get("KUMO_CATALOG_DIR")
    if env:
        return Path(env).expanduser()
    if os.geteuid() == 0:
        return Path("/var/cache/kumo/catalog")
    return Path.home() / ".cache" / "kumo" / "catalog"


def repositories() -> dict[str, tuple[str, ...]]:
    """Every repository the catalog can hold, with its tags."""
    return {img.repository: img.tags for img in recipes.IMAGES}


@dataclasses.dataclass(frozen=True)
class BuildResult:
    out: Path
    up_to_date: bool  # nothing was done
    images: dict[str, str]  # "repository:tag" -> manifest digest
    failed: dict[str, str]  # repository -> why it was not built
    skipped: dict[str, str]  # repository -> why it was left out (not root)
    seconds: float


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError


def _canonical(doc: Any) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _write_blob(blobs: Path, data: bytes) -> str:
    hexdigest = hashlib.sha256(data).hexdigest()
    path = blobs / hexdigest
    if not path.exists():
        tmp = blobs / f".blob-{hexdigest}.{os.getpid()}"
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return "sha256:" + hexdigest








def _select(only: Iterable[str] | None) -> tuple[list[ImageRecipe], dict[str, str]]:
    known = {img.repository: img for img in recipes.IMAGES}
    skipped: dict[str, str] = {}
    if only is not None:
        wanted = set(only)
        unknown = wanted - set(known)
        if unknown:
            raise BuildError(f"not in the catalog: {', '.join(sorted(unknown))} (known: {', '.join(known)})")
        chosen = [img for img in recipes.IMAGES if img.repository in wanted]
    else:
        chosen = list(recipes.IMAGES)
    is_root = os.geteuid() == 0
    result = []
    for img in chosen:
        if not is_root and any(recipes.LAYER_BUILDER[layer].needs_root for layer in img.layers):
            if only is not None:
                raise BuildError(f"{img.repository} needs root to build (mmdebstrap)")
            skipped[img.repository] = "needs root (mmdebstrap): run `sudo kumo catalog build`"
            continue
        result.append(img)
    return result, skipped


def _created() -> str:
    return datetime.datetime.fromtimestamp(EPOCH, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _image_config(img: ImageRecipe, blobs: dict[str, LayerBlob], history: dict[str, str]) -> dict[str, Any]:
    created = _created()
    hist = [{"created": created, "created_by": history[layer]} for layer in img.layers]
    for k in ("Env", "WorkingDir", "ExposedPorts", "StopSignal", "Cmd"):
        if k in img.config:
            v = img.config[k]
            shown = " ".join(sorted(v)) if k == "ExposedPorts" else json.dumps(v) if k in ("Cmd", "Env") else v
            hist.append({"created": created, "created_by": f"{'EXPOSE' if k == 'ExposedPorts' else k.upper()} {shown}",
                         "empty_layer": True})
    return {
        "architecture": "amd64",
        "os": "linux",
        "created": created,
        "author": "kumo catalog",
        "config": dict(img.config),
        "rootfs": {"type": "layers", "diff_ids": [blobs[layer].diff_id for layer in img.layers]},
        "history": hist,
    }


def _catalog_key(images: list[ImageRecipe], builder_keys: dict[str, str]) -> str:
    doc = {"format": FORMAT, "builders": builder_keys,
           "images": [dataclasses.asdict(img) for img in images],
           "code": hashlib.sha256(inspect.getsource(_image_config).encode()
                                  + inspect.getsource(_build_locked).encode()).hexdigest()}
    return hashlib.sha256(_canonical(doc)).hexdigest()


def _load_state(out: Path) -> dict[str, Any]:
    try:
        doc = json.loads((out / STATE_FILE).read_text())
        return doc if isinstance(doc, dict) and doc.get("format") == FORMAT else {}
    except (OSError, ValueError):
        return {}


def build(out: str | os.PathLike[str] | None = None, *, force: bool = False, only: Iterable[str] | None = None,
          say: Say = print) -> BuildResult:
    """Build the catalog into `out` (default `default_catalog_dir()`), or do nothing when it is up to date.

    `only`: the repositories to build (e.g. {"library/busybox"}); the layout then holds just those.
    `force`: rebuild every layer (the Debian images pick up what the mirror has now).
    `say`: where progress lines go. Raises `BuildError` for a bad `only`; a builder that fails leaves its
    images out of the layout and in `BuildResult.failed`.
    """
    out_dir = Path(out) if out is not None else default_catalog_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    with locked(out_dir):
        return _build_locked(out_dir, force=force, only=only, say=say)


def _build_locked(out: Path, *, force: bool, only: Iterable[str] | None, say: Say) -> BuildResult:
    t_start = time.monotonic()
    images, skipped = _select(only)
    blobs_dir = out / "blobs" / "sha256"
    blobs_dir.mkdir(parents=True, exist_ok=True)
    ctx = Context(staging=out / ".staging", say=say)
    common = FORMAT + hashlib.sha256(inspect.getsource(layers_mod).encode()).hexdigest()

    needed: list[recipes.Builder] = []
    for img in images:
        for layer in img.layers:
            b = recipes.LAYER_BUILDER[layer]
            if b not in needed:
                needed.append(b)
    keys: dict[str, str] = {}
    failed: dict[str, str] = {}
    for b in needed:
        try:
            keys[b.name] = b.key(ctx, common)
        except BuildError as e:
            failed[b.name] = str(e)

    state = _load_state(out)
    catalog_key = _catalog_key(images, keys)
    if (not force and not failed and state.get("catalog_key") == catalog_key and (out / "index.json").is_file()
            and all((blobs_dir / d.split(":", 1)[1]).is_file() for d in state.get("blobs", []))):
        n_tags = sum(len(img.tags) for img in images)
        say(f"catalog up to date: {len(images)} images, {n_tags} tags in {out} "
            f"({_human(state.get('size', 0))}; checked in {time.monotonic() - t_start:.1f} s)")
        for repo, why in skipped.items():
            say(f"  skipped {repo}: {why}")
        return BuildResult(out, True, dict(state.get("images", {})), {}, skipped, time.monotonic() - t_start)

    say(f"catalog: building {len(images)} images into {out}" + (" (--force)" if force else ""))
    for repo, why in skipped.items():
        say(f"  skipping {repo}: {why}")
    old_builders: dict[str, Any] = state.get("builders", {})
    built: dict[str, LayerBlob] = {}
    history: dict[str, str] = {}
    new_builders: dict[str, Any] = {}
    for b in needed:
        if b.name in failed:
            say(f"[{b.name}] cannot build: {failed[b.name]}")
            continue
        cached = old_builders.get(b.name)
        if (not force and cached and cached.get("key") == keys[b.name]
                and all((blobs_dir / lb["digest"].split(":", 1)[1]).is_file() for lb in cached["layers"].values())):
            for name, lb in cached["layers"].items():
                built[name] = LayerBlob(**lb)
                say(f"[{b.name}] layer {name}: cached, {built[name].digest[:19]} ({_human(built[name].size)})")
            history.update(cached["history"])
            new_builders[b.name] = cached
            continue
        t0 = time.monotonic()
        say(f"[{b.name}] building …")
        try:
            trees = b.build(ctx)
            descriptions = b.describe(ctx)
            for name in b.layers:
                t1 = time.monotonic()
                blob = write_layer(trees[name], blobs_dir)
                built[name] = blob
                say(f"[{b.name}] layer {name}: {blob.files} entries, {_human(blob.tar_size)} tar -> "
                    f"{_human(blob.size)} gzip, {blob.digest[:19]} ({time.monotonic() - t1:.1f} s)")
            del trees
        except BuildError as e:
            failed[b.name] = str(e)
            say(f"[{b.name}] FAILED: {e}")
            continue
        finally:
            try:
                recipes.remove_staging(ctx.staging)
            except BuildError as e:
                say(f"[{b.name}] WARNING: {e}")
        history.update(descriptions)
        new_builders[b.name] = {"key": keys[b.name], "layers": {n: dataclasses.asdict(built[n]) for n in b.layers},
                                "history": descriptions, "packages": ctx.versions(b.packages),
                                **({"debian_packages": ctx.notes["debian_packages"]}
                                   if b.name == "debian" and "debian_packages" in ctx.notes else {})}
        say(f"[{b.name}] done in {time.monotonic() - t0:.1f} s")

    manifests: list[dict[str, Any]] = []
    refs: dict[str, str] = {}
    referenced: set[str] = set()
    failed_images: dict[str, str] = {}
    total = 0
    for img in images:
        missing = [layer for layer in img.layers if layer not in built]
        if missing:
            why = "; ".join(dict.fromkeys(failed.get(recipes.LAYER_BUILDER[m].name, "not built") for m in missing))
            failed_images[img.repository] = why
            say(f"[{img.repository}] left out: {why}")
            continue
        config = _canonical(_image_config(img, built, history))
        config_digest = _write_blob(blobs_dir, config)
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
            "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": built[layer].digest, "size": built[layer].size}
                       for layer in img.layers],
        }
        manifest_bytes = _canonical(manifest)
        manifest_digest = _write_blob(blobs_dir, manifest_bytes)
        referenced.update([config_digest, manifest_digest, *(built[layer].digest for layer in img.layers)])
        size = sum(built[layer].size for layer in img.layers)
        for tag in img.tags:
            ref = f"{img.repository}:{tag}"
            refs[ref] = manifest_digest
            manifests.append({"mediaType": OCI_MANIFEST, "digest": manifest_digest, "size": len(manifest_bytes),
                              "platform": {"architecture": "amd64", "os": "linux"},
                              "annotations": {REF_NAME: ref}})
        say(f"[{img.repository}] {', '.join(img.tags)}: {manifest_digest[:19]}, {len(img.layers)} layer(s) "
            f"({' + '.join(img.layers)}), {_human(size)}")

    write_atomic(out / "oci-layout", _canonical({"imageLayoutVersion": "1.0.0"}))
    write_atomic(out / "index.json", _canonical({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}))
    removed = 0
    for path in blobs_dir.iterdir():
        if path.is_file() and "sha256:" + path.name not in referenced:
            path.unlink()
            removed += 1
    total = sum((blobs_dir / d.split(":", 1)[1]).stat().st_size for d in referenced)
    all_failed = {**{k: v for k, v in failed.items()}, **failed_images}
    new_state = {"format": FORMAT, "catalog_key": None if all_failed else catalog_key,
                 "builders": new_builders, "images": refs, "blobs": sorted(referenced), "size": total,
                 "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    write_atomic(out / STATE_FILE, json.dumps(new_state, indent=2, sort_keys=True).encode())
    elapsed = time.monotonic() - t_start
    say(f"catalog: {len(images) - len(failed_images)} images, {len(refs)} tags, {len(referenced)} blobs "
        f"({_human(total)}) in {out}; {elapsed:.1f} s" + (f"; removed {removed} unused blobs" if removed else ""))
    if all_failed:
        say(f"catalog: FAILED: {', '.join(sorted(failed_images) or sorted(failed))}")
    return BuildResult(out, False, refs, failed_images or dict(failed), skipped, elapsed)
