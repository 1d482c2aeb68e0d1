"""The offline image catalog: a real OCI layout (checked by skopeo), deterministic, cached, and images that
really run under runc (unpacked by umoci), web apps answering inside a network namespace of their own."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kumo.images import catalog
from kumo.images.catalog import recipes

TOOLS = ("skopeo", "umoci", "runc", "nsenter", "ip", "curl")
pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="runs containers with runc: needs root"),
    pytest.mark.skipif(any(shutil.which(t) is None for t in TOOLS), reason=f"needs {', '.join(TOOLS)}"),
    pytest.mark.skipif(not os.path.exists("/bin/busybox") or not os.path.exists("/usr/sbin/nginx"),
                       reason="needs busybox-static and nginx-light (scripts/setup.sh installs them)"),
]

# Docker's default capabilities (umoci's config has runc's narrower set, without SETUID/SETGID, which nginx needs
# to drop to its user).
DOCKER_CAPS = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID",
               "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL",
               "CAP_AUDIT_WRITE"]
QUICK = {"library/busybox", "library/nginx", "azuredocs/aci-helloworld", "azuredocs/aci-wordcount",
         "azuredocs/aci-hellofiles"}


def quiet(_line: str) -> None:
    pass


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("catalog")
    lines: list[str] = []
    result = catalog.build(out, only=QUICK, say=lines.append)
    assert not result.failed, lines
    assert not result.up_to_date
    assert any("[busybox] layer busybox:" in line for line in lines), lines
    return out


def blob(layout: Path, digest: str) -> bytes:
    return (layout / "blobs" / "sha256" / digest.split(":", 1)[1]).read_bytes()


def manifest_of(layout: Path, ref: str) -> dict[str, Any]:
    index = json.loads((layout / "index.json").read_text())
    [desc] = [m for m in index["manifests"] if m["annotations"][catalog.REF_NAME] == ref]
    return json.loads(blob(layout, desc["digest"]))


def test_default_catalog_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUMO_CATALOG_DIR", "/tmp/somewhere")
    assert catalog.default_catalog_dir() == Path("/tmp/somewhere")
    monkeypatch.delenv("KUMO_CATALOG_DIR")
    assert catalog.default_catalog_dir() == Path("/var/cache/kumo/catalog")  # root (see pytestmark)
    assert catalog.DEFAULT_MIRRORED_REGISTRIES == ("mcr.microsoft.com", "docker.io")


def test_debian_mirrors_from_apt_sources(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text("deb https://packages.example.org/apt cloud-sdk main\n")
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm bookworm-updates\nComponents: main\n\n"
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\nComponents: main\n")
    assert recipes.debian_mirrors(tmp_path) == ("http://mirror.example/debian", "http://mirror.example/debian-security")
    assert recipes.debian_mirrors(tmp_path / "none") == ("http://deb.debian.org/debian",
                                                         "http://deb.debian.org/debian-security")


def test_layout_is_valid_oci(layout: Path) -> None:
    assert json.loads((layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((layout / "index.json").read_text())
    refs = {m["annotations"][catalog.REF_NAME] for m in index["manifests"]}
    want = {f"{img.repository}:{tag}" for img in recipes.IMAGES if img.repository in QUICK for tag in img.tags}
    assert refs == want
    # Every blob is named by its content's digest.
    for path in (layout / "blobs" / "sha256").iterdir():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == path.name
    for ref in sorted(refs):
        info = json.loads(subprocess.run(["skopeo", "inspect", f"oci:{layout}:{ref}"], capture_output=True,
                                         text=True, check=True).stdout)
        assert info["Architecture"] == "amd64" and info["Os"] == "linux"
        assert any(e.startswith("PATH=") for e in info["Env"])
        manifest = manifest_of(layout, ref)
        assert manifest["mediaType"] == catalog.OCI_MANIFEST
        assert info["Layers"] == [layer["digest"] for layer in manifest["layers"]]
        config = json.loads(blob(layout, manifest["config"]["digest"]))
        assert len(blob(layout, manifest["config"]["digest"])) == manifest["config"]["size"]
        assert len(config["history"]) >= len(manifest["layers"])
        for layer, diff_id in zip(manifest["layers"], config["rootfs"]["diff_ids"], strict=True):
            data = blob(layout, layer["digest"])
            assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
            assert len(data) == layer["size"]
            assert "sha256:" + hashlib.sha256(gzip.decompress(data)).hexdigest() == diff_id


def test_image_configs(layout: Path) -> None:
    def config(ref: str) -> dict[str, Any]:
        return json.loads(blob(layout, manifest_of(layout, ref)["config"]["digest"]))["config"]

    assert config("library/busybox:latest")["Cmd"] == ["sh"]
    nginx = config("library/nginx:latest")
    assert nginx["ExposedPorts"] == {"80/tcp": {}} and nginx["StopSignal"] == "SIGQUIT"
    assert nginx["Cmd"] == ["nginx", "-g", "daemon off;"]
    assert config("azuredocs/aci-helloworld:latest")["ExposedPorts"] == {"80/tcp": {}}


def test_layers_are_shared_and_deterministic_tars(layout: Path) -> None:
    busybox = manifest_of(layout, "library/busybox:latest")["layers"]
    nginx = manifest_of(layout, "library/nginx:latest")["layers"]
    hello = manifest_of(layout, "azuredocs/aci-helloworld:latest")["layers"]
    count = manifest_of(layout, "azuredocs/aci-wordcount:latest")["layers"]
    assert busybox[0] == nginx[0] == hello[0] == count[0]
    assert hello[1] == count[1]  # the python layer
    with tarfile.open(fileobj=gzip.open(layout / "blobs" / "sha256" / nginx[1]["digest"].split(":")[1])) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names, key=lambda n: n.split("/"))
    assert all(m.uname == "" and m.gname == "" for m in members)
    by_name = {m.name: m for m in members}
    assert by_name["var/log/nginx/access.log"].linkname == "/dev/stdout"
    assert by_name["var/log/nginx/error.log"].linkname == "/dev/stderr"
    with tarfile.open(fileobj=gzip.open(layout / "blobs" / "sha256" / busybox[0]["digest"].split(":")[1])) as tar:
        bb = {m.name: m for m in tar.getmembers()}
    assert bb["bin/sh"].issym() and bb["bin/sh"].linkname == "/bin/busybox"
    assert bb["tmp"].mode == 0o1777


def test_second_build_is_a_no_op_and_a_fresh_build_gives_the_same_digests(layout: Path, tmp_path: Path) -> None:
    lines: list[str] = []
    t0 = time.monotonic()
    again = catalog.build(layout, only=QUICK, say=lines.append)
    assert again.up_to_date and time.monotonic() - t0 < 5
    assert any("catalog up to date" in line for line in lines)
    fresh = catalog.build(tmp_path / "other", only=QUICK, say=quiet)
    assert not fresh.up_to_date
    assert fresh.images == again.images
    # A removed blob is noticed and made again, with the same digest.
    layer = manifest_of(layout, "library/nginx:latest")["layers"][1]["digest"]
    (layout / "blobs" / "sha256" / layer.split(":")[1]).unlink()
    lines.clear()
    rebuilt = catalog.build(layout, only=QUICK, say=lines.append)
    assert not rebuilt.up_to_date and rebuilt.images == again.images
    assert any("[nginx] layer nginx:" in line and "cached" not in line for line in lines), lines
    assert any("[busybox] layer busybox: cached" in line for line in lines), lines


# ------------------------------------------------------------------ running the images


class Runner:
    """Unpacks images with umoci and runs them with runc (its own state root), cleaning up afterwards."""

    def __init__(self, layout: Path) -> None:
        self.layout = layout
        self.tmp = Path(tempfile.mkdtemp(prefix="kumo-catalog-run-"))
        self.state = self.tmp / "runc"
        self.containers: list[str] = []
        self.netns: list[str] = []

    def bundle(self, ref: str, args: list[str] | None = None, *, host_net: bool = False) -> Path:
        path = self.tmp / uuid.uuid4().hex[:8]
        subprocess.run(["umoci", "unpack", "--image", f"{self.layout}:{ref}", str(path)], check=True,
                       capture_output=True)
        cfg = json.loads((path / "config.json").read_text())
        cfg["process"]["terminal"] = False
        cfg["process"]["capabilities"] = {k: DOCKER_CAPS for k in ("bounding", "effective", "permitted")}
        if args:
            cfg["process"]["args"] = args
        if host_net:  # join the network namespace runc is started in
            cfg["linux"]["namespaces"] = [n for n in cfg["linux"]["namespaces"] if n["type"] != "network"]
        (path / "config.json").write_text(json.dumps(cfg))
        return path

    def run(self, bundle: Path, timeout: float = 20) -> subprocess.CompletedProcess[str]:
        cid = "kumotest-" + uuid.uuid4().hex[:10]
        self.containers.append(cid)
        return subprocess.run(["runc", "--root", str(self.state), "run", "--bundle", str(bundle), cid],
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def netns_add(self) -> str:
        name = "kumotest-" + uuid.uuid4().hex[:8]
        subprocess.run(["ip", "netns", "add", name], check=True)
        self.netns.append(name)
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        return name

    def start(self, bundle: Path, netns: str) -> tuple[str, Path]:
        """`runc run -d` inside the netns, stdout and stderr to a file (never a pipe)."""
        cid = "kumotest-" + uuid.uuid4().hex[:10]
        self.containers.append(cid)
        log = self.tmp / f"{cid}.log"
        with open(log, "wb") as out:
            subprocess.run(["nsenter", f"--net=/run/netns/{netns}", "runc", "--root", str(self.state), "run", "-d",
                            "--bundle", str(bundle), cid], stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                           check=True, timeout=30)
        return cid, log

    def curl(self, netns: str, url: str = "http://127.0.0.1/", deadline: float = 15) -> str:
        end = time.monotonic() + deadline
        while True:
            proc = subprocess.run(["nsenter", f"--net=/run/netns/{netns}", "curl", "-sf", "--max-time", "3", url],
                                  capture_output=True, text=True)
            if proc.returncode == 0:
                return proc.stdout
            if time.monotonic() > end:
                raise AssertionError(f"{url} in {netns}: curl exit {proc.returncode} {proc.stderr}")
            time.sleep(0.1)

    def pids(self, cid: str) -> list[int]:
        out = subprocess.run(["runc", "--root", str(self.state), "ps", "--format", "json", cid],
                             capture_output=True, text=True, check=True).stdout
        return json.loads(out) or []

    def close(self) -> None:
        for cid in self.containers:
            subprocess.run(["runc", "--root", str(self.state), "delete", "-f", cid], capture_output=True)
        for name in self.netns:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.fixture
def runner(layout: Path) -> Iterator[Runner]:
    r = Runner(layout)
    try:
        yield r
    finally:
        r.close()


def test_busybox_runs(runner: Runner) -> None:
    script = "echo hi from $(uname -s); id; ls /bin | wc -l"
    proc = runner.run(runner.bundle("library/busybox:latest", ["sh", "-c", script]))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "hi from Linux"
    assert lines[1].startswith("uid=0(root) gid=0(root)")
    assert int(lines[2]) > 50


def test_wordcount_prints_counts_and_exits(runner: Runner) -> None:
    proc = runner.run(runner.bundle("azuredocs/aci-wordcount:latest"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("[('")
    counts = eval(proc.stdout)  # noqa: S307 - the app prints a Python list of tuples, as Azure's does
    assert len(counts) == 10 and counts == sorted(counts, key=lambda c: -c[1])
    failing = runner.run(runner.bundle("azuredocs/aci-wordcount:latest",
                                       ["python3", "/usr/src/app/wordcount.py", "/nonexistent"]))
    assert failing.returncode == 1 and "cannot read" in failing.stderr


def test_helloworld_serves_and_logs_requests(runner: Runner) -> None:
    netns = runner.netns_add()
    cid, log = runner.start(runner.bundle("azuredocs/aci-helloworld:latest", host_net=True), netns)
    page = runner.curl(netns)
    assert "Welcome to Azure Container Instances!" in page
    deadline = time.monotonic() + 5
    while '"GET / HTTP/1.1" 200' not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    text = log.read_text()
    assert "listening on port 80" in text and '"GET / HTTP/1.1" 200' in text, text


def test_hellofiles_saves_a_message_as_a_file(runner: Runner) -> None:
    netns = runner.netns_add()
    cid, log = runner.start(runner.bundle("azuredocs/aci-hellofiles:latest", host_net=True), netns)
    assert "Welcome to Azure Container Instances!" in runner.curl(netns)
    proc = subprocess.run(["nsenter", f"--net=/run/netns/{netns}", "curl", "-sf", "--max-time", "5",
                           "--data-urlencode", "message=hello files", "http://127.0.0.1/"],
                          capture_output=True, text=True, check=True)
    assert "Saved as" in proc.stdout
    ls = subprocess.run(["runc", "--root", str(runner.state), "exec", cid, "sh", "-c", "cat /aci/logs/*.txt"],
                        capture_output=True, text=True, check=True, timeout=10)
    assert ls.stdout == "hello files\n"
    assert "wrote /aci/logs/" in log.read_text()


def test_nginx_serves_as_the_official_image(runner: Runner) -> None:
    netns = runner.netns_add()
    cid, log = runner.start(runner.bundle("library/nginx:latest", host_net=True), netns)
    page = runner.curl(netns)
    assert "<h1>Welcome to nginx!</h1>" in page
    deadline = time.monotonic() + 5
    while '"GET / HTTP/1.1" 200' not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert '"GET / HTTP/1.1" 200' in log.read_text()  # access.log -> /dev/stdout
    uids = set()
    for pid in runner.pids(cid):
        with open(f"/proc/{pid}/status") as f:
            uids.add(next(int(line.split()[1]) for line in f if line.startswith("Uid:")))
    assert uids == {0, 101}  # master as root, workers as nginx


@pytest.mark.slow
def test_full_catalog_with_debian_and_python(tmp_path: Path) -> None:
    if shutil.which("mmdebstrap") is None:
        pytest.skip("needs mmdebstrap (scripts/setup.sh installs it)")
    out = tmp_path / "full"
    lines: list[str] = []
    result = catalog.build(out, say=lines.append)
    assert not result.failed, "\n".join(lines)
    assert set(result.images) == {f"{i.repository}:{t}" for i in recipes.IMAGES for t in i.tags}
    debian = manifest_of(out, "library/debian:bookworm-slim")["layers"]
    python = manifest_of(out, "library/python:3.11-slim")["layers"]
    assert len(debian) == 1 and len(python) == 2 and python[0] == debian[0]
    assert catalog.build(out, say=lines.append).up_to_date
    runner = Runner(out)
    try:
        proc = runner.run(runner.bundle("library/debian:latest", ["bash", "-c", "cat /etc/debian_version; "
                                                                  "ls /usr/share/man 2>&1 | wc -l"]))
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith("12.")
        proc = runner.run(runner.bundle("library/python:3", ["python", "-c", "import sys, ssl; print(sys.version)"]))
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith("3.11.")
    finally:
        runner.close()
