"""Running awaitables: nothing left behind by a failure or an interrupt."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from types import FrameType

import pytest

from xnat_downloader import aio


class Stop(KeyboardInterrupt):
    """What the command line's SIGTERM handler raises, wherever the main thread is."""


def test_an_interrupt_inside_the_loop_unwinds_every_task_and_is_raised_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An interrupt that gets into the loop anyway (raised in a task here, as a handler
    installed during the run would) ends the run as one held would: every task's clean-up
    runs before it reaches the caller, and nothing is logged afterwards as an exception
    never retrieved; that log line once ended a SIGTERM'd download's stderr with a
    traceback."""
    cleaned: list[str] = []

    async def worker() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            cleaned.append("worker")

    async def interrupted() -> None:
        await asyncio.sleep(0)
        raise Stop("SIGTERM")

    async def main() -> None:
        try:
            await aio.together(worker(), interrupted())
        finally:
            cleaned.append("main")

    with caplog.at_level(logging.ERROR, logger="asyncio"), pytest.raises(Stop):
        aio.run(main())
    gc.collect()  # a task whose exception nobody looked at says so when it is collected
    assert sorted(cleaned) == ["main", "worker"]
    assert "never retrieved" not in caplog.text


@pytest.fixture
def sigterm_raises() -> Iterator[None]:
    """SIGTERM raises :class:`Stop`, as the command line sets it up, for one test."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Stop("SIGTERM")

    before = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def test_a_signal_handlers_exception_waits_until_the_loop_has_unwound(
    sigterm_raises: None,
) -> None:
    """The handler runs where the signal lands, here inside the main task; what it raises
    reaches the task only as a cancellation at its next ``await``, and the caller of
    :func:`aio.run` gets the handler's exception once everything has ended.  Raised where
    it lands, it once left a finished future whose task was never woken, and the killed
    download hung instead of exiting."""
    seen: list[str] = []
    handler = signal.getsignal(signal.SIGTERM)

    async def main() -> None:
        try:
            os.kill(os.getpid(), signal.SIGTERM)  # its handler runs before the next line
            seen.append("went on")
            await asyncio.sleep(3600)
        except Stop:
            seen.append("raised inside the loop")
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    with pytest.raises(Stop, match="SIGTERM"):
        aio.run(main())
    assert seen == ["went on", "cancelled"]
    assert signal.getsignal(signal.SIGTERM) is handler  # put back


def test_a_handler_that_does_not_raise_just_runs() -> None:
    calls: list[int] = []

    def note(signum: int, frame: FrameType | None) -> None:
        calls.append(signum)

    async def main() -> int:
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.sleep(0.01)
        return 42

    before = signal.signal(signal.SIGTERM, note)
    try:
        assert aio.run(main()) == 42
    finally:
        signal.signal(signal.SIGTERM, before)
    assert calls == [signal.SIGTERM]


def test_run_returns_the_result_and_raises_the_coroutines_own_error() -> None:
    async def answer() -> int:
        await asyncio.sleep(0)
        return 42

    async def failing() -> None:
        raise ValueError("its own error")

    assert aio.run(answer()) == 42
    with pytest.raises(ValueError, match="its own error"):
        aio.run(failing())


def test_together_leaves_nothing_running_behind_a_failure() -> None:
    """When one of the awaitables fails, the others are cancelled before the error goes
    on; none is left to run (or to write) after the caller has moved on."""
    stopped: list[str] = []

    async def slow() -> str:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            stopped.append("slow")
            raise
        return "never"

    async def failing() -> str:
        await asyncio.sleep(0)
        raise ValueError("this one failed")

    async def go() -> None:
        with pytest.raises(ValueError, match="this one failed"):
            await aio.together(slow(), failing())
        assert stopped == ["slow"]
        assert await aio.together(asyncio.sleep(0, "a"), asyncio.sleep(0, "b")) == ("a", "b")

    aio.run(go())


def test_work_in_a_thread_stops_at_its_next_check_once_its_caller_is_cancelled() -> None:
    """A thread cannot be stopped from outside and the loop's shutdown waits for it: a run
    stopped while hashing a file of gigabytes hashed it to the end.  Work run by
    ``in_thread`` stops at its next ``check_abandoned`` instead; without the cancellation,
    ``check_abandoned`` does nothing."""
    started = threading.Event()
    ended: list[str] = []

    def chunks(limit: int) -> int:
        done = 0
        try:
            while done < limit:
                aio.check_abandoned()
                started.set()
                time.sleep(0.001)  # one chunk's work
                done += 1
        except aio.Abandoned:
            ended.append("abandoned")
            raise
        ended.append(f"finished after {done}")
        return done

    async def main() -> None:
        hashing = asyncio.ensure_future(aio.in_thread(chunks, 60_000))  # a minute of chunks
        await asyncio.to_thread(started.wait)
        hashing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await hashing

    aio.run(main())  # returns once the loop's threads have ended
    assert ended == ["abandoned"]
    assert aio.run(aio.in_thread(chunks, 3)) == 3
    aio.check_abandoned()  # outside in_thread: nothing to stop
