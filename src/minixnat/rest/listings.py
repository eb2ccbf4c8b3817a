"""The listing tables of the ``/data`` API, with XNAT's default columns and URIs.

Column sets and URI forms follow XNAT 1.8 (see ``xnat-rest-api.md`` §5): subjects and
experiments list un-scoped ``/data/subjects/{ID}`` / ``/data/experiments/{ID}`` URIs; scans
use the session's accession ID; resources have fixed columns and no URI; files have fixed
columns, a ``Columns`` property and no ``totalRecords``.
"""

from __future__ import annotations

import json
from posixpath import basename

from minixnat.http.access import Access
from minixnat.http.messages import HttpError, Request
from minixnat.rest.resolve import Node, Target
from minixnat.rest.tables import Row, Table
from minixnat.rest.xpaths import custom_field_path
from minixnat.store import Experiment, FileRow, Resource, Store

# XNAT's type hierarchy, enough to answer xsiType= filters on abstract types.
PARENTS = {
    "xnat:mrSessionData": "xnat:imageSessionData",
    "xnat:ctSessionData": "xnat:imageSessionData",
    "xnat:petSessionData": "xnat:imageSessionData",
    "xnat:imageSessionData": "xnat:subjectAssessorData",
    "xnat:subjectAssessorData": "xnat:experimentData",
    "xnat:qcManualAssessorData": "xnat:qcAssessmentData",
    "xnat:qcAssessmentData": "xnat:imageAssessorData",
    "xnat:imageAssessorData": "xnat:derivedData",
    "xnat:derivedData": "xnat:experimentData",
}


def is_a(xsi_type: str, wanted: str) -> bool:
    current: str | None = xsi_type
    while current is not None:
        if current.lower() == wanted.lower():
            return True
        current = PARENTS.get(current)
    return False


def project_table(store: Store, access: Access, request: Request) -> Table:
    # Asked for its aliases, XNAT lists a project once per alias (a join).
    by_alias = "alias" in request.param("columns").lower().split(",")
    rows = []
    for p in store.list_projects():
        if not access.can_see(p):
            continue
        aliases = store.project_aliases(p.id) if by_alias else []
        for alias in aliases or [""]:
            rows.append(
                {
                    "_key": p.id,
                    "alias": alias,
                    "ID": p.id,
                    "secondary_ID": p.secondary_id,
                    "name": p.name,
                    "description": p.description,
                    "pi_firstname": p.pi_firstname,
                    "pi_lastname": p.pi_lastname,
                    "keywords": p.keywords,
                    "accessibility": p.accessibility,
                    "insert_date": p.insert_date,
                    "insert_user": p.insert_user,
                    "URI": f"/data/projects/{p.id}",
                }
            )
    cols = ["ID", "secondary_ID", "name", "description", "pi_firstname", "pi_lastname", "URI"]
    return Table(cols, rows, fields=lambda: store.fields_of_kind("project"), key_column="ID")


def subject_rows(store: Store, subjects_project: str | None, access: Access) -> list[Row]:
    rows = []
    shared = store.shared_subjects(subjects_project) if subjects_project else []
    for s in [*store.list_subjects(subjects_project), *shared]:
        # Within a project listing, the project's own permission covers what is shared
        # into it; the site-wide listing asks each subject's own project.
        project = store.get_project(subjects_project or s.project)
        if project is None or not access.can_read(project):
            continue
        rows.append(
            {
                "_key": s.id,
                "ID": s.id,
                "project": s.project,
                "label": s.label,
                "insert_date": s.insert_date,
                "insert_user": s.insert_user,
                "last_modified": s.last_modified,
                "gender": s.gender,
                "dob": s.dob,
                "yob": s.yob,
                "handedness": s.handedness,
                "URI": f"/data/subjects/{s.id}",
            }
        )
    return rows


