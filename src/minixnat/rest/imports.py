"""The import service, the prearchive and archiving (``xnat-rest-api.md`` §9.3, §9.4).

``POST /data/services/import`` takes one zip, tar or tar.gz (raw body or one multipart
file), unpacks it safely, builds sessions from the DICOM headers and either archives them
or puts them in the prearchive.  Everything is checked before the archive is touched: a
refused upload leaves nothing behind, and a session that fails while being written is
removed again.  The response lists the created URIs, each ending in CRLF.
"""

from __future__ import annotations

import asyncio
import html
import secrets
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from minixnat.http import bodies
from minixnat.http.messages import (
    AnyResponse,
    FileSlice,
    HttpError,
    Request,
    RequestCut,
    Response,
    StreamResponse,
)
from minixnat.importer.build import BuildError, Built, ImportFile, ImportScan, Options, build
from minixnat.importer.commit import (
    IMPORT,
    PREARCHIVE,
    CommitError,
    archive_session,
    check_conflicts,
    hash_files,
    overwrite_mode,
    record_failure,
    session_from_prearc,
    to_prearchive,
)
from minixnat.importer.unpack import (
    Budget,
    UnpackError,
    budget_for,
    discard,
    is_archive_name,
    sniff,
    unpack,
)
from minixnat.rest.downloads import Member, stream_archive
from minixnat.rest.tables import Table, render
from minixnat.rest.writes import WriteContext, check_name
from minixnat.store import Project, Store
from minixnat.store.activity import DONE, FAILED
from minixnat.store.prearchive import UNASSIGNED, PrearcSession

HANDLERS = ("DICOM-zip", "SI")
KNOWN_HANDLERS = ("gradual-DICOM", "XAR", "inbox", "DICOM-zip", "SI")
PREARC_COLUMNS = [
    "project",
    "timestamp",
    "lastmod",
    "uploaded",
    "scan_date",
    "scan_time",
    "subject",
    "folderName",
    "name",
    "tag",
    "status",
    "url",
    "autoarchive",
    "prevent_anon",
    "prevent_auto_commit",
    "SOURCE",
    "VISIT",
    "PROTOCOL",
    "TIMEZONE",
]
# The upload's format, from its Content-Type (raw bodies) as XNAT decides it.
FORMAT_BY_TYPE = {
    "application/zip": "zip",
    "application/x-zip-compressed": "zip",
    "application/x-tar": "tar",
    "application/x-gtar": "tar.gz",
    "application/gzip": "tar.gz",
    "application/x-gzip": "tar.gz",
}


@dataclass
class Destination:
    archive: bool
    project: str
    subject: str
    label: str


def parse_dest(dest: str, *, auto_archive: bool) -> Destination:
    """What ``dest`` names: archive or prearchive, and any project/subject/label in it."""
    parts = [p for p in dest.split("/") if p]
    if not parts:
        return Destination(auto_archive, "", "", "")
    head, rest = parts[0], parts[1:]
    if head not in ("archive", "prearchive") or (rest and rest[0] != "projects"):
        raise HttpError(
            400, f"dest must be /archive/projects/P[/subjects/S[/experiments/L]] or "
            f"/prearchive[/projects/P], not {dest!r}."
        )  # fmt: skip
    if head == "prearchive":
        return Destination(False, rest[1] if len(rest) > 1 else "", "", "")
    names = dict(zip(rest[0::2], rest[1::2], strict=False))
    if len(rest) % 2 or set(names) - {"projects", "subjects", "experiments"}:
        raise HttpError(400, f"Cannot read the destination {dest!r}.")
    return Destination(
        True, names.get("projects", ""), names.get("subjects", ""), names.get("experiments", "")
    )


def _uri_list(request: Request, uris: list[str]) -> Response:
    fmt = request.param("format").lower()
    if fmt in ("txt", "text") and len(uris) == 1:
        return Response(200, uris[0].encode(), "text/plain;charset=UTF-8")
    if fmt == "html":
        items = "".join(f"<li>{html.escape(u)}</li>" for u in uris)
        return Response(200, f"<ul>{items}</ul>".encode(), "text/html;charset=UTF-8")
    return Response(200, "".join(f"{u}\r\n" for u in uris).encode(), "text/uri-list")


