"""XNAT's search service: ``POST /data/search`` with an ``xdat:search`` (or ``xdat:bundle``)
document, the search elements and their fields, and saved searches.

A search names a root datatype, the fields to show and a tree of criteria (AND/OR sets of
``schema_field comparison value``).  Every object of the root type that the user may read
is a candidate row; its values are its columns, XNAT's display fields for the type
(``SUBJECT_ID``, ``LABEL``, ``DOB``, …) and any field stored for it.  Workflow records
(``wrk:workflowData``) are searchable too, by their own fields (``status``, ``pipeline_name``,
``ID`` for the experiment, …).  Results are a listing
table (json, csv, xml, html) whose columns are the field IDs in lower case; a field given
as a schema path under the root type (``xnat:mrSessionData/ID``, as xnatpy sends them) is
shown as the display field that reads it (``session_id``), as XNAT does.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field

from minixnat.http.access import Access
from minixnat.http.messages import AnyResponse, HttpError, Request, Response, text
from minixnat.rest.listings import is_a
from minixnat.rest.tables import Table, apply_query, render
from minixnat.rest.workflows import fields_of
from minixnat.store import Experiment, Store
from minixnat.store.searches import SavedSearch

XDAT = "http://nrg.wustl.edu/security"
ELEMENTS = [
    "xnat:projectData",
    "xnat:subjectData",
    "xnat:mrSessionData",
    "xnat:ctSessionData",
    "xnat:petSessionData",
    "xnat:imageSessionData",
    "xnat:subjectAssessorData",
    "xnat:qcAssessmentData",
    "xnat:qcManualAssessorData",
    "xnat:imageAssessorData",
    "xnat:mrScanData",
    "xnat:ctScanData",
    "xnat:petScanData",
    "xnat:imageScanData",
    "wrk:workflowData",
]
# Display fields per kind: FIELD_ID → (header, type, the row key it reads).
DISPLAY: dict[str, list[tuple[str, str, str, str]]] = {
    "project": [
        ("ID", "ID", "string", "id"),
        ("SECONDARY_ID", "Running title", "string", "secondary_id"),
        ("NAME", "Title", "string", "name"),
        ("DESCRIPTION", "Description", "string", "description"),
        ("KEYWORDS", "Keywords", "string", "keywords"),
        ("PI", "PI", "string", "pi"),
        ("ACCESSIBILITY", "Accessibility", "string", "accessibility"),
        ("INSERT_DATE", "Inserted", "date", "insert_date"),
        ("INSERT_USER", "Creator", "string", "insert_user"),
        ("PROJECT_ACCESS", "Accessibility", "string", "accessibility"),
        ("PROJECT_OWNERS", "Owners", "string", "project_owners"),
        ("PROJ_MR_COUNT", "MR sessions", "integer", "proj_mr_count"),
        ("PROJ_CT_COUNT", "CT sessions", "integer", "proj_ct_count"),
        ("PROJ_PET_COUNT", "PET sessions", "integer", "proj_pet_count"),
        ("PROJ_UT_COUNT", "Other sessions", "integer", "proj_ut_count"),
    ],
    "subject": [
        ("SUBJECT_ID", "Subject", "string", "id"),
        ("SUBJECTID", "Subject", "string", "id"),
        ("ID", "ID", "string", "id"),
        ("SUBJECT_LABEL", "Label", "string", "label"),
        ("LABEL", "Label", "string", "label"),
        ("PROJECT", "Project", "string", "project"),
        ("GENDER_TEXT", "Gender", "string", "gender"),
        ("HANDEDNESS_TEXT", "Handedness", "string", "handedness"),
        ("DOB", "DOB", "date", "dob"),
        ("YOB", "YOB", "integer", "yob"),
        ("INSERT_DATE", "Inserted", "date", "insert_date"),
        ("INSERT_USER", "Creator", "string", "insert_user"),
        ("LAST_MODIFIED", "Last modified", "date", "last_modified"),
    ],
    "experiment": [
        ("SESSION_ID", "Session", "string", "id"),
        ("ID", "ID", "string", "id"),
        ("LABEL", "Label", "string", "label"),
        ("PROJECT", "Project", "string", "project"),
        ("SUBJECT_ID", "Subject", "string", "subject_id"),
        ("SUBJECT_LABEL", "Subject label", "string", "subject_label"),
        ("DATE", "Date", "date", "date"),
        ("TIME", "Time", "string", "time"),
        ("MODALITY", "Modality", "string", "modality"),
        ("UID", "UID", "string", "uid"),
        ("XSI_TYPE", "Type", "string", "xsitype"),
        ("SESSION_ID_IMAGE", "Image session", "string", "session_id"),
        ("INSERT_DATE", "Inserted", "date", "insert_date"),
        ("INSERT_USER", "Creator", "string", "insert_user"),
        ("LAST_MODIFIED", "Last modified", "date", "last_modified"),
    ],
    "workflow": [
        ("WRK_WORKFLOWDATA_ID", "Workflow", "integer", "wrk_workflowdata_id"),
        ("ID", "Experiment", "string", "id"),
        ("EXTERNALID", "Project", "string", "externalid"),
        ("DATA_TYPE", "Data type", "string", "data_type"),
        ("PIPELINE_NAME", "Pipeline", "string", "pipeline_name"),
        ("STATUS", "Status", "string", "status"),
        ("STEP_DESCRIPTION", "Step", "string", "step_description"),
        ("PERCENTAGECOMPLETE", "Percent complete", "float", "percentagecomplete"),
        ("LAUNCH_TIME", "Launched", "date", "launch_time"),
        ("CURRENT_STEP_LAUNCH_TIME", "Step launched", "date", "current_step_launch_time"),
        ("CREATE_USER", "Creator", "string", "create_user"),
        ("DETAILS", "Details", "string", "details"),
    ],
    "scan": [
        ("ID", "ID", "string", "id"),
        ("TYPE", "Type", "string", "type"),
        ("SERIES_DESCRIPTION", "Series description", "string", "series_description"),
        ("QUALITY", "Quality", "string", "quality"),
        ("NOTE", "Note", "string", "note"),
        ("FRAMES", "Frames", "integer", "frames"),
        ("UID", "UID", "string", "uid"),
        ("MODALITY", "Modality", "string", "modality"),
        ("IMAGE_SESSION_ID", "Session", "string", "image_session_id"),
        ("PROJECT", "Project", "string", "project"),
    ],
}
OPERATORS = ("=", "!=", "<>", "<", "<=", ">", ">=", "LIKE", "NOT LIKE", "IS NULL", "IS NOT NULL")


class SearchError(HttpError):
    def __init__(self, message: str) -> None:
        super().__init__(400, message)


@dataclass
class Criterion:
    field: str  # below the datatype, lower case
    operator: str
    value: str


@dataclass
class Criteria:
    method: str = "AND"
    items: list[Criterion | Criteria] = field(default_factory=list)


@dataclass
class Query:
    root: str
    fields: list[tuple[str, str]]  # (field ID below the datatype, header)
    where: Criteria
    brief_description: str = ""
    description: str = ""
    allowed_users: list[str] = field(default_factory=list)


def kind_of(xsi_type: str) -> str:
    if xsi_type == "xnat:projectData":
        return "project"
    if xsi_type == "xnat:subjectData":
        return "subject"
    if xsi_type == "wrk:workflowData":
        return "workflow"
    if xsi_type.endswith("ScanData"):
        return "scan"
    if xsi_type in ELEMENTS or xsi_type.endswith("Data"):
        return "experiment"
    raise SearchError(f"Unknown element {xsi_type!r} in the search.")


def _below(name: str) -> str:
    head, sep, rest = name.partition("/")
    return (rest if sep and ":" in head else name).lower()


# -- documents -----------------------------------------------------------------------------
def parse_query(data: bytes) -> Query:
    """An xdat:search or xdat:bundle document; SearchError names what is wrong."""
    try:
        root = ET.fromstring(data)
    except (ET.ParseError, RecursionError) as exc:
        raise SearchError(f"The search document cannot be read: {exc}.") from None

    def find(node: ET.Element, name: str) -> ET.Element | None:
        return node.find(f"{{{XDAT}}}{name}")

    root_name = find(root, "root_element_name")
    if root_name is None or not (root_name.text or "").strip():
        raise SearchError("The search names no root element (xdat:root_element_name).")
    element = (root_name.text or "").strip()
    kind_of(element)
    fields = []
    for search_field in root.findall(f"{{{XDAT}}}search_field"):
        element_name = (search_field.findtext(f"{{{XDAT}}}element_name") or element).strip()
        field_id = (search_field.findtext(f"{{{XDAT}}}field_ID") or "").strip()
        header = (search_field.findtext(f"{{{XDAT}}}header") or field_id).strip()
        if field_id:
            # A field ID is a display field of its element (``ID``) or already a path
            # under a datatype (``xnat:mrSessionData/ID``, as xnatpy's queries send it).
            typed = ":" in field_id.partition("/")[0]
            path = field_id if typed else f"{element_name}/{field_id}"
            fields.append((_shown_as(path, element) if typed else path, header))
    where = find(root, "search_where")
    criteria = _criteria(where) if where is not None else Criteria()
    users = [
        (login.text or "").strip()
        for allowed in root.findall(f"{{{XDAT}}}allowed_user")
        for login in allowed.findall(f"{{{XDAT}}}login")
    ]
    return Query(
        element,
        fields,
        criteria,
        root.get("brief-description", ""),
        root.get("description", ""),
        [u for u in users if u],
    )


def _shown_as(path: str, root: str) -> str:
    """A schema path under the root type (``xnat:mrSessionData/ID``) as XNAT shows it: as
    the first of the type's display fields that reads it (``SESSION_ID``), whose name is
    then the column's; a path no display field reads is shown under its own name."""
    datatype, _, below = path.partition("/")
    if datatype.lower() != root.lower():
        return path
    for field_id, _header, _type, key in DISPLAY[kind_of(root)]:
        if key == below.lower():
            return f"{root}/{field_id}"
    return path


