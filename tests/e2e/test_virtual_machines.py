"""Virtual machines for real: the tiny image booted by QEMU on a tap of the VM's NIC inside its VNet's
namespace, reached by SSH through its public IP (loopback 127.78.x.y on the test host), driven through
azure-mgmt-compute and the real `az vm` commands. After each delete no QEMU process, tap or state dir
of the VM remains."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError

from kumo.compute.marketplace import ImageCatalog
from kumo.config import default_vm_images_dir
from tests.conftest import KumoServer
from tests.vmlib import qemu_pids

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("qemu-system-x86_64") or not shutil.which("nft"),
                                 reason="VMs need root, nftables and qemu-system-x86 (scripts/setup.sh installs them)"),
              pytest.mark.skipif(ImageCatalog(default_vm_images_dir()).find("kumo", "tiny", "1", "latest") is None,
                                 reason="the tiny VM image is not built (kumo vm-images build)")]

API = {"api-version": "2024-11-01"}
SSH_OPTS = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
            "-o", "BatchMode=yes", "-o", "ConnectTimeout=3"]
TINY = {"publisher": "kumo", "offer": "tiny", "sku": "1", "version": "latest"}


def _h(key: str) -> str:
    return hashlib.sha1(key.lower().encode()).hexdigest()[:10]


def _site(kumo: KumoServer) -> int:
    return int(json.loads((kumo.data_dir / "run.json").read_text())["network_site"])


def _qemu_pid(vid: str) -> int | None:
    return next(iter(qemu_pids(vid)), None)


def _qemu_running(vid: str) -> bool:
    return _qemu_pid(vid) is not None


def _host_objects(kumo: KumoServer, vm_id: str, nic_id: str, vnet_id: str) -> dict[str, bool]:
    site = _site(kumo)
    vid = f"kumo{site}v-{_h(vm_id)}"
    netns = f"kumo{site}-v{_h(vnet_id)}"
    tap = subprocess.run(["ip", "-n", netns, "link", "show", f"t{_h(nic_id)}"], capture_output=True).returncode == 0
    return {"qemu": _qemu_running(vid), "tap": tap, "state": (kumo.data_dir / "vms" / vid).exists()}


def ssh(key: Path, target: str, command: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ssh", *SSH_OPTS, "-i", str(key), target, command], capture_output=True, text=True,
                          timeout=timeout)


def wait_ssh(key: Path, target: str, timeout: float) -> float:
    t0 = time.monotonic()
    while True:
        r = ssh(key, target, "true")
        if r.returncode == 0:
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"no SSH to {target} within {timeout}s: {r.stderr.strip()}")
        time.sleep(0.2)


def power_state(view: Any) -> str:
    statuses = view["statuses"] if isinstance(view, dict) else [s.as_dict() for s in view.statuses]
    return next(s["code"] for s in statuses if s["code"].startswith("PowerState/"))


@pytest.fixture(scope="module")
def compute_client(kumo: KumoServer, sdk_credential: Any) -> Any:
    from azure.mgmt.compute import ComputeManagementClient

    return ComputeManagementClient(sdk_credential, kumo.identity["subscription_id"], base_url=kumo.endpoint,
                                   credential_scopes=[f"{kumo.endpoint}/.default"], polling_interval=0.2)


def _network(net: Any, rg: str) -> tuple[Any, Any, Any]:
    vnet = net.virtual_networks.begin_create_or_update(rg, "vnet", {
        "location": "local", "properties": {"addressSpace": {"addressPrefixes": ["10.1.0.0/16"]},
                                            "subnets": [{"name": "default",
                                                         "properties": {"addressPrefix": "10.1.0.0/24"}}]}}).result()
    pip = net.public_ip_addresses.begin_create_or_update(rg, "pip", {
        "location": "local", "sku": {"name": "Standard"},
        "properties": {"publicIPAllocationMethod": "Static"}}).result()
    nic = net.network_interfaces.begin_create_or_update(rg, "nic", {
        "location": "local", "properties": {"ipConfigurations": [{"name": "ipconfig1", "properties": {
            "subnet": {"id": vnet.subnets[0].id}, "publicIPAddress": {"id": pip.id}}}]}}).result()
    return vnet, pip, nic


def _vm_body(nic_id: str, key: Path, size: str = "Standard_B1s", **image: str) -> dict[str, Any]:
    return {"location": "local", "properties": {
        "hardwareProfile": {"vmSize": size},
        "storageProfile": {"imageReference": {**TINY, **image}, "osDisk": {
            "createOption": "FromImage", "managedDisk": {"storageAccountType": "Premium_LRS"}}},
        "osProfile": {"computerName": "vm1", "adminUsername": "azureuser", "linuxConfiguration": {
            "disablePasswordAuthentication": True,
            "ssh": {"publicKeys": [{"path": "/home/azureuser/.ssh/authorized_keys",
                                    "keyData": key.with_suffix(".pub").read_text().strip()}]}}},
        "networkProfile": {"networkInterfaces": [{"id": nic_id, "properties": {"primary": True}}]},
        "securityProfile": {"securityType": "TrustedLaunch",
                            "uefiSettings": {"secureBootEnabled": True, "vTpmEnabled": True}}}}


def test_validation_errors(kumo: KumoServer, rg: str, network_client: Any, ssh_key: Path) -> None:
    """Azure's errors for what cannot be: an unknown size or image, and what kumo cannot do yet."""
    _vnet, _pip, nic = _network(network_client, rg)
    url = f"/subscriptions/{kumo.identity['subscription_id']}/resourceGroups/{rg}/providers/Microsoft.Compute/" \
          "virtualMachines/bad"
    with kumo.http() as c:
        r = c.put(url, params=API, json=_vm_body(nic.id, ssh_key, size="Standard_Z99"))
        assert r.status_code == 400 and r.json()["error"]["code"] == "InvalidParameter", r.text
        assert "Standard_B1s" in r.json()["error"]["message"]
        r = c.put(url, params=API, json=_vm_body(nic.id, ssh_key, publisher="Canonical", offer="nope", sku="1"))
        assert r.status_code == 404 and r.json()["error"]["code"] == "PlatformImageNotFound", r.text
        assert "kumo:tiny:1:1.0.0" in r.json()["error"]["message"]
        body = _vm_body(nic.id, ssh_key)
        body["properties"]["storageProfile"]["dataDisks"] = [{"lun": 0, "createOption": "FromImage"}]
        r = c.put(url, params=API, json=body)
        assert r.status_code == 400 and r.json()["error"]["target"] == "storageProfile.dataDisks[0].createOption", \
            r.text
        body = _vm_body(nic.id, ssh_key)
        body["properties"]["storageProfile"]["dataDisks"] = [{"lun": 0, "createOption": "Attach", "managedDisk": {
            "id": nic.id.split("/providers/")[0] + "/providers/Microsoft.Compute/disks/nodisk"}}]
        r = c.put(url, params=API, json=body)
        assert r.status_code == 404 and "nodisk" in r.json()["error"]["message"], r.text
        body = _vm_body(nic.id, ssh_key)
        body["properties"]["osProfile"]["customData"] = "ZWNobyBoaQ=="
        r = c.put(url, params=API, json=body)
        assert r.status_code == 400 and r.json()["error"]["target"] == "osProfile.customData", r.text
        body = _vm_body(nic.id, ssh_key)
        body["properties"]["osProfile"]["windowsConfiguration"] = {"provisionVMAgent": True}
        r = c.put(url, params=API, json=body)
        assert r.status_code == 400 and "Windows" in r.json()["error"]["message"], r.text
        body = _vm_body(nic.id, ssh_key)
        body["properties"]["osProfile"]["adminPassword"] = "Secret-Passw0rd!"
        body["properties"]["osProfile"]["linuxConfiguration"]["disablePasswordAuthentication"] = False
        r = c.put(url, params=API, json=body)
        assert r.status_code == 400 and r.json()["error"]["target"] == "osProfile.adminPassword", r.text
        assert c.get(url, params=API).status_code == 404


