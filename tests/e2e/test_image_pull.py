"""The OCI pull client and layer store against a real registry: Debian's docker-registry (CNCF distribution
2.8) on loopback, without auth, with htpasswd Basic auth, with Bearer tokens from a token server in this
process, and behind TLS with a CA of the test's own. Images are built here as OCI layouts (Python tarfile)
and pushed with skopeo; the registry's access log and storage dir are read to see what really happened."""

from __future__ import annotations

import asyncio
import base64
import datetime
import gzip
import hashlib
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import tarfile
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from kumo.images.reference import parse_reference
from kumo.images.registry_client import (
    Credentials, DigestMismatch, ImageNotFound, Platform, RegistryClient, RegistryUnreachable, Unauthorized,
    UnsupportedImage)
from kumo.images.store import ImageStore, UnsafeLayer
from tests.conftest import free_port
from tests.imagelib import Entry, entry, layer_tar

TOOLS = {t: shutil.which(t) for t in ("docker-registry", "skopeo", "htpasswd")}
pytestmark = [pytest.mark.skipif(os.geteuid() != 0 or not all(TOOLS.values()),
                                 reason="needs root, docker-registry, skopeo and htpasswd (scripts/setup.sh)")]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
USER, PASSWORD = "kumo", "s3cret-pass"
SERVICE, ISSUER = "kumo-test-registry", "kumo-test-issuer"


# -- building images -------------------------------------------------------------------------------

def directory(name: str, mode: int = 0o755, **kw: Any) -> Entry:
    return entry(name, tarfile.DIRTYPE, mode=mode, **kw)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Built:
    manifest: dict[str, Any]  # its descriptor
    layers: list[str] = field(default_factory=list)  # layer blob digests, base first
    config: str = ""


