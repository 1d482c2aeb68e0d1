"""Managed disks, snapshots and images for real: each is a qcow2 file in the server's disk store
(`<data dir>/disks/<kind>-<hash>.qcow2`), checked with qemu-img and qemu-io, driven through the real
`az disk`/`az snapshot`/`az image` commands and azure-mgmt-compute. Content written into a disk
survives a snapshot, a copy and an image; deleting a resource (or its group) deletes its file.

The last tests run the providers in-process on a store of their own, for what needs a VM row the
VM code will write (an attached disk, a generalized VM to capture)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError

from kumo.arm.errors import ArmError
from tests.conftest import KumoServer, start_server, stop_server, unique

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not shutil.which("qemu-img") or not shutil.which("qemu-io"),
                                 reason="disks need qemu-img and qemu-io (qemu-utils; scripts/setup.sh installs it)")]

GIB = 1 << 30
DISK_API = {"api-version": "2024-03-02"}
IMAGE_API = {"api-version": "2024-07-01"}
KINDS = {"disks": "disk", "snapshots": "snapshot", "images": "image"}


def file_of(data_dir: Path, resource_id: str) -> Path:
    """Where the disk store keeps a resource's file: named by kind and the resource id's hash."""
    kind = KINDS[resource_id.rstrip("/").split("/")[-2].lower()]
    return data_dir / "disks" / f"{kind}-{hashlib.sha1(resource_id.lower().encode()).hexdigest()[:10]}.qcow2"


def qemu_info(path: Path) -> dict[str, Any]:
    out = subprocess.run(["qemu-img", "info", "-U", "--output=json", str(path)], capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out)


def write_marker(path: Path, pattern: str = "0x5a") -> None:
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"write -P {pattern} 0 1M", str(path)], capture_output=True,
                   check=True)


def has_marker(path: Path, pattern: str = "0x5a") -> bool:
    r = subprocess.run(["qemu-io", "-r", "-U", "-f", "qcow2", "-c", f"read -P {pattern} 0 1M", str(path)],
                       capture_output=True, text=True)
    return r.returncode == 0 and "Pattern verification failed" not in r.stdout + r.stderr


def az_error(kumo: KumoServer, *args: str) -> str:
    proc = kumo.az(*args, check=False)
    assert proc.returncode != 0, proc.stdout
    return proc.stderr


def arm_error(r: Any, status: int, code: str) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    return body["error"]["message"]


def wait_state(kumo: KumoServer, url: str, params: dict[str, str], timeout: float = 60) -> dict[str, Any]:
    with kumo.http() as c:
        deadline = time.monotonic() + timeout
        while True:
            body = c.get(url, params=params).json()
            state = body.get("properties", {}).get("provisioningState")
            if state in ("Succeeded", "Failed") or time.monotonic() > deadline:
                return body
            time.sleep(0.2)


@pytest.fixture(scope="module")
def compute_client(kumo: KumoServer, sdk_credential: Any) -> Any:
    from azure.mgmt.compute import ComputeManagementClient

    return ComputeManagementClient(sdk_credential, kumo.identity["subscription_id"], base_url=kumo.endpoint,
                                   credential_scopes=[f"{kumo.endpoint}/.default"], polling_interval=0.2)


# -- the az CLI: disk, snapshot and image, with content carried through ------------------------------

@pytest.mark.slow  # the az CLI takes about a second a call
def test_az_disk_snapshot_copy_and_image(kumo: KumoServer, rg: str, compute_client: Any) -> None:
    sub = kumo.identity["subscription_id"]
    base = f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute"
    disk = kumo.az("disk", "create", "-g", rg, "-n", "d1", "--size-gb", "2", "--sku", "Standard_LRS",
                   "--tags", "env=test")
    assert disk["id"] == f"{base}/disks/d1" and disk["type"] == "Microsoft.Compute/disks"
    assert disk["provisioningState"] == "Succeeded" and disk["diskState"] == "Unattached"
    assert (disk["diskSizeGB"], disk["diskSizeBytes"]) == (2, 2 * GIB) and disk["tags"] == {"env": "test"}
    assert disk["sku"] == {"name": "Standard_LRS", "tier": "Standard"}
    assert disk["creationData"]["createOption"] == "Empty" and disk["uniqueId"] and disk["timeCreated"]
    assert disk["encryption"]["type"] == "EncryptionAtRestWithPlatformKey"
    assert (disk["networkAccessPolicy"], disk["publicNetworkAccess"]) == ("AllowAll", "Enabled")
    assert disk["diskIOPSReadWrite"] == 500 and disk["diskMBpsReadWrite"] == 60
    d1 = file_of(kumo.data_dir, disk["id"])
    assert qemu_info(d1)["virtual-size"] == 2 * GIB and qemu_info(d1)["format"] == "qcow2"

    assert kumo.az("disk", "show", "-g", rg, "-n", "d1")["uniqueId"] == disk["uniqueId"]
    assert [d["name"] for d in kumo.az("disk", "list", "-g", rg)] == ["d1"]

    grown = kumo.az("disk", "update", "-g", rg, "-n", "d1", "--size-gb", "4")
    assert (grown["diskSizeGB"], grown["diskSizeBytes"], grown["provisioningState"]) == (4, 4 * GIB, "Succeeded")
    assert grown["uniqueId"] == disk["uniqueId"] and qemu_info(d1)["virtual-size"] == 4 * GIB
    err = az_error(kumo, "disk", "update", "-g", rg, "-n", "d1", "--size-gb", "1")
    assert "BadRequest" in err and "Disk size reduction is not supported" in err
    assert qemu_info(d1)["virtual-size"] == 4 * GIB

    write_marker(d1)
    snap = kumo.az("snapshot", "create", "-g", rg, "-n", "s1", "--source", "d1")
    assert snap["type"] == "Microsoft.Compute/snapshots" and snap["provisioningState"] == "Succeeded"
    assert snap["creationData"]["createOption"] == "Copy"
    assert snap["creationData"]["sourceResourceId"].lower() == disk["id"].lower()
    assert snap["creationData"]["sourceUniqueId"] == disk["uniqueId"] and snap["diskSizeGB"] == 4
    s1 = file_of(kumo.data_dir, snap["id"])
    assert "backing-filename" not in qemu_info(s1) and has_marker(s1)  # standalone, with the content
    write_marker(d1, "0x33")  # the disk changes on; the snapshot keeps what it had
    assert has_marker(s1) and not has_marker(s1, "0x33")

    copy = kumo.az("disk", "create", "-g", rg, "-n", "d2", "--source", "s1")
    assert copy["creationData"]["createOption"] == "Copy" and copy["diskSizeGB"] == 4
    assert copy["sku"]["name"] == "Premium_LRS" and copy["tier"] == "P1"  # az's default sku
    d2 = file_of(kumo.data_dir, copy["id"])
    assert has_marker(d2) and "backing-filename" not in qemu_info(d2)

    image = kumo.az("image", "create", "-g", rg, "-n", "img1", "--source", snap["id"], "--os-type", "Linux")
    assert image["type"] == "Microsoft.Compute/images" and image["provisioningState"] == "Succeeded"
    os_disk = image["storageProfile"]["osDisk"]
    assert (os_disk["osType"], os_disk["osState"], os_disk["diskSizeGB"]) == ("Linux", "Generalized", 4)
    assert os_disk["snapshot"]["id"].lower() == snap["id"].lower() and image["hyperVGeneration"] == "V1"
    i1 = file_of(kumo.data_dir, image["id"])
    assert has_marker(i1) and "backing-filename" not in qemu_info(i1)
    assert [i["name"] for i in kumo.az("image", "list", "-g", rg)] == ["img1"]

    # a disk from the managed image (FromImage), through the SDK, grown past the image's size
    from_image = compute_client.disks.begin_create_or_update(rg, "d3", {
        "location": "local", "sku": {"name": "StandardSSD_LRS"},
        "properties": {"creationData": {"createOption": "FromImage", "imageReference": {"id": image["id"]}},
                       "diskSizeGB": 6}}).result()
    assert from_image.provisioning_state == "Succeeded" and from_image.disk_size_gb == 6
    assert from_image.os_type == "Linux" and from_image.sku.tier == "Standard"
    d3 = file_of(kumo.data_dir, from_image.id)
    assert has_marker(d3) and qemu_info(d3)["virtual-size"] == 6 * GIB

    kumo.az("disk", "delete", "-g", rg, "-n", "d1", "--yes")
    assert not d1.exists() and has_marker(s1)  # the snapshot does not depend on its source
    kumo.az("snapshot", "delete", "-g", rg, "-n", "s1")
    kumo.az("image", "delete", "-g", rg, "-n", "img1")
    assert not s1.exists() and not i1.exists() and has_marker(d2) and has_marker(d3)
    assert sorted(d["name"] for d in kumo.az("disk", "list", "-g", rg)) == ["d2", "d3"]
    assert kumo.az("snapshot", "list", "-g", rg) == [] and kumo.az("image", "list", "-g", rg) == []


# -- the SDK and raw REST: shapes, growth, and Azure's errors -----------------------------------------

def test_sdk_disk_grow_snapshot_and_delete(kumo: KumoServer, rg: str, compute_client: Any) -> None:
    cc = compute_client
    disk = cc.disks.begin_create_or_update(rg, "data1", {
        "location": "local", "sku": {"name": "Premium_LRS"},
        "properties": {"creationData": {"createOption": "Empty"}, "diskSizeGB": 2}}).result()
    assert (disk.provisioning_state, disk.disk_size_gb, disk.disk_state) == ("Succeeded", 2, "Unattached")
    assert (disk.sku.name, disk.sku.tier, disk.tier, disk.disk_iops_read_write, disk.disk_m_bps_read_write) == \
        ("Premium_LRS", "Premium", "P1", 120, 25)
    path = file_of(kumo.data_dir, disk.id)
    assert qemu_info(path)["virtual-size"] == 2 * GIB
    assert [d.name for d in cc.disks.list_by_resource_group(rg)] == ["data1"]
    assert disk.id in {d.id for d in cc.disks.list()}

    grown = cc.disks.begin_update(rg, "data1", {"properties": {"diskSizeGB": 8}}).result()
    assert (grown.disk_size_gb, grown.tier, grown.unique_id) == (8, "P2", disk.unique_id)
    assert qemu_info(path)["virtual-size"] == 8 * GIB
    with pytest.raises(HttpResponseError) as e:
        cc.disks.begin_update(rg, "data1", {"properties": {"diskSizeGB": 4}}).result()
    assert (e.value.status_code, e.value.error.code) == (400, "BadRequest")
    assert "Disk size reduction is not supported" in e.value.message

    snap = cc.snapshots.begin_create_or_update(rg, "snap1", {
        "location": "local", "properties": {"creationData": {"createOption": "Copy", "sourceResourceId": disk.id},
                                            "incremental": True}}).result()
    assert (snap.provisioning_state, snap.disk_size_gb, snap.incremental) == ("Succeeded", 8, True)
    assert (snap.sku.name, snap.creation_data.source_unique_id) == ("Standard_LRS", disk.unique_id)
    snap_file = file_of(kumo.data_dir, snap.id)
    assert qemu_info(snap_file)["virtual-size"] == 8 * GIB

    cc.disks.begin_delete(rg, "data1").result()
    assert not path.exists() and snap_file.exists()
    with pytest.raises(HttpResponseError) as e:
        cc.disks.get(rg, "data1")
    assert e.value.status_code == 404
    cc.snapshots.begin_delete(rg, "snap1").result()
    assert not snap_file.exists()


def test_validation_errors_are_arm_400s(kumo: KumoServer, rg: str) -> None:
    sub = kumo.identity["subscription_id"]
    base = f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute"
    empty = {"createOption": "Empty"}
    with kumo.http() as c:
        def put(kind: str, name: str, props: dict[str, Any], **extra: Any) -> Any:
            return c.put(f"{base}/{kind}/{name}", params=IMAGE_API if kind == "images" else DISK_API,
                         json={"location": "local", "properties": props, **extra})

        assert "diskSizeGB" in arm_error(put("disks", "e1", {"creationData": empty}), 400, "InvalidParameter")
        assert "Fast_LRS" in arm_error(put("disks", "e2", {"creationData": empty, "diskSizeGB": 1},
                                           sku={"name": "Fast_LRS"}), 400, "InvalidParameter")
        arm_error(put("snapshots", "e3", {"creationData": empty, "diskSizeGB": 1}, sku={"name": "UltraSSD_LRS"}),
                  400, "InvalidParameter")
        missing = f"{base}/disks/nosuchdisk"
        assert "nosuchdisk" in arm_error(put("disks", "e4", {"creationData": {
            "createOption": "Copy", "sourceResourceId": missing}}), 400, "InvalidParameter")
        assert "nosuchdisk" in arm_error(put("snapshots", "e5", {"creationData": {
            "createOption": "Copy", "sourceResourceId": missing}}), 400, "InvalidParameter")
        for option in ("Import", "Upload", "Attach", "Restore"):
            msg = arm_error(put("disks", "e6", {"creationData": {"createOption": option}, "diskSizeGB": 1}), 400,
                            "OperationNotAllowed")
            assert option in msg
        assert "createOption" in arm_error(put("disks", "e7", {"creationData": {"createOption": "Sideways"}}), 400,
                                           "InvalidParameter")
        assert "32767" in arm_error(put("disks", "e8", {"creationData": empty, "diskSizeGB": 99999}), 400,
                                    "InvalidParameter")
        arm_error(put("disks", "bad name!", {"creationData": empty, "diskSizeGB": 1}), 400, "InvalidResourceName")
        arm_error(put("disks", "e9", {"creationData": {"createOption": "FromImage", "imageReference": {
            "id": f"/Subscriptions/{sub}/Providers/Microsoft.Compute/Locations/local/Publishers/nobody/ArtifactTypes/"
                  "VMImage/Offers/none/Skus/none/Versions/1.0.0"}}}), 404, "PlatformImageNotFound")
        assert "osType" in arm_error(put("images", "i1", {"storageProfile": {"osDisk": {
            "snapshot": {"id": f"{base}/snapshots/s"}}}}), 400, "InvalidParameter")
        assert "nosuchsnap" in arm_error(put("images", "i2", {"storageProfile": {"osDisk": {
            "osType": "Linux", "snapshot": {"id": f"{base}/snapshots/nosuchsnap"}}}}), 400, "InvalidParameter")
        assert "virtualmachines/novm" in arm_error(put("images", "i3", {"sourceVirtualMachine": {
            "id": f"{base}/virtualMachines/novm"}}), 400, "InvalidParameter").lower()
        arm_error(put("images", "i4", {"storageProfile": {"osDisk": {"osType": "Linux", "blobUri": "https://x/y"}}}),
                  400, "OperationNotAllowed")
        # nothing was stored, nothing written
        assert c.get(f"{base}/disks", params=DISK_API).json()["value"] == []
        assert c.get(f"{base}/images", params=IMAGE_API).json()["value"] == []


def test_deleting_the_group_removes_every_file(kumo: KumoServer, resource_client: Any) -> None:
    group = unique("rg")
    resource_client.resource_groups.create_or_update(group, {"location": "local"})
    sub = kumo.identity["subscription_id"]
    base = f"/subscriptions/{sub}/resourceGroups/{group}/providers/Microsoft.Compute"
    try:
        with kumo.http() as c:
            r = c.put(f"{base}/disks/d", params=DISK_API, json={"location": "local", "properties": {
                "creationData": {"createOption": "Empty"}, "diskSizeGB": 1}})
            assert r.status_code == 202 and "Azure-AsyncOperation" in r.headers, r.text
            assert wait_state(kumo, f"{base}/disks/d", DISK_API)["properties"]["provisioningState"] == "Succeeded"
            r = c.put(f"{base}/snapshots/s", params=DISK_API, json={"location": "local", "properties": {
                "creationData": {"createOption": "Copy", "sourceResourceId": f"{base}/disks/d"}}})
            assert r.status_code == 202, r.text
            r = c.put(f"{base}/images/i", params=IMAGE_API, json={"location": "local", "properties": {
                "storageProfile": {"osDisk": {"osType": "Linux", "managedDisk": {"id": f"{base}/disks/d"}}}}})
            assert r.status_code == 201, r.text
            for kind, params in (("snapshots", DISK_API), ("images", IMAGE_API)):
                body = wait_state(kumo, f"{base}/{kind}/{kind[0]}", params)
                assert body["properties"]["provisioningState"] == "Succeeded", body
        files = [file_of(kumo.data_dir, f"{base}/{kind}/{kind[0]}") for kind in ("disks", "snapshots", "images")]
        assert all(f.exists() for f in files)
    finally:
        resource_client.resource_groups.begin_delete(group).result()
    assert not any(f.exists() for f in files)


def test_restart_keeps_disk_files_and_sweeps_orphans() -> None:
    server = start_server()
    try:
        sub = server.identity["subscription_id"]
        with server.http() as c:
            assert c.put(f"/subscriptions/{sub}/resourcegroups/rgr", params={"api-version": "2024-11-01"},
                         json={"location": "local"}).status_code == 201
            disk_url = f"/subscriptions/{sub}/resourceGroups/rgr/providers/Microsoft.Compute/disks/kept"
            r = c.put(disk_url, params=DISK_API, json={"location": "local", "properties": {
                "creationData": {"createOption": "Empty"}, "diskSizeGB": 1}})
            assert r.status_code == 202, r.text
        assert wait_state(server, disk_url, DISK_API)["properties"]["provisioningState"] == "Succeeded"
        kept = file_of(server.data_dir, r.json()["id"])
        write_marker(kept)
        server.stop()
        strays = [server.data_dir / "disks" / "disk-deadbeef00.qcow2", server.data_dir / "disks" / ".tmp-1-x.qcow2"]
        for f in strays:
            f.write_bytes(b"left by a crash")
        server.start()
        assert has_marker(kept) and not any(f.exists() for f in strays)
        assert wait_state(server, disk_url, DISK_API)["properties"]["diskSizeGB"] == 1
    finally:
        stop_server(server)


# -- in-process: what needs VM rows (attachment, capture), the VM code's helper, the orphan sweep ----

SUB = "00000000-0000-0000-0000-0000000000d1"


@pytest.fixture
async def services(tmp_path: Path) -> AsyncIterator[Any]:
    """The providers, lifecycle and disk controller on a store of their own (no HTTP, no network)."""
    from kumo.arm.context import Services
    from kumo.arm.ids import resource_group_id, resource_group_key
    from kumo.arm.lro import Operations
    from kumo.compute.marketplace import ImageCatalog
    from kumo.controllers.disks import DiskController, catalog_resolver
    from kumo.providers import lifecycle
    from kumo.providers.base import ProviderRegistry
    from kumo.providers.compute import disks, images, snapshots
    from kumo.store import Resource, Store

    # a marketplace of one image with a 2 GiB disk, its first MiB 0x42
    base = tmp_path / "vm-images" / "base"
    base.mkdir(parents=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base / "disk.qcow2"), "2G"], check=True)
    write_marker(base / "disk.qcow2", "0x42")
    (base / "image.json").write_text(json.dumps({
        "publisher": "test", "offer": "base", "sku": "1", "version": "1.0.0", "os": "Linux",
        "hyperVGeneration": "V1", "sizeInBytes": 2 * GIB, "files": {"disk": "disk.qcow2"}}))
    resolver = catalog_resolver(ImageCatalog(tmp_path / "vm-images"))

    store = await Store.open(None, tmp_path / "kumo.db")
    registry = ProviderRegistry()
    for handler in (disks.Disks(resolver), snapshots.Snapshots(resolver), images.Images()):
        registry.add(handler)
    operations = Operations()
    svc = Services(settings=None, store=store, operations=operations, providers=registry,  # type: ignore[arg-type]
                   auth=None, identity=None, network=None, containers=None, vms=None,  # type: ignore[arg-type]
                   disks=DiskController(store, tmp_path, resolver))
    operations.services = svc
    lifecycle.register_operations(svc)
    rg_id = resource_group_id(SUB, "rg")
    async with store.write() as tx:
        await tx.put_resource(Resource(key=resource_group_key(SUB, "rg"), id=rg_id, subscription_id=SUB,
                                       resource_group="rg", type="microsoft.resources/resourcegroups", name="rg",
                                       body={"id": rg_id, "name": "rg", "location": "local", "properties": {}},
                                       location="local"))
    try:
        yield svc
    finally:
        await operations.drain()
        await store.close()


def _rid(kind: str, name: str) -> Any:
    from kumo.arm.ids import ResourceId

    return ResourceId(SUB, "rg", "Microsoft.Compute", (kind,), (name,))


async def _put(svc: Any, kind: str, name: str, props: dict[str, Any]) -> Any:
    """PUT as the REST API does, and wait for the operation: the stored resource."""
    from kumo.providers import lifecycle

    handler = svc.providers.handler(f"Microsoft.Compute/{kind}")
    rid = _rid(kind, name)
    _r, _new, op = await lifecycle.apply_desired(svc, rid, handler, {"location": "local", "properties": props},
                                                 "test")
    done = await svc.operations.wait(op.id)
    assert done.status == "Succeeded", done.error
    async with svc.store.read() as tx:
        return await tx.get_resource(rid.key)


async def test_attached_disk_and_capture_from_a_generalized_vm(services: Any, tmp_path: Path) -> None:
    from kumo.providers import lifecycle
    from kumo.providers.compute.disks import attach_disk, detach_disk
    from kumo.store import Resource

    svc = services
    os_disk = await svc.disks.create_disk(svc, _rid("disks", "vm1_OsDisk_1"), {
        "location": "local", "properties": {"creationData": {"createOption": "Empty"}, "diskSizeGB": 1,
                                            "osType": "Linux"}}, "OS disk of vm1")
    assert os_disk.provisioning_state == "Succeeded"
    write_marker(svc.disks.path_of(os_disk.key), "0x7e")
    vm_rid = _rid("virtualMachines", "vm1")
    vm_body = {"id": str(vm_rid), "name": "vm1", "type": "Microsoft.Compute/virtualMachines", "location": "local",
               "properties": {"storageProfile": {"osDisk": {"osType": "Linux", "caching": "ReadWrite",
                                                            "managedDisk": {"id": os_disk.id}}}},
               "kumo": {"power": "running"}}
    async with svc.store.write() as tx:  # what the VM code stores, and how it attaches its disk
        await tx.put_resource(Resource(key=vm_rid.key, id=str(vm_rid), subscription_id=SUB, resource_group="rg",
                                       type="microsoft.compute/virtualmachines", name="vm1", body=vm_body,
                                       location="local"))
        await attach_disk(tx, os_disk.id, str(vm_rid))
    async with svc.store.read() as tx:
        disk = await tx.get_resource(os_disk.key)
    assert disk.body["managedBy"] == str(vm_rid) and disk.body["properties"]["diskState"] == "Attached"

    disks_handler = svc.providers.handler("Microsoft.Compute/disks")
    async with svc.store.read() as tx:
        with pytest.raises(ArmError) as e:
            await disks_handler.check_delete(tx, disk)
    assert (e.value.status, e.value.code) == (409, "OperationNotAllowed")
    assert e.value.message == f"Disk vm1_OsDisk_1 is attached to VM {vm_rid}."
    with pytest.raises(ArmError) as e:  # another VM cannot take it
        async with svc.store.write() as tx:
            await attach_disk(tx, os_disk.id, str(_rid("virtualMachines", "vm2")))
    assert (e.value.status, e.value.code) == (409, "OperationNotAllowed")
    with pytest.raises(ArmError) as e:  # nor can it grow under a running VM
        await lifecycle.apply_desired(svc, _rid("disks", "vm1_OsDisk_1"), disks_handler, {
            "location": "local", "properties": {"creationData": {"createOption": "Empty"}, "diskSizeGB": 2}}, "t")
    assert (e.value.status, e.value.code) == (409, "OperationNotAllowed")

    with pytest.raises(ArmError) as e:  # capture needs a generalized VM
        await _put(svc, "images", "img", {"sourceVirtualMachine": {"id": str(vm_rid)}})
    assert (e.value.status, e.value.code) == (409, "OperationNotAllowed") and "not generalized" in e.value.message
    async with svc.store.write() as tx:
        vm = await tx.get_resource(vm_rid.key)
        vm.body["kumo"]["generalized"] = True
        await tx.put_resource(vm)
    image = await _put(svc, "images", "img", {"sourceVirtualMachine": {"id": str(vm_rid)}})
    os_ref = image.body["properties"]["storageProfile"]["osDisk"]
    assert os_ref["managedDisk"]["id"] == os_disk.id and os_ref["osState"] == "Generalized"
    assert os_ref["diskSizeGB"] == 1 and image.body["properties"]["sourceVirtualMachine"]["id"] == str(vm_rid)
    assert has_marker(svc.disks.path_of(image.key), "0x7e")

    async with svc.store.write() as tx:  # detached: deletable again
        await detach_disk(tx, os_disk.id, str(vm_rid))
        disk = await tx.get_resource(os_disk.key)
        assert "managedBy" not in disk.body and disk.body["properties"]["diskState"] == "Unattached"
        await disks_handler.check_delete(tx, disk)
    await lifecycle.delete_tree(svc, disk)
    assert not svc.disks.path_of(os_disk.key).exists() and svc.disks.path_of(image.key).exists()


async def test_orphan_sweep_keeps_only_files_resources_explain(services: Any, tmp_path: Path) -> None:
    svc = services
    disk = await _put(svc, "disks", "keep", {"creationData": {"createOption": "Empty"}, "diskSizeGB": 1})
    kept = svc.disks.path_of(disk.key)
    stray = [tmp_path / "disks" / "disk-0123456789.qcow2", tmp_path / "disks" / ".tmp-abcd-disk-x.qcow2"]
    for f in stray:
        f.write_bytes(b"x")
    await svc.disks.start()
    assert kept.exists() and not any(f.exists() for f in stray)


async def test_disk_from_a_marketplace_image_is_an_overlay(services: Any, tmp_path: Path) -> None:
    svc = services
    image_id = (f"/Subscriptions/{SUB}/Providers/Microsoft.Compute/Locations/local/Publishers/test/ArtifactTypes/"
                "VMImage/Offers/base/Skus/1/Versions/1.0.0")
    from_image = {"createOption": "FromImage", "imageReference": {"id": image_id}}
    disk = await _put(svc, "disks", "os1", {"creationData": from_image, "diskSizeGB": 3})
    props = disk.body["properties"]
    assert (props["diskSizeGB"], props["osType"], props["hyperVGeneration"]) == (3, "Linux", "V1")
    path = svc.disks.path_of(disk.key)
    info = qemu_info(path)
    assert info["virtual-size"] == 3 * GIB and info["full-backing-filename"] == str(tmp_path / "vm-images" / "base" /
                                                                                     "disk.qcow2")
    assert has_marker(path, "0x42")
    default = await _put(svc, "disks", "os2", {"creationData": from_image})
    assert default.body["properties"]["diskSizeGB"] == 2  # the image's own size
    with pytest.raises(ArmError) as e:
        await _put(svc, "disks", "os3", {"creationData": from_image, "diskSizeGB": 1})
    assert (e.value.status, e.value.code) == (400, "InvalidParameter") and "smaller" in e.value.message


def test_disk_from_the_tiny_marketplace_image(kumo: KumoServer, rg: str, compute_client: Any) -> None:
    """The tiny image boots from kernel and initrd alone: a disk made from it starts blank."""
    from kumo.compute.marketplace import ImageCatalog
    from kumo.config import default_vm_images_dir

    tiny = ImageCatalog(default_vm_images_dir()).find("kumo", "tiny", "1", "latest")
    if tiny is None:
        pytest.skip("the tiny VM image is not built (kumo vm-images build)")
    sub = kumo.identity["subscription_id"]
    image_id = (f"/Subscriptions/{sub}/Providers/Microsoft.Compute/Locations/local/Publishers/kumo/ArtifactTypes/"
                f"VMImage/Offers/tiny/Skus/1/Versions/{tiny.version}")
    disk = compute_client.disks.begin_create_or_update(rg, "tinyos", {"location": "local", "properties": {
        "creationData": {"createOption": "FromImage", "imageReference": {"id": image_id}}}}).result()
    assert (disk.provisioning_state, disk.os_type, disk.hyper_v_generation) == ("Succeeded", "Linux", "V2")
    assert disk.disk_size_gb >= 1 and disk.creation_data.image_reference.id == image_id
    assert qemu_info(file_of(kumo.data_dir, disk.id))["virtual-size"] == disk.disk_size_gb * GIB
