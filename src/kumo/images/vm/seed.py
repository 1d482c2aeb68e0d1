"""cloud-init NoCloud seeds: what a VM of a cloud-init image (the Debian image) learns at first boot.

A seed is a small ISO9660 image with the volume label `cidata`, attached to the VM as a read-only disk;
cloud-init's NoCloud datasource finds it by that label and reads three files from it:

    meta-data        instance-id (a new one makes cloud-init run its once-per-instance modules again)
                     and local-hostname
    user-data        what to do: a cloud-config, a script, or a MIME multipart of several parts
    network-config   network config v2 (`network_config()`): the NIC matched by MAC, static or DHCP
    vendor-data      (optional) like user-data, applied first; user-data wins where they disagree

`write_seed()` writes it with pycdlib (pure Python: no genisoimage), with Rock Ridge and Joliet names so
Linux sees `meta-data`, `user-data` as is (the plain ISO9660 names are META_DATA.;1 and so on).

How Azure's VM model maps onto it (what the VM controller does):

* osProfile's admin user, SSH keys, password and `disablePasswordAuthentication` become kumo's own
  cloud-config, `azure_user_config()`: the user in the sudo group with NOPASSWD sudo (as Azure's
  provisioning does), keys in ~/.ssh/authorized_keys, the password hashed (SHA-512 crypt by
  `openssl passwd -6`; no plain text on the seed), `ssh_pwauth` from disablePasswordAuthentication.
* osProfile's customData (base64 in the API: decode it first) is what Azure passes to cloud-init as
  user-data: a `#cloud-config`, a `#!` script, `#include`, a MIME multipart, gzip of any of these.
  `compose_user_data(kumo_config, custom_data)` makes one multipart MIME of both (cloud-init's
  format), kumo's part first, so both apply: the customData part carries a `Merge-Type` header
  (`list(append)+dict(no_replace,recurse_list)+str()`) so that its `users`, `runcmd`, `write_files`
  … lists add to kumo's instead of replacing them, and kumo's settings (ssh_pwauth, the admin user)
  stand. A script runs as cloud-init's scripts-user (once per instance, as root, late in boot).
* computerName is meta-data's local-hostname; the VM's resource id (or a fresh uuid per
  reimage) the instance-id; the NIC's MAC, private address, subnet gateway and DNS servers the
  network config.
"""

from __future__ import annotations

import gzip
import io
import ipaddress
import json
import os
import re
import subprocess
from collections.abc import Iterable, Sequence
from email import message_from_bytes
from email.encoders import encode_base64
from email.message import Message
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from pathlib import Path
from typing import Any

LABEL = "cidata"
# How the customData part merges into kumo's cloud-config: lists append, kumo's keys are kept.
MERGE_TYPE = "list(append)+dict(no_replace,recurse_list)+str()"
# user-data formats cloud-init recognises by their first line -> their MIME type
_STARTS_WITH = (("#cloud-config-archive", "text/cloud-config-archive"), ("#cloud-config", "text/cloud-config"),
                ("#cloud-boothook", "text/cloud-boothook"), ("#include-once", "text/x-include-once-url"),
                ("#include", "text/x-include-url"), ("#part-handler", "text/part-handler"),
                ("## template: jinja", "text/jinja2"), ("#!", "text/x-shellscript"))
_USER = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")


def _bytes(data: bytes | str) -> bytes:
    return data.encode() if isinstance(data, str) else data


def cloud_config(config: dict[str, Any]) -> bytes:
    """A `#cloud-config` document. JSON is YAML, so no YAML library is needed and nothing in a value
    (a key, a password hash) can change the document's structure."""
    return b"#cloud-config\n" + json.dumps(config, indent=2, sort_keys=True).encode() + b"\n"


def meta_data(instance_id: str, hostname: str) -> bytes:
    """NoCloud's meta-data: the instance id (cloud-init's per-instance state) and the hostname."""
    if not instance_id or not hostname:
        raise ValueError("meta-data needs an instance id and a hostname")
    return json.dumps({"instance-id": instance_id, "local-hostname": hostname}, indent=2).encode() + b"\n"