@pytest.mark.slow
def test_delete_options(kumo: KumoServer, rg: str, network_client: Any, compute_client: Any, ssh_key: Path) -> None:
    """deleteOption Delete takes the NIC, its public IP and the disks with the VM; Detach leaves them."""
    _vnet, pip, nic = _network(network_client, rg)
    network_client.public_ip_addresses.begin_create_or_update(rg, "pip", {
        "location": "local", "sku": {"name": "Standard"},
        "properties": {"publicIPAllocationMethod": "Static", "deleteOption": "Delete"}}).result()
    body = _vm_body(nic.id, ssh_key)
    body["properties"]["networkProfile"]["networkInterfaces"][0]["properties"]["deleteOption"] = "Delete"
    body["properties"]["storageProfile"]["osDisk"]["deleteOption"] = "Delete"
    body["properties"]["storageProfile"]["dataDisks"] = [
        {"lun": 0, "createOption": "Empty", "diskSizeGB": 1, "deleteOption": "Detach"},
        {"lun": 1, "createOption": "Empty", "diskSizeGB": 1, "deleteOption": "Delete"}]
    vm = compute_client.virtual_machines.begin_create_or_update(rg, "vm1", body).result()
    disks = {d.lun: d.managed_disk.id for d in vm.storage_profile.data_disks}
    os_disk = vm.storage_profile.os_disk.managed_disk.id
    assert {d.name for d in compute_client.disks.list_by_resource_group(rg)} == \
        {vm.storage_profile.os_disk.name, *(d.name for d in vm.storage_profile.data_disks)}
    compute_client.virtual_machines.begin_delete(rg, "vm1").result()
    left = {d.id.lower(): d for d in compute_client.disks.list_by_resource_group(rg)}
    assert set(left) == {disks[0].lower()} and left[disks[0].lower()].disk_state == "Unattached"
    assert os_disk.lower() not in left
    assert [n.name for n in network_client.network_interfaces.list(rg)] == []
    assert [p.name for p in network_client.public_ip_addresses.list(rg)] == []
    assert not (kumo.data_dir / "disks" / f"disk-{_h(disks[1])}.qcow2").exists()
    assert (kumo.data_dir / "disks" / f"disk-{_h(disks[0])}.qcow2").exists()


