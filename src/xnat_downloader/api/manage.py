"""The Python API for managing a server: create projects; list, archive, move and delete
sessions in the prearchive.

An upload with ``dest="prearchive"`` leaves a record of what it sent (see
:func:`record_prearchived`); :func:`archive_prearchived` archives a session and, when such a
record exists, checks every archived file against it.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from xnat_downloader import aio
from xnat_downloader.api.connection import Connection
from xnat_downloader.errors import LocalWriteError, NotFound, ServerError, UsageError
from xnat_downloader.http.client import XnatClient
from xnat_downloader.transfer.localfs import write_failure, write_whole
from xnat_downloader.words import counted
from xnat_downloader.xnat import paths
from xnat_downloader.xnat.parse import parse_uri_list
from xnat_downloader.xnat.services import prearchive_rows, remote_digest_list

ACCESS = ("private", "protected", "public")


# -- projects ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProjectCreated:
    id: str
    created: bool  # False: it existed already


async def _create_project(
    conn: Connection, pid: str, name: str, description: str, access: str
) -> ProjectCreated:
    if access not in ACCESS:
        raise UsageError(f"--access must be one of {', '.join(ACCESS)}, not {access!r}")
    if not pid.strip():  # the path would be the project listing, which always "exists"
        raise UsageError("name the project to create: its ID (letters, digits, _ and -)")
    path = paths.project(pid)
    async with conn.client() as xs:
        try:
            await xs.get_json(path, what=f"project {pid}")
            return ProjectCreated(pid, created=False)
        except NotFound:
            pass
        params = {"xnat:projectData/name": name or pid}
        if description:
            params["xnat:projectData/description"] = description
        await xs.send("PUT", path, params=params, what=f"project {pid}")
        await xs.send("PUT", paths.accessibility(pid, access), what=f"the access of {pid}")
    return ProjectCreated(pid, created=True)


def create_project(
    conn: Connection, pid: str, *, name: str = "", description: str = "", access: str = "private"
) -> ProjectCreated:
    """Create project ``pid`` (``created=False`` if it exists already; nothing is changed)."""
    return aio.run(_create_project(conn, pid, name, description, access))


# -- the prearchive ------------------------------------------------------------------------
@dataclass(frozen=True)
class PrearchiveSession:
    project: str
    timestamp: str
    folder: str
    name: str
    subject: str
    status: str
    scan_date: str
    uploaded: str

    @property
    def src(self) -> str:
        return f"/prearchive/projects/{self.project}/{self.timestamp}/{self.folder}"


async def _prearchive(xs: XnatClient, project: str | None) -> list[PrearchiveSession]:
    rows = await prearchive_rows(xs, project)
    return [
        PrearchiveSession(
            str(r.get("project", "")),
            str(r.get("timestamp", "")),
            str(r.get("folderName", "")),
            str(r.get("name", "")),
            str(r.get("subject", "")),
            str(r.get("status", "")),
            str(r.get("scan_date", "")),
            str(r.get("uploaded", "")),
        )
        for r in rows
    ]


def list_prearchive(conn: Connection, project: str | None = None) -> list[PrearchiveSession]:
    """The prearchive sessions the user may see (of ``project`` only, if given)."""

    async def run() -> list[PrearchiveSession]:
        async with conn.client() as xs:
            return await _prearchive(xs, project)

    return aio.run(run())


def choose(sessions: list[PrearchiveSession], wanted: list[str]) -> list[PrearchiveSession]:
    """The sessions ``wanted`` names, each by its ``src`` path, name or folder; UsageError
    for a name that matches none, or several."""
    chosen = []
    for name in wanted:
        found = [
            s
            for s in sessions
            if name in (s.src, paths.under_data(s.src), s.name, s.folder, s.timestamp)
        ]
        if not found:
            raise UsageError(f"no prearchive session {name!r}: see 'xnat-downloader prearchive ls'")
        if len(found) > 1:
            srcs = ", ".join(s.src for s in found)
            raise UsageError(f"{name!r} names {len(found)} prearchive sessions ({srcs}); name one")
        chosen.append(found[0])
    return chosen


@dataclass
class ArchiveResult:
    session: PrearchiveSession
    uri: str = ""
    error: str = ""
    verified: int = 0
    failed: int = 0
    checked: bool = False  # a record of what was sent existed and was compared


@dataclass
class ManageReport:
    results: list[ArchiveResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(not r.error and not r.failed for r in self.results)


async def _archive_one(
    xs: XnatClient, session: PrearchiveSession, overwrite: bool, records: Path
) -> ArchiveResult:
    result = ArchiveResult(session)
    params = {"src": session.src}
    if overwrite:
        params["overwrite"] = "append"
    try:
        _, answer = await xs.send(
            "POST", paths.ARCHIVE_SERVICE, params=params, what=session.src, idempotent=False
        )
    except (ServerError, NotFound) as exc:
        result.error = str(exc)
        return result
    uris = parse_uri_list(answer)
    result.uri = uris[0] if uris else ""
    record = _record_path(records, xs.base_url, session)
    if result.uri and record.exists():
        try:
            sent = Counter(_sent_files(json.loads(record.read_text(encoding="utf-8"))))
        except (OSError, ValueError) as exc:
            result.error = (
                f"archived, but the record of what was sent ({record}) cannot be read "
                f"({exc}): the archived files were not checked against it"
            )
            return result
        have = Counter(await remote_digest_list(xs, paths.session_scan_files(result.uri)))
        missing = sent - have
        result.failed = sum(missing.values())
        result.verified = sum(sent.values()) - result.failed
        result.checked = True
        if result.failed:
            result.error = (
                f"{counted(result.failed, 'file')} sent to the prearchive not found in the archive"
            )
        else:
            record.unlink()
    return result


def _action(conn: Connection, project: str | None, wanted: list[str], do: Any) -> ManageReport:
    async def run() -> ManageReport:
        async with conn.client() as xs:
            sessions = choose(await _prearchive(xs, project), wanted)
            report = ManageReport()
            for session in sessions:
                report.results.append(await do(xs, session))
            return report

    return aio.run(run())


def archive_prearchived(
    conn: Connection,
    wanted: list[str],
    *,
    project: str | None = None,
    overwrite: bool = False,
    records: Path | None = None,
) -> ManageReport:
    """Archive the named prearchive sessions; verify each against the record of an upload
    that sent it, where there is one."""
    folder = records or records_dir()
    return _action(conn, project, wanted, lambda xs, s: _archive_one(xs, s, overwrite, folder))


def _prearchive_service(service: str, extra: dict[str, str]) -> Any:
    """One of ``/data/services/prearchive/{move,delete}`` for one session, as an action."""

    async def call(xs: XnatClient, session: PrearchiveSession) -> ArchiveResult:
        result = ArchiveResult(session)
        try:
            await xs.send(
                "POST",
                paths.prearchive_service(service),
                params={"src": session.src, **extra},
                what=session.src,
                idempotent=False,
            )
        except (ServerError, NotFound) as exc:
            result.error = str(exc)
        return result

    return call


def move_prearchived(
    conn: Connection, wanted: list[str], to: str, *, project: str | None = None
) -> ManageReport:
    """Move the named prearchive sessions to project ``to``'s prearchive."""
    return _action(conn, project, wanted, _prearchive_service("move", {"newProject": to}))


