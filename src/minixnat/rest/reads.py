"""Reads under ``/data``: listings, single objects, files, archives and catalogs."""

from __future__ import annotations

from minixnat.http.access import Access
from minixnat.http.messages import AnyResponse, HttpError, Request, Response, text
from minixnat.rest import catalogs, downloads, listings, objects
from minixnat.rest.resolve import Target
from minixnat.rest.tables import apply_query, project_columns, render
from minixnat.store import Store


def read(
    store: Store, request: Request, target: Target, access: Access, *, scoped: bool, no_range: bool
) -> AnyResponse:
    """GET or HEAD of anything under ``/data`` that ``resolve`` found."""
    kind = target.kind
    if kind == "projects":
        table = listings.project_table(store, access, request)
        return render(project_columns(apply_query(table, request), request), request)
    if kind == "subjects":
        table = listings.subject_table(store, target, access)
        return render(project_columns(apply_query(table, request), request), request)
    if kind == "experiments":
        table = listings.experiment_table(store, target, request, access)
        return render(project_columns(apply_query(table, request), request), request)
    if kind == "scans":
        table = listings.scan_table(store, target)
    elif kind == "reconstructions":
        table = listings.recon_table(store, target)
    elif kind == "assessors":
        table = listings.assessor_table(store, target)
    elif kind == "resources":
        table = listings.resource_table(store, target)
    elif kind == "accessibility":
        assert target.project
        return text(target.project.accessibility)
    elif kind in ("prearchive_code", "quarantine_code"):
        assert target.project
        return text(str(getattr(target.project, kind)))
    elif kind == "current_arc":
        return text("arc001")
    elif kind == "status":  # an experiment's: minixnat quarantines nothing
        return text("active")
    elif kind == "resource":
        if len(target.resources) != 1:
            raise HttpError(404, f"Unable to find resource {''.join(target.extra)}.")
        return catalogs.resource_catalog(store, target.resources[0][1])
    elif kind == "files":
        return files(store, request, target, scoped=scoped, no_range=no_range)
    else:
        return objects.render_object(store, target, request)
    return render(project_columns(apply_query(table, request, paging=False), request), request)


def files(
    store: Store, request: Request, target: Target, *, scoped: bool, no_range: bool
) -> AnyResponse:
    """A file, an archive of files, an xcat catalog, or a files listing."""
    fmt = request.param("format").lower()
    if target.file_path and not request.raw_path.endswith("/"):
        return downloads.serve_file(store, target, request, allow_range=not no_range)
    files = listings.selected_files(store, target, request)
    if fmt in downloads.ARCHIVE_FORMATS:
        members = downloads.archive_members(store, files, request, fmt)
        return downloads.stream_archive(members, fmt, downloads.archive_name(target), request)
    if fmt == "xcat":
        names = [
            downloads.member_name(
                n,
                r,
                f,
                structure=request.param("structure"),
                include_project=request.flag("projectIncludedInPath"),
                include_subject=request.flag("subjectIncludedInPath"),
            )
            for n, r, f in files
        ]
        host = request.headers.get("host", "localhost")
        return catalogs.xcat_listing(files, names, f"http://{host}")
    table = listings.file_table(store, target, request, scoped=scoped)
    if not table.rows and request.flag("accept-not-found"):
        return Response(204, b"")
    return render(apply_query(table, request, filters=False, paging=False), request)