def _criteria(node: ET.Element) -> Criteria:
    method = node.get("method", "AND").upper()
    if method not in ("AND", "OR"):
        raise SearchError(f"Unknown criteria method {method!r}: use AND or OR.")
    found = Criteria(method)
    for child in node:
        tag = child.tag.rsplit("}", 1)[-1]
        if tag == "child_set":
            found.items.append(_criteria(child))
        elif tag == "criteria":
            schema_field = (child.findtext(f"{{{XDAT}}}schema_field") or "").strip()
            operator = (child.findtext(f"{{{XDAT}}}comparison_type") or "=").strip().upper()
            if operator not in OPERATORS:
                raise SearchError(
                    f"Unknown comparison {operator!r}: use one of {', '.join(OPERATORS)}."
                )
            if not schema_field:
                raise SearchError("A search criterion names no field (xdat:schema_field).")
            value = child.findtext(f"{{{XDAT}}}value") or ""
            found.items.append(Criterion(_below(schema_field), operator, value))
    return found


# -- evaluation ----------------------------------------------------------------------------
def _compare(cell: str, operator: str, value: str) -> bool:
    if operator == "IS NULL":
        return cell == ""
    if operator == "IS NOT NULL":
        return cell != ""
    if operator in ("LIKE", "NOT LIKE"):
        pattern = re.escape(value.lower()).replace("%", ".*").replace("_", ".")
        hit = re.fullmatch(pattern, cell.lower(), re.DOTALL) is not None
        return hit if operator == "LIKE" else not hit
    left: object = cell.lower()
    right: object = value.lower()
    try:
        left, right = float(cell), float(value)
    except ValueError:
        pass
    if operator == "=":
        return left == right
    if operator in ("!=", "<>"):
        return left != right
    try:
        ordered: dict[str, bool] = {
            "<": left < right,  # type: ignore[operator]
            "<=": left <= right,  # type: ignore[operator]
            ">": left > right,  # type: ignore[operator]
            ">=": left >= right,  # type: ignore[operator]
        }
    except TypeError:  # a number against text: no order
        return False
    return ordered[operator]


