"""Running host commands from asyncio without blocking the loop, with errors that say what failed."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil


class HostCommandError(Exception):
    def __init__(self, argv: tuple[str, ...], code: int, stderr: str) -> None:
        self.argv, self.code, self.stderr = argv, code, stderr.strip()
        super().__init__(f"`{' '.join(argv)[:200]}` failed ({code}): {self.stderr[:500]}")


async def run(*argv: str, input: str | None = None, check: bool = True) -> str:
    """Run `argv` (stdin from `input`), return its stdout; raise HostCommandError on failure."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await proc.communicate(input.encode() if input is not None else None)
    except asyncio.CancelledError:
        # The command goes on without us (runc start, ip, nft…): let it finish, so that whatever runs after
        # the cancel (a delete's clean-up) sees what it did instead of racing it.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(proc.wait(), 10)
        raise
    if check and proc.returncode != 0:
        raise HostCommandError(argv, proc.returncode or 0, err.decode(errors="replace"))
    return out.decode(errors="replace")


def missing(*tools: str) -> list[str]:
    return [t for t in tools if shutil.which(t) is None]


async def wait_pid(pid: int, timeout: float | None = None) -> bool:
    """Wait (without polling) until process `pid` exits; False on timeout. Works for any process, not
    just children (a supervisor started by an earlier kumo): a pidfd becomes readable when it ends."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    loop.add_reader(fd, lambda: done.done() or done.set_result(None))
    try:
        await asyncio.wait_for(done, timeout)
        return True
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(fd)
        os.close(fd)