def delete_prearchived(
    conn: Connection, wanted: list[str], *, project: str | None = None
) -> ManageReport:
    """Delete the named prearchive sessions."""
    return _action(conn, project, wanted, _prearchive_service("delete", {}))


# -- records of what uploads sent to the prearchive ----------------------------------------
def records_dir() -> Path:
    """``$XDG_STATE_HOME/xnat-downloader/prearchive`` (``~/.local/state/…`` by default)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "xnat-downloader" / "prearchive"


def _sent_files(doc: Any) -> list[tuple[int, str]]:
    """(size, md5) of each file a record names; ValueError for anything else."""
    if not isinstance(doc, list):
        raise ValueError("not a list of files")
    out = []
    for item in doc:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], int)
                and isinstance(item[1], str)):  # fmt: skip
            raise ValueError(f"{item!r} is not a file's [size, md5]")
        out.append((item[0], item[1]))
    return out


def _record_path(folder: Path, server: str, session: PrearchiveSession) -> Path:
    host = urlsplit(server).netloc.replace(":", "_") or "server"
    return folder / host / session.project / f"{session.timestamp}_{session.folder}.json"


def record_prearchived(
    server: str, uri: str, sent: list[tuple[int, str]], folder: Path | None = None
) -> Path | None:
    """Remember what an upload sent to the prearchive session ``uri``
    (``/data/prearchive/projects/P/TIMESTAMP/FOLDER``), for :func:`archive_prearchived`."""
    parts = [p for p in uri.split("/") if p]
    if parts[:3] != ["data", "prearchive", "projects"] or len(parts) != 6:
        return None
    session = PrearchiveSession(parts[3], parts[4], parts[5], parts[5], "", "", "", "")
    path = _record_path(folder or records_dir(), server, session)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LocalWriteError(write_failure(path.parent, exc)) from exc
    write_whole(path, json.dumps([list(x) for x in sent]))  # never read back half-written
    return path


__all__ = [
    "ArchiveResult",
    "ManageReport",
    "PrearchiveSession",
    "ProjectCreated",
    "archive_prearchived",
    "create_project",
    "delete_prearchived",
    "list_prearchive",
    "move_prearchived",
    "record_prearchived",
]
