"""Running awaitables side by side, and event loops, leaving nothing behind."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import signal
import threading
from collections.abc import Awaitable, Callable, Coroutine
from types import FrameType
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
        await settle(*running)
        raise


async def settle(*futures: asyncio.Future[Any]) -> None:
    """Cancel those of ``futures`` that are still running and wait until they have ended.
    Their results and exceptions are dropped: for the clean-up of work started ahead whose
    caller has an outcome of its own (asyncio would otherwise log a failure nobody read)."""
    for future in futures:
        future.cancel()
    await asyncio.gather(*futures, return_exceptions=True)


class Abandoned(Exception):
    """Raised by :func:`check_abandoned` in work that :func:`in_thread` runs once the task
    that waits for it is cancelled: nobody will read its result."""


_ABANDONED: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar(
    "xnat_downloader_abandoned", default=None
)


async def in_thread(fn: Callable[..., T], /, *args: Any) -> T:
    """``fn(*args)`` in the loop's worker threads, as :func:`asyncio.to_thread`, but
    stoppable: when the awaiting task is cancelled (Ctrl-C, SIGTERM, a failed sibling),
    :func:`check_abandoned` raises inside ``fn`` at its next call.  A thread cannot be
    stopped from outside, and the loop's shutdown waits for its threads: without this, a
    run stopped while hashing an archive of gigabytes went on hashing it to the end."""
    abandoned = threading.Event()
    context = contextvars.copy_context()
    context.run(_ABANDONED.set, abandoned)
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(None, functools.partial(context.run, fn, *args))
    except asyncio.CancelledError:
        abandoned.set()
        raise


def check_abandoned() -> None:
    """Call between the chunks of long work.  Raises :class:`Abandoned` when the work runs
    under :func:`in_thread` and its caller has gone; otherwise does nothing."""
    abandoned = _ABANDONED.get()
    if abandoned is not None and abandoned.is_set():
        raise Abandoned


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on a new event loop and return its result, as :func:`asyncio.run` does,
    with one difference: what a signal handler raises (``KeyboardInterrupt`` for Ctrl-C,
    or the exception a program's own SIGTERM handler raises) is held until the loop has
    unwound, then raised to the caller.

    A handler's exception would otherwise land between any two lines of whatever runs,
    asyncio's own bookkeeping included: a future can be left finished with its task's
    wake-up never scheduled, and the run then hangs while its tasks are being cancelled.
    Instead, while ``main`` runs, SIGINT's and SIGTERM's Python handlers are called from a
    wrapper; one that raises has its exception held, the main task is cancelled (every
    ``finally`` and :func:`together` clean-up runs) and the exception is raised once the
    task has ended.  A handler that does not raise just runs.  A second interrupt while the
    first is held is raised at once.  The handlers are put back when the run ends.  Only
    in the main thread: elsewhere Python delivers no signals."""
    with asyncio.Runner() as runner:
        loop = runner.get_loop()
        task = loop.create_task(main)
        held = _HeldInterrupts(loop, task)
        try:
            try:
                outcome = loop.run_until_complete(task)
            except BaseException:
                if held.raised is None:
                    if not task.done():  # an interrupt that got into the loop anyway
                        _unwind(loop, task)
                    raise
                _seen(task)
                raise held.raised.with_traceback(None) from None
            if held.raised is not None:  # the task caught its cancellation and returned
                raise held.raised.with_traceback(None)
            return outcome
        finally:
            held.restore()


class _HeldInterrupts:
    """SIGINT's and SIGTERM's Python handlers, wrapped for one run of :func:`run`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any]) -> None:
        self.loop = loop
        self.task = task
        self.raised: BaseException | None = None
        self.previous: dict[int, Callable[[int, FrameType | None], Any]] = {}
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGINT, signal.SIGTERM):
            handler = signal.getsignal(signum)
            if callable(handler):  # not SIG_DFL or SIG_IGN, which raise nothing
                self.previous[signum] = handler
                signal.signal(signum, self.on_signal)

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        try:
            self.previous[signum](signum, frame)
        except BaseException as exc:
            if self.raised is not None or self.task.done():
                raise  # a second interrupt, or no run left to unwind: at once
            self.raised = exc
            self.task.cancel()
            self.loop.call_soon_threadsafe(lambda: None)  # wakes a loop waiting in select()

    def restore(self) -> None:
        for signum, handler in self.previous.items():
            if signal.getsignal(signum) == self.on_signal:
                signal.signal(signum, handler)


def _unwind(loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and run the loop until it has ended; a second interrupt stops the
    waiting.  Its outcome is marked as seen: the exception being raised is its end."""
    task.cancel()
    with contextlib.suppress(BaseException):
        loop.run_until_complete(task)
    _seen(task)


def _seen(task: asyncio.Task[Any]) -> None:
    if task.done() and not task.cancelled():
        task.exception()  # else asyncio logs it as "never retrieved" when it is collected
