"""What the ``download``, ``upload`` and ``xget`` commands share: login flags and
credentials, logging, the per-run debug log, the progress display and the closing summary."""

from __future__ import annotations

import argparse
import json
import logging
import logging.handlers
import os
import queue
import shutil
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from xnat_downloader import api
from xnat_downloader._version import __version__
from xnat_downloader.cli.errors import EXIT_USAGE, exit_code_and_message
from xnat_downloader.cli.progress import PlainProgress, RichProgress, human_bytes
from xnat_downloader.errors import LocalWriteError, UsageError, XnatError
from xnat_downloader.http import credentials as creds_mod
from xnat_downloader.http.credentials import Credentials
from xnat_downloader.transfer import workdir
from xnat_downloader.transfer.events import (
    BytesMoved,
    Event,
    EventSink,
    FileFailed,
    FileRetrying,
    FileSkipped,
    FileVerified,
    Planned,
)
from xnat_downloader.transfer.jobs import OutcomeCounts, Status
from xnat_downloader.transfer.localfs import write_failure
from xnat_downloader.words import counted

LOGGER = "xnat_downloader"
log = logging.getLogger(LOGGER)


@dataclass(frozen=True)
class Streams:
    """A command's I/O, injected: where it writes, and whether (and how) it may ask."""

    stdout: TextIO
    stderr: TextIO
    interactive: bool
    ask: Callable[[str], str]


def existing_paths(given: list[str]) -> list[Path]:
    """The PATH arguments of a command that sends files; UsageError naming any that do not
    exist (before anything is sent)."""
    paths = [Path(p) for p in given]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise UsageError(f"{', '.join(missing)}: no such file or folder; nothing was sent")
    return paths


def server_url(args: argparse.Namespace, *fallbacks: str) -> str:
    """The server, resolved once for every command: ``-w`` (or a ``--profile``'s url), then
    ``$XNAT_HOST``, then what the command's own inputs name (a catalog link, a manifest).
    UsageError when none does."""
    url = getattr(args, "web", None) or os.environ.get("XNAT_HOST", "")
    url = url or next((f for f in fallbacks if f), "")
    if not url:
        raise UsageError("no XNAT server given: use -w URL or set XNAT_HOST")
    return str(url)


def configure_logging(verbose: int, quiet: bool, stream: TextIO) -> None:
    """Messages to ``stream`` at the level ``-v``/``-q`` ask for.  The package logger itself
    passes everything, so the per-run debug log (:func:`debug_log`) gets it all."""
    level = logging.WARNING
    if verbose == 1:
        level = logging.INFO
    elif verbose >= 2:
        level = logging.DEBUG
    if quiet:
        level = logging.ERROR
    logger = logging.getLogger(LOGGER)
    for handler in list(logger.handlers):
        if getattr(handler, "_xnatdl_console", False):
            logger.removeHandler(handler)
    handler = logging.StreamHandler(stream)
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler._xnatdl_console = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False


class RunLogHandler(logging.FileHandler):
    """The run's debug log.  The log is an aid, not the work: when it cannot be written (a
    full disk) it says so once on ``stderr`` and stops, and the run goes on."""

    def __init__(self, path: Path, stderr: TextIO) -> None:
        super().__init__(path, encoding="utf-8")
        self.path = path
        self.stderr = stderr
        self.broken = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.broken:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        if self.broken:
            return
        self.broken = True
        exc = sys.exc_info()[1]
        reason = write_failure(self.path, exc) if exc else f"cannot write {self.path}"
        print(f"warning: the run's log stops here: {reason}", file=self.stderr)