def subject_table(store: Store, target: Target, access: Access) -> Table:
    project = target.project.id if target.project else None
    rows = subject_rows(store, project, access)
    cols = ["ID", "project", "label", "insert_date", "insert_user", "URI"]

    def fields() -> dict[str, dict[str, str]]:
        """Stored fields, and each subject's custom fields under their xpath
        (``fields/field[name=grp]/field``), which pyxnat's ``attrs.get`` asks for."""
        found = store.fields_of_kind("subject")
        listed = {str(r["_key"]) for r in rows}
        for subject in store.list_subjects():
            custom = json.loads(subject.fields or "{}") if subject.id in listed else {}
            if custom:
                found.setdefault(subject.id, {}).update(
                    {custom_field_path(name): value for name, value in custom.items()}
                )
        return found

    return Table(cols, rows, fields=fields, key_column="ID")


def _experiment_row(store: Store, e: Experiment) -> Row:
    subject = store.get_subject(e.subject_id)
    session = store.get_experiment(e.session_id) if e.session_id else None
    return {
        "_key": e.id,
        "ID": e.id,
        "project": e.project,
        "last_modified": e.last_modified,
        "date": e.date,
        "xsiType": e.xsi_type,
        "label": e.label,
        "insert_date": e.insert_date,
        "insert_user": e.insert_user,
        "xnat:subjectassessordata/id": e.id,
        "subject_ID": e.subject_id,
        "subject_label": subject.label if subject else "",
        "modality": e.modality,
        "time": e.time,
        "UID": e.uid,
        "session_ID": session.id if session else "",
        "session_label": session.label if session else "",
        "URI": f"/data/experiments/{e.id}",
    }


def experiment_table(store: Store, target: Target, request: Request, access: Access) -> Table:
    xsi = request.param("xsiType")
    if target.project is not None:
        subject_id = target.subject.id if target.subject else None
        experiments = store.list_experiments(project=target.project.id, subject_id=subject_id)
        experiments += [
            e
            for e in store.shared_experiments(target.project.id)
            if subject_id is None or e.subject_id == subject_id
        ]
        # Project and subject listings hold subject assessors (sessions), not image assessors.
        experiments = [e for e in experiments if not e.is_assessor]
        cols = [
            "ID",
            "project",
            "date",
            "xsiType",
            "label",
            "insert_date",
            "xnat:subjectassessordata/id",
            "URI",
        ]
        title = None
    else:
        experiments = [
            e
            for e in store.list_experiments()
            if (p := store.get_project(e.project)) and access.can_read(p)
        ]
        cols = ["ID", "project", "date", "xsiType", "label", "insert_date"]
        if xsi and is_a(xsi, "xnat:subjectAssessorData"):
            cols += ["subject_ID", "subject_label"]
        elif xsi and is_a(xsi, "xnat:imageAssessorData"):
            cols += ["session_ID", "session_label"]
        cols.append("URI")
        title = "Matching experiments"
    if xsi and "," not in xsi:
        experiments = [e for e in experiments if is_a(e.xsi_type, xsi)]
    rows = [_experiment_row(store, e) for e in experiments]
    return Table(
        cols,
        rows,
        title=title,
        fields=lambda: store.fields_of_kind("experiment"),
        key_column="ID",
        # pyxnat reads each row's xsiType from a listing it filtered by type, whatever
        # columns it asked for (its Experiment repr does).
        kept_columns=("xsiType",) if xsi else (),
    )


def scan_table(store: Store, target: Target) -> Table:
    assert target.experiment
    rows = []
    for s in store.list_scans(target.experiment.id):
        rows.append(
            {
                "_key": str(s.pk),
                "xnat_imagescandata_id": str(s.pk),
                "ID": s.scan_id,
                "type": s.type,
                "quality": s.quality,
                "xsiType": s.xsi_type,
                "note": s.note,
                "series_description": s.series_description,
                "frames": s.frames,
                "UID": s.uid,
                "modality": s.modality,
                "URI": f"/data/experiments/{target.experiment.id}/scans/{s.scan_id}",
            }
        )
    cols = [
        "xnat_imagescandata_id",
        "ID",
        "type",
        "quality",
        "xsiType",
        "note",
        "series_description",
        "URI",
    ]
    return Table(cols, rows, fields=lambda: store.fields_of_kind("scan"))