class OciLayout:
    """An OCI image layout on disk, written blob by blob, for `skopeo copy oci:DIR:TAG`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "blobs" / "sha256").mkdir(parents=True)
        (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
        self.refs: list[dict[str, Any]] = []

    def blob(self, data: bytes, media_type: str, **extra: Any) -> dict[str, Any]:
        digest = sha256(data)
        (self.root / "blobs" / "sha256" / digest.split(":")[1]).write_bytes(data)
        return {"mediaType": media_type, "digest": digest, "size": len(data), **extra}

    def image(self, layers: list[bytes], config: dict[str, Any] | None = None, arch: str = "amd64",
              gzipped: bool = True) -> Built:
        descs = [self.blob(gzip.compress(t, mtime=0) if gzipped else t, OCI_LAYER_GZIP if gzipped else OCI_LAYER_TAR)
                 for t in layers]
        cfg = {"architecture": arch, "os": "linux", "config": config or {},
               "rootfs": {"type": "layers", "diff_ids": [sha256(t) for t in layers]}}
        cfg_desc = self.blob(json.dumps(cfg).encode(), OCI_CONFIG)
        manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": cfg_desc, "layers": descs}
        desc = self.blob(json.dumps(manifest).encode(), OCI_MANIFEST,
                         platform={"architecture": arch, "os": "linux"})
        return Built(desc, [d["digest"] for d in descs], cfg_desc["digest"])

    def index(self, *manifests: dict[str, Any]) -> dict[str, Any]:
        body = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": list(manifests)}
        return self.blob(json.dumps(body).encode(), OCI_INDEX)

    def tag(self, name: str, desc: dict[str, Any]) -> None:
        ref = {k: v for k, v in desc.items() if k != "platform"}
        self.refs.append({**ref, "annotations": {"org.opencontainers.image.ref.name": name}})
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": self.refs}
        (self.root / "index.json").write_text(json.dumps(index))


def unique_file(name: str = "unique") -> Entry:
    """A file no other test has, so its layer's blob is this test's alone in the registry."""
    return entry(name, data=uuid.uuid4().bytes * 64)


# -- registries ------------------------------------------------------------------------------------


class TokenServer:
    """A Docker token server (the flow ACR's /oauth2/token follows): RS256 JWTs with an x5c chain the
    registry trusts. The right credentials get the actions they ask for, anyone else gets none."""

    def __init__(self, workdir: Path) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.cert = _self_signed(self.key, "kumo test token issuer", ca=True)
        self.cert_file = workdir / "token.crt"
        self.cert_file.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                server.requests.append(self.path)
                query = parse_qs(urlsplit(self.path).query)
                auth = self.headers.get("Authorization", "")
                user = None
                if auth.startswith("Basic "):
                    name, _, password = base64.b64decode(auth[6:]).decode().partition(":")
                    if (name, password) != (USER, PASSWORD):
                        self.send_response(401)
                        self.end_headers()
                        return
                    user = name
                body = json.dumps({"token": server.issue(user, query.get("scope", [])), "expires_in": 300}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.realm = f"http://127.0.0.1:{self.httpd.server_address[1]}/token"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def issue(self, user: str | None, scopes: list[str]) -> str:
        access = []
        for scope in " ".join(scopes).split():
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",") if user else []})
        now = int(time.time())
        claims = {"iss": ISSUER, "sub": user or "", "aud": SERVICE, "iat": now, "nbf": now - 10, "exp": now + 300,
                  "jti": uuid.uuid4().hex, "access": access}
        x5c = [base64.b64encode(self.cert.public_bytes(serialization.Encoding.DER)).decode()]
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"x5c": x5c})

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _self_signed(key: rsa.RSAPrivateKey, cn: str, ca: bool, san: str | None = None,
                 issuer: tuple[x509.Certificate, rsa.RSAPrivateKey] | None = None) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    builder = (x509.CertificateBuilder().subject_name(name)
               .issuer_name(issuer[0].subject if issuer else name).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if san:
        import ipaddress
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(san))]),
                                        critical=False)
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256())


@dataclass
class Registry:
    """One docker-registry process on loopback, with its storage and access log in `workdir`."""

    workdir: Path
    port: int
    proc: subprocess.Popen[bytes]
    scheme: str = "http"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log(self) -> str:
        return (self.workdir / "registry.log").read_text(errors="replace")

    def blob_gets(self) -> list[str]:
        """Digests of the blobs served so far (GETs answered 200), in order."""
        return re.findall(r'"GET /v2/[^ ]+/blobs/(sha256:[0-9a-f]{64}) HTTP/1.1" 200', self.log)

    def manifest_gets(self) -> int:
        return len(re.findall(r'"GET /v2/[^ ]+/manifests/[^ ]+ HTTP/1.1" 200', self.log))

    def blob_file(self, digest: str) -> Path:
        hexpart = digest.split(":")[1]
        return self.workdir / "data" / "docker/registry/v2/blobs/sha256" / hexpart[:2] / hexpart / "data"

    def push(self, layout: OciLayout, tag: str, repo: str, creds: str | None = None) -> None:
        tls = ["--dest-cert-dir", str(self.workdir / "certs")] if self.scheme == "https" else [
            "--dest-tls-verify=false"]
        policy = str(self.workdir.parent / "policy.json")
        argv = [TOOLS["skopeo"], "--policy", policy, "copy", "--all", "--preserve-digests", "-q", *tls,
                *(["--dest-creds", creds] if creds else []), f"oci:{layout.root}:{tag}", f"docker://{self.host}/{repo}"]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, f"skopeo push failed: {proc.stderr}\n{self.log[-2000:]}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_registry(workdir: Path, auth: dict[str, Any] | None = None, tls: tuple[Path, Path] | None = None
                   ) -> Registry:
    workdir.mkdir(parents=True)
    port = free_port()
    http: dict[str, Any] = {"addr": f"127.0.0.1:{port}"}
    if tls:
        http["tls"] = {"certificate": str(tls[0]), "key": str(tls[1])}
    config = {"version": 0.1, "log": {"level": "info", "accesslog": {"disabled": False}},
              "storage": {"filesystem": {"rootdirectory": str(workdir / "data")}, "delete": {"enabled": True}},
              "http": http, **({"auth": auth} if auth else {})}
    (workdir / "config.yml").write_text(json.dumps(config))  # JSON is YAML
    with open(workdir / "registry.log", "wb") as log:
        proc = subprocess.Popen([TOOLS["docker-registry"], "serve", str(workdir / "config.yml")],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    reg = Registry(workdir, port, proc, "https" if tls else "http")
    deadline = time.monotonic() + 15
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"docker-registry exited ({proc.returncode}):\n{reg.log}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return reg
        except OSError:
            if time.monotonic() > deadline:
                reg.stop()
                raise AssertionError(f"docker-registry did not listen on {port}:\n{reg.log}") from None
            time.sleep(0.05)


@dataclass
class Registries:
    plain: Registry
    basic: Registry
    token: Registry
    tls: Registry
    token_server: TokenServer
    ca_file: Path


@pytest.fixture(scope="module")
def registries() -> Iterator[Registries]:
    workdir = Path(tempfile.mkdtemp(prefix="kumo-registry-"))
    (workdir / "policy.json").write_text('{"default": [{"type": "insecureAcceptAnything"}]}')  # for skopeo
    started: list[Registry] = []
    token_server = None
    try:
        started.append(start_registry(workdir / "plain"))
        htpasswd = subprocess.run([TOOLS["htpasswd"], "-Bbn", USER, PASSWORD], capture_output=True, text=True,
                                  check=True).stdout
        (workdir / "htpasswd").write_text(htpasswd)
        started.append(start_registry(workdir / "basic", {"htpasswd": {"realm": "kumo-test",
                                                                       "path": str(workdir / "htpasswd")}}))
        token_server = TokenServer(workdir)
        started.append(start_registry(workdir / "token", {"token": {
            "realm": token_server.realm, "service": SERVICE, "issuer": ISSUER,
            "rootcertbundle": str(token_server.cert_file)}}))
        # HTTPS: a CA of our own signs the registry's certificate for 127.0.0.1.
        ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        ca = _self_signed(ca_key, "kumo test CA", ca=True)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        cert = _self_signed(key, "127.0.0.1", ca=False, san="127.0.0.1", issuer=(ca, ca_key))
        (workdir / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        (workdir / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (workdir / "tls.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                            serialization.PrivateFormat.PKCS8,
                                                            serialization.NoEncryption()))
        started.append(start_registry(workdir / "tls", tls=(workdir / "tls.crt", workdir / "tls.key")))
        (workdir / "tls" / "certs").mkdir()
        shutil.copy(workdir / "ca.pem", workdir / "tls" / "certs" / "ca.crt")
        yield Registries(*started, token_server, workdir / "ca.pem")
    finally:
        for reg in started:
            reg.stop()
        if token_server:
            token_server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def tmp() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="kumo-images-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def pull(store_root: Path, ref: str, progress: list[tuple[str, int, int]] | None = None, **client_kw: Any) -> Any:
    async def go() -> Any:
        async with RegistryClient(**client_kw) as client:
            return await ImageStore(store_root, client).pull(
                ref, progress=(lambda d, done, total: progress.append((d, done, total))) if progress is not None
                else None)
    return asyncio.run(go())


def store_is_clean(root: Path) -> bool:
    """No partial downloads or unpacks left behind."""
    partial = [p for p in (root / "blobs").rglob("*") if p.name.endswith(".partial")]
    return not partial and not any((root / "tmp").iterdir())


# -- the two-layer image used by several tests ------------------------------------------------------


def app_image(layout: OciLayout, marker: bytes = b"") -> Built:
    base = layer_tar(
        directory("bin"), entry("bin/busybox", data=b"\x7fELF busybox" + marker, mode=0o755),
        entry("bin/sh", tarfile.SYMTYPE, link="/bin/busybox"), entry("bin/vi", data=b"vi", mode=0o755),
        entry("bin/view", tarfile.LNKTYPE, link="bin/vi"),
        directory("www", mode=0o750, uid=33, gid=33), entry("www/old.html", data=b"old"),
        directory("www/sub"), entry("www/sub/x", data=b"x"),
        entry("usr/local/bin/su-ish", data=b"setuid", mode=0o4755, uid=1234, gid=5678),
        entry("dev/null", tarfile.CHRTYPE, mode=0o666, devmajor=1, devminor=3))
    top = layer_tar(
        entry("bin/.wh.vi"), entry("www/.wh..wh..opq"), entry("www/index.html", data=b"<h1>new</h1>", uid=33, gid=33),
        directory("app"), entry("app/run.sh", data=b"#!/bin/sh\necho hi\n", mode=0o755), unique_file("app/id"))
    config = {"Entrypoint": ["/bin/sh", "-c"], "Cmd": ["/app/run.sh"], "Env": ["PATH=/bin", "GREETING=hi"],
              "WorkingDir": "/app", "User": "33:33", "ExposedPorts": {"80/tcp": {}, "53/udp": {}}}
    return layout.image([base, top], config)


# -- tests -----------------------------------------------------------------------------------------


def test_pull_by_tag_and_digest_unpacks_whiteouts_and_opaque_dirs(registries: Registries, tmp: Path) -> None:
    reg = registries.plain
    layout = OciLayout(tmp / "oci")
    built = app_image(layout)
    layout.tag("v1", built.manifest)
    reg.push(layout, "v1", "kumo/app:v1")

    progress: list[tuple[str, int, int]] = []
    started = time.monotonic()
    image = pull(tmp / "store", f"{reg.host}/kumo/app:v1", progress)
    cold = time.monotonic() - started
    assert image.manifest_digest == built.manifest["digest"]
    assert image.layers == tuple(built.layers) and image.config_digest == built.config
    assert image.platform == "linux/amd64" and image.index_digest is None
    cfg = image.config
    assert cfg.entrypoint == ("/bin/sh", "-c") and cfg.cmd == ("/app/run.sh",)
    assert cfg.env == ("PATH=/bin", "GREETING=hi") and cfg.working_dir == "/app" and cfg.user == "33:33"
    assert cfg.exposed_ports == ("53/udp", "80/tcp")
    raw = asyncio.run(ImageStore(tmp / "store", RegistryClient()).config_json(image))
    assert raw["config"]["Cmd"] == ["/app/run.sh"] and len(raw["rootfs"]["diff_ids"]) == 2
    # Progress: per layer, from 0 to its full size.
    for digest in built.layers:
        events = [(done, total) for d, done, total in progress if d == digest]
        assert events[0][0] == 0 and events[-1][0] == events[-1][1] > 0, events

    store = tmp / "store"
    s = ImageStore(store, RegistryClient())
    base, top = s.layer_dirs(image)
    assert base == store / "layers" / "sha256" / built.layers[0].split(":")[1]
    # Whiteout: a 0:0 character device where bin/vi was; opaque www; owners, modes, links and devices kept.
    vi = os.lstat(top / "bin" / "vi")
    assert stat.S_ISCHR(vi.st_mode) and vi.st_rdev == os.makedev(0, 0)
    assert os.getxattr(top / "www", "trusted.overlay.opaque") == b"y"
    assert not os.path.exists(top / "www" / ".wh..wh..opq") and not os.path.exists(top / "bin" / ".wh.vi")
    su = os.lstat(base / "usr/local/bin/su-ish")
    assert (su.st_uid, su.st_gid, stat.S_IMODE(su.st_mode)) == (1234, 5678, 0o4755)
    www = os.lstat(base / "www")
    assert (www.st_uid, www.st_gid, stat.S_IMODE(www.st_mode)) == (33, 33, 0o750)
    assert os.readlink(base / "bin/sh") == "/bin/busybox"
    assert os.lstat(base / "bin/view").st_ino == os.lstat(base / "bin/vi").st_ino
    null = os.lstat(base / "dev/null")
    assert stat.S_ISCHR(null.st_mode) and null.st_rdev == os.makedev(1, 3)
    assert stat.S_IMODE(os.lstat(base).st_mode) == 0o755
    assert s.lowerdir(image) == f"{top}:{base}"
    assert store_is_clean(store)

    # The layers as overlayfs sees them: vi gone, www replaced, everything else merged.
    merged = tmp / "merged"
    merged.mkdir()
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={s.lowerdir(image)}", str(merged)],
                   check=True, capture_output=True)
    try:
        assert sorted(os.listdir(merged / "bin")) == ["busybox", "sh", "view"]
        assert sorted(os.listdir(merged / "www")) == ["index.html"]
        assert (merged / "app/run.sh").read_bytes().startswith(b"#!/bin/sh")
    finally:
        subprocess.run(["umount", str(merged)], check=True)

    # By digest, and by tag+digest: the same image, straight from the store with no registry request.
    before = (reg.manifest_gets(), len(reg.blob_gets()))
    digest_ref = f"{reg.host}/kumo/app@{built.manifest['digest']}"
    by_digest = pull(store, digest_ref)
    assert by_digest.manifest_digest == image.manifest_digest and by_digest.layers == image.layers
    assert by_digest.reference == digest_ref
    # In a fresh store, a pull by digest does go to the registry.
    fresh = pull(tmp / "store2", f"{reg.host}/kumo/app:v1@{built.manifest['digest']}")
    assert fresh.layers == image.layers
    assert reg.manifest_gets() == before[0] + 1
    warm_start = time.monotonic()
    pull(store, f"{reg.host}/kumo/app:v1")
    warm = time.monotonic() - warm_start
    print(f"\npull of a 2-layer image: cold {cold * 1000:.0f} ms, warm {warm * 1000:.0f} ms")


def test_second_pull_downloads_nothing_and_shared_layers_once(registries: Registries, tmp: Path) -> None:
    reg = registries.plain
    layout = OciLayout(tmp / "oci")
    shared = layer_tar(directory("etc"), entry("etc/os-release", data=b"ID=kumo\n"), unique_file("etc/seed"))
    one = layout.image([shared, layer_tar(unique_file("one"))], {"Cmd": ["one"]})
    two = layout.image([shared, layer_tar(unique_file("two"))], {"Cmd": ["two"]})
    layout.tag("one", one.manifest)
    layout.tag("two", two.manifest)
    reg.push(layout, "one", "kumo/shared:one")
    reg.push(layout, "two", "kumo/shared:two")
    store = tmp / "store"

    before = len(reg.blob_gets())
    pull(store, f"{reg.host}/kumo/shared:one")
    assert sorted(reg.blob_gets()[before:]) == sorted([one.config, *one.layers])
    # Same image again, through a new client and store object: the manifest is resolved, nothing else fetched.
    before, manifests = len(reg.blob_gets()), reg.manifest_gets()
    progress: list[tuple[str, int, int]] = []
    pull(store, f"{reg.host}/kumo/shared:one", progress)
    assert reg.blob_gets()[before:] == [] and reg.manifest_gets() == manifests + 1
    assert {d for d, done, total in progress} == set(one.layers) and all(d == t for _, d, t in progress)
    # Another image with the same base layer: only its own config and top layer come over the wire.
    before = len(reg.blob_gets())
    image = pull(store, f"{reg.host}/kumo/shared:two")
    assert sorted(reg.blob_gets()[before:]) == sorted([two.config, two.layers[1]])
    assert image.layers[0] == one.layers[0] and image.config.cmd == ("two",)


def test_concurrent_pulls_of_one_image_download_each_layer_once(registries: Registries, tmp: Path) -> None:
    reg = registries.plain
    layout = OciLayout(tmp / "oci")
    built = layout.image([layer_tar(unique_file("a")), layer_tar(unique_file("b")), layer_tar(unique_file("c"))])
    layout.tag("v1", built.manifest)
    reg.push(layout, "v1", "kumo/concurrent:v1")

    async def go() -> list[Any]:
        async with RegistryClient() as client:
            store = ImageStore(tmp / "store", client)
            return await asyncio.gather(*(store.pull(f"{reg.host}/kumo/concurrent:v1") for _ in range(4)))

    before = len(reg.blob_gets())
    images = asyncio.run(go())
    assert len({i.manifest_digest for i in images}) == 1
    fetched = reg.blob_gets()[before:]
    assert sorted(d for d in fetched if d in built.layers) == sorted(built.layers), fetched
    assert store_is_clean(tmp / "store")


def test_index_resolves_to_linux_amd64(registries: Registries, tmp: Path) -> None:
    reg = registries.plain
    layout = OciLayout(tmp / "oci")
    arm = layout.image([layer_tar(unique_file("arm64"))], {"Cmd": ["arm"]}, arch="arm64")
    amd = layout.image([layer_tar(unique_file("amd64"))], {"Cmd": ["amd"]}, arch="amd64")
    index = layout.index(arm.manifest, amd.manifest)
    layout.tag("multi", index)
    only_arm = layout.index(arm.manifest)
    layout.tag("armonly", only_arm)
    reg.push(layout, "multi", "kumo/multi:latest")
    reg.push(layout, "armonly", "kumo/multi:armonly")

    image = pull(tmp / "store", f"{reg.host}/kumo/multi")  # :latest implied
    assert image.index_digest == index["digest"] and image.manifest_digest == amd.manifest["digest"]
    assert image.layers == tuple(amd.layers) and image.platform == "linux/amd64" and image.config.cmd == ("amd",)
    # By the index's digest too; and another platform when asked for.
    by_digest = pull(tmp / "store", f"{reg.host}/kumo/multi@{index['digest']}")
    assert by_digest.manifest_digest == amd.manifest["digest"]
    arm_image = pull(tmp / "store-arm", f"{reg.host}/kumo/multi:latest", platform=Platform("linux", "arm64"))
    assert arm_image.layers == tuple(arm.layers) and arm_image.platform == "linux/arm64"
    with pytest.raises(UnsupportedImage, match=r"kumo/multi:armonly: no linux/amd64 image in the index "
                                               r"\(it has: linux/arm64\)"):
        pull(tmp / "store", f"{reg.host}/kumo/multi:armonly")


def test_tampered_blob_is_refused_and_nothing_partial_is_kept(registries: Registries, tmp: Path) -> None:
    reg = registries.plain
    layout = OciLayout(tmp / "oci")
    built = layout.image([layer_tar(unique_file("victim"))])
    layout.tag("v1", built.manifest)
    reg.push(layout, "v1", "kumo/tampered:v1")
    stored = reg.blob_file(built.layers[0])
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different content
    stored.write_bytes(bytes(data))

    store = tmp / "store"
    ref = f"{reg.host}/kumo/tampered:v1"
    with pytest.raises(DigestMismatch) as err:
        pull(store, ref)
    assert str(err.value).startswith(f"cannot pull {ref}: blob {built.layers[0]} failed verification")
    assert "tampered" in str(err.value)
    s = ImageStore(store, RegistryClient())
    assert not s.blob_path(built.layers[0]).exists() and not s.layer_path(built.layers[0]).exists()
    assert store_is_clean(store)


def test_layer_with_path_escape_is_refused(registries: Registries, tmp: Path) -> None:
    reg = registries.plain
    layout = OciLayout(tmp / "oci")
    outside = tmp / "store" / "layers" / "escaped"
    evil = layout.image([layer_tar(entry("ok", data=b"fine"), entry("../escaped", data=b"owned"))])
    link = layout.image([layer_tar(entry("etc", tarfile.SYMTYPE, link=str(tmp)), entry("etc/owned", data=b"x"))])
    layout.tag("dotdot", evil.manifest)
    layout.tag("symlink", link.manifest)
    reg.push(layout, "dotdot", "kumo/evil:dotdot")
    reg.push(layout, "symlink", "kumo/evil:symlink")

    store = tmp / "store"
    with pytest.raises(UnsafeLayer, match=r"kumo/evil:dotdot: layer sha256:\w+ has an unsafe entry '../escaped'"):
        pull(store, f"{reg.host}/kumo/evil:dotdot")
    with pytest.raises(UnsafeLayer, match=r"its parent 'etc' is a symlink"):
        pull(store, f"{reg.host}/kumo/evil:symlink")
    assert not outside.exists() and not (tmp / "owned").exists()
    s = ImageStore(store, RegistryClient())
    assert not s.layer_path(evil.layers[0]).exists() and not s.layer_path(link.layers[0]).exists()
    assert store_is_clean(store)


def test_unknown_repository_tag_and_digest_are_not_found(registries: Registries, tmp: Path) -> None:
    reg = registries.plain
    for ref in (f"{reg.host}/kumo/no-such-repo:v1", f"{reg.host}/kumo/app:no-such-tag",
                f"{reg.host}/kumo/app@sha256:{'0' * 64}"):
        with pytest.raises(ImageNotFound) as err:
            pull(tmp / "store", ref)
        assert str(err.value).startswith(f"cannot pull {parse_reference(ref)}: not found"), err.value


def test_unreachable_registry_says_so(tmp: Path) -> None:
    port = free_port()  # nothing listens there
    started = time.monotonic()
    with pytest.raises(RegistryUnreachable, match=rf"cannot pull 127.0.0.1:{port}/x/y:latest: cannot reach registry "
                                                  rf"at http://127.0.0.1:{port}"):
        pull(tmp / "store", f"127.0.0.1:{port}/x/y")
    assert time.monotonic() - started < 5
    # A registry that accepts connections but never answers: the read timeout, not a hang.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        host = f"127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(RegistryUnreachable, match=rf"cannot pull {host}/x/y:1: registry at http://{host} "
                                                      r"timed out \(ReadTimeout\)"):
            pull(tmp / "store", f"{host}/x/y:1", timeout=0.5)
        assert time.monotonic() - started < 3


def test_basic_auth(registries: Registries, tmp: Path) -> None:
    reg = registries.basic
    layout = OciLayout(tmp / "oci")
    built = layout.image([layer_tar(unique_file())])
    layout.tag("v1", built.manifest)
    reg.push(layout, "v1", "kumo/private:v1", creds=f"{USER}:{PASSWORD}")
    ref = f"{reg.host}/kumo/private:v1"

    image = pull(tmp / "store", ref, credentials={reg.host: Credentials(USER, PASSWORD)})
    assert image.layers == tuple(built.layers)
    with pytest.raises(Unauthorized, match=rf"cannot pull {ref}: unauthorized: the credentials were refused"):
        pull(tmp / "store2", ref, credentials={reg.host: Credentials(USER, "wrong")})
    with pytest.raises(Unauthorized, match=rf"cannot pull {ref}: registry at http://{reg.host} requires "
                                           "credentials and none were given"):
        pull(tmp / "store2", ref)


def test_bearer_token_auth_with_token_cache(registries: Registries, tmp: Path) -> None:
    reg, tokens = registries.token, registries.token_server
    layout = OciLayout(tmp / "oci")
    one = layout.image([layer_tar(unique_file())])
    two = layout.image([layer_tar(unique_file())])
    layout.tag("one", one.manifest)
    layout.tag("two", two.manifest)
    reg.push(layout, "one", "kumo/tokened:one", creds=f"{USER}:{PASSWORD}")
    reg.push(layout, "two", "kumo/tokened:two", creds=f"{USER}:{PASSWORD}")
    creds = {reg.host: Credentials(USER, PASSWORD)}

    async def two_pulls() -> tuple[int, int]:
        async with RegistryClient(credentials=creds) as client:
            store = ImageStore(tmp / "store", client)
            before = len(tokens.requests)
            await store.pull(f"{reg.host}/kumo/tokened:one")
            await store.pull(f"{reg.host}/kumo/tokened:two")
            return client.token_requests, len(tokens.requests) - before

    # One token for the repository's pull scope, reused for both images' manifests and blobs.
    assert asyncio.run(two_pulls()) == (1, 1)
    assert "scope=repository%3Akumo%2Ftokened%3Apull" in tokens.requests[-1]
    assert f"service={SERVICE}" in tokens.requests[-1]

    ref = f"{reg.host}/kumo/tokened:one"
    with pytest.raises(Unauthorized, match=rf"cannot pull {ref}: token server {tokens.realm} refused a token "
                                           "as 'kumo' for repository:kumo/tokened:pull"):
        pull(tmp / "store2", ref, credentials={reg.host: Credentials(USER, "wrong")})
    with pytest.raises(Unauthorized, match=rf"cannot pull {ref}: unauthorized: the registry requires credentials"):
        pull(tmp / "store2", ref)


def test_mirrors_serve_docker_hub_and_mcr_names(registries: Registries, tmp: Path) -> None:
    reg = registries.plain
    layout = OciLayout(tmp / "oci")
    hub = layout.image([layer_tar(unique_file())], {"Cmd": ["hub"]})
    mcr = layout.image([layer_tar(unique_file())], {"Cmd": ["mcr"]})
    layout.tag("hub", hub.manifest)
    layout.tag("mcr", mcr.manifest)
    reg.push(layout, "hub", "library/kumo-mirror-test:1")
    reg.push(layout, "mcr", "azuredocs/aci-helloworld:latest")

    mirrors = {"docker.io": reg.host, "mcr.microsoft.com": f"http://{reg.host}/"}
    image = pull(tmp / "store", "kumo-mirror-test:1", mirrors=mirrors)
    assert image.reference == "docker.io/library/kumo-mirror-test:1" and image.config.cmd == ("hub",)
    image = pull(tmp / "store", "mcr.microsoft.com/azuredocs/aci-helloworld", mirrors=mirrors)
    assert image.reference == "mcr.microsoft.com/azuredocs/aci-helloworld:latest" and image.config.cmd == ("mcr",)
    assert '"GET /v2/library/kumo-mirror-test/manifests/1 HTTP/1.1" 200' in reg.log


def test_https_registry_with_ca_bundle(registries: Registries, tmp: Path) -> None:
    reg = registries.tls
    layout = OciLayout(tmp / "oci")
    built = layout.image([layer_tar(unique_file())])
    layout.tag("v1", built.manifest)
    reg.push(layout, "v1", "kumo/tls:v1")
    mirrors = {"registry.kumo.test": f"https://{reg.host}"}

    image = pull(tmp / "store", "registry.kumo.test/kumo/tls:v1", mirrors=mirrors, ca_bundle=registries.ca_file)
    assert image.layers == tuple(built.layers)
    with pytest.raises(RegistryUnreachable, match=r"cannot pull registry.kumo.test/kumo/tls:v1: cannot reach "
                                                  r"registry at https://127.0.0.1:\d+: .*CERTIFICATE_VERIFY_FAILED"):
        pull(tmp / "store2", "registry.kumo.test/kumo/tls:v1", mirrors=mirrors)


def test_registry_without_v2_api_is_named(tmp: Path) -> None:
    """A web server that is not a registry: the probe says so rather than failing later."""
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        host = f"127.0.0.1:{httpd.server_address[1]}"
        with pytest.raises(Exception, match=rf"{host}/v2/ answered HTTP 404; is it an OCI/Docker v2 registry"):
            pull(tmp / "store", f"{host}/a/b:1")
    finally:
        httpd.shutdown()
        httpd.server_close()