class _Relay(logging.handlers.QueueHandler):
    """Hands records to the log's writer thread as they are: formatting them is the
    writer's work (the stock handler formats each one first, for queues between
    processes)."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record


@contextmanager
def debug_log(
    outdir: Path, argv: list[str], secret_flags: tuple[str, ...], stderr: TextIO
) -> Iterator[Path]:
    """Everything the package logs, at DEBUG, in ``DIR/.xnat-downloader/logs/run-*.log``.

    ``secret_flags`` name the flags whose values are passwords; those values are written as
    ``***``.  Nothing else that is secret is ever logged (cookies and Authorization headers
    are not logged at all).  A log that cannot be written is a warning, not a failure."""
    folder = workdir.logs(outdir)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = folder / f"run-{stamp}-{os.getpid()}.log"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handler = RunLogHandler(path, stderr)
    except OSError as exc:
        raise LocalWriteError(write_failure(path, exc)) from exc
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    # Written from a thread of its own: formatting, writing and flushing a line for every
    # file took a tenth of the event loop's time on a download of many small files.
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    relay = _Relay(records)
    writer = logging.handlers.QueueListener(records, handler)
    writer.start()
    logger = logging.getLogger(LOGGER)
    logger.addHandler(relay)
    try:
        shown = redact(argv, secret_flags)
        log.debug("xnat-downloader %s, Python %s: %s", __version__, sys.version.split()[0], shown)
        yield path
    except BaseException as exc:
        log.debug("the run ended with %s: %s", type(exc).__name__, exc)
        raise
    finally:
        logger.removeHandler(relay)
        writer.stop()  # writes what is queued
        handler.close()


def redact(argv: list[str], secret_flags: tuple[str, ...]) -> str:
    """``argv`` as one string, with the value of every flag in ``secret_flags`` hidden."""
    out: list[str] = []
    hide = False
    for arg in argv:
        if hide:
            out.append("***")
            hide = False
            continue
        flag, eq, _value = arg.partition("=")
        if flag in secret_flags:
            if eq:
                out.append(f"{flag}=***")
            else:
                out.append(arg)
                hide = True
            continue
        out.append(arg)
    return " ".join(out)


def logging_sink(inner: EventSink) -> EventSink:
    """Pass events on to ``inner`` and record each file's fate in the debug log."""

    def sink(event: Event) -> None:
        inner(event)
        if isinstance(event, BytesMoved):
            return
        if isinstance(event, FileVerified):
            log.debug("verified %s (%d bytes, md5 %s)", event.local, event.size, event.md5)
        elif isinstance(event, FileSkipped):
            log.debug("skipped %s: %s", event.local, event.reason)
        elif isinstance(event, FileRetrying):
            log.debug("retrying %s in %.1fs: %s", event.local, event.delay, event.reason)
        elif isinstance(event, FileFailed):
            log.debug("FAILED %s: %s", event.local, event.error)
        elif isinstance(event, Planned):
            log.debug("transfer of %d files, %d bytes starts", event.files, event.bytes)

    return sink


def display(interactive: bool, quiet: bool, stderr: TextIO) -> RichProgress | PlainProgress:
    """Bars on a terminal; plain lines every few seconds otherwise (no cursor codes); only
    failures when quiet."""
    if quiet:
        return PlainProgress(stderr, every=float("inf"))
    if interactive and stderr.isatty():
        return RichProgress()
    return PlainProgress(stderr, every=5.0)


def counts_document(counts: OutcomeCounts) -> dict[str, object]:
    """What every transfer's ``--json`` document starts with: the counts, and each failed
    file (``local``: its path here, ``uri``: on the server or receiver) with the reason."""
    return {
        "files": counts.files,
        "bytes": counts.bytes,
        "verified": counts.verified,
        "skipped": counts.skipped,
        "failed": counts.failed,
        "ok": counts.ok,
        "failures": [
            {"local": o.job.local, "uri": o.job.uri, "error": o.error}
            for o in counts.outcomes
            if o.status == Status.FAILED
        ],
    }


def took(counts: OutcomeCounts, seconds: float) -> str:
    """``in 4.2 s, 12.3 MB/s``: the rate of the bytes this run moved (files skipped as done
    before do not count), left out when it moved none rather than shown as ``0 B/s``."""
    moved = sum(o.size for o in counts.outcomes if o.status == Status.VERIFIED)
    # Under a second, two decimals: "0.0 s" beside a rate would contradict it.
    shown = f"in {seconds:.2f} s" if seconds < 1 else f"in {seconds:.1f} s"
    if not moved:
        return shown
    return f"{shown}, {human_bytes(moved / max(seconds, 1e-6))}/s"


def report_lines(path: Path | None, error: str | None, stderr: TextIO) -> None:
    """Where a run's report went, or the one warning that says it could not be written."""
    if path is not None:
        print(f"report: {path}", file=stderr)
    if error:
        print(f"warning: no report file: {error}", file=stderr)


def done_line(counts: OutcomeCounts) -> str:
    """The last line of a transfer (CONTRACT §4): ``done: N files, B bytes, V verified,
    F failed``."""
    return (
        f"done: {counts.files} files, {counts.bytes} bytes, {counts.verified} verified, "
        f"{counts.failed} failed"
    )


def print_summary(report: api.Report, quiet: bool, stdout: TextIO, stderr: TextIO) -> None:
    """The human summary (unless quiet) and the contract's ``done:`` line."""
    if not quiet:
        print(
            f"{counted(report.files, 'file')} ({human_bytes(report.bytes)}) "
            f"{took(report, report.seconds)}; {report.skipped} already verified",
            file=stderr,
        )
        if report.without_server_digest:
            print(
                "note: the server listed no MD5 for "
                f"{counted(report.without_server_digest, 'file')}; only their sizes were checked",
                file=stderr,
            )
    report_lines(report.report_path if not quiet else None, report.report_error, stderr)
    print(done_line(report), file=stdout)


@contextmanager
def nothing_left_on_usage_error(outdir: Path) -> Iterator[None]:
    """A run that ends in a usage, login or permission error (exit 2) removes the output
    folder and the state folder it created: a mistyped password or project leaves no
    trace on disk.  A folder that was there before is left as it was."""
    had_dir = outdir.exists()
    had_state = workdir.root(outdir).exists()
    try:
        yield
    except XnatError as exc:
        if exit_code_and_message(exc)[0] == EXIT_USAGE:
            if not had_state:
                shutil.rmtree(workdir.root(outdir), ignore_errors=True)
            if not had_dir:
                try:
                    outdir.rmdir()  # only if nothing else is in it
                except OSError:
                    pass
        raise


