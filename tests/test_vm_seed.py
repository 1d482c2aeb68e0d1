"""NoCloud seeds (kumo.images.vm.seed): the ISO reads back with the names and label cloud-init looks for,
the user-data composes kumo's cloud-config and Azure customData as cloud-init's multipart MIME, and the
cloud-config and network config have the shapes cloud-init 22.4 (Debian 12) takes."""

from __future__ import annotations

import base64
import gzip
import io
import json
import shutil
import subprocess
from email import message_from_bytes
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from pathlib import Path

import pycdlib
import pytest

from kumo.images.vm import seed

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGtsYWJsYWJsYWJsYWJsYWJsYWJsYWJsYWJsYWJs kumo-test"
MAC = "52:54:00:AB:00:01"


def _read(iso: pycdlib.PyCdlib, **path: str) -> bytes:
    out = io.BytesIO()
    iso.get_file_from_iso_fp(out, **path)
    return out.getvalue()


def _cloud_config(data: bytes) -> dict:
    assert data.startswith(b"#cloud-config\n")
    return json.loads(data.split(b"\n", 1)[1])  # JSON is YAML: cloud-init reads it as is


def test_seed_iso_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "seed.iso"
    net = seed.network_config(MAC, address="10.0.0.4/24", gateway="10.0.0.1", dns=["168.63.129.16"])
    seed.write_seed(path, instance_id="vm-0001", hostname="web1", user_data="#!/bin/sh\necho hi\n",
                    network_config=net, vendor_data={"runcmd": [["true"]]})
    assert path.stat().st_mode & 0o777 == 0o600  # it can hold a password hash
    assert not list(tmp_path.glob(".*"))  # no temporary file left
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        assert iso.pvd.volume_identifier.rstrip(b" ") == b"cidata"
        assert iso.has_rock_ridge() and iso.has_joliet()
        names = sorted(c.rock_ridge.name().decode() for c in iso.list_children(rr_path="/")
                       if c.rock_ridge and c.is_file())
        assert names == ["meta-data", "network-config", "user-data", "vendor-data"]
        joliet = sorted(c.file_identifier().decode("utf-16-be").split(";")[0]
                        for c in iso.list_children(joliet_path="/") if c.is_file())
        assert joliet == names
        meta = json.loads(_read(iso, rr_path="/meta-data"))
        assert meta == {"instance-id": "vm-0001", "local-hostname": "web1"}
        assert _read(iso, rr_path="/user-data") == b"#!/bin/sh\necho hi\n"
        assert _read(iso, joliet_path="/user-data") == b"#!/bin/sh\necho hi\n"
        assert _read(iso, iso_path="/USER_DATA.;1") == b"#!/bin/sh\necho hi\n"
        assert json.loads(_read(iso, rr_path="/network-config")) == net
        assert _cloud_config(_read(iso, rr_path="/vendor-data")) == {"runcmd": [["true"]]}
    finally:
        iso.close()
    if shutil.which("blkid"):  # what cloud-init itself asks (blkid -tLABEL=cidata)
        out = subprocess.run(["blkid", "-o", "export", str(path)], capture_output=True, text=True).stdout
        assert "LABEL=cidata" in out.split() and "TYPE=iso9660" in out.split()


def test_seed_without_network_config(tmp_path: Path) -> None:
    """No network-config file: cloud-init falls back to DHCP on the first NIC."""
    path = tmp_path / "seed.iso"
    seed.write_seed(path, instance_id="i", hostname="h", user_data=b"")
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        assert sorted(c.rock_ridge.name().decode() for c in iso.list_children(rr_path="/")
                      if c.rock_ridge and c.is_file()) == ["meta-data", "user-data"]
    finally:
        iso.close()
    with pytest.raises(ValueError):
        seed.write_seed(path, instance_id="", hostname="h", user_data=b"")


