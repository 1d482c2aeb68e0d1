"""Microsoft.Compute's read-only catalogues through the real az CLI and SDK: VM sizes
(`az vm list-sizes`, `list-skus`), the image marketplace (`az vm image …`) listing exactly the images
in kumo's VM image directory, and the image alias document az reads for `--image <alias>`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import KumoServer, start_server, stop_server

pytestmark = pytest.mark.e2e

DEBIAN = {"publisher": "Debian", "offer": "debian-12", "sku": "12-gen2", "os": "Linux", "hyperVGeneration": "V2",
          "sizeInBytes": 3 << 30, "alias": "Debian12", "files": {"disk": "disk.qcow2"}}
TINY = {"publisher": "kumo", "offer": "tiny", "sku": "1", "version": "1.0.0", "os": "Linux",
        "hyperVGeneration": "V1", "sizeInBytes": 64 << 20, "alias": "Tiny", "files": {"disk": "disk.raw"}}


@pytest.fixture(scope="module")
def images_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Manifests only: no VM boots here, so the disk files they name are absent."""
    root = tmp_path_factory.mktemp("vm-images")
    for dirname, manifest in (("debian-old", {**DEBIAN, "version": "0.20250101.9"}),
                              ("debian-new", {**DEBIAN, "version": "0.20250101.10"}), ("tiny", TINY)):
        (root / dirname).mkdir()
        (root / dirname / "image.json").write_text(json.dumps(manifest))
    return root


@pytest.fixture(scope="module")
def server(images_dir: Path) -> Iterator[KumoServer]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KUMO_VM_IMAGES_DIR", str(images_dir))  # inherited by the detached server
        srv = start_server()
    try:
        yield srv
    finally:
        stop_server(srv)


@pytest.fixture(scope="module")
def compute(server: KumoServer) -> Iterator[Any]:
    from azure.identity import ClientSecretCredential
    from azure.mgmt.compute import ComputeManagementClient

    ident = server.identity
    cred = ClientSecretCredential(ident["tenant_id"], ident["client_id"], ident["client_secret"],
                                  authority=server.endpoint, disable_instance_discovery=True)
    # this server's CA for the SDK while the module runs; the session's CA again afterwards (its data dir,
    # and so this bundle, is gone then)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("REQUESTS_CA_BUNDLE", server.ca_bundle)
        yield ComputeManagementClient(cred, ident["subscription_id"], base_url=server.endpoint,
                                      credential_scopes=[f"{server.endpoint}/.default"])


def az_error(server: KumoServer, *args: str) -> str:
    proc = server.az(*args, check=False)
    assert proc.returncode != 0, proc.stdout
    return proc.stderr


# -- sizes ------------------------------------------------------------------------------------------

def test_az_vm_list_sizes(server: KumoServer) -> None:
    listed = {s["name"]: s for s in server.az("vm", "list-sizes", "-l", "local")}
    assert {"Standard_B1s", "Standard_B2ms", "Standard_D2s_v3", "Standard_F2s_v2", "Standard_DS1_v2"} <= set(listed)
    assert listed["Standard_B2s"] == {"name": "Standard_B2s", "numberOfCores": 2, "osDiskSizeInMB": 1047552,
                                      "resourceDiskSizeInMB": 8192, "memoryInMB": 4096, "maxDataDiskCount": 4}
    assert "LocationNotAvailableForResourceType" in az_error(server, "vm", "list-sizes", "-l", "atlantis")


def test_az_vm_list_skus(server: KumoServer) -> None:
    skus = server.az("vm", "list-skus", "-l", "local")
    assert len(skus) >= 18 and all(s["resourceType"] == "virtualMachines" and s["locations"] == ["local"]
                                   for s in skus)
    (b1s,) = server.az("vm", "list-skus", "-l", "local", "--size", "Standard_B1s")
    caps = {c["name"]: c["value"] for c in b1s["capabilities"]}
    assert b1s["name"] == "Standard_B1s" and b1s["family"] == "standardBSFamily" and b1s["size"] == "B1s"
    assert caps["vCPUs"] == "1" and caps["MemoryGB"] == "1" and caps["PremiumIO"] == "True"
    table = server.kumo("az", "vm", "list-skus", "-l", "local", "-o", "table").stdout
    assert "Standard_D2s_v3" in table and "None" in table  # the Restrictions column
    assert server.az("vm", "list-skus", "-l", "westeurope") == []  # kumo lists its own location


def test_provider_lists_compute_types(server: KumoServer) -> None:
    types = {t["resourceType"] for t in server.az("provider", "show", "-n", "Microsoft.Compute")["resourceTypes"]}
    assert {"locations/vmSizes", "skus", "locations/publishers"} <= types


# -- the marketplace --------------------------------------------------------------------------------

def test_az_vm_image_levels(server: KumoServer) -> None:
    assert [p["name"] for p in server.az("vm", "image", "list-publishers", "-l", "local")] == ["Debian", "kumo"]
    (offer,) = server.az("vm", "image", "list-offers", "-p", "debian", "-l", "local")
    assert offer["name"] == "debian-12" and offer["location"] == "local"
    (sku,) = server.az("vm", "image", "list-skus", "-p", "Debian", "-f", "debian-12", "-l", "local")
    assert sku["name"] == "12-gen2"
    assert sku["id"] == (f"/Subscriptions/{server.identity['subscription_id']}/Providers/Microsoft.Compute/"
                         "Locations/local/Publishers/Debian/ArtifactTypes/VMImage/Offers/debian-12/Skus/12-gen2")


