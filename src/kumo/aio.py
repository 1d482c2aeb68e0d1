"""asyncio helpers kumo needs in more than one place."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def uninterrupted(work: Awaitable[T]) -> T:
    """Run `work` to its end even if the caller is canceled meanwhile; the cancel is raised after it.

    For what must not stop half-way: a database statement interrupted mid-protocol leaves its connection
    unusable (even for the rollback), and a record a cancel cut short would say what is no longer true."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):  # the caller was canceled: the cancel is what it must see
            await task
        raise
