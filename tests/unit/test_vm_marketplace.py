"""The image catalogue: manifests in a directory, nothing invented, bad manifests skipped."""

from __future__ import annotations

import json
from pathlib import Path

from kumo.compute.marketplace import ImageCatalog, version_key


def write(root: Path, dirname: str, manifest: object) -> None:
    (root / dirname).mkdir(parents=True)
    (root / dirname / "image.json").write_text(json.dumps(manifest))


def image(version: str, **kw: object) -> dict[str, object]:
    return {"publisher": "Debian", "offer": "debian-12", "sku": "12-gen2", "version": version, "os": "Linux",
            "hyperVGeneration": "V2", "sizeInBytes": 2 << 30, "alias": "Debian12", "files": {"disk": "disk.qcow2"},
            **kw}


def test_an_empty_or_missing_directory_is_an_empty_marketplace(tmp_path: Path) -> None:
    assert ImageCatalog(tmp_path).images() == []
    assert ImageCatalog(tmp_path / "absent").publishers() == []
    assert "no VM images" in ImageCatalog(tmp_path).describe()


def test_levels_lookups_and_latest(tmp_path: Path) -> None:
    write(tmp_path, "debian-a", image("0.20250101.9"))
    write(tmp_path, "debian-b", image("0.20250101.10"))
    write(tmp_path, "tiny", {"publisher": "kumo", "offer": "tiny", "sku": "1", "version": "1.0.0", "alias": "Tiny",
                             "hyperVGeneration": "V1"})
    cat = ImageCatalog(tmp_path)
    assert cat.publishers() == ["Debian", "kumo"]
    assert cat.offers("DEBIAN") == ["debian-12"] and cat.skus("debian", "DEBIAN-12") == ["12-gen2"]
    assert [i.version for i in cat.versions("Debian", "debian-12", "12-gen2")] == ["0.20250101.9", "0.20250101.10"]
    assert cat.find("debian", "debian-12", "12-GEN2", "latest").version == "0.20250101.10"
    assert cat.find("Debian", "debian-12", "12-gen2", "0.20250101.9").file("disk") == tmp_path / "debian-a/disk.qcow2"
    assert cat.find("Debian", "debian-12", "12-gen2", "9.9.9") is None and cat.offers("Canonical") == []
    aliases = cat.aliases()
    assert aliases["Debian12"].version == "0.20250101.10" and aliases["Tiny"].hyperv_generation == "V1"
    assert aliases["Debian12"].security_type == "TrustedLaunchSupported" and aliases["Tiny"].security_type is None
    assert "Debian:debian-12:12-gen2:0.20250101.10 (alias Debian12)" in cat.describe()


def test_bad_manifests_are_skipped_and_changes_are_seen(tmp_path: Path) -> None:
    write(tmp_path, "broken", {"publisher": "x"})
    (tmp_path / "notjson").mkdir()
    (tmp_path / "notjson" / "image.json").write_text("{")
    cat = ImageCatalog(tmp_path)
    assert cat.images() == []
    write(tmp_path, "debian", image("1.0.0"))
    assert [i.urn for i in cat.images()] == ["Debian:debian-12:12-gen2:1.0.0"]


def test_versions_order_numerically() -> None:
    assert version_key("1.10.0") > version_key("1.9.3") > version_key("1.9")