def matches(row: dict[str, str], criteria: Criteria) -> bool:
    results = (
        matches(row, item)
        if isinstance(item, Criteria)
        else _compare(row.get(item.field, ""), item.operator, item.value)
        for item in criteria.items
    )
    return all(results) if criteria.method == "AND" else any(results)


def candidate_rows(store: Store, access: Access, element: str) -> list[dict[str, str]]:
    """Every readable object of ``element`` as lower-case field → value."""
    kind = kind_of(element)
    readable = set(access.readable_project_ids())
    if kind == "workflow":  # workflow records have no stored fields of their own
        return [_lower(fields_of(w)) for w in store.list_workflows(projects=sorted(readable))]
    fields = store.fields_of_kind(kind)
    rows: list[dict[str, str]] = []
    if kind == "project":
        for p in store.list_projects():
            if p.id in readable:
                row = {**_lower(fields.get(p.id, {})), **_lower(vars(p))}
                row["pi"] = f"{p.pi_lastname}, {p.pi_firstname}".strip(", ")
                row.update(_project_summary(store, p.id))
                rows.append(row)
    elif kind == "subject":
        for s in store.list_subjects():
            if s.project in readable:
                rows.append({**_lower(fields.get(s.id, {})), **_lower(vars(s))})
    elif kind == "experiment":
        for e in store.list_experiments():
            if e.project in readable and is_a(e.xsi_type, element):
                rows.append(_experiment_row(store, e, fields.get(e.id, {})))
    else:
        scan_fields = store.fields_of_kind("scan")
        for e in store.list_experiments(sessions_only=True):
            if e.project not in readable:
                continue
            for scan in store.list_scans(e.id):
                if is_a(scan.xsi_type, element) or element == "xnat:imageScanData":
                    row = {**_lower(scan_fields.get(str(scan.pk), {})), **_lower(vars(scan))}
                    row.update(id=scan.scan_id, image_session_id=e.id, project=e.project)
                    rows.append(row)
    return rows


