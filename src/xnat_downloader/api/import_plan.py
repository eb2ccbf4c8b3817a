"""What the paths of an upload hold, found and checked before anything is sent: an
:class:`Import` for each request to the import service (a session folder of a
download-layout tree, a folder zipped as it is sent, or an archive as it is), and the
projects' and subjects' own resource files of those trees (:func:`plan_imports`)."""

from __future__ import annotations

import asyncio
import contextvars
import os
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

from xnat_downloader.errors import UsageError
from xnat_downloader.plan.upload import (
    OwnResourceFile,
    SessionFolder,
    archive_type,
    find_own_resources,
    find_sessions,
    is_metadata,
    own_resource_groups,
    resource_folders_only,
)
from xnat_downloader.transfer.archives import archive_members, zip_file_count
from xnat_downloader.transfer.jobs import Job
from xnat_downloader.transfer.localfs import files_under
from xnat_downloader.transfer.upload import file_body, md5_file, zip_body
from xnat_downloader.words import counted


@dataclass
class Import:
    """One request to the import service and what it should leave on the server."""

    name: str
    content_type: str
    body: Callable[[Callable[[int], None]], AsyncIterator[bytes]]
    size: int
    expected: list[tuple[str, int, str]]  # (name, size, md5) of each file that must arrive
    subject: str = ""
    label: str = ""
    may_drop: bool = False  # the server may leave files out (archives, --ignore-unparsable)
    folder: SessionFolder | None = None
    root: Path | None = None
    archive: Path | None = None  # an archive sent as it is
    files: int = 0  # for an archive not read yet: how many files its listing names
    # Its members being hashed (:func:`archive_members`) ahead of its turn: set for the
    # first archives to go, so that their hashing overlaps the login's round trips.
    hashing: asyncio.Future[list[tuple[str, int, str]]] | None = None
    # Its assessors and reconstructions (keys of ``folder.derived``) whose files all have
    # outcomes, as they are done: what a session stopped part-way has yet to count.
    derived_done: set[tuple[str, str]] = field(default_factory=set)

    def job(self, name: str, size: int, md5: str) -> Job:
        """The record of one file of this import, as its outcome names it."""
        return Job(self.name, f"{self.name}:{name}", size, md5)


@dataclass
class LocalPlan:
    """What the paths given hold: the imports, the projects' and subjects' own resource
    files of download-layout trees (each with the folder its path is relative to, and the
    subject label it goes to), and notes about what is not sent."""

    imports: list[Import]
    own: list[tuple[PurePosixPath, OwnResourceFile]]
    notes: list[str]


def plan_imports(
    paths: list[Path], subject: str, session: str, ignore_unparsable: bool
) -> LocalPlan:
    imports: list[Import] = []
    own: list[tuple[PurePosixPath, OwnResourceFile]] = []
    notes: list[str] = []
    for path in paths:
        if path.is_dir():
            rels = files_under(path)
            if not rels:
                raise UsageError(f"{path} holds no files; nothing was sent")
            # Relative to the parent, so the folder itself may be a session.
            sessions, loose = find_sessions([PurePosixPath(path.name) / r for r in rels])
            if sessions:
                if session and len(sessions) > 1:
                    msg = (
                        f"--session names one session, but {path} holds {len(sessions)}; "
                        "leave it out (each folder's name is used) or upload one at a time"
                    )
                    raise UsageError(msg)
                theirs, loose = find_own_resources(sessions, loose)
                base = PurePosixPath(path.parent.as_posix())
                own += [(base, replace(f, subject=subject or f.subject) if f.subject else f)
                        for f in theirs]  # fmt: skip
                documents = [r for r in loose if is_metadata(r)]
                if documents:
                    notes.append(
                        "not sent, as the server writes its own: "
                        f"{counted(len(documents), 'metadata document')} in {path} "
                        "(project.xml, session.xml, …)"
                    )
                loose = [r for r in loose if not is_metadata(r)]
                if loose:
                    notes.append(
                        f"{counted(len(loose), 'file')} in {path} outside any session: not sent"
                    )
                for found in sessions:
                    imports.append(_session_import(path.parent, found, subject, session))
                continue
            folders = resource_folders_only(rels)
            if folders:  # not for the importer, and whose they are cannot be told
                shown = ", ".join(str(path / f) for f in folders[:3])
                msg = (
                    f"{path} holds only resource folders ({shown}"
                    f"{', …' if len(folders) > 3 else ''}) and no session to import; upload "
                    "each with --resource LABEL (and --subject S for a subject's), e.g. "
                    f"--resource {folders[0].parent.name} {path / folders[0]}"
                )
                raise UsageError(msg)
            members = [(path / r, r.as_posix()) for r in rels]
            imports.append(
                Import(
                    name=f"{path.name}/ (zipped while sent)",
                    content_type="application/zip",
                    body=lambda moved, m=members: zip_body(m, moved),  # type: ignore[misc]
                    size=sum(p.stat().st_size for p, _ in members),
                    expected=[(n, p.stat().st_size, md5_file(p)) for p, n in members],
                    subject=subject,
                    label=session,
                    may_drop=ignore_unparsable,
                )
            )
            continue
        content_type = archive_type(path.name)
        if not path.is_file():
            raise UsageError(f"{path} does not exist; nothing was sent")
        if content_type is None:
            msg = (
                f"{path} is not an archive (.zip, .tar.gz, .tgz, .tar), a folder, or a subjects "
                ".csv; to put single files into a resource, add --resource LABEL"
            )
            raise UsageError(msg)
        size = path.stat().st_size
        imports.append(
            Import(
                name=path.name,
                content_type=content_type,
                body=lambda moved, p=path, n=size: file_body(p, n, moved),  # type: ignore[misc]
                size=size,
                expected=[],  # read below, all archives at once
                subject=subject,
                label=session,
                may_drop=True,
                archive=path,
            )
        )
    # Every archive is checked before anything is sent.  A plain zip's listing (its central
    # directory) is enough for that, and its files are hashed just before it is sent, while
    # other sessions are on their way; the others (tar files, whose listing is their whole
    # content, and zips of archives) are read whole now, several at once, since hashing
    # releases the interpreter lock.
    read_now: list[Import] = []
    for item in imports:
        if item.archive is not None:
            item.files = zip_file_count(item.archive) or 0
            if not item.files:
                read_now.append(item)
    # Each thread runs in this one's context, so that an upload stopped while they read
    # stops them too (aio.check_abandoned).
    context = contextvars.copy_context()
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        read = pool.map(
            lambda p: context.copy().run(archive_members, p), [i.archive for i in read_now]
        )
        for item, listed in zip(read_now, read, strict=True):
            item.expected = listed
    own_resource_groups(own)  # two files for one remote path: refused before anything is sent
    return LocalPlan(imports, own, notes)


def _session_import(base: Path, found: SessionFolder, subject: str, session: str) -> Import:
    members = [(base / rel, arcname) for rel, arcname in found.imported]
    label = session or found.label
    if label != found.label:
        members = [(p, label + a[len(found.label) :]) for p, a in members]
    parent = found.subject or base.name
    return Import(
        name=f"{found.folder}/",
        content_type="application/zip",
        body=lambda moved, m=members: zip_body(m, moved),  # type: ignore[misc]
        size=sum(p.stat().st_size for p, _ in members),
        expected=[(a, p.stat().st_size, md5_file(p)) for p, a in members],
        subject=subject or parent,
        label=label,
        folder=found,
        root=base,
    )