def recon_table(store: Store, target: Target) -> Table:
    assert target.experiment
    rows = [
        {
            "_key": str(r.pk),
            "xnat_reconstructedimagedata_id": str(r.pk),
            "ID": r.recon_id,
            "type": r.type,
            "baseScanType": r.base_scan_type,
            # Not a default column, but given when asked for: xnatpy skips a listed object
            # whose type it cannot read.
            "xsiType": "xnat:reconstructedImageData",
            "URI": f"/data/experiments/{target.experiment.id}/reconstructions/{r.recon_id}",
        }
        for r in store.list_recons(target.experiment.id)
    ]
    return Table(
        ["xnat_reconstructedimagedata_id", "ID", "type", "baseScanType", "URI"],
        rows,
        fields=lambda: store.fields_of_kind("recon"),
    )


def assessor_table(store: Store, target: Target) -> Table:
    assert target.experiment
    rows = [
        _experiment_row(store, a) for a in store.list_experiments(session_id=target.experiment.id)
    ]
    cols = [
        "ID",
        "project",
        "label",
        "date",
        "xsiType",
        "insert_date",
        "session_ID",
        "session_label",
        "URI",
    ]
    return Table(cols, rows, fields=lambda: store.fields_of_kind("experiment"))


RESOURCE_COLUMNS = [
    "xnat_abstractresource_id",
    "label",
    "element_name",
    "category",
    "cat_id",
    "cat_desc",
    "file_count",
    "file_size",
    "tags",
    "content",
    "format",
]
CATEGORY = {"scan": "scans", "recon": "reconstructions", "assessor": "assessors"}


def resource_row(store: Store, node: Node, res: Resource) -> Row:
    count, size = store.resource_stats(res.pk)
    cat_id = cat_desc = ""
    if node.scan is not None:
        cat_id, cat_desc = node.scan.scan_id, node.scan.type
    elif node.recon is not None:
        cat_id, cat_desc = node.recon.recon_id, node.recon.type
    elif node.assessor is not None:
        cat_id, cat_desc = node.assessor.id, node.assessor.label
    return {
        "xnat_abstractresource_id": str(res.pk),
        "label": res.label,
        "element_name": "xnat:resourceCatalog",
        "category": CATEGORY.get(node.kind, "resources"),
        "cat_id": cat_id,
        "cat_desc": cat_desc,
        "file_count": str(count),
        "file_size": str(size),
        "tags": res.tags,
        "content": res.content,
        "format": res.format,
    }


def resource_table(store: Store, target: Target) -> Table:
    rows = [resource_row(store, node, res) for node, res in target.resources]
    return Table(RESOURCE_COLUMNS, rows, title="Resources", fixed_columns=True)


FILE_COLUMNS = [
    "Name",
    "Size",
    "URI",
    "collection",
    "file_tags",
    "file_format",
    "file_content",
    "cat_ID",
    "digest",
]


def file_uri(node: Node, res: Resource, path: str, *, scoped: bool) -> str:
    return f"{node.uri(scoped=scoped)}/resources/{res.pk}/files/{path}"


def selected_files(
    store: Store, target: Target, request: Request
) -> list[tuple[Node, Resource, FileRow]]:
    """The files a files-listing path names, after folder, format and content filters."""
    prefix = target.file_path or ""
    recursive = request.param("recursive", "true").lower() != "false"
    formats = request.param("file_format")
    contents = request.param("file_content")
    folder = ""
    if prefix:
        # A path under .../files/ names a folder only with a trailing slash; a bare file
        # path is a single-file download, not a listing, so it selects nothing here.
        if prefix.endswith("/"):
            folder = prefix
        elif request.raw_path.endswith("/"):
            folder = prefix + "/"
        else:
            return []
    out = []
    for node, res in target.resources:
        for f in store.list_files(res.pk):
            if folder:
                if not f.path.startswith(folder):
                    continue
                if not recursive and "/" in f.path[len(folder) :]:
                    continue
            if formats and not _meta_match(f.format, formats):
                continue
            if contents and not _meta_match(f.content, contents):
                continue
            out.append((node, res, f))
    return out


