"""`{"value": [...], "nextLink": ...}` pages with an opaque `$skiptoken` (keyset: the last key seen)."""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlencode

from kumo.arm.context import RequestContext
from kumo.arm.errors import bad_request

T = TypeVar("T")
MAX_PAGE = 1000


def encode_token(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


def decode_token(token: str) -> str:
    try:
        return base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        raise bad_request("InvalidSkipToken", f"The skip token '{token[:64]}' is invalid.") from None


def page_size(ctx: RequestContext) -> int:
    top = ctx.query("$top")
    if top is None:
        return ctx.services.settings.page_size
    try:
        n = int(top)
    except ValueError:
        raise bad_request("InvalidTopParameter", f"The value '{top[:32]}' of $top is not a valid integer.") from None
    if n < 1:
        raise bad_request("InvalidTopParameter", "The value of $top must be a positive integer.")
    return min(n, MAX_PAGE)


def next_link(ctx: RequestContext, last_key: str) -> str:
    params = [(k, v) for k, v in ctx.request.query_params.multi_items() if k.lower() != "$skiptoken"]
    params.append(("$skiptoken", encode_token(last_key)))
    return f"{ctx.base_url}{ctx.request.url.path}?{urlencode(params)}"


async def keyset_page(
    ctx: RequestContext,
    fetch: Callable[[str | None, int], Awaitable[list[T]]],
    key: Callable[[T], str],
    view: Callable[[T], dict[str, Any]],
    keep: Callable[[T], bool] = lambda _x: True,
) -> dict[str, Any]:
    """One page of items in key order. `fetch(after, n)` returns up to n items with key > after;
    `keep` filters them (a `$filter`), fetching further batches until the page is full."""
    size = page_size(ctx)
    token = ctx.query("$skiptoken")
    after = decode_token(token) if token else None
    kept: list[T] = []
    while len(kept) <= size:
        batch = await fetch(after, size + 1)
        kept.extend(i for i in batch if keep(i))
        if len(batch) < size + 1:
            break
        after = key(batch[-1])
    if len(kept) > size:
        return {"value": [view(i) for i in kept[:size]], "nextLink": next_link(ctx, key(kept[size - 1]))}
    return {"value": [view(i) for i in kept]}


def static_page(ctx: RequestContext, items: list[dict[str, Any]],
                key: Callable[[dict[str, Any]], str]) -> dict[str, Any]:
    """Paging over a list computed in memory (subscriptions, providers, locations)."""
    size = page_size(ctx)
    token = ctx.query("$skiptoken")
    after = decode_token(token) if token else None
    rest = [i for i in sorted(items, key=key) if after is None or key(i) > after]
    if len(rest) > size:
        return {"value": rest[:size], "nextLink": next_link(ctx, key(rest[size - 1]))}
    return {"value": rest}
