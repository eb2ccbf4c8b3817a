"""Catalog XML: resource catalogs, ``format=xcat`` listings and the XAPI download catalogs.

The XAPI flow is the server side of seed 000's download page: ``POST /xapi/archive/download``
stores a selection under an id; ``GET …/{id}/xml`` returns it as a ``cat:Catalog`` with one
``cat:entrySet`` per session and one entry per resource; ``GET …/{id}/zip`` streams the same
files, each under the folder its entry's ``name`` gives.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from xml.sax.saxutils import quoteattr

from minixnat.http.access import Access
from minixnat.http.messages import HttpError, Request, Response, StreamResponse
from minixnat.rest.downloads import Member, stream_archive
from minixnat.rest.listings import file_uri, is_a
from minixnat.rest.resolve import Node
from minixnat.store import Experiment, FileRow, Resource, Store

CAT_NS = (
    'xmlns:cat="http://nrg.wustl.edu/catalog" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
)
HEAD = '<?xml version="1.0" encoding="UTF-8"?>\n'


def _entry(
    uri: str, entry_id: str, name: str, cache_path: str, f: FileRow | None, extra: str = ""
) -> str:
    attrs = [f"URI={quoteattr(uri)}", f"ID={quoteattr(entry_id)}", f"name={quoteattr(name)}"]
    if cache_path:
        attrs.append(f"cachePath={quoteattr(cache_path)}")
    meta = ""
    if f is not None:
        if f.md5:
            attrs.append(f"digest={quoteattr(f.md5)}")
        if f.format:
            attrs.append(f"format={quoteattr(f.format)}")
        if f.content:
            attrs.append(f"content={quoteattr(f.content)}")
        meta = (
            f'<cat:metaFields><cat:metaField name="SIZE">{f.size}</cat:metaField></cat:metaFields>'
        )
    attrs.sort()
    return f"\t\t<cat:entry {' '.join(attrs)}{extra}>{meta}</cat:entry>\n"


def resource_catalog(store: Store, res: Resource) -> Response:
    """``GET {object}/resources/{RES}``: always XML, whatever ``format`` says (as XNAT)."""
    entries = "".join(
        _entry(f.path, f.path, f.path.rsplit("/", 1)[-1], f.path, f)
        for f in store.list_files(res.pk)
    )
    body = (
        f"{HEAD}<cat:Catalog ID={quoteattr(str(res.pk))} {CAT_NS}>\n"
        f"\t<cat:entries>\n{entries}\t</cat:entries>\n</cat:Catalog>\n"
    )
    return Response(200, body.encode(), "text/xml;charset=UTF-8")


def xcat_listing(
    files: list[tuple[Node, Resource, FileRow]], names: list[str], server: str
) -> Response:
    """A files listing as a catalog: absolute URIs, ``cachePath`` = the path in the zip."""
    entries = "".join(
        _entry(
            server + file_uri(node, res, f.path, scoped=False),
            f.path,
            f.path.rsplit("/", 1)[-1],
            name,
            f,
        )
        for (node, res, f), name in zip(files, names, strict=True)
    )
    body = (
        f"{HEAD}<cat:Catalog {CAT_NS}>\n\t<cat:entries>\n{entries}"
        "\t</cat:entries>\n</cat:Catalog>\n"
    )
    return Response(200, body.encode(), "application/xcat;charset=UTF-8")


# -- XAPI download catalogs ----------------------------------------------------------------


def _clean(text: str) -> str:
    return re.sub(r"[\\/(),\s]", "_", text)


def _list(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [str(v) for v in value]
    raise HttpError(400, "Expected a list of strings in the download request.")


def create_download(
    store: Store, access: Access, request_body: bytes, *, with_size: bool
) -> Response:
    """``POST /xapi/archive/download[withsize]``: the id (and size) of a stored selection."""
    try:
        spec = json.loads(request_body or b"{}")
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise HttpError(400, f"The download request is not valid JSON: {reason}") from exc
    if not isinstance(spec, dict):
        raise HttpError(400, "The download request must be a JSON object.")
    cid, entries = new_download(store, access, spec)
    if not with_size:
        return Response(200, cid.encode(), "text/plain;charset=UTF-8")
    body = json.dumps({"id": cid, "size": str(total_size(entries)), "resourcesOfUnknownSize": "0"})
    return Response(200, body.encode(), "application/json;charset=UTF-8")


def new_download(
    store: Store, access: Access, spec: dict[str, object]
) -> tuple[str, list[CatalogEntry]]:
    """Store a download selection for its user; its id and what it selects now.

    Access is checked here, when the selection is made, and again whenever it is fetched.
    """
    if access.user is None:
        raise HttpError(401, "The request requires user authentication")
    sessions = _list(spec.get("sessions"))
    projects = _list(spec.get("projectIds") or spec.get("projectId"))
    if not sessions or not projects:
        raise HttpError(400, "A download request needs 'sessions' and 'projectIds'.")
    stamp = datetime.now(UTC).strftime("%Y%m%d_%H%M%S%f")[:-3]
    cid = f"{access.user.login}-{stamp}"
    n = 1
    while store.get_download_catalog(cid) is not None:  # two in one millisecond
        n += 1
        cid = f"{access.user.login}-{stamp}-{n}"
    entries = catalog_entries(store, access, spec)
    store.save_download_catalog(cid, access.user.login, spec)
    return cid, entries


def total_size(entries: list[CatalogEntry]) -> int:
    return sum(f.size for e in entries for _, f in e.files)


class CatalogEntry:
    """One resource of one session in a download catalog."""

    def __init__(
        self,
        session: Experiment,
        group: str,
        uri: str,
        name: str,
        resource: Resource,
        files: list[tuple[Resource, FileRow]],
    ) -> None:
        self.session = session
        self.group = group
        self.uri = uri
        self.name = name
        self.resource = resource
        self.files = files


def catalog_entries(store: Store, access: Access, spec: dict[str, object]) -> list[CatalogEntry]:
    options = set(_list(spec.get("options")))
    simplified = "simplified" in options
    scan_types = set(_list(spec.get("scan_types")))
    scan_formats = set(_list(spec.get("scan_formats")))
    session_resources = set(_list(spec.get("resources")))
    recon_filter = set(_list(spec.get("reconstructions")))
    assessor_types = set(_list(spec.get("assessors")))
    out: list[CatalogEntry] = []
    for text in _list(spec.get("sessions")):
        parts = text.split(":")
        if len(parts) != 4:
            raise HttpError(400, f"Session {text!r} must be 'project:subject:label:sessionId'.")
        session = store.get_experiment(parts[3])
        project = store.get_project(session.project) if session else None
        if session is None or project is None or not access.can_read(project):
            raise HttpError(404, f"Unable to find session {parts[3]}.")
        subject = store.get_subject(session.subject_id)
        # As XNAT's DefaultCatalogService: the project option brings the subject with it.
        prefix = ""
        if "subjectIncludedInPath" in options and subject:
            prefix = f"{subject.label}/"
        if "projectIncludedInPath" in options and subject:
            prefix = f"{project.id}/{subject.label}/"
        base = f"/archive/experiments/{session.id}"
        label = session.label

        def add(
            group: str,
            uri: str,
            name: str,
            res: Resource,
            session: Experiment = session,
            prefix: str = prefix,
        ) -> None:
            files = [(res, f) for f in store.list_files(res.pk)]
            out.append(CatalogEntry(session, group, uri, prefix + name, res, files))

        if scan_types and scan_formats:
            for scan in store.list_scans(session.id):
                type_ok = scan.type in scan_types or ("NULL" in scan_types and not scan.type)
                if not type_ok:
                    continue
                for res in store.list_resources("scan", str(scan.pk)):
                    fmt_ok = (
                        res.label in scan_formats
                        or res.format in scan_formats
                        or ("NULL" in scan_formats and not res.format)
                    )
                    if not fmt_ok:
                        continue
                    name = (
                        f"{label}/{scan.scan_id}/{res.label}"
                        if simplified
                        else f"{label}/scans/{scan.scan_id}-{_clean(scan.type)}/resources/"
                        f"{res.label}"
                    )
                    add(
                        "RAW", f"{base}/scans/{scan.scan_id}/resources/{res.label}/files", name, res
                    )
        for res in store.list_resources("experiment", session.id):
            if res.label in session_resources:
                name = f"{label}/{res.label}" if simplified else f"{label}/resources/{res.label}"
                add("RESOURCES", f"{base}/resources/{res.label}/files", name, res)
        for recon in store.list_recons(session.id):
            if recon.recon_id in recon_filter or recon.type in recon_filter:
                for res in store.list_resources("recon", str(recon.pk)):
                    name = f"{label}/reconstructions/{recon.recon_id}/resources/{res.label}"
                    add(
                        "RECONSTRUCTIONS",
                        f"{base}/reconstructions/{recon.recon_id}/out/resources/{res.label}/files",
                        name,
                        res,
                    )
        for assessor in store.list_experiments(session_id=session.id):
            if any(is_a(assessor.xsi_type, t) for t in assessor_types):
                for res in store.list_resources("assessor", assessor.id):
                    name = f"{label}/assessors/{assessor.label}/resources/{res.label}"
                    add(
                        "ASSESSORS",
                        f"{base}/assessors/{assessor.id}/out/resources/{res.label}/files",
                        name,
                        res,
                    )
    return out


def load_download(
    store: Store, access: Access, cid: str
) -> tuple[dict[str, object], list[CatalogEntry]]:
    """A stored selection and what it selects now; 404 unless it is the user's (or admin)."""
    found = store.get_download_catalog(cid)
    if (
        found is None
        or access.user is None
        or (found[0] != access.user.login and not access.is_admin)
    ):
        raise HttpError(404, f"No download catalog with id {cid}.")
    return found[1], catalog_entries(store, access, found[1])