def _project_summary(store: Store, pid: str) -> dict[str, str]:
    """The project search's summary fields: owners and session counts by modality."""
    owners = [u.login for u, role in store.project_members(pid) if role == "owner"]
    counts = {"mr": 0, "ct": 0, "pet": 0, "ut": 0}
    for e in store.list_experiments(project=pid, sessions_only=True):
        kind = {"xnat:mrSessionData": "mr", "xnat:ctSessionData": "ct"}.get(e.xsi_type)
        kind = kind or ("pet" if e.xsi_type.startswith("xnat:pet") else "ut")
        counts[kind] += 1
    summary = {f"proj_{k}_count": str(v) if v else "" for k, v in counts.items()}
    summary["project_owners"] = " <br/> ".join(owners)
    return summary


def _experiment_row(store: Store, e: Experiment, stored: dict[str, str]) -> dict[str, str]:
    row = {**_lower(stored), **_lower(vars(e))}
    subject = store.get_subject(e.subject_id)
    row.update(
        xsitype=e.xsi_type,
        subject_label=subject.label if subject else "",
        session_id=e.session_id or "",
    )
    return row


def _lower(values: Mapping[str, object]) -> dict[str, str]:
    return {k.lower(): "" if v is None else str(v) for k, v in values.items()}


def run(store: Store, access: Access, query: Query) -> Table:
    kind = kind_of(query.root)
    display = {fid.lower(): key for fid, _, _, key in DISPLAY[kind]}

    def value_of(row: dict[str, str], field_id: str) -> str:
        below = _below(field_id)
        return row.get(display.get(below, below), "")

    rows = []
    for candidate in candidate_rows(store, access, query.root):
        # Criteria name display fields or stored paths; make both readable by name.
        view = {**candidate, **{fid: candidate.get(key, "") for fid, key in display.items()}}
        if matches(view, query.where):
            rows.append(candidate)
    shown = query.fields or [(f"{query.root}/{fid}", header) for fid, header, _, _ in DISPLAY[kind]]
    columns = []
    for field_id, _ in shown:
        name = _below(field_id).replace("/", "_")
        if name not in columns:
            columns.append(name)
    out = [{_below(fid).replace("/", "_"): value_of(row, fid) for fid, _ in shown} for row in rows]
    return Table(columns, out, title=query.brief_description or None)


