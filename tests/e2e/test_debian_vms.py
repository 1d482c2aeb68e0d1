"""A real Debian 12 VM end to end with the real az CLI: `az vm create --image Debian12 --generate-ssh-keys`
(az's template path), SSH with that key, cloud-init's custom data, a data disk and a grown OS disk in the
guest, the NSG rule az adds being what lets SSH in, run-command, and the custom image round trip
(customise, deallocate, generalize, capture, a second VM from the image shows the customisation).
Cold boots of Debian under TCG take minutes: these are the slowest tests of the suite."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from kumo.compute.marketplace import ImageCatalog
from kumo.config import default_vm_images_dir
from tests.conftest import KumoServer
from tests.e2e.test_virtual_machines import _h, _site, ssh, wait_ssh
from tests.vmlib import new_ssh_key, qemu_pids

pytestmark = [pytest.mark.e2e, pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("qemu-system-x86_64") or not shutil.which("nft"),
                                 reason="VMs need root, nftables and qemu-system-x86 (scripts/setup.sh installs them)"),
              pytest.mark.skipif(ImageCatalog(default_vm_images_dir()).find("Debian", "debian-12", "12-gen2",
                                                                            "latest") is None,
                                 reason="the Debian VM image is not built (kumo vm-images build)")]

CREATE_TIMEOUT = 1500  # a cold Debian boot with cloud-init under TCG on a busy 2-core host
CUSTOM_DATA = "#!/bin/sh\necho custom-data-ran-as-$(id -un) > /var/tmp/custom-data.txt\n"


def _guest_facts(key: Path, target: str) -> dict[str, str]:
    r = ssh(key, target, "cat /var/tmp/custom-data.txt; hostname; lsblk -b -d -n -o NAME,SIZE | tr -s ' ' '=';"
                         " df -B1 --output=size / | tail -1; sudo -n true && echo sudo-ok", timeout=90)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split()
    facts = {"custom": lines[0], "hostname": lines[1], "root_bytes": lines[-2], "sudo": lines[-1]}
    facts.update(line.split("=", 1) for line in lines[2:-2] if "=" in line)
    return facts


def test_az_debian_vm_and_custom_image(kumo: KumoServer, rg: str, tmp_path: Path) -> None:
    home = tmp_path / "home"  # az --generate-ssh-keys writes ~/.ssh/id_rsa: a home of the test's own
    home.mkdir()
    script = tmp_path / "custom-data.sh"
    script.write_text(CUSTOM_DATA)
    out = kumo.az("vm", "create", "-g", rg, "-n", "deb1", "--image", "Debian12", "--size", "Standard_B2s",
                  "--admin-username", "azureuser", "--generate-ssh-keys", "--custom-data", str(script),
                  "--data-disk-sizes-gb", "2", "--os-disk-size-gb", "8", timeout=CREATE_TIMEOUT,
                  env={"HOME": str(home)})
    assert out["powerState"] == "VM running", out
    key = home / ".ssh" / "id_rsa"
    target = f"azureuser@{out['publicIpAddress']}"
    wait_ssh(key, target, 120)
    facts = _guest_facts(key, target)
    print("guest:", facts)
    assert facts["custom"] == "custom-data-ran-as-root" and facts["hostname"] == "deb1", facts
    assert facts["sudo"] == "sudo-ok"
    assert int(facts["vdb"]) == 2 * 1024**3, facts  # the data disk
    assert int(facts["root_bytes"]) > 7 * 1024**3, facts  # the OS disk grown from the image's 3 GiB to 8 GiB

    vm = kumo.az("vm", "show", "-g", rg, "-n", "deb1")
    disks = {d["name"]: d for d in kumo.az("disk", "list", "-g", rg)}
    os_disk = vm["storageProfile"]["osDisk"]
    assert disks[os_disk["name"]]["managedBy"].lower() == vm["id"].lower()
    assert os_disk.get("diskSizeGB", os_disk.get("diskSizeGb")) == 8, os_disk
    data = vm["storageProfile"]["dataDisks"][0]
    assert data["lun"] == 0 and disks[data["name"]]["diskState"] == "Attached"

    ran = kumo.az("vm", "run-command", "invoke", "-g", rg, "-n", "deb1", "--command-id", "RunShellScript",
                  "--scripts", ". /etc/os-release; echo $PRETTY_NAME; systemctl is-system-running || true")
    assert "Debian GNU/Linux 12" in ran["value"][0]["message"], ran

    # the NSG rule az made for SSH is what lets SSH in
    kumo.az("network", "nsg", "rule", "delete", "-g", rg, "--nsg-name", "deb1NSG", "-n", "default-allow-ssh")
    assert ssh(key, target, "true", timeout=15).returncode != 0
    kumo.az("network", "nsg", "rule", "create", "-g", rg, "--nsg-name", "deb1NSG", "-n", "ssh", "--priority", "1000",
            "--destination-port-ranges", "22", "--access", "Allow", "--protocol", "Tcp")
    wait_ssh(key, target, 60)

    # custom image: customise, deallocate, generalize, capture, and a second VM from it
    r = ssh(key, target, "echo made-in-deb1 | sudo tee /etc/kumo-custom >/dev/null && sync", timeout=60)
    assert r.returncode == 0, r.stderr
    kumo.az("vm", "deallocate", "-g", rg, "-n", "deb1")
    kumo.az("vm", "generalize", "-g", rg, "-n", "deb1")
    refused = kumo.az("vm", "start", "-g", rg, "-n", "deb1", check=False)
    assert refused.returncode != 0 and "generalized" in refused.stderr
    image = kumo.az("image", "create", "-g", rg, "-n", "deb-custom", "--source", "deb1")
    assert image["provisioningState"] == "Succeeded" and image["sourceVirtualMachine"]["id"].lower() == \
        vm["id"].lower()
    out2 = kumo.az("vm", "create", "-g", rg, "-n", "deb2", "--image", image["id"], "--size", "Standard_B2s",
                   "--admin-username", "azureuser", "--ssh-key-values", str(key.with_suffix(".pub")),
                   timeout=CREATE_TIMEOUT, env={"HOME": str(home)})
    target2 = f"azureuser@{out2['publicIpAddress']}"
    wait_ssh(key, target2, 120)
    r = ssh(key, target2, "cat /etc/kumo-custom; hostname", timeout=60)
    assert r.returncode == 0 and r.stdout.split() == ["made-in-deb1", "deb2"], (r.stdout, r.stderr)

    # everything goes with the group: no QEMU, no disk file
    vm2 = kumo.az("vm", "show", "-g", rg, "-n", "deb2")
    kumo.az("group", "delete", "--yes", "-n", rg, timeout=600)
    site = _site(kumo)
    for vm_id in (vm["id"], vm2["id"]):
        assert not qemu_pids(f"kumo{site}v-{_h(vm_id)}")
        assert not (kumo.data_dir / "vms" / f"kumo{site}v-{_h(vm_id)}").exists()
    files = [kumo.data_dir / "disks" / f"disk-{_h(d['id'])}.qcow2" for d in disks.values()]
    assert len(files) == 2 and not any(f.exists() for f in files), files
    leftover = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"kumo{site}-v" not in leftover


def _boot_path(kumo: KumoServer, rg: str, name: str) -> str:
    """kumo's own member of the instance view (clients drop it): how the VM came up."""
    url = (f"/subscriptions/{kumo.identity['subscription_id']}/resourceGroups/{rg}/providers/Microsoft.Compute/"
           f"virtualMachines/{name}/instanceView")
    with kumo.http() as c:
        r = c.get(url, params={"api-version": "2024-11-01"})
    assert r.status_code == 200, r.text
    return r.json()["kumo"]["bootPath"]


