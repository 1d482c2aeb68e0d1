"""conmon's k8s-file log format: whole and partial lines, two streams, tail, timestamps, following."""

from __future__ import annotations

import asyncio
from pathlib import Path

from kumo.drivers.containers.logs import follow, parse_record, read_log

T1 = "2026-11-26T03:53:22.557460396+00:00"
T2 = "2026-11-26T03:53:23.000000001+00:00"
T3 = "2026-11-26T03:53:24.100000000+01:00"


def write(path: Path, *records: str) -> None:
    with path.open("a") as f:
        f.write("".join(r + "\n" for r in records))


def test_parse_record() -> None:
    rec = parse_record(f"{T1} stdout F hello world".encode())
    assert rec is not None and (rec.time, rec.stream, rec.full, rec.text) == (T1, "stdout", True, b"hello world")
    rec = parse_record(f"{T1} stderr P ".encode())
    assert rec is not None and (rec.stream, rec.full, rec.text) == ("stderr", False, b"")
    assert parse_record(f"{T1} stdout F".encode()).text == b""  # type: ignore[union-attr]
    assert parse_record(b"garbage line") is None
    assert parse_record(f"{T1} stdout X text".encode()) is None


async def test_partial_lines_joined_per_stream(tmp_path: Path) -> None:
    log = tmp_path / "c.log"
    write(log, f"{T1} stdout P hel", f"{T1} stderr F oops", f"{T2} stdout P lo ", f"{T2} stdout F world",
          f"{T2} stdout F  two  spaces ", f"{T3} stdout P no newline")
    assert await read_log(log) == "oops\nhello world\n two  spaces \nno newline"
    # A partial line is stamped with the time of its first fragment; UTC is written with Z like docker.
    assert await read_log(log, timestamps=True) == (
        "2026-11-26T03:53:22.557460396Z oops\n2026-11-26T03:53:22.557460396Z hello world\n"
        "2026-11-26T03:53:23.000000001Z  two  spaces \n2026-11-26T03:53:24.100000000+01:00 no newline")


async def test_tail(tmp_path: Path) -> None:
    log = tmp_path / "c.log"
    write(log, *(f"{T1} {'stdout' if i % 3 else 'stderr'} F line {i}" for i in range(5000)))
    assert await read_log(log, tail=3) == "line 4997\nline 4998\nline 4999\n"
    assert await read_log(log, tail=0) == ""
    assert (await read_log(log, tail=5000)).splitlines()[0] == "line 0"
    assert len((await read_log(log, tail=100000)).splitlines()) == 5000
    write(log, f"{T2} stdout P par", f"{T2} stdout F tial")
    assert await read_log(log, tail=2, timestamps=True) == (
        "2026-11-26T03:53:22.557460396Z line 4999\n2026-11-26T03:53:23.000000001Z partial\n")


async def test_missing_and_empty(tmp_path: Path) -> None:
    assert await read_log(tmp_path / "nope.log") == ""
    (tmp_path / "empty.log").write_text("")
    assert await read_log(tmp_path / "empty.log", tail=10) == ""


async def test_follow_streams_new_output(tmp_path: Path) -> None:
    log = tmp_path / "c.log"
    write(log, f"{T1} stdout F old")  # written before following: not repeated
    stop = asyncio.Event()
    got: list[bytes] = []

    async def reader() -> None:
        async for chunk in follow(log, stop=stop, interval=0.02):
            got.append(chunk)

    task = asyncio.create_task(reader())
    await asyncio.sleep(0.1)
    write(log, f"{T2} stdout P par")
    await asyncio.sleep(0.1)
    assert got == [b"par"]  # a fragment is streamed at once
    with log.open("a") as f:  # a record written in two pieces is yielded only once complete
        f.write(f"{T2} stdout F tial\n{T2} stderr F e")
        f.flush()
        await asyncio.sleep(0.1)
        f.write("rr\n")
    stop.set()
    await asyncio.wait_for(task, 2)
    assert got == [b"par", b"tial\n", b"err\n"]


async def test_follow_from_start_waits_for_file_and_handles_truncation(tmp_path: Path) -> None:
    log = tmp_path / "later.log"
    got: list[bytes] = []

    async def reader() -> None:
        async for chunk in follow(log, interval=0.02):
            got.append(chunk)
            if chunk == b"after truncate\n":
                return

    task = asyncio.create_task(reader())
    await asyncio.sleep(0.05)
    write(log, f"{T1} stdout F first")  # the file did not exist yet: everything in it is new
    await asyncio.sleep(0.1)
    log.write_text("")
    await asyncio.sleep(0.1)
    write(log, f"{T1} stdout F after truncate")
    await asyncio.wait_for(task, 2)
    assert got == [b"first\n", b"after truncate\n"]