def _writable_project(ctx: WriteContext, pid: str) -> Project:
    project = ctx.store.get_project(pid)
    if project is None or not ctx.access.can_see(project):
        raise HttpError(
            404, f"Unable to identify project {pid}: it does not exist or you cannot see it."
        )
    if not ctx.access.can_edit(project):
        raise HttpError(403, f"You don't have permission to upload data to project {pid}.")
    return project


def upload_format(upload: bodies.Upload) -> str:
    """zip, tar or tar.gz from the upload's name or Content-Type; 400 if neither says."""
    name = upload.filename.lower()
    if name.endswith(".zip"):
        return "zip"
    if name.endswith((".tar.gz", ".tgz")):
        return "tar.gz"
    if name.endswith(".tar"):
        return "tar"
    declared = FORMAT_BY_TYPE.get(upload.content_type.lower())
    if declared is None:
        raise HttpError(
            400,
            "Unable to identify upload format: send Content-Type application/zip, "
            "application/x-tar or application/x-gtar (tar.gz), or a multipart file whose "
            "name ends in .zip, .tar or .tar.gz.",
        )
    return declared


def unpack_upload(path: Path, staging: Path, budget: Budget) -> list[tuple[Path, PurePosixPath]]:
    """Unpack the upload and, one level down, any archives inside it (a bundle)."""
    try:
        outer = unpack(path, staging / "upload", budget)
        files: list[tuple[Path, PurePosixPath]] = []
        for index, item in enumerate(outer):
            rel = PurePosixPath(item.relative_to(staging / "upload").as_posix())
            # A bundle holds session archives at its top (or in one folder); an archive
            # deeper down is data (a .nii.gz in a NIFTI resource), never unpacked.
            nested = len(rel.parts) <= 2 and is_archive_name(rel.name)
            kind = sniff(item) if nested else None
            if kind is None:
                files.append((item, rel))
                continue
            inner_dir = staging / f"bundle-{index}"
            for inner in unpack(item, inner_dir, budget, kind=kind):
                inner_rel = PurePosixPath(rel.name) / inner.relative_to(inner_dir).as_posix()
                files.append((inner, inner_rel))
            item.unlink()
        return files
    except UnpackError as exc:
        raise HttpError(400, f"Cannot read the upload: {exc}.") from exc


async def import_service(ctx: WriteContext, request: Request) -> Response:
    """Receive and import one archive, recorded in the caller's activity tracker: from
    receiving to done, or failed with the message the caller is given."""
    if request.method != "POST":
        raise HttpError(405, "POST an archive to the import service.")
    store = ctx.store
    activity = request.activity or store.start_activity(
        ctx.user.login, project=request.param("PROJECT_ID") or request.param("project")
    )
    with store.failing_activity(activity, otherwise="The import stopped on a server error."):
        try:
            return await _import_service(ctx, request, activity)
        except RequestCut:  # said as what it was (an ended record stays as it is)
            store.end_activity(activity, FAILED, message="The upload was cut off.")
            raise


