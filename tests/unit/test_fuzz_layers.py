"""The OCI layer unpacker under hostile archives: hypothesis-generated tars with `..` and absolute names,
symlinks and hardlinks aimed outside (and writes through them), devices, whiteouts of outside paths,
truncated members; and bombs (huge pax/long-name headers, a gzip of zeros, many entries). Every archive is
unpacked or refused with a PullError, nothing beside the layer changes, and memory stays bounded."""

from __future__ import annotations

import os
import time
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz import layers as fl

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="whiteouts, devices and owners need root")]
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SENTINEL = "/tmp/kumo-fuzz-sentinel"  # absolute targets are drawn before the box exists; see _aimed


def _aimed(blob_members: list, box: fl.Box) -> list:
    """Point the absolute link targets at this box's sentinel."""
    for info, _ in blob_members:
        info.linkname = info.linkname.replace(SENTINEL, str(box.outside))
    return blob_members


@FUZZ
@given(fl.entries(SENTINEL), st.booleans(), st.sampled_from([0, 0, 0, 100, 600]))
def test_hostile_tars_are_unpacked_inside_or_refused(members: list, compress: bool, truncate: int) -> None:
    with fl.Box() as box:
        outcome = box.unpack(fl.build_tar(_aimed(members, box), compress=compress, truncate=truncate))
        box.check(outcome)


@pytest.mark.parametrize("name", sorted(fl.BOMBS))
def test_bombs_take_bounded_memory(name: str) -> None:
    blob = fl.BOMBS[name](1)
    assert len(blob) < 2 << 20
    with fl.Box() as box:
        tracemalloc.start()
        started = time.monotonic()
        try:
            outcome = box.unpack(blob)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        box.check(outcome)
        assert peak < fl.PEAK_LIMIT.get(name, 32 << 20), f"{name}: peak {peak / 1e6:.0f} MB"
        assert time.monotonic() - started < 120
        expected = "unpacked" if name in fl.UNPACKED_BOMBS else "refused"
        assert outcome == expected