def hash_password(password: str, salt: str | None = None) -> str:
    """SHA-512 crypt (`$6$…`), which cloud-init's `passwd` and /etc/shadow take. `openssl passwd -6`:
    Python's `crypt` is deprecated and gone in 3.13, and this needs no new dependency."""
    if "\n" in password or "\r" in password or not password:
        raise ValueError("a password must be one non-empty line")
    argv = ["openssl", "passwd", "-6", "-stdin"] + (["-salt", salt] if salt else [])
    try:
        proc = subprocess.run(argv, input=password + "\n", capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise RuntimeError("openssl not found: apt-get install openssl") from None
    out = proc.stdout.strip()
    if proc.returncode != 0 or not out.startswith("$6$"):
        raise RuntimeError(f"openssl passwd -6 failed: {proc.stderr.strip()[:200]}")
    return out


def azure_user_config(admin_user: str, ssh_keys: Sequence[tuple[str | None, str]], password: str | None,
                      disable_password_auth: bool) -> dict[str, Any]:
    """kumo's cloud-config for a VM's osProfile: the admin user as Azure's Linux provisioning makes it.

    `ssh_keys`: (path, keyData) as in linuxConfiguration.ssh.publicKeys; like Azure, the path must be
    the default `/home/<user>/.ssh/authorized_keys` (or empty). `password`: adminPassword (hashed here).
    The distro's default user (`debian`) is not created: only this one, with NOPASSWD sudo."""
    if not _USER.match(admin_user):
        raise ValueError(f"bad admin user name {admin_user!r}")
    default_path = f"/home/{admin_user}/.ssh/authorized_keys"
    keys = []
    for path, key in ssh_keys:
        if path and path != default_path:
            raise ValueError(f"SSH key path {path!r}: only the default {default_path} is supported (as on Azure)")
        if not key.strip() or "\n" in key.strip():
            raise ValueError("an SSH public key must be one non-empty line")
        keys.append(key.strip())
    if not keys and not password:
        raise ValueError(f"{admin_user} needs an SSH key or a password")
    user: dict[str, Any] = {"name": admin_user, "gecos": admin_user, "shell": "/bin/bash",
                            "groups": ["adm", "sudo"], "sudo": "ALL=(ALL) NOPASSWD:ALL",
                            "lock_passwd": password is None}
    if password:
        user["passwd"] = hash_password(password)
    if keys:
        user["ssh_authorized_keys"] = keys
    return {"users": [user], "ssh_pwauth": not disable_password_auth, "disable_root": True,
            "chpasswd": {"expire": False}}


def network_config(mac: str, *, address: str | None = None, gateway: str | None = None,
                   dns: Iterable[str] = (), search: Iterable[str] = (), name: str = "eth0") -> dict[str, Any]:
    """Network config v2 for one NIC, matched by MAC (named `name` in the guest): static when `address`
    (CIDR, e.g. 10.0.0.4/24) is given, else DHCP. DNS servers and search domains either way."""
    if not re.fullmatch(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}", mac):
        raise ValueError(f"bad MAC {mac!r}")
    eth: dict[str, Any] = {"match": {"macaddress": mac.lower()}, "set-name": name}
    if address:
        iface = ipaddress.ip_interface(address)  # ValueError when it is not an address/prefix
        if "/" not in address:
            raise ValueError(f"address {address!r} needs a prefix length (e.g. /24)")
        eth["addresses"] = [str(iface)]
        if gateway:
            gw = ipaddress.ip_address(gateway)
            if gw.version != iface.version or gw not in iface.network:
                raise ValueError(f"gateway {gateway} is not in {iface.network}")
            eth["gateway4" if gw.version == 4 else "gateway6"] = str(gw)
    else:
        eth["dhcp4"] = True
    servers = [str(ipaddress.ip_address(s)) for s in dns]
    domains = list(search)
    if servers or domains:
        eth["nameservers"] = {k: v for k, v in (("addresses", servers), ("search", domains)) if v}
    return {"version": 2, "ethernets": {name: eth}}


def _content_type(data: bytes) -> str:
    head = data[:64].decode(errors="replace").lower()
    for prefix, ctype in _STARTS_WITH:
        if head.startswith(prefix):
            return ctype
    return "text/x-not-multipart"  # cloud-init looks at the content itself


def _parts(custom_data: bytes) -> list[Message]:
    """customData as MIME parts: a multipart's own parts, else one part of its type."""
    if custom_data[:2] == b"\x1f\x8b":
        custom_data = gzip.decompress(custom_data)
    head = custom_data[:200].lower()
    if head.startswith((b"content-type:", b"mime-version:")):
        msg = message_from_bytes(custom_data)
        if msg.is_multipart():
            return [p for p in msg.walk() if not p.is_multipart()]
        return [msg]
    maintype, subtype = _content_type(custom_data).split("/")
    part = MIMEBase(maintype, subtype)
    part.set_payload(custom_data)
    encode_base64(part)  # any bytes, any line length
    return [part]


def compose_user_data(kumo_config: dict[str, Any] | None, custom_data: bytes | str | None) -> bytes:
    """The user-data for a VM: kumo's cloud-config (the admin user), the user's customData, or a
    multipart MIME of both in which both apply (see the module docstring)."""
    custom = _bytes(custom_data) if custom_data else b""
    if kumo_config is None:
        return custom
    if not custom:
        return cloud_config(kumo_config)
    boundary = "==kumo-user-data-boundary=="
    msg = MIMEMultipart("mixed", boundary=None if boundary.encode() in custom else boundary)
    ours = MIMEBase("text", "cloud-config")
    ours.set_payload(cloud_config(kumo_config))
    encode_base64(ours)
    ours.add_header("Content-Disposition", "attachment", filename="kumo-os-profile.cfg")
    msg.attach(ours)
    for i, part in enumerate(_parts(custom)):
        if "Merge-Type" not in part:
            part["Merge-Type"] = MERGE_TYPE
        if "Content-Disposition" not in part:
            part.add_header("Content-Disposition", "attachment", filename=f"custom-data-{i}")
        msg.attach(part)
    return msg.as_bytes()


def write_seed(path: Path | str, *, instance_id: str, hostname: str, user_data: bytes | str,
               network_config: dict[str, Any] | None = None,
               vendor_data: bytes | str | dict[str, Any] | None = None) -> None:
    """Write a NoCloud seed ISO (label `cidata`) to `path`, atomically, readable by root only (it can
    hold a password hash). `network_config` None: no file, cloud-init's fallback (DHCP on the first
    NIC). `vendor_data` as a dict is a cloud-config."""
    import pycdlib

    files = {"meta-data": meta_data(instance_id, hostname), "user-data": _bytes(user_data)}
    if network_config is not None:
        files["network-config"] = json.dumps(network_config, indent=2).encode() + b"\n"
    if vendor_data is not None:
        files["vendor-data"] = cloud_config(vendor_data) if isinstance(vendor_data, dict) else _bytes(vendor_data)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, vol_ident=LABEL, joliet=3, rock_ridge="1.09")
    try:
        for name, data in files.items():
            iso.add_fp(io.BytesIO(data), len(data), f"/{name.upper().replace('-', '_')}.;1", rr_name=name,
                       joliet_path=f"/{name}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            iso.write_fp(f)
        os.replace(tmp, path)
    finally:
        iso.close()
        tmp.unlink(missing_ok=True)
