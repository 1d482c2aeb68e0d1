"""The README's Python SDK snippet runs as written, with the environment `kumo env` prints."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kumo.compute.marketplace import ImageCatalog
from kumo.config import default_vm_images_dir
from tests.conftest import ROOT, KumoServer

pytestmark = pytest.mark.e2e


def test_readme_sdk_snippet_runs(kumo: KumoServer) -> None:
    readme = (ROOT / "README.md").read_text()
    snippet = re.search(r"```python\n(.*?)```", readme, re.S)
    assert snippet, "README.md lost its Python SDK snippet"
    script = f'eval "$({sys.executable} -m kumo env)" && exec {sys.executable} -'
    out = subprocess.run(["bash", "-c", script], input=snippet.group(1), env=kumo.env(), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "rg1" in out.stdout
    assert kumo.az("group", "exists", "-n", "rg1") is False  # the snippet deletes what it made


def run_walkthrough(kumo: KumoServer, first_line: str, timeout: float = 300,
                    home: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the README's bash block that starts with `first_line`, as written, with kumo on PATH (and
    HOME elsewhere when the block writes there: ssh keys, known hosts)."""
    readme = (ROOT / "README.md").read_text()
    snippet = re.search(r"```bash\n(" + re.escape(first_line) + r".*?)```", readme, re.S)
    assert snippet, f"README.md lost its walkthrough starting with {first_line!r}"
    env = {**kumo.env(), "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}",
           **({"HOME": str(home)} if home else {})}
    out = subprocess.run(["bash", "-ec", snippet.group(1)], env=env, capture_output=True, text=True,
                         timeout=timeout)
    assert out.returncode == 0, out.stderr
    return out


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("nft"), reason="virtual networks need root and nftables")
def test_readme_network_walkthrough_runs(kumo: KumoServer) -> None:
    out = run_walkthrough(kumo, "kumo az group create -n netdemo")
    assert "<!DOCTYPE HTML>" in out.stdout  # python's http.server answered through the public IP
    assert kumo.az("group", "exists", "-n", "netdemo") is False


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("runc"), reason="container groups need root and runc")
def test_readme_container_walkthrough_runs(kumo: KumoServer) -> None:
    out = run_walkthrough(kumo, "kumo az group create -n acidemo")
    assert "Welcome to Azure Container Instances!" in out.stdout  # the page, through the group's public IP
    assert "listening on port 80" in out.stdout  # az container logs
    assert re.search(r"^hello\r?$", out.stdout, re.M)  # az container exec: the group's hostname
    assert kumo.az("group", "exists", "-n", "acidemo") is False


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("qemu-system-x86_64"), reason="VMs need root and QEMU")
@pytest.mark.skipif(ImageCatalog(default_vm_images_dir()).find("Debian", "debian-12", "12-gen2", "latest") is None,
                    reason="the Debian VM image is not built (kumo vm-images build)")
def test_readme_vm_walkthrough_runs(kumo: KumoServer, tmp_path: Path) -> None:
    out = run_walkthrough(kumo, "kumo az group create -n vmdemo", timeout=1500, home=tmp_path)
    assert "hello from custom data" in out.stdout  # over SSH with the key az generated
    assert "cloud-amd64" in out.stdout  # run-command's uname -r
    assert (tmp_path / ".ssh" / "id_rsa").exists()
    assert kumo.az("group", "exists", "-n", "vmdemo") is False


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("qemu-system-x86_64"), reason="VMs need root and QEMU")
@pytest.mark.skipif(ImageCatalog(default_vm_images_dir()).find("kumo", "tiny", "1", "latest") is None,
                    reason="the tiny VM image is not built (kumo vm-images build)")
def test_readme_scale_set_walkthrough_runs(kumo: KumoServer, tmp_path: Path) -> None:
    out = run_walkthrough(kumo, "kumo az group create -n ssdemo", timeout=900, home=tmp_path)
    words = out.stdout.split()
    assert len(words) == 9 and all(w.startswith("web") for w in words), out.stdout
    assert len(set(words[:6])) == 2, out.stdout  # six requests through the load balancer: both instances answered
    assert len(set(words[6:])) == 3 and set(words[:6]) < set(words[6:])  # three instances after scaling out
    assert kumo.az("group", "exists", "-n", "ssdemo") is False