def download_catalog_xml(
    store: Store, access: Access, cid: str, *, attachment: bool, server: str
) -> Response:
    """The download's ``cat:Catalog``; entry URIs are absolute (``server`` + ``/data/…``),
    as in XNAT's own example, so a script can fetch them as they stand."""
    _, entries = load_download(store, access, cid)
    sets: dict[str, list[CatalogEntry]] = {}
    for entry in entries:
        sets.setdefault(entry.session.id, []).append(entry)
    parts = [f"{HEAD}<cat:Catalog ID={quoteattr(cid)} {CAT_NS}>\n\t<cat:sets>\n"]
    for session_id, session_entries in sets.items():
        session = session_entries[0].session
        subject = store.get_subject(session.subject_id)
        description = (
            f"Project: {session.project}, subject: "
            f"{subject.label if subject else ''}, label: {session.label}"
        )
        parts.append(
            f"\t<cat:entrySet ID={quoteattr(session_id)} "
            f"description={quoteattr(description)}>\n\t<cat:sets>\n"
        )
        groups: dict[str, list[CatalogEntry]] = {}
        for entry in session_entries:
            groups.setdefault(entry.group, []).append(entry)
        for group, group_entries in groups.items():
            parts.append(f"\t<cat:entrySet ID={quoteattr(group)}>\n\t<cat:entries>\n")
            for entry in group_entries:
                size = sum(f.size for _, f in entry.files)
                absolute = server + "/data" + entry.uri.removeprefix("/archive")
                parts.append(
                    f"\t\t<cat:entry URI={quoteattr(absolute)} "
                    f"name={quoteattr(entry.name)} "
                    f"ID={quoteattr(str(entry.resource.pk))} "
                    f"format={quoteattr(entry.resource.format or '')}>"
                    f'<cat:metaFields><cat:metaField name="SIZE">{size}'
                    "</cat:metaField></cat:metaFields></cat:entry>\n"
                )
            parts.append("\t</cat:entries>\n\t</cat:entrySet>\n")
        parts.append("\t</cat:sets>\n\t</cat:entrySet>\n")
    parts.append("\t</cat:sets>\n</cat:Catalog>\n")
    response = Response(200, "".join(parts).encode(), "text/xml;charset=UTF-8")
    if attachment:
        response.headers.append(("Content-Disposition", f'attachment; filename="{cid}.xml";'))
    return response


def download_catalog_zip(
    store: Store, access: Access, cid: str, request: Request, *, placeholders: bool = False
) -> StreamResponse:
    _, entries = load_download(store, access, cid)
    members = []
    for entry in entries:
        for res, f in entry.files:
            source = store.file_path(res, f.path)
            if placeholders:
                source = store.root / ".empty"
                source.touch(exist_ok=True)
            members.append(
                Member(
                    source,
                    f"{entry.name}/{f.path}",
                    0 if placeholders else f.size,
                    0.0 if placeholders else source.stat().st_mtime if source.exists() else 0.0,
                )
            )
    if not members:
        raise HttpError(404, "The download catalog selects no files.")
    return stream_archive(members, "zip", cid, request)