def test_azure_user_config() -> None:
    cfg = seed.azure_user_config("azureuser", [("/home/azureuser/.ssh/authorized_keys", KEY + "\n"), (None, KEY)],
                                 "S3cret pass!", True)
    (user,) = cfg["users"]  # no "default": the distro's own user is not made
    assert user["name"] == "azureuser" and "sudo" in user["groups"]
    assert user["sudo"] == "ALL=(ALL) NOPASSWD:ALL"
    assert user["ssh_authorized_keys"] == [KEY, KEY]
    assert user["lock_passwd"] is False
    assert cfg["ssh_pwauth"] is False and cfg["disable_root"] is True
    hashed = user["passwd"]
    assert hashed.startswith("$6$") and "S3cret" not in json.dumps(cfg)
    salt = hashed.split("$")[2]
    assert seed.hash_password("S3cret pass!", salt) == hashed  # SHA-512 crypt: the same salt, the same hash

    keys_only = seed.azure_user_config("ops", [("", KEY)], None, False)
    assert keys_only["users"][0]["lock_passwd"] is True and "passwd" not in keys_only["users"][0]
    assert keys_only["ssh_pwauth"] is True
    with pytest.raises(ValueError, match="default"):
        seed.azure_user_config("ops", [("/root/.ssh/authorized_keys", KEY)], None, True)
    with pytest.raises(ValueError):
        seed.azure_user_config("ops", [], None, True)
    with pytest.raises(ValueError):
        seed.azure_user_config("Bad User", [(None, KEY)], None, True)
    with pytest.raises(ValueError):
        seed.hash_password("two\nlines")


def test_network_config() -> None:
    static = seed.network_config(MAC, address="10.0.0.4/24", gateway="10.0.0.1", dns=["10.0.0.2"],
                                 search=["internal.example"])
    assert static == {"version": 2, "ethernets": {"eth0": {
        "match": {"macaddress": MAC.lower()}, "set-name": "eth0", "addresses": ["10.0.0.4/24"],
        "gateway4": "10.0.0.1", "nameservers": {"addresses": ["10.0.0.2"], "search": ["internal.example"]}}}}
    dhcp = seed.network_config(MAC)
    assert dhcp["ethernets"]["eth0"]["dhcp4"] is True and "addresses" not in dhcp["ethernets"]["eth0"]
    for bad in ({"address": "10.0.0.4"}, {"address": "10.0.0.4/24", "gateway": "10.1.0.1"},
                {"address": "nope/24"}, {"dns": ["x"]}):
        with pytest.raises(ValueError):
            seed.network_config(MAC, **bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        seed.network_config("52:54:00:zz:00:01")


def _parts(user_data: bytes) -> list:
    msg = message_from_bytes(user_data)
    assert msg.get_content_type() == "multipart/mixed" and "mime-version" in user_data[:4096].decode().lower()
    return [p for p in msg.walk() if not p.is_multipart()]


def test_user_data_alone_and_multipart() -> None:
    cfg = seed.azure_user_config("azureuser", [(None, KEY)], None, True)
    assert _cloud_config(seed.compose_user_data(cfg, None)) == cfg
    assert seed.compose_user_data(None, "#!/bin/sh\ntrue\n") == b"#!/bin/sh\ntrue\n"

    script = b"#!/bin/sh\necho custom > /var/tmp/custom\n"
    parts = _parts(seed.compose_user_data(cfg, script))
    assert [p.get_content_type() for p in parts] == ["text/cloud-config", "text/x-shellscript"]
    assert _cloud_config(parts[0].get_payload(decode=True)) == cfg
    assert parts[1].get_payload(decode=True) == script
    assert parts[1]["Merge-Type"] == seed.MERGE_TYPE

    user_cfg = b"#cloud-config\nruncmd:\n  - [touch, /var/tmp/x]\n"
    parts = _parts(seed.compose_user_data(cfg, base64.b64decode(base64.b64encode(gzip.compress(user_cfg)))))
    assert [p.get_content_type() for p in parts] == ["text/cloud-config", "text/cloud-config"]
    assert parts[1].get_payload(decode=True) == user_cfg  # gzip undone: cloud-init sees the cloud-config

    odd = b"just some text cloud-init decides about\n"
    parts = _parts(seed.compose_user_data(cfg, odd))
    assert parts[1].get_content_type() == "text/x-not-multipart"  # cloud-init looks at the content


def test_user_data_multipart_from_the_user_is_flattened() -> None:
    mine = MIMEMultipart()
    mine.attach(MIMEText("#!/bin/sh\necho a\n", "x-shellscript"))
    mine.attach(MIMEText("#cloud-config\nruncmd: [[echo, b]]\n", "cloud-config"))
    cfg = seed.azure_user_config("azureuser", [(None, KEY)], None, True)
    parts = _parts(seed.compose_user_data(cfg, mine.as_bytes()))
    assert [p.get_content_type() for p in parts] == ["text/cloud-config", "text/x-shellscript", "text/cloud-config"]
    assert all(p["Merge-Type"] == seed.MERGE_TYPE for p in parts[1:])
    assert parts[2].get_payload(decode=True) == b"#cloud-config\nruncmd: [[echo, b]]\n"
