"""The README's Python SDK snippet runs as written, with the environment `kumo env` prints."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

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