@pytest.mark.slow
def test_sdk_vm_lifecycle(kumo: KumoServer, rg: str, network_client: Any, compute_client: Any,
                          ssh_key: Path) -> None:
    vnet, pip, nic = _network(network_client, rg)
    t0 = time.monotonic()
    poller = compute_client.virtual_machines.begin_create_or_update(rg, "vm1", _vm_body(nic.id, ssh_key))
    vm = poller.result()
    provisioned = time.monotonic() - t0
    assert vm.provisioning_state == "Succeeded" and vm.vm_id and vm.time_created
    assert vm.os_profile.admin_password is None
    target = f"azureuser@{pip.ip_address}"
    to_ssh = wait_ssh(ssh_key, target, 30) + provisioned
    r = ssh(ssh_key, target, "hostname; id -un; ip -4 -o addr show dev eth0")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "vm1" and lines[1] == "azureuser" and "10.1.0.4/24" in lines[2]
    assert ssh(ssh_key, f"root@{pip.ip_address}", "true").returncode == 0  # the tiny image: root has the keys too

    view = compute_client.virtual_machines.instance_view(rg, "vm1")
    assert power_state(view) == "PowerState/running"
    assert view.vm_agent.statuses[0].display_status == "Ready" and view.computer_name == "vm1"
    codes = [s.code for s in view.statuses]
    assert codes[0] == "ProvisioningState/succeeded" and any(c.startswith("Accelerator/") for c in codes)
    expanded = compute_client.virtual_machines.get(rg, "vm1", expand="instanceView")
    assert power_state(expanded.instance_view) == "PowerState/running"
    assert compute_client.virtual_machines.get(rg, "vm1").instance_view is None
    assert [v.name for v in compute_client.virtual_machines.list(rg)] == ["vm1"]
    assert "vm1" in [v.name for v in compute_client.virtual_machines.list_all()]
    nic_now = network_client.network_interfaces.get(rg, "nic")
    assert nic_now.virtual_machine.id.lower() == vm.id.lower()
    assert _host_objects(kumo, vm.id, nic.id, vnet.id) == {"qemu": True, "tap": True, "state": True}
    sizes = [s.name for s in compute_client.virtual_machines.list_available_sizes(rg, "vm1")]
    assert "Standard_B1s" in sizes and "Standard_B2s" in sizes

    # run command: the script runs as root in the guest (through the guest agent), parameters as $1…
    result = compute_client.virtual_machines.begin_run_command(rg, "vm1", {
        "commandId": "RunShellScript", "script": ['echo "$1 from $(hostname) as $(id -un) $GREETING"', "echo e >&2"],
        "parameters": [{"name": "arg1", "value": "hi"}, {"name": "GREETING", "value": "x y"}]}).result()
    assert result.value[0].code == "ProvisioningState/succeeded", result.value[0].message
    assert "[stdout]\nhi from vm1 as root x y\n" in result.value[0].message
    assert "[stderr]\ne\n" in result.value[0].message
    failed = compute_client.virtual_machines.begin_run_command(rg, "vm1", {
        "commandId": "RunShellScript", "script": ["exit 3"]}).result()
    assert "exit status=3" in failed.value[0].message and failed.value[0].code == "ProvisioningState/failed"
    with pytest.raises(HttpResponseError) as err:
        compute_client.virtual_machines.begin_run_command(rg, "vm1", {"commandId": "RunPowerShellScript"})
    assert err.value.status_code == 400 and "not supported for os type Linux" in str(err.value)
    listed = list(compute_client.virtual_machines.list_all(status_only="true"))
    assert power_state(next(v for v in listed if v.name == "vm1").instance_view) == "PowerState/running"

    updated = compute_client.virtual_machines.begin_update(rg, "vm1", {"tags": {"env": "test"}}).result()
    assert updated.tags == {"env": "test"}

    compute_client.virtual_machines.begin_power_off(rg, "vm1").result()
    assert power_state(compute_client.virtual_machines.instance_view(rg, "vm1")) == "PowerState/stopped"
    assert ssh(ssh_key, target, "true", timeout=10).returncode != 0
    assert _host_objects(kumo, vm.id, nic.id, vnet.id) == {"qemu": False, "tap": True, "state": True}

    compute_client.virtual_machines.begin_start(rg, "vm1").result()
    assert power_state(compute_client.virtual_machines.instance_view(rg, "vm1")) == "PowerState/running"
    wait_ssh(ssh_key, target, 30)

    # resize a running VM as `az vm resize` does: the whole object PUT back (read-only fields included);
    # the guest restarts with the new size
    current = compute_client.virtual_machines.get(rg, "vm1", expand="instanceView")
    current.hardware_profile.vm_size = "Standard_B1ms"
    resized = compute_client.virtual_machines.begin_create_or_update(rg, "vm1", current).result()
    assert resized.hardware_profile.vm_size == "Standard_B1ms" and resized.vm_id == vm.vm_id
    wait_ssh(ssh_key, target, 30)
    r = ssh(ssh_key, target, "grep MemTotal /proc/meminfo")
    assert r.returncode == 0 and int(r.stdout.split()[1]) > 1500 * 1024, r.stdout  # 2 GiB now

    compute_client.virtual_machines.begin_delete(rg, "vm1").result()
    assert _host_objects(kumo, vm.id, nic.id, vnet.id) == {"qemu": False, "tap": False, "state": False}
    assert network_client.network_interfaces.get(rg, "nic").virtual_machine is None
    print(f"\nSDK: PUT -> Succeeded {provisioned:.2f}s, PUT -> SSH answering {to_ssh:.2f}s")