def test_debian_vms_from_a_golden_snapshot(kumo: KumoServer, rg: str, tmp_path: Path) -> None:
    """Debian VMs without custom data are restored from the shape's golden snapshot and given their own
    identity (user, key, hostname, address, SSH host key, machine-id, disk size), which survives a reboot."""
    key = new_ssh_key(tmp_path)
    made = {}
    password = ["--authentication-type", "all", "--admin-password", "Kumo-Passw0rd-2026"]
    for name, extra in (("clone1", []), ("clone2", password)):
        made[name] = kumo.az("vm", "create", "-g", rg, "-n", name, "--image", "Debian12", "--size", "Standard_B1s",
                             "--admin-username", "kumouser", "--ssh-key-values", str(key.with_suffix(".pub")),
                             "--os-disk-size-gb", "6", "--nsg-rule", "SSH", *extra, timeout=CREATE_TIMEOUT)
        assert _boot_path(kumo, rg, name) == "snapshot"
    seen = {}
    for name, out in made.items():
        target = f"kumouser@{out['publicIpAddress']}"
        wait_ssh(key, target, 60)
        r = ssh(key, target, "hostname; id -un; sudo -n cat /etc/machine-id; ip -4 -o addr show dev eth0 | "
                             "awk '{print $4}'; df -B1 --output=size / | tail -1; "
                             "cat /etc/ssh/ssh_host_ed25519_key.pub | cut -d' ' -f2", timeout=90)
        assert r.returncode == 0, r.stderr
        host, user, machine_id, addr, root_bytes, host_key = r.stdout.split()
        assert (host, user) == (name, "kumouser") and addr.split("/")[0] == out["privateIpAddress"], r.stdout
        assert int(root_bytes) > 5 * 1024**3, r.stdout  # grown from the golden's 3 GiB
        seen[name] = (machine_id, host_key)
    assert seen["clone1"][0] != seen["clone2"][0] and seen["clone1"][1] != seen["clone2"][1]
    for name, wanted in (("clone1", ("!", "no")), ("clone2", ("$6$", "yes"))):  # password as the VM asked
        r = ssh(key, f"kumouser@{made[name]['publicIpAddress']}", "sudo -n getent shadow kumouser | cut -d: -f2 | "
                "cut -c1-3; sudo -n sshd -T | awk '/^passwordauthentication/ {print $2}'", timeout=90)
        assert r.returncode == 0 and r.stdout.split()[0].startswith(wanted[0]) and r.stdout.split()[1] == wanted[1], \
            (name, r.stdout, r.stderr)

    # a reboot is a cold boot of the clone's own disk: cloud-init sees no new instance, the identity stays
    kumo.az("vm", "restart", "-g", rg, "-n", "clone2", timeout=CREATE_TIMEOUT)
    target = f"kumouser@{made['clone2']['publicIpAddress']}"
    wait_ssh(key, target, 180)
    r = ssh(key, target, "hostname; cat /etc/ssh/ssh_host_ed25519_key.pub | cut -d' ' -f2; "
                         "sudo -n cat /etc/machine-id", timeout=90)
    assert r.returncode == 0 and r.stdout.split() == ["clone2", seen["clone2"][1], seen["clone2"][0]], r.stdout

    # reimage: the OS disk as the image made it (the file written before is gone), the same VM
    target1 = f"kumouser@{made['clone1']['publicIpAddress']}"
    assert ssh(key, target1, "touch /home/kumouser/before-reimage", timeout=60).returncode == 0
    kumo.az("vm", "reimage", "-g", rg, "-n", "clone1", timeout=CREATE_TIMEOUT)
    wait_ssh(key, target1, 120)
    r = ssh(key, target1, "hostname; ls /home/kumouser", timeout=60)
    assert r.returncode == 0 and r.stdout.split() == ["clone1"], r.stdout