def test_az_vm_image_list_all_and_show_latest(server: KumoServer) -> None:
    listed = server.az("vm", "image", "list", "--all", "-p", "Debian", "-f", "debian-12", "-l", "local")
    assert sorted(i["urn"] for i in listed) == ["Debian:debian-12:12-gen2:0.20250101.10",
                                                "Debian:debian-12:12-gen2:0.20250101.9"]
    assert all(i["architecture"] == "x64" for i in listed)
    shown = server.az("vm", "image", "show", "--urn", "Debian:debian-12:12-gen2:latest", "-l", "local")
    assert shown["name"] == "0.20250101.10"  # numerically the newest, not lexically
    assert shown["hyperVGeneration"] == "V2" and shown["osDiskImage"]["operatingSystem"] == "Linux"
    assert {"name": "SecurityType", "value": "TrustedLaunchSupported"} in shown["features"]
    tiny = server.az("vm", "image", "show", "--urn", "KUMO:Tiny:1:1.0.0", "-l", "local")
    assert tiny["hyperVGeneration"] == "V1" and tiny["osDiskImage"]["operatingSystem"] == "Linux"


def test_an_image_kumo_lacks_is_an_error_listing_what_it_has(server: KumoServer) -> None:
    err = az_error(server, "vm", "image", "show", "--urn", "Canonical:ubuntu-24_04-lts:server:latest",
                   "-l", "local")
    assert "Debian:debian-12:12-gen2:0.20250101.10" in err and "kumo:tiny:1:1.0.0" in err
    err = az_error(server, "vm", "image", "show", "--urn", "Debian:debian-12:12-gen2:9.9.9", "-l", "local")
    assert "NotFound" in err and "Artifact: VMImage was not found" in err and "(alias Tiny)" in err
    err = az_error(server, "vm", "image", "list-offers", "-p", "Canonical", "-l", "local")
    assert "Publisher: Canonical was not found" in err and "Debian:debian-12" in err


def test_rest_shapes_and_query_options(server: KumoServer) -> None:
    base = (f"/subscriptions/{server.identity['subscription_id']}/providers/Microsoft.Compute/locations/local/"
            "publishers/debian/artifactTypes/VMImage/offers/DEBIAN-12/skus/12-gen2/versions")
    with server.http() as c:
        r = c.get(base, params={"api-version": "2024-11-01", "$top": "1", "$orderby": "name desc",
                                "$expand": "properties"})
        assert r.status_code == 200 and isinstance(r.json(), list), r.text
        (top,) = r.json()
        assert top["name"] == "0.20250101.10" and top["properties"]["osDiskImage"]["sizeInBytes"] == 3 << 30
        plain = c.get(base, params={"api-version": "2024-11-01"}).json()
        assert [v["name"] for v in plain] == ["0.20250101.9", "0.20250101.10"] and "properties" not in plain[0]
        r = c.get(f"{base}/latest", params={"api-version": "2024-11-01"})
        assert r.status_code == 200 and r.json()["name"] == "0.20250101.10"
        r = c.post(base, params={"api-version": "2024-11-01"})
        assert r.status_code == 405 and r.json()["error"]["code"] == "MethodNotAllowed"
        r = c.get(base, params={"api-version": "2024-11-01", "$top": "none"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "InvalidParameter"


def test_sdk_reads_sizes_skus_and_images(compute: Any) -> None:
    assert "Standard_D4s_v5" in [s.name for s in compute.virtual_machine_sizes.list("local")]
    skus = [s for s in compute.resource_skus.list(filter="location eq 'local'") if s.name == "Standard_F4s_v2"]
    assert skus and skus[0].locations == ["local"] and skus[0].family == "standardFSv2Family"
    assert [p.name for p in compute.virtual_machine_images.list_publishers("local")] == ["Debian", "kumo"]
    versions = compute.virtual_machine_images.list("local", "Debian", "debian-12", "12-gen2", top=1,
                                                   orderby="name desc")
    image = compute.virtual_machine_images.get("local", "Debian", "debian-12", "12-gen2", versions[0].name)
    assert image.hyper_v_generation == "V2" and image.os_disk_image.operating_system == "Linux"


# -- the alias document -----------------------------------------------------------------------------

def test_alias_doc_over_https_and_in_cloud_metadata(server: KumoServer) -> None:
    meta = httpx.get(f"{server.endpoint}/metadata/endpoints", params={"api-version": "2022-09-01"},
                     verify=server.tls()).json()
    url = meta["vmImageAliasDoc"]
    assert url == f"{server.endpoint}/kumo/vmImageAliasDoc.json"
    doc = httpx.get(url, verify=server.tls()).json()  # no token: az fetches it with plain requests
    assert doc["outputs"]["aliases"]["value"]["Linux"] == {
        "Debian12": {"publisher": "Debian", "offer": "debian-12", "sku": "12-gen2", "version": "latest",
                     "architecture": "x64"},
        "Tiny": {"publisher": "kumo", "offer": "tiny", "sku": "1", "version": "latest", "architecture": "x64"}}


def test_az_reads_kumos_aliases(server: KumoServer) -> None:
    """`az vm image list` without --all reads the cloud's alias doc: kumo's, not az's built-in list."""
    cloud = server.az("cloud", "show")
    assert cloud["endpoints"]["vmImageAliasDoc"] == f"{server.endpoint}/kumo/vmImageAliasDoc.json"
    assert sorted(i["urnAlias"] for i in server.az("vm", "image", "list")) == ["Debian12", "Tiny"]
