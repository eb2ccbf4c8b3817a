"""Put built sessions into the archive or the prearchive.

Every function here that writes runs inside one store transaction, which the caller may
widen (an import of several sessions is one transaction): the rows and the file moves
become visible together or not at all, even across a crash (store/journal.py).  Files are
moved (renamed) from the staging or prearchive folder, never copied, and hashed before the
transaction starts, so it holds the database only for renames and inserts.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from minixnat.errors import MinixnatError
from minixnat.importer.build import ImportFile, ImportScan, ImportSession
from minixnat.store import Experiment, Project, Store
from minixnat.store.files import md5_of
from minixnat.store.prearchive import PrearcSession
from minixnat.store.workflows import COMPLETE, FAILED, TRANSFER

OVERWRITE_MODES = ("none", "append", "delete", "override")
# What archived a session, as its Transfer workflow record says.
IMPORT, PREARCHIVE, DICOM_RECEIVER = "import service", "prearchive", "DICOM receiver"


class CommitError(MinixnatError):
    """The session cannot be archived (409 unless said otherwise)."""

    status = 409


# Boolean spellings of ``overwrite`` that clients send (xnat4tests sends ``True``).  XNAT's
# session importer lets any value other than append/delete/override merge into an existing
# session without deleting anything, which is what append does here.
_OVERWRITE_YES = ("true", "yes", "1")
_OVERWRITE_NO = ("false", "no", "0", "")


def overwrite_mode(value: str | None) -> str:
    """The ``overwrite`` mode a request's parameter asks for: one of OVERWRITE_MODES.
    CommitError (400) for a value that is neither a mode nor a yes or no."""
    said = (value or "").strip().lower()
    if said in OVERWRITE_MODES:
        return said
    if said in _OVERWRITE_YES:
        return "append"
    if said in _OVERWRITE_NO:
        return "none"
    msg = f"overwrite must be one of {', '.join(OVERWRITE_MODES)} (or true/false), not {said!r}."
    raise CommitError(msg, 400)


def hash_files(sessions: list[ImportSession]) -> None:
    """Fill in every file's MD5 (the slow part, done before any transaction)."""
    for session in sessions:
        for scan in session.scans.values():
            for item in scan.files:
                if not item.md5:
                    item.md5 = md5_of(item.source)


def archive_uri(project: str, subject: str, label: str) -> str:
    return f"/data/archive/projects/{project}/subjects/{subject}/experiments/{label}"


def _existing_session(store: Store, project: Project, label: str) -> Experiment | None:
    found = store.resolve_experiment(project.id, label)
    return found if found is not None and found.label == label else None


def check_conflicts(store: Store, project: Project, session: ImportSession, overwrite: str) -> None:
    """Raise CommitError if archiving ``session`` with ``overwrite`` must be refused."""
    if overwrite not in OVERWRITE_MODES:
        msg = f"overwrite must be one of {', '.join(OVERWRITE_MODES)}, not {overwrite!r}"
        raise CommitError(msg, 400)
    existing = _existing_session(store, project, session.label)
    if existing is None:
        return
    if overwrite == "none":
        msg = (
            f"Session {session.label} already exists in project {project.id}. Send "
            "overwrite=append to add to it, or overwrite=delete to replace its files."
        )
        raise CommitError(msg)
    subject = store.get_subject(existing.subject_id)
    if subject is not None and subject.label != session.subject:
        msg = (
            f"Session {session.label} in project {project.id} belongs to subject "
            f"{subject.label}, not {session.subject}."
        )
        raise CommitError(msg)
    if existing.is_assessor:
        msg = f"{session.label} in project {project.id} is an assessor, not an image session."
        raise CommitError(msg)
    for scan in session.scans.values():
        old = store.get_scan(existing.id, scan.scan_id)
        if old is not None and old.xsi_type != scan.xsi_type:
            msg = (
                f"Scan {scan.scan_id} of {session.label} is a {old.xsi_type}; the upload "
                f"has a {scan.xsi_type} (Specified xsiType differs from existing xsiType)."
            )
            raise CommitError(msg)


def archive_session(
    store: Store,
    project: Project,
    session: ImportSession,
    *,
    login: str,
    overwrite: str,
    how: str = IMPORT,
) -> str:
    """Archive ``session`` into ``project`` in one transaction; return its archive URI.

    The same transaction writes the ``Transfer`` workflow record (``how``: what archived
    it) and, unless the store says not to, queues the session's snapshots.
    """
    hash_files([session])
    with store.transaction():
        check_conflicts(store, project, session, overwrite)
        subject = store.resolve_subject(project.id, session.subject)
        if subject is None or subject.label != session.subject:
            subject = store.add_subject(project.id, session.subject, user=login)
        experiment = _existing_session(store, project, session.label)
        if experiment is None:
            experiment = store.add_experiment(
                project.id,
                subject.id,
                session.label,
                session.xsi_type,
                date=session.date,
                time_=session.time,
                modality=session.modality,
                uid=session.uid,
                user=login,
            )
        store.set_fields("experiment", experiment.id, session.fields)
        for scan in session.scans.values():
            _archive_scan(store, project, experiment, scan, replace=overwrite != "append")
        files = session.file_count()
        store.add_workflow(
            experiment,
            TRANSFER,
            COMPLETE,
            user=login,
            step="Archived",
            src=how,
            details=f"{files} file{'' if files == 1 else 's'} archived by the {how}",
        )
        if store.auto_snapshots:
            store.queue_snapshots(experiment, user=login, why=f"archived by the {how}")
    return archive_uri(project.id, subject.label, experiment.label)