def test_imported_image(kumo: KumoServer, rg: str, tmp_path: Path) -> None:
    """`kumo vm-images import` puts an image of one's own (here the Debian image's files, from a raw disk)
    in the marketplace, and `az vm create --image <urn>` boots it."""
    debian = ImageCatalog(default_vm_images_dir()).find("Debian", "debian-12", "12-gen2", "latest")
    assert debian is not None
    raw = tmp_path / "disk.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(debian.file("disk")), str(raw)], check=True)
    target = default_vm_images_dir() / "contoso-imported-0.1.0"
    try:
        kumo.kumo("vm-images", "import", str(raw), "--urn", "Contoso:imported:base:0.1.0", "--alias", "ContosoBase",
                  "--kernel", str(debian.file("kernel")), "--initrd", str(debian.file("initrd")),
                  "--append", str(debian.boot["append"]))
        listed = kumo.az("vm", "image", "list", "--publisher", "Contoso", "--all")
        assert [i["urn"] for i in listed] == ["Contoso:imported:base:0.1.0"], listed
        key = new_ssh_key(tmp_path)
        out = kumo.az("vm", "create", "-g", rg, "-n", "mine", "--image", "Contoso:imported:base:0.1.0",
                      "--size", "Standard_B1s", "--admin-username", "azureuser",
                      "--ssh-key-values", str(key.with_suffix(".pub")), timeout=CREATE_TIMEOUT)
        target_host = f"azureuser@{out['publicIpAddress']}"
        wait_ssh(key, target_host, 120)
        r = ssh(key, target_host, "hostname", timeout=60)
        assert r.returncode == 0 and r.stdout.strip() == "mine", r.stderr
        kumo.az("vm", "delete", "--yes", "-g", rg, "-n", "mine")
    finally:
        shutil.rmtree(target, ignore_errors=True)