@pytest.mark.slow
def test_az_vm_commands(kumo: KumoServer, rg: str, ssh_key: Path) -> None:
    t0 = time.monotonic()
    out = kumo.az("vm", "create", "-g", rg, "-n", "vm1", "--image", "Tiny", "--size", "Standard_B1s",
                  "--ssh-key-values", str(ssh_key.with_suffix(".pub")), "--admin-username", "azureuser")
    created = time.monotonic() - t0
    assert out["powerState"] == "VM running" and out["publicIpAddress"].startswith("127.78."), out
    target = f"azureuser@{out['publicIpAddress']}"
    to_ssh = wait_ssh(ssh_key, target, 30) + created
    r = ssh(ssh_key, target, "hostname")
    assert r.returncode == 0 and r.stdout.strip() == "vm1", r.stderr
    invoked = kumo.az("vm", "run-command", "invoke", "-g", rg, "-n", "vm1", "--command-id", "RunShellScript",
                      "--scripts", 'echo "$1-$(hostname)"', "--parameters", "hello")
    assert "[stdout]\nhello-vm1\n" in invoked["value"][0]["message"], invoked
    # a data disk: attached (the running VM restarts with it), seen in the guest, detached
    kumo.az("vm", "disk", "attach", "-g", rg, "--vm-name", "vm1", "--name", "data1", "--new", "--size-gb", "1")
    wait_ssh(ssh_key, target, 60)
    r = ssh(ssh_key, target, "cat /sys/block/vdb/size")
    assert r.returncode == 0 and int(r.stdout) * 512 == 1024**3, (r.stdout, r.stderr)
    assert kumo.az("disk", "show", "-g", rg, "-n", "data1")["diskState"] == "Attached"
    kumo.az("vm", "disk", "detach", "-g", rg, "--vm-name", "vm1", "--name", "data1")
    assert kumo.az("disk", "show", "-g", rg, "-n", "data1")["diskState"] == "Unattached"
    wait_ssh(ssh_key, target, 60)
    assert ssh(ssh_key, target, "test -e /sys/block/vdb").returncode != 0
    not_enabled = kumo.az("vm", "boot-diagnostics", "get-boot-log", "-g", rg, "-n", "vm1", check=False)
    assert not_enabled.returncode != 0 and "enable boot diagnostics" in not_enabled.stderr.lower()
    kumo.az("vm", "boot-diagnostics", "enable", "-g", rg, "-n", "vm1")
    boot_log = kumo.az("vm", "boot-diagnostics", "get-boot-log", "-g", rg, "-n", "vm1", check=False)
    assert boot_log.returncode == 0 and "KUMO-VM-READY host=vm1" in boot_log.stdout, boot_log.stderr[-500:]

    shown = kumo.az("vm", "show", "-d", "-g", rg, "-n", "vm1")
    assert shown["powerState"] == "VM running" and shown["publicIps"] == out["publicIpAddress"]
    assert shown["privateIps"] == out["privateIpAddress"]

    kumo.az("vm", "stop", "-g", rg, "-n", "vm1")
    assert kumo.az("vm", "show", "-d", "-g", rg, "-n", "vm1")["powerState"] == "VM stopped"
    kumo.az("vm", "start", "-g", rg, "-n", "vm1")
    assert kumo.az("vm", "show", "-d", "-g", rg, "-n", "vm1")["powerState"] == "VM running"
    kumo.az("vm", "restart", "-g", rg, "-n", "vm1")
    wait_ssh(ssh_key, target, 30)
    kumo.az("vm", "deallocate", "-g", rg, "-n", "vm1")
    assert kumo.az("vm", "show", "-d", "-g", rg, "-n", "vm1")["powerState"] == "VM deallocated"
    resized = kumo.az("vm", "resize", "-g", rg, "-n", "vm1", "--size", "Standard_B1ms")  # PUTs the whole VM back
    assert resized["hardwareProfile"]["vmSize"] == "Standard_B1ms" and resized["provisioningState"] == "Succeeded"
    options = kumo.az("vm", "list-vm-resize-options", "-g", rg, "-n", "vm1")
    assert "Standard_B1s" in [o["name"] for o in options]
    vm = kumo.az("vm", "show", "-g", rg, "-n", "vm1")
    nic_id = vm["networkProfile"]["networkInterfaces"][0]["id"]
    kumo.az("vm", "delete", "--yes", "-g", rg, "-n", "vm1")
    vnet_id = nic_id.split("/providers/")[0] + "/providers/Microsoft.Network/virtualNetworks/vm1VNET"
    assert _host_objects(kumo, vm["id"], nic_id, vnet_id) == {"qemu": False, "tap": False, "state": False}
    print(f"\naz vm create: {created:.2f}s, to SSH answering {to_ssh:.2f}s")