async def _import_service(ctx: WriteContext, request: Request, activity: int) -> Response:
    # No handler named: the session importer (SI), as XNAT 1.8.5's ImporterHandlerA has it
    # (what xnatpy's functional tests expect): files that are neither DICOM nor ECAT are
    # left out, and the upload goes where the project's prearchive code sends it.
    handler = request.param("import-handler") or request.param("import_handler") or "SI"
    if handler not in KNOWN_HANDLERS:
        raise HttpError(404, f"Unknown importer implementation specified: {handler}")
    if handler not in HANDLERS:
        raise HttpError(
            400, f"minixnat does not implement the {handler} importer; use DICOM-zip or SI."
        )
    if request.param("src"):
        raise HttpError(
            400, "minixnat keeps no user cache to import from (src=); send the archive itself."
        )
    auto_names = ("auto-archive", "AA", "autoArchive", "Direct-Archive")
    auto = any(request.flag(name) for name in auto_names)
    dest = parse_dest(request.param("dest"), auto_archive=auto)
    project_id = request.param("PROJECT_ID") or request.param("project") or dest.project
    subject = request.param("SUBJECT_ID") or request.param("subject") or dest.subject
    label = request.param("EXPT_LABEL") or request.param("session") or dest.label
    for kind, value in (("project", project_id), ("subject label", subject), ("label", label)):
        check_name(kind, value)
    overwrite = overwrite_mode(request.param("overwrite"))  # 400 if bad
    options = Options(
        subject=subject,
        label=label,
        ignore_unparsable=request.flag("Ignore-Unparsable") or handler == "SI",
        ecat=handler == "SI",
    )
    project = _writable_project(ctx, project_id) if project_id else None
    said = request.param("dest") or any(request.param(name) for name in auto_names)
    if project is not None and not said and project.prearchive_code in (4, 5):
        # The project's prearchive code decides where an upload with no destination goes,
        # as in XNAT: 4 archives it, 5 archives it replacing files that exist.
        dest = Destination(True, dest.project, dest.subject, dest.label)
        if project.prearchive_code == 5 and overwrite == "none":
            overwrite = "delete"
    if dest.archive and project is None:
        raise HttpError(400, "Name the project to archive into (PROJECT_ID or dest).")
    body = await bodies.receive(request, ctx.tmp_dir)
    staging = ctx.tmp_dir / f"import-{secrets.token_hex(8)}"
    try:
        if len(body.uploads) > 1:
            raise HttpError(400, "Importer is limited to one uploaded resource at a time.")
        if not body.uploads:
            raise HttpError(400, bodies.NO_DATA)
        upload = body.uploads[0]
        ctx.store.received_activity(
            activity,
            filename=upload.filename,
            size=upload.size,
            project=project.id if project else "",
            destination="archive" if dest.archive else "prearchive",
        )
        declared = upload_format(upload)
        actual = sniff(upload.path)
        if actual is None or (declared == "zip") != (actual == "zip"):
            raise HttpError(
                400,
                f"The upload is not a readable {declared} archive (truncated or corrupt?).",
            )
        return await asyncio.to_thread(
            _import,
            ctx,
            request,
            upload.path,
            staging,
            project,
            dest.archive,
            options,
            overwrite,
            activity,
        )
    finally:
        body.discard()
        discard(staging)


def _import(
    ctx: WriteContext,
    request: Request,
    path: Path,
    staging: Path,
    project: Project | None,
    archive: bool,
    options: Options,
    overwrite: str,
    activity: int,
) -> Response:
    files = unpack_upload(path, staging, budget_for(path, ctx.limits))
    try:
        built: Built = build(files, options)
    except BuildError as exc:
        raise HttpError(exc.status, str(exc)) from exc
    login = ctx.user.login
    hash_files(built.sessions)
    count = sum(session.file_count() for session in built.sessions)
    uris: list[str] = []
    if archive:
        assert project is not None
        failing = ""
        try:
            # One transaction for the whole upload: every session of a bundle, or none.
            with ctx.store.transaction():
                for session in built.sessions:
                    failing = session.label
                    check_conflicts(ctx.store, project, session, overwrite)
                for session in built.sessions:
                    failing = session.label
                    uris.append(
                        archive_session(
                            ctx.store, project, session, login=login, overwrite=overwrite
                        )
                    )
                # The tracker says done in the transaction that makes the sessions.
                ctx.store.end_activity(activity, DONE, files=count, uris=uris)
        except CommitError as exc:
            record_failure(ctx.store, project, failing, str(exc), login=login, how=IMPORT)
            raise HttpError(exc.status, str(exc)) from exc
        return _uri_list(request, uris)
    where = project.id if project else UNASSIGNED
    with ctx.store.transaction():
        for session in built.sessions:
            row = to_prearchive(ctx.store, where, session, login=login)
            uris.append(f"/data{row.url}")
        ctx.store.end_activity(activity, DONE, files=count, uris=uris)
    return _uri_list(request, uris)


# -- the prearchive ------------------------------------------------------------------------
def _prearc_row(row: PrearcSession) -> dict[str, str]:
    return {
        "project": row.project,
        "timestamp": row.timestamp,
        "lastmod": row.lastmod,
        "uploaded": row.uploaded,
        "scan_date": row.scan_date,
        "scan_time": row.scan_time,
        "subject": row.subject,
        "folderName": row.folder,
        "name": row.name,
        "tag": row.tag,
        "status": row.status,
        "url": row.url,
        "autoarchive": row.autoarchive,
        "prevent_anon": "false",
        "prevent_auto_commit": "false",
        "SOURCE": "",
        "VISIT": "",
        "PROTOCOL": "",
        "TIMEZONE": "",
    }