# -- the service ---------------------------------------------------------------------------
def post_search(store: Store, access: Access, request: Request, body: bytes) -> Response:
    """``POST /data/search``: run the document in the body."""
    table = run(store, access, parse_query(body))
    return render(apply_query(table, request, filters=False), request)


def elements(store: Store, access: Access, request: Request) -> Response:
    """``/data/search/elements``: the searchable datatypes, with how many objects each has."""
    rows = []
    for name in ELEMENTS:
        count = len(candidate_rows(store, access, name))
        rows.append(
            {
                "ELEMENT_NAME": name,
                "PLURAL": name.split(":")[1],
                "SINGULAR": name.split(":")[1],
                "COUNT": str(count),
                "SECURED": "true",
            }
        )
    table = Table(["ELEMENT_NAME", "PLURAL", "SINGULAR", "COUNT", "SECURED"], rows)
    return render(table, request)


def element_fields(request: Request, element: str) -> Response:
    """``/data/search/elements/{xsiType}``: the fields a search of that type can use."""
    if element not in ELEMENTS:
        raise HttpError(404, f"No searchable element {element!r}.")
    rows = [
        {
            "FIELD_ID": fid,
            "HEADER": header,
            "SUMMARY": header,
            "TYPE": kind,
            "REQUIRES_VALUE": "false",
            "DESC": header,
            "ELEMENT_NAME": element,
            "SRC": "0",
        }
        for fid, header, kind, _ in DISPLAY[kind_of(element)]
    ]
    columns = ["FIELD_ID", "HEADER", "SUMMARY", "TYPE", "REQUIRES_VALUE", "DESC", "ELEMENT_NAME"]
    return render(Table(columns, rows), request)


def saved(
    store: Store, access: Access, request: Request, rest: list[str], document: bytes
) -> AnyResponse:
    """``/data/search/saved[/{id}[/results]]``: list, store, fetch, run and delete."""
    user = access.user
    if user is None:
        raise HttpError(401, "Log in to use saved searches.")
    mine = [s for s in store.list_searches() if s.readable_by(user.login, user.admin)]
    if not rest:
        rows = [
            {
                "id": s.id,
                "brief_description": s.brief_description,
                "description": s.description,
                "root_element_name": s.root_element,
                "login": s.login,
            }
            for s in mine
        ]
        columns = ["id", "brief_description", "description", "root_element_name", "login"]
        return render(Table(columns, rows), request)
    sid = rest[0]
    found = store.get_search(sid)
    visible = found is not None and found.readable_by(user.login, user.admin)
    method = request.method
    if method == "PUT" and len(rest) == 1:
        if found is not None and found.login != user.login and not user.admin:
            raise HttpError(403, f"The saved search {sid} belongs to another user.")
        query = parse_query(document)
        store.save_search(
            SavedSearch(
                sid,
                found.login if found else user.login,
                query.brief_description or sid,
                query.description,
                query.root,
                ",".join(query.allowed_users),
                document.decode("utf-8", "replace"),
            )
        )
        return text("")
    if not visible or found is None:
        raise HttpError(404, f"No saved search {sid}.")
    if method == "DELETE" and len(rest) == 1:
        if found.login != user.login and not user.admin:
            raise HttpError(403, f"The saved search {sid} belongs to another user.")
        store.delete_search(sid)
        return text("")
    if method in ("GET", "HEAD") and len(rest) == 1:
        return Response(200, found.document.encode(), "text/xml;charset=UTF-8")
    if method in ("GET", "HEAD") and rest[1:] == ["results"]:
        table = run(store, access, parse_query(found.document.encode()))
        return render(apply_query(table, request, filters=False), request)
    raise HttpError(405, f"{method} is not supported on a saved search.")
