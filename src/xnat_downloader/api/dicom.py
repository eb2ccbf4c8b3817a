"""The Python API for DICOM send: :func:`dicom_send`.

Example::

    from xnat_downloader.api.dicom import dicom_send
    report = dicom_send(["scans/"], "XNAT@xnat.example.org:8104", project="P1")
    assert report.ok

Every DICOM file under the paths goes to the receiver over C-STORE; files that are not
DICOM are listed in ``report.not_dicom``, not sent and not failures.  ``project``,
``subject`` and ``session`` route the data on an XNAT receiver through Patient Comments
in the copies sent.  With ``conn`` (the XNAT behind the receiver) the built session is
then found and every acknowledged SOP Instance UID is checked to be in it.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from xnat_downloader import aio
from xnat_downloader.api.connection import Connection
from xnat_downloader.api.download import write_report
from xnat_downloader.errors import (
    ConnectionFailed,
    LocalWriteError,
    ServerError,
    UsageError,
    XnatError,
)
from xnat_downloader.http.client import XnatClient
from xnat_downloader.plan.dicomsend import (
    DicomFile,
    Target,
    check_routing_value,
    parse_target,
    routing_comment,
)
from xnat_downloader.transfer import dicomsend as transport
from xnat_downloader.transfer.engine import check_jobs
from xnat_downloader.transfer.events import EventSink, FileFailed, ignore
from xnat_downloader.transfer.jobs import Outcome, OutcomeCounts, Status
from xnat_downloader.xnat.arrival import Arrived, file_names, find_study, prearchive_counts


@dataclass
class DicomSendReport(OutcomeCounts):
    """What a send did: an outcome per DICOM file, the files that were not DICOM, and
    (with a server) the sessions the studies became."""

    outcomes: list[Outcome] = field(default_factory=list)
    target: str = ""
    not_dicom: list[str] = field(default_factory=list)
    sessions: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what is left to do on the server
    seconds: float = 0.0
    sent_log: str = ""
    report_path: Path | None = None  # one JSON line per file, as downloads write
    report_error: str | None = None  # why that report could not be written


def _check_arrival(
    outcomes: list[Outcome], files: dict[str, DicomFile], arrived: Arrived,
    names: dict[str, list[str]] | None, counts: dict[str, int],
) -> list[Outcome]:  # fmt: skip
    """The outcomes with every acknowledged file that is not in ``arrived`` failed."""
    stems = {n.rsplit(".", 1)[0] for listed in (names or {}).values() for n in listed}
    sent_per_scan = Counter(files[o.job.local].series_number for o in outcomes)
    checked: list[Outcome] = []
    for o in outcomes:
        item = files[o.job.local]
        if names is not None and stems and _uid_named(stems):
            missing = item.sop_uid not in stems
        elif names is not None:
            missing = len(names.get(item.series_number, [])) < sent_per_scan[item.series_number]
        else:
            missing = counts.get(item.series_number, 0) < sent_per_scan[item.series_number]
        if missing:
            error = f"acknowledged, but not in {arrived.uri} on the server"
            checked.append(replace(o, status=Status.FAILED, error=error))
        else:
            checked.append(o)
    return checked


def _uid_named(stems: set[str]) -> bool:
    """Whether the server names files by SOP Instance UID (minixnat does; XNAT by default
    names them by study, series, instance number and a hash)."""
    return all(s.replace(".", "").isdigit() for s in stems)


async def _checked_in(
    xs: XnatClient, sent: list[Outcome], files: dict[str, DicomFile], arrived: Arrived
) -> list[Outcome]:
    """``sent`` with every file that is not in ``arrived`` failed."""
    names = await file_names(xs, arrived)
    counts = await prearchive_counts(xs, arrived) if names is None else {}
    return _check_arrival(sent, files, arrived, names, counts)


def _elsewhere(base_url: str, first: Arrived, others: list[Arrived]) -> str:
    """What a failure adds when the study is in more places than the one it is judged by:
    where, and (for an archived session) the command that adds a prearchive entry to it."""
    where = ", ".join(
        f"{o.uri.removeprefix('/data')} ({o.status})" if o.prearchive else o.uri for o in others
    )
    text = f"; the server holds this study in {len(others) + 1} places, also in {where}"
    entries = [o for o in others if o.prearchive]
    if not first.prearchive and entries:
        text += (
            ": to add an entry's files to the session, run: xnat-downloader prearchive "
            f"archive -w {base_url} {entries[0].uri.removeprefix('/data')} --overwrite"
        )
    return text


def _conflict_note(base_url: str, study: str, entry: Arrived) -> str:
    path = entry.uri.removeprefix("/data")
    return (
        f"study {study} is verified in the prearchive, as {path}, with status CONFLICT: "
        f"the archive has a session labelled {entry.label} already; archive the study under "
        "another label (on the server's prearchive page), or add it to that session with: "
        f"xnat-downloader prearchive archive -w {base_url} {path} --overwrite"
    )


async def _arrivals(
    conn: Connection, outcomes: list[Outcome], files: dict[str, DicomFile], project: str,
    wait: float, sink: EventSink,
) -> tuple[list[Outcome], list[str], list[str]]:  # fmt: skip
    """Each study's files checked against the session it became (see :func:`_arrived`).
    A study the server cannot be asked about (it stopped answering, or fails) has its
    files failed as not checked, the rest still checked: what was sent is never lost to an
    error, and a re-run checks them again (the receiver's acknowledgements are logged)."""
    by_study: dict[str, list[Outcome]] = {}
    for o in outcomes:
        if o.status != "failed":
            by_study.setdefault(files[o.job.local].study_uid, []).append(o)
    result = [o for o in outcomes if o.status == "failed"]
    sessions: list[str] = []
    notes: list[str] = []

    def settle(study: str, arrived: Arrived | None, checked: list[Outcome]) -> None:
        del by_study[study]
        if arrived is not None:
            sessions.append(arrived.uri)
            if arrived.status == "CONFLICT" and all(o.status != "failed" for o in checked):
                notes.append(_conflict_note(conn.url, study, arrived))
        for o in checked:
            if o.status == "failed":  # counted done by the send, as acknowledged
                sink(FileFailed(o.job.local, o.error, counted=True))
        result.extend(checked)

    try:
        async with conn.client() as xs:
            for study, sent in list(by_study.items()):
                try:
                    settle(study, *await _arrived(xs, conn.url, study, sent, files, project, wait))
                except (ConnectionFailed, ServerError) as exc:
                    settle(study, None, _not_checked(sent, exc))
    except (ConnectionFailed, ServerError) as exc:  # the login found no server
        for study, sent in list(by_study.items()):
            settle(study, None, _not_checked(sent, exc))
    return result, sessions, notes


async def _logs_in(conn: Connection) -> None:
    """Log in to ``conn`` (and out): its error, naming the server, if that fails."""
    try:
        async with conn.client():
            pass
    except XnatError as exc:
        raise type(exc)(f"{exc} (checked before sending: nothing was sent)") from exc


def _not_checked(sent: list[Outcome], exc: Exception) -> list[Outcome]:
    error = (
        f"acknowledged, but not checked on the server ({exc}); run the same command again "
        "to check it"
    )
    return [replace(o, status=Status.FAILED, error=error) for o in sent]


async def _arrived(
    xs: XnatClient, url: str, study: str, sent: list[Outcome], files: dict[str, DicomFile],
    project: str, wait: float,
) -> tuple[Arrived | None, list[Outcome]]:  # fmt: skip
    """The place ``study`` is checked in, and its ``sent`` outcomes as checked there: its
    archived session, or when it has none, a prearchive entry that holds all of them (one
    study sent again after it was built makes several), waited for up to ``wait`` seconds.
    When none holds them all, the failures are judged by the first (the archived session,
    else the newest entry) and name the other places."""
    deadline = time.monotonic() + wait
    while True:
        places = await find_study(xs, study, project)
        # An archived session is where the study is meant to be: the prearchive entries
        # are then what did not join it (CONFLICT), not a place to pass.
        candidates = [p for p in places if not p.prearchive] or places
        judged = [(p, await _checked_in(xs, sent, files, p)) for p in candidates]
        whole = [(p, c) for p, c in judged if all(o.status != "failed" for o in c)]
        if whole:
            return whole[0]
        if time.monotonic() >= deadline:
            if not judged:
                error = f"acknowledged, but no session of study {study} on the server"
                return None, [replace(o, status=Status.FAILED, error=error) for o in sent]
            arrived, checked = judged[0]
            others = [p for p in places if p != arrived]
            if others:
                more = _elsewhere(url, arrived, others)
                checked = [
                    replace(o, error=o.error + more) if o.status == "failed" else o for o in checked
                ]
            return arrived, checked
        await xs.sleep(1.0)  # the client's clock, as every other wait


def dicom_send(
    paths: Sequence[str | Path],
    to: str | Target,
    *,
    project: str = "",
    subject: str = "",
    session: str = "",
    jobs: int = 4,
    conn: Connection | None = None,
    wait: float = 300.0,
    resend: bool = False,
    calling_ae: str = "XNATDL",
    sink: EventSink = ignore,
    state_dir: Path | None = None,
) -> DicomSendReport:
    """Send the DICOM files under ``paths`` to ``to`` (``AE@HOST:PORT``).

    A re-run skips what the same receiver acknowledged for the same file and routing
    (``resend=True`` sends everything).  With ``conn``, waits up to ``wait`` seconds per
    study for the server to build it, then checks each file arrived (a study the server
    cannot be asked about, as it stopped answering or answers wrongly, fails its files as
    not checked; the others are still checked).  Raises UsageError
    for a bad target or routing value, or when no DICOM file is found;
    ReceiverUnreachable (a ConnectionFailed) when nothing answers at the target's host and
    port; and, with ``conn``, the login's error (AuthError, ConnectionFailed, …) when
    logging in to that server fails, tried before sending: each time, nothing was sent.
    """
    check_jobs(jobs)
    target = to if isinstance(to, Target) else parse_target(to)
    for flag, value in (("--project", project), ("--subject", subject), ("--session", session)):
        check_routing_value(flag, value)
    started = time.monotonic()
    report = DicomSendReport(target=str(target))
    files: dict[str, DicomFile] = {}
    for path in transport.walk(Path(p) for p in paths):
        found = transport.read_dicom(path)
        if found is None:
            report.not_dicom.append(str(path))
        else:
            files[str(path)] = found
    if not files:
        raise UsageError(
            f"no DICOM files (Part 10, with the DICM prefix) under {', '.join(map(str, paths))}; "
            "nothing was sent"
        )
    if conn is not None:  # wrong credentials found before the sending, not after it
        aio.run(_logs_in(conn))
    comment = routing_comment(project, subject, session)
    log = None if resend else transport.SentLog(transport.sent_log_path(target, state_dir))
    try:
        outcomes = transport.send(
            list(files.values()), target, comment=comment, jobs=jobs, sink=sink,
            sent_log=log, calling_ae=calling_ae,
        )  # fmt: skip
    finally:
        if log is not None:
            report.sent_log = str(log.path)
            log.close()
    if conn is not None:
        outcomes, report.sessions, report.notes = aio.run(
            _arrivals(conn, outcomes, files, project, wait, sink)
        )
    report.outcomes = sorted(outcomes, key=lambda o: o.job.local)
    report.seconds = time.monotonic() - started
    reports = transport.sent_log_path(target, state_dir).parent / "reports"
    try:
        report.report_path = write_report(reports, report.outcomes)
    except LocalWriteError as exc:  # the files are sent and logged; only the report is lost
        report.report_error = str(exc)
    return report