def _may_see(ctx: WriteContext, row: PrearcSession) -> bool:
    if ctx.access.is_admin:
        return True
    if row.project == UNASSIGNED:
        return row.login == ctx.user.login
    project = ctx.store.get_project(row.project)
    return project is not None and ctx.access.can_edit(project)


def _find(ctx: WriteContext, src: str) -> PrearcSession:
    parts = [p for p in src.split("/") if p]
    if parts[:1] == ["data"]:
        parts = parts[1:]
    if len(parts) != 5 or parts[:2] != ["prearchive", "projects"]:
        raise HttpError(
            400, f"src must be /prearchive/projects/{{P}}/{{timestamp}}/{{folder}}, not {src!r}."
        )
    row = ctx.store.get_prearc(*parts[2:])
    if row is None or not _may_see(ctx, row):
        raise HttpError(404, f"No prearchive session {src}.")
    return row


def prearchive(ctx: WriteContext, request: Request, rest: list[str]) -> AnyResponse:
    """``/data/prearchive/projects[/P[,P2]][/{timestamp}/{folder}[/scans]]``."""
    if rest[:1] != ["projects"]:
        raise HttpError(404, "The prearchive lives under /data/prearchive/projects.")
    if len(rest) <= 2:
        if request.method not in ("GET", "HEAD"):
            raise HttpError(405, "The prearchive listing is read-only.")
        wanted = rest[1].split(",") if len(rest) == 2 else None
        rows = [
            _prearc_row(r)
            for r in ctx.store.list_prearc(wanted)
            if _may_see(ctx, r) and (request.param("tag") in ("", r.tag))
        ]
        return render(Table(PREARC_COLUMNS, rows, total_records=False), request)
    if len(rest) < 4:
        raise HttpError(404, "The requested prearchive resource was not found.")
    row = _find(ctx, "/prearchive/" + "/".join(rest[:4]))
    if len(rest) >= 5:
        if rest[4] != "scans":
            raise HttpError(404, f"Unknown prearchive path element {rest[4]!r}.")
        if len(rest) == 5:
            return render(_prearc_scans(ctx.store, row), request)
        return _prearc_scan_part(ctx, request, row, rest[5:])
    if request.method == "DELETE":
        ctx.store.delete_prearc(row)
        return Response(200, b"")
    if request.method == "POST":
        return _prearc_action(ctx, request, row)
    fmt = request.param("format").lower() or "json"
    if fmt == "zip":
        folder = ctx.store.prearc_folder(row)
        members = [
            Member(p, f"{row.folder}/{p.relative_to(folder).as_posix()}", p.stat().st_size, 0.0)
            for p in sorted(folder.rglob("*"))
            if p.is_file()
        ]
        return stream_archive(members, "zip", row.folder, request)
    return render(Table(PREARC_COLUMNS, [_prearc_row(row)], total_records=False), request)


SCAN_COLUMNS = ["ID", "series_description", "type", "xsiType", "files"]


def _scan_row(scan: ImportScan) -> dict[str, str]:
    return {
        "ID": scan.scan_id,
        "series_description": scan.series_description,
        "type": scan.type,
        "xsiType": scan.xsi_type,
        "files": str(len(scan.files)),
    }


def _prearc_scans(store: Store, row: PrearcSession) -> Table:
    session = session_from_prearc(store, row)
    return Table(SCAN_COLUMNS, [_scan_row(s) for s in session.scans.values()])