def _meta_match(value: str, spec: str) -> bool:
    options = spec.split(",")
    return value in options or ("NULL" in options and not value)


def file_table(store: Store, target: Target, request: Request, *, scoped: bool) -> Table:
    files = selected_files(store, target, request)
    single_owner = not target.multi_owner and len(target.resources) <= 1
    rows = []
    for node, res, f in files:
        rows.append(
            {
                "Name": basename(f.path),
                "Size": str(f.size),
                "URI": file_uri(node, res, f.path, scoped=scoped and single_owner),
                "collection": res.label,
                "file_tags": f.tags,
                "file_format": f.format,
                "file_content": f.content,
                "cat_ID": str(res.pk),
                "digest": f.md5,
            }
        )
    index = request.param("index")
    if index:
        try:
            rows = [rows[int(index)]]
        except (ValueError, IndexError) as exc:
            raise HttpError(404, f"No file at index {index}.") from exc
    return Table(
        FILE_COLUMNS,
        rows,
        title="Files",
        total_records=False,
        fixed_columns=True,
        column_props=[{"key": "URI", "serverRoot": ""}],
    )


# The scan tables ``/data/archive/scan_types?table=`` may name (XNAT refuses any other name
# with 403), each with the scan type its rows are.
SCAN_TABLES = {
    f"xnat_{name.lower()}scandata": f"xnat:{name}ScanData"
    for name in ("mr", "pet", "ct", "cfm", "dms", "ecg", "eeg", "emg", "eog", "es", "obj",
                 "pa", "pos", "resp", "xc")
}  # fmt: skip


def scan_type_table(
    store: Store, access: Access, request: Request, project: str | None = None
) -> Table:
    """``/data/archive/scan_types`` (and ``/data/projects/{P}/scan_types``): each scan type
    of one kind of scan (``table=``, MR by default) once, with the series descriptions of
    its scans, each followed by a comma, as XNAT's listing gives them; ordered by type, an
    empty type last.  Only sessions the caller may read (in ``project``, if given) count."""
    table = request.param("table") or "xnat_mrScanData"
    xsi_type = SCAN_TABLES.get(table.lower())
    if xsi_type is None:
        raise HttpError(403, f"{table} is not a scan table.")
    readable = set(access.readable_project_ids())
    descriptions: dict[str, list[str]] = {}
    for session in store.list_experiments(project=project, sessions_only=True):
        if session.project not in readable:
            continue
        for scan in store.list_scans(session.id):
            if scan.xsi_type.lower() == xsi_type.lower():
                found = descriptions.setdefault(scan.type, [])
                found += [scan.series_description] if scan.series_description else []
    rows = [
        {"series_descriptions": "".join(f"{d}," for d in descriptions[kind]), "type": kind}
        for kind in sorted(descriptions, key=lambda k: (k == "", k))
    ]
    return Table(["series_descriptions", "type"], rows, title="Scan Types")


def scanner_table(store: Store, access: Access) -> Table:
    """``/data/archive/scanners``: the scanners of the sessions the caller may read (their
    ``scanner`` field, which an import keeps from the headers' Station Name), each once."""
    readable = set(access.readable_project_ids())
    fields = store.fields_of_kind("experiment")
    names = {
        fields.get(e.id, {}).get("scanner", "")
        for e in store.list_experiments(sessions_only=True)
        if e.project in readable
    }
    return Table(["scanner"], [{"scanner": name} for name in sorted(names) if name])