def record_failure(
    store: Store, project: Project, label: str, reason: str, *, login: str, how: str
) -> None:
    """A ``Failed`` Transfer record on ``project``'s session ``label`` (when it exists: a
    refused overwrite of it), saying why.  Call it after the failed transaction ended."""
    existing = _existing_session(store, project, label)
    if existing is not None:
        store.add_workflow(
            existing, TRANSFER, FAILED, user=login, step="Refused", src=how, details=reason
        )


def _archive_scan(
    store: Store, project: Project, experiment: Experiment, scan: ImportScan, *, replace: bool
) -> None:
    row = store.get_scan(experiment.id, scan.scan_id)
    if row is None:
        row = store.add_scan(
            experiment.id,
            scan.scan_id,
            scan.xsi_type,
            type_=scan.type,
            series_description=scan.series_description,
            uid=scan.uid,
            modality=scan.modality,
        )
    store.set_fields("scan", str(row.pk), scan.fields)
    for label in sorted({f.resource for f in scan.files}):
        resource = store.get_resource_by_label("scan", str(row.pk), label)
        if resource is None:
            resource = store.add_resource(
                "scan",
                str(row.pk),
                label,
                f"{project.id}/arc001/{experiment.label}/SCANS/{scan.scan_id}/{label}",
                format_=label,
                content="RAW",
            )
        for item in (f for f in scan.files if f.resource == label):
            if not replace and store.get_file(resource.pk, item.relpath) is not None:
                continue  # overwrite=append keeps what is already archived
            store.place_file(resource, item.relpath, item.source, item.md5, format_=label)
    count = sum(store.resource_stats(r.pk)[0] for r in store.list_resources("scan", str(row.pk)))
    store.update_row("scans", "pk", row.pk, {"frames": str(count)})


# -- the prearchive ------------------------------------------------------------------------
def to_prearchive(
    store: Store, project: str, session: ImportSession, *, login: str
) -> PrearcSession:
    """Move ``session``'s files into ``project``'s prearchive; return its row (its ``/data``
    URI is ``"/data" + row.url``).

    The row appears READY with every file in its folder, or not at all.
    """
    hash_files([session])
    meta = asdict(session)
    with store.transaction() as tx:
        row = store.add_prearc(
            project,
            session.label,
            subject=session.subject,
            login=login,
            meta={},
            scan_date=session.date,
            scan_time=session.time,
            tag=session.uid,
            status="READY",
        )
        folder = store.prearc_folder(row)
        for scan_meta, scan in zip(meta["scans"].values(), session.scans.values(), strict=True):
            for file_meta, item in zip(scan_meta["files"], scan.files, strict=True):
                inner = Path("SCANS") / scan.scan_id / item.resource / item.relpath
                tx.move(item.source, folder / inner)
                file_meta["source"] = inner.as_posix()
        store.set_prearc_meta(row, meta)
    return row


def session_from_prearc(store: Store, row: PrearcSession) -> ImportSession:
    """Rebuild the ImportSession a prearchive row was made from, files in its folder."""
    meta = row.session()
    folder = store.prearc_folder(row)
    scans: dict[str, ImportScan] = {}
    for key, scan in meta.get("scans", {}).items():
        files = [
            ImportFile(folder / f["source"], f["resource"], f["relpath"], f.get("md5", ""))
            for f in scan["files"]
        ]
        scans[key] = ImportScan(
            scan_id=scan["scan_id"],
            xsi_type=scan["xsi_type"],
            type=scan["type"],
            series_description=scan["series_description"],
            uid=scan["uid"],
            modality=scan["modality"],
            files=files,
            fields=dict(scan.get("fields", {})),
        )
    return ImportSession(
        key=meta.get("key", row.folder),
        label=row.name,
        subject=row.subject or meta.get("subject", ""),
        xsi_type=meta.get("xsi_type", "xnat:otherDicomSessionData"),
        modality=meta.get("modality", ""),
        date=meta.get("date", ""),
        time=meta.get("time", ""),
        uid=meta.get("uid", ""),
        scans=scans,
        fields=dict(meta.get("fields", {})),
    )


def add_to_prearchive(store: Store, row: PrearcSession, session: ImportSession) -> str:
    """Add ``session``'s files to the prearchive session ``row`` (the same study arriving
    later); a file with the same scan, resource and path replaces the earlier one.

    Files, meta and lastmod change in one transaction.  Returns the row's ``/data`` URI.
    """
    hash_files([session])
    meta = row.session()
    scans: dict[str, Any] = meta.setdefault("scans", {})
    with store.transaction() as tx:
        folder = store.prearc_folder(row)
        for scan in session.scans.values():
            scan_meta = scans.get(scan.scan_id)
            if scan_meta is None:
                scan_meta = scans[scan.scan_id] = {**asdict(scan), "files": []}
            files: list[dict[str, Any]] = scan_meta["files"]
            for item in scan.files:
                inner = (Path("SCANS") / scan.scan_id / item.resource / item.relpath).as_posix()
                tx.move(item.source, folder / inner)
                files[:] = [f for f in files if f["source"] != inner]
                files.append(
                    {"source": inner, "resource": item.resource, "relpath": item.relpath,
                     "md5": item.md5}
                )  # fmt: skip
        store.set_prearc_meta(row, meta)
        store.set_prearc_status(row, row.status, row.message)  # touches lastmod
    return f"/data{row.url}"