def json_out(args: argparse.Namespace, stdout: TextIO) -> TextIO | None:
    """Where an error's JSON document goes: stdout when the command was given ``--json``."""
    return stdout if getattr(args, "json", False) else None


def guarded(work: Callable[[], int], stderr: TextIO, json_out: TextIO | None = None) -> int:
    """Run a command body: package errors become ``error: …`` and their exit code
    (CONTRACT §4); Ctrl-C says how to resume.  With ``json_out`` (the command's ``--json``),
    an error is also the one JSON document on it: ``{"ok": false, "error": …, "exit": …}``."""
    try:
        return work()
    except XnatError as exc:
        code, message = exit_code_and_message(exc)
        print(f"error: {message}", file=stderr)
        if json_out is not None:
            print(json.dumps({"ok": False, "error": message, "exit": code}), file=json_out)
        return code
    except KeyboardInterrupt as exc:
        print(INTERRUPTED, file=stderr)
        return 143 if isinstance(exc, Terminated) else 130


INTERRUPTED = "interrupted: run the same command again to resume"
"""The last line of a run stopped by Ctrl-C or SIGTERM."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a job scheduler's cancel or time limit): the run stops as Ctrl-C
    stops it (its cleanup runs, it says how to resume), with the exit status 143 that a
    process ended by SIGTERM has."""


def stop_on_sigterm() -> None:
    """From now on, SIGTERM raises :class:`Terminated` in the main thread.  Only the
    command line does this: a library must not take over its caller's signals."""

    def terminate(signum: int, frame: object) -> None:
        raise Terminated("SIGTERM")

    signal.signal(signal.SIGTERM, terminate)


def reader_gone() -> int:
    """The end of a run whose output's reader closed its end (``ls | head``): quietly, as a
    command killed by SIGPIPE would end, exit status 141 (128 + SIGPIPE).  The standard
    streams are pointed at /dev/null first, so Python's final flush has nowhere to fail."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        try:
            os.dup2(devnull, stream.fileno())
        except (OSError, ValueError):  # no file descriptor behind it (tests, embedding)
            pass
    os.close(devnull)
    return 141


def warn_insecure(stderr: TextIO) -> None:
    print(
        "warning: TLS certificate verification is OFF (--insecure); the server's "
        "identity is not checked",
        file=stderr,
    )


def connection_args(p: argparse.ArgumentParser) -> None:
    """The server and login flags every subcommand shares."""
    g = p.add_argument_group("server and login")
    g.add_argument(
        "-w",
        "--web",
        "--server",
        dest="web",
        metavar="URL",
        help="XNAT server URL (default: $XNAT_HOST)",
    )
    g.add_argument(
        "-u",
        "--user",
        help="user name, or an alias token's alias (default: $XNAT_USER, ~/.netrc, ~/.xnatPass)",
    )
    g.add_argument(
        "--password",
        help="password or token secret (visible to other local "
        "users; prefer $XNAT_PASS or ~/.netrc)",
    )
    g.add_argument("--ca-bundle", metavar="FILE", help="CA certificates to trust for TLS")
    g.add_argument(
        "--insecure", action="store_true", help="do not verify the server's TLS certificate (warns)"
    )
    g.add_argument(
        "--max-requests",
        type=float,
        metavar="N",
        help="start at most N requests a second on the server, all transfers together "
        "(default: no limit beyond -j)",
    )
    g.add_argument(
        "--profile",
        metavar="NAME",
        help="a named server from ~/.config/xnat-downloader/config.toml (url, user, "
        "ca_bundle, jobs, max_requests); flags given here still win ($XNAT_PROFILE)",
    )
    g.add_argument("-v", "--verbose", action="count", default=0, help="more detail (-vv for debug)")
    g.add_argument("-q", "--quiet", action="store_true", help="only errors and the summary")


def credentials(args: argparse.Namespace, url: str, interactive: bool) -> Credentials:
    """Flags, environment, netrc, xnatPass, then a prompt (CONTRACT §4)."""
    found = creds_mod.resolve(url, args.user, args.password, os.environ, creds_mod.default_home())
    return creds_mod.complete(found, interactive=interactive)


def connection(
    args: argparse.Namespace, url: str, interactive: bool, login: argparse.Namespace | None = None
) -> api.Connection:
    """A connection to ``url`` as the command's flags say: the credentials of ``login``
    (default ``args``: ``--user``/``--password``), ``--insecure``, ``--ca-bundle`` and
    ``--max-requests``."""
    rate = getattr(args, "max_requests", None)
    if rate is not None and not rate > 0:
        raise UsageError(f"--max-requests {rate:g} must be a positive number of requests a second")
    return api.Connection(
        url,
        credentials(login or args, url, interactive),
        verify=not args.insecure,
        ca_bundle=args.ca_bundle,
        max_requests_per_second=rate,
    )