@pytest.mark.slow
def test_capacity_dynamic_ip_and_readoption(ssh_key: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A kumo of its own with an overcommit of 1 (as many vCPUs as the host has): a VM that does not fit
    is AllocationFailed; deallocate releases a Dynamic public IP and start takes one again; a running VM
    survives a kumo restart and is re-adopted (same QEMU process, still answering SSH)."""
    from tests.conftest import start_server, stop_server

    monkeypatch.setenv("KUMO_VM_OVERCOMMIT", "1")
    server = start_server()
    try:
        with server.http() as c:
            sub = server.identity["subscription_id"]
            base = f"/subscriptions/{sub}/resourceGroups/rgvm"
            net = f"{base}/providers/Microsoft.Network"
            nws = {"api-version": "2024-05-01"}

            def wait(url: str) -> dict[str, Any]:
                for _ in range(1200):
                    body = c.get(url, params=API).json()
                    if body.get("properties", {}).get("provisioningState") in ("Succeeded", "Failed"):
                        return body
                    time.sleep(0.1)
                raise AssertionError(f"{url} did not finish")

            def op(r: Any) -> None:
                assert r.status_code == 202, r.text
                for _ in range(1200):
                    status = c.get(r.headers["Azure-AsyncOperation"]).json()
                    if status["status"] != "InProgress":
                        assert status["status"] == "Succeeded", status.get("error")
                        return
                    time.sleep(0.1)

            assert c.put(base, params=API, json={"location": "local"}).status_code == 201
            vnet = c.put(f"{net}/virtualNetworks/vnet", params=nws, json={"location": "local", "properties": {
                "addressSpace": {"addressPrefixes": ["10.2.0.0/16"]},
                "subnets": [{"name": "default", "properties": {"addressPrefix": "10.2.0.0/24"}}]}}).json()
            pip_url = f"{net}/publicIPAddresses/pip"
            c.put(pip_url, params=nws, json={"location": "local", "sku": {"name": "Basic"},
                                             "properties": {"publicIPAllocationMethod": "Dynamic"}})
            nic = c.put(f"{net}/networkInterfaces/nic", params=nws, json={"location": "local", "properties": {
                "ipConfigurations": [{"name": "ipconfig1", "properties": {
                    "subnet": {"id": vnet["properties"]["subnets"][0]["id"]},
                    "publicIPAddress": {"id": pip_url}}}]}}).json()
            wait(f"{net}/networkInterfaces/nic")
            vm_url = f"{base}/providers/Microsoft.Compute/virtualMachines/vm1"
            assert c.put(vm_url, params=API, json=_vm_body(nic["id"], ssh_key)).status_code == 201
            assert wait(vm_url)["properties"]["provisioningState"] == "Succeeded"
            ip = c.get(pip_url, params=nws).json()["properties"]["ipAddress"]
            wait_ssh(ssh_key, f"azureuser@{ip}", 30)

            from kumo.compute import sizes

            cpus = os.cpu_count() or 1
            big = max(sizes.SIZES, key=lambda s: (s.vcpus >= cpus, -s.vcpus)).name  # does not fit beside vm1
            nic2 = c.put(f"{net}/networkInterfaces/nic2", params=nws, json={"location": "local", "properties": {
                "ipConfigurations": [{"name": "ipconfig1", "properties": {
                    "subnet": {"id": vnet["properties"]["subnets"][0]["id"]}}}]}}).json()
            wait(f"{net}/networkInterfaces/nic2")
            r = c.put(f"{vm_url}2", params=API, json=_vm_body(nic2["id"], ssh_key, size=big))
            assert wait(f"{vm_url}2")["properties"]["provisioningState"] == "Failed"
            status = c.get(r.headers["Azure-AsyncOperation"]).json()
            assert status["error"]["code"] == "AllocationFailed", status
            op(c.delete(f"{vm_url}2", params=API))

            op(c.post(f"{vm_url}/deallocate", params=API))
            assert "ipAddress" not in c.get(pip_url, params=nws).json()["properties"]
            view = c.get(f"{vm_url}/instanceView", params=API).json()
            assert power_state(view) == "PowerState/deallocated"
            op(c.post(f"{vm_url}/start", params=API))
            ip = c.get(pip_url, params=nws).json()["properties"]["ipAddress"]
            wait_ssh(ssh_key, f"azureuser@{ip}", 30)

        vid = f"kumo{_site(server)}v-{_h(vm_url.lower())}"
        pid = _qemu_pid(vid)
        assert pid is not None
        server.stop()
        assert _qemu_pid(vid) == pid  # the guest outlives kumo
        server.start()
        with server.http() as c:
            for _ in range(100):
                view = c.get(f"{vm_url}/instanceView", params=API).json()
                if power_state(view) == "PowerState/running":
                    break
                time.sleep(0.1)
            assert power_state(view) == "PowerState/running"
        assert _qemu_pid(vid) == pid
        r = ssh(ssh_key, f"azureuser@{ip}", "hostname")
        assert r.returncode == 0 and r.stdout.strip() == "vm1", r.stderr
    finally:
        stop_server(server)
    assert _qemu_pid(vid) is None


@pytest.mark.slow
def test_a_vm_deleted_during_its_create_leaves_no_disk(kumo: KumoServer, rg: str, network_client: Any,
                                                       ssh_key: Path) -> None:
    """A VM deleted at any point of its create (while its disks are made, while it boots) takes the disks
    marked Delete with it, as it would once created: none is left behind, in the API or on disk."""
    vnet = network_client.virtual_networks.begin_create_or_update(rg, "vnet", {
        "location": "local", "properties": {"addressSpace": {"addressPrefixes": ["10.1.0.0/16"]}, "subnets": [
            {"name": "default", "properties": {"addressPrefix": "10.1.0.0/24"}}]}}).result()
    sub = f"/subscriptions/{kumo.identity['subscription_id']}/resourceGroups/{rg}/providers"
    with kumo.http() as c:
        for i in range(6):
            nic = network_client.network_interfaces.begin_create_or_update(rg, f"nic{i}", {
                "location": "local", "properties": {"ipConfigurations": [{"name": "ip", "properties": {
                    "subnet": {"id": vnet.subnets[0].id}}}]}}).result()
            body = _vm_body(nic.id, ssh_key)
            storage = body["properties"]["storageProfile"]
            storage["osDisk"]["deleteOption"] = "Delete"
            storage["dataDisks"] = [{"lun": 0, "createOption": "Empty", "diskSizeGB": 1, "deleteOption": "Delete"}]
            url = f"{sub}/Microsoft.Compute/virtualMachines/vm{i}"
            assert c.put(url, params=API, json=body).status_code == 201
            time.sleep(0.1 * i)  # at a different point of the create each time
            r = c.delete(url, params=API)
            assert r.status_code in (200, 202), r.text
            deadline = time.monotonic() + 60
            while c.get(url, params=API).status_code != 404 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert c.get(url, params=API).status_code == 404
        time.sleep(1)  # a disk made after the VM's row went would show by now
        disks = c.get(f"{sub}/Microsoft.Compute/disks", params={"api-version": "2024-03-02"}).json()["value"]
    assert [d["name"] for d in disks] == []
    assert sorted(p.name for p in (kumo.data_dir / "disks").glob("disk-*.qcow2")) == []
