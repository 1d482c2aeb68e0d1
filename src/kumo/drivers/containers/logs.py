"""Reading conmon's k8s-file logs: one record per line, `<RFC3339 time> <stdout|stderr> <P|F> <text>`,
where P marks a fragment (conmon flushed before the newline) and F the end of a line."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

_BLOCK = 64 * 1024


@dataclass(frozen=True)
class Record:
    time: str
    stream: str  # stdout | stderr
    full: bool  # False: a partial line (P), continued by the next record of the same stream
    text: bytes


def parse_record(line: bytes) -> Record | None:
    """One raw log line (without its newline); None when it is not a k8s-file record."""
    parts = line.split(b" ", 3)
    if len(parts) < 3 or parts[2] not in (b"P", b"F"):
        return None
    text = parts[3] if len(parts) == 4 else b""
    return Record(parts[0].decode(errors="replace"), parts[1].decode(errors="replace"), parts[2] == b"F", text)


def _docker_time(ts: str) -> str:
    # conmon writes the offset (+00:00 under UTC); `docker logs -t` writes Z.
    return ts[:-6] + "Z" if ts.endswith("+00:00") else ts


def _lines(records: list[Record], timestamps: bool) -> list[str]:
    """Join fragments per stream into whole lines (a trailing fragment stays, without newline)."""
    pending: dict[str, tuple[str, bytearray]] = {}
    out: list[str] = []
    for rec in records:
        ts, buf = pending.pop(rec.stream, (rec.time, bytearray()))
        buf += rec.text
        if not rec.full:
            pending[rec.stream] = (ts, buf)
            continue
        text = buf.decode(errors="replace") + "\n"
        out.append(f"{_docker_time(ts)} {text}" if timestamps else text)
    for ts, buf in pending.values():
        text = buf.decode(errors="replace")
        out.append(f"{_docker_time(ts)} {text}" if timestamps else text)
    return out


def _tail_bytes(f, tail: int) -> bytes:  # type: ignore[no-untyped-def]
    """Enough of the end of the file for `tail` lines: whole records with at least tail+1 line ends
    (a margin for fragments that precede their line's end)."""
    end = f.seek(0, os.SEEK_END)
    pos, data = end, b""
    while pos > 0:
        step = min(_BLOCK, pos)
        pos -= step
        f.seek(pos)
        data = f.read(step) + data
        if data.count(b" F ") > tail + 1:
            break
    if pos > 0:  # drop the first, probably cut, record
        data = data[data.find(b"\n") + 1:]
    return data


def _read(path: str, tail: int | None, timestamps: bool) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read() if tail is None else _tail_bytes(f, tail)
    except FileNotFoundError:
        return ""
    records = [r for r in map(parse_record, data.split(b"\n")) if r is not None]
    lines = _lines(records, timestamps)
    if tail is not None:
        lines = lines[-tail:] if tail > 0 else []
    return "".join(lines)


async def read_log(path: str | Path, tail: int | None = None, timestamps: bool = False) -> str:
    """The container's output (stdout and stderr interleaved as written), like `docker logs`:
    the last `tail` lines when given, each prefixed by its RFC3339 time with `timestamps`."""
    return await asyncio.to_thread(_read, str(path), tail, timestamps)


async def follow(path: str | Path, *, from_start: bool = False, stop: asyncio.Event | None = None,
                 interval: float = 0.1) -> AsyncIterator[bytes]:
    """Stream the output written to the log from now on (or from the start), as it arrives.
    Ends when `stop` is set (after yielding what is already written); otherwise runs until cancelled.
    A missing file is waited for; a truncated one is read again from its start."""
    path = str(path)
    pos: int | None = 0 if from_start else None
    rest = b""  # a record not yet complete (conmon writes each record with one write, but be safe)
    while True:
        done = stop is not None and stop.is_set()
        chunk, pos = await asyncio.to_thread(_read_from, path, pos)
        if chunk:
            data = rest + chunk
            cut = data.rfind(b"\n") + 1
            rest = data[cut:]
            for line in data[:cut].split(b"\n")[:-1]:
                rec = parse_record(line)
                if rec is not None:
                    yield rec.text + b"\n" if rec.full else rec.text
            continue  # there may be more already
        if done:
            return
        if stop is not None:
            try:
                await asyncio.wait_for(stop.wait(), interval)
            except TimeoutError:
                pass
        else:
            await asyncio.sleep(interval)


def _read_from(path: str, pos: int | None) -> tuple[bytes, int | None]:
    """New bytes after `pos` (None: start at the current end), and the new position."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            if pos is None:
                return b"", size
            if size < pos:  # truncated: start over
                pos = 0
            f.seek(pos)
            data = f.read(_BLOCK * 4)
            return data, pos + len(data)
    except FileNotFoundError:  # not written yet: all that comes is new
        return b"", 0
