"""Running awaitables side by side, leaving nothing behind."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar, overload

A = TypeVar("A")
B = TypeVar("B")
T = TypeVar("T")


@overload
async def together(first: Awaitable[A], second: Awaitable[B], /) -> tuple[A, B]: ...
@overload
async def together(*aws: Awaitable[T]) -> tuple[T, ...]: ...
async def together(*aws: Awaitable[Any]) -> tuple[Any, ...]:
    """Run ``aws`` concurrently and return their results in order.

    If one of them fails, or the caller is cancelled, the others are cancelled and waited
    for before the exception goes on: unlike a bare :func:`asyncio.gather`, no request or
    write is left running behind a failure."""
    running = [asyncio.ensure_future(a) for a in aws]
    try:
        return tuple(await asyncio.gather(*running))
    except BaseException:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        raise