def prearchive_files(ctx: WriteContext, parts: list[str]) -> list[Path]:
    """The files of the prearchive session or scan that ``projects/{P}/{timestamp}/{folder}
    [/scans/{S}]`` names (as the DICOM dump service is given them), in scan order."""
    if len(parts) not in (4, 6) or parts[0] != "projects" or parts[4:5] not in ([], ["scans"]):
        raise HttpError(400, "A prearchive src is /prearchive/projects/{P}/{timestamp}/{folder}.")
    row = _find(ctx, "/prearchive/" + "/".join(parts[:4]))
    scans = session_from_prearc(ctx.store, row).scans.values()
    chosen = [s for s in scans if len(parts) == 4 or s.scan_id == parts[5]]
    if not chosen:
        raise HttpError(404, f"Prearchive session {row.folder} has no scan {parts[5]}.")
    return [f.source for s in chosen for f in s.files]


def _prearc_scan_part(
    ctx: WriteContext, request: Request, row: PrearcSession, rest: list[str]
) -> AnyResponse:
    """``…/scans/{id}[/resources[/{label}[/files[/{path}]]]]`` of a prearchive session: a
    scan, its resources and their files, each also as a zip (``format=zip``); read only,
    as xnatpy's prearchive browser reads them."""
    if request.method not in ("GET", "HEAD"):
        raise HttpError(405, "A prearchive scan is read only: archive, move or delete its session.")
    session = session_from_prearc(ctx.store, row)
    scan = next((s for s in session.scans.values() if s.scan_id == rest[0]), None)
    if scan is None:
        raise HttpError(404, f"Prearchive session {row.folder} has no scan {rest[0]}.")
    files = scan.files
    if len(rest) > 1 and rest[1] != "resources":
        raise HttpError(404, f"Unknown prearchive scan path element {rest[1]!r}.")
    if len(rest) > 2:
        files = [f for f in files if f.resource == rest[2]]
        if not files:
            raise HttpError(404, f"Scan {scan.scan_id} has no resource {rest[2]!r}.")
    if len(rest) > 3 and rest[3] != "files":
        raise HttpError(404, f"Unknown prearchive resource path element {rest[3]!r}.")
    if len(rest) > 4:  # one file
        wanted = "/".join(rest[4:])
        found = next((f for f in files if f.relpath == wanted), None)
        if found is None or not found.source.is_file():
            raise HttpError(
                404, f"Resource {rest[2]} of scan {scan.scan_id} has no file {wanted!r}."
            )
        size = found.source.stat().st_size
        return StreamResponse.of_file(
            FileSlice(str(found.source), 0, size), 200, "application/octet-stream", []
        )
    if request.param("format").lower() == "zip" and len(rest) != 2:
        members = [
            Member(
                f.source, f"{scan.scan_id}/{f.resource}/{f.relpath}", f.source.stat().st_size, 0.0
            )
            for f in files
        ]
        return stream_archive(members, "zip", f"{row.folder}_{scan.scan_id}", request)
    if len(rest) == 1:
        return render(Table(SCAN_COLUMNS, [_scan_row(scan)]), request)
    base = (
        f"/data/prearchive/projects/{row.project}/{row.timestamp}/{row.folder}/scans/{scan.scan_id}"
    )
    if len(rest) == 4:
        listed = [
            {
                "Name": f.relpath.rsplit("/", 1)[-1],
                "Size": str(f.source.stat().st_size),
                "URI": f"{base}/resources/{f.resource}/files/{f.relpath}",
            }
            for f in files
        ]
        return render(Table(["Name", "Size", "URI"], listed), request)
    by_label: dict[str, list[ImportFile]] = {}
    for f in files:
        by_label.setdefault(f.resource, []).append(f)
    resources = [
        {
            "label": label,
            "file_count": str(len(group)),
            "file_size": str(sum(f.source.stat().st_size for f in group)),
        }
        for label, group in by_label.items()
    ]
    return render(Table(["label", "file_count", "file_size"], resources), request)


def _prearc_action(ctx: WriteContext, request: Request, row: PrearcSession) -> Response:
    action = request.param("action")
    if action == "commit":
        uri = _archive(ctx, request, row)
        if request.flag("AA") or request.flag("redirect"):
            return Response(301, b"", headers=[("Location", uri)])
        return Response(200, f"{uri}\r\n".encode(), "text/uri-list")
    if action == "move":
        moved = _move(ctx, row, request.param("newProject"))
        return Response(301, b"", headers=[("Location", f"/data{moved.url}")])
    if action == "reset-status":
        ctx.store.set_prearc_status(row, "READY")
        return Response(200, b"")
    raise HttpError(400, f"Unknown prearchive action {action!r}: use commit, move or reset-status.")


def _move(ctx: WriteContext, row: PrearcSession, new_project: str) -> PrearcSession:
    if not new_project:
        raise HttpError(400, "Name the project to move to (newProject=).")
    _writable_project(ctx, new_project)
    try:
        return ctx.store.move_prearc(row, new_project)
    except ValueError as exc:
        raise HttpError(409, str(exc)) from exc


def _archive(ctx: WriteContext, request: Request, row: PrearcSession) -> str:
    """Archive one prearchive session; CONFLICT or ERROR stays on the row if it fails."""
    dest = parse_dest(request.param("dest"), auto_archive=True)
    project_id = request.param("project") or request.param("PROJECT_ID") or dest.project
    project_id = project_id or row.project
    if project_id == UNASSIGNED:
        raise HttpError(400, "This session has no project yet: pass project= or move it first.")
    project = _writable_project(ctx, project_id)
    session = session_from_prearc(ctx.store, row)
    session.subject = (
        request.param("subject") or request.param("SUBJECT_ID") or dest.subject or session.subject
    )
    session.label = (
        request.param("session") or request.param("EXPT_LABEL") or dest.label or session.label
    )
    if not session.subject:
        raise HttpError(400, "This session has no subject: pass subject=.")
    check_name("subject label", session.subject)
    check_name("label", session.label)
    overwrite = overwrite_mode(request.param("overwrite"))  # 400 if bad
    missing = [f.relpath for s in session.scans.values() for f in s.files if not f.source.exists()]
    if missing:
        ctx.store.set_prearc_status(row, "ERROR", f"{len(missing)} files are missing")
        raise HttpError(500, f"The prearchive session is missing {len(missing)} files.")
    hash_files([session])
    try:
        # The archived session appears and the prearchive entry goes in one transaction.
        with ctx.store.transaction():
            uri = archive_session(
                ctx.store,
                project,
                session,
                login=ctx.user.login,
                overwrite=overwrite,
                how=PREARCHIVE,
            )
            ctx.store.delete_prearc(row)
    except CommitError as exc:
        ctx.store.set_prearc_status(row, "CONFLICT" if exc.status == 409 else "ERROR", str(exc))
        record_failure(
            ctx.store, project, session.label, str(exc), login=ctx.user.login, how=PREARCHIVE
        )
        raise HttpError(exc.status, str(exc)) from exc
    except Exception as exc:
        ctx.store.set_prearc_status(row, "ERROR", str(exc))
        raise
    return uri


async def archive_service(ctx: WriteContext, request: Request) -> Response:
    """``POST /data/services/archive?src=…`` (several src values archive each in turn)."""
    sources = [v for k, v in request.query_list if k == "src"]
    if request.method != "POST" or not sources:
        raise HttpError(400, "POST with src=/prearchive/projects/{P}/{timestamp}/{folder}.")
    rows = [_find(ctx, src) for src in sources]
    uris = []
    for row in rows:
        uris.append(await asyncio.to_thread(_archive, ctx, request, row))
    if request.flag("redirect") and len(uris) == 1:
        host = request.headers.get("host", "localhost")
        return Response(303, b"", headers=[("Location", f"http://{host}{uris[0]}")])
    return Response(200, "".join(f"{u}\r\n" for u in uris).encode(), "text/uri-list")


def prearchive_service(ctx: WriteContext, request: Request, action: str) -> Response:
    """``POST /data/services/prearchive/{move,delete,rebuild}?src=…[&newProject=P]``."""
    if request.method != "POST":
        raise HttpError(405, "POST to the prearchive services.")
    sources = [v for k, v in request.query_list if k == "src"]
    if not sources:
        raise HttpError(400, "Name the sessions with src=/prearchive/projects/…")
    rows = [_find(ctx, src) for src in sources]
    for row in rows:
        if action == "delete":
            ctx.store.delete_prearc(row)
        elif action == "move":
            _move(ctx, row, request.param("newProject"))
        elif action == "rebuild":
            ctx.store.set_prearc_status(row, "READY")
        else:
            raise HttpError(404, f"Unknown prearchive service {action!r}.")
    return Response(200, b"")
