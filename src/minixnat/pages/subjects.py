"""Seed 002's ways to add subjects: the Create/Edit Subject form, Upload Spreadsheet and
Upload XML.

Each becomes REST calls as the visitor (``pages/api.py``): a subject is
``PUT /data/projects/{P}/subjects/{label}`` with its demographics and custom fields, as the
client's spreadsheet upload sends it; a document is ``PUT``/``POST`` of the XML to the
project's subjects or experiments.  The API checks the values and answers, and the page
shows its answer: the same rules, the same messages, one write path.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote

from minixnat.http import bodies
from minixnat.http.access import Access
from minixnat.http.messages import HttpError, Response
from minixnat.pages import spreadsheet
from minixnat.pages.api import Answer, Api
from minixnat.pages.render import page, redirect
from minixnat.pages.visit import Visit, project_subject, readable_project
from minixnat.store import Project, Store, Subject, User
from minixnat.store.records import GENDERS, HANDEDNESS

# The form offers the stored spellings only (the API also takes m, f, o, u).
GENDER_CHOICES = tuple(dict.fromkeys(GENDERS.values()))
#: What a form sends for a new custom field: its name and its value.
NEW_FIELD, NEW_VALUE = "new_field", "new_value"
SHEET_BYTES = 4 * 1024 * 1024
XML_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class RowReport:
    """One spreadsheet row: created, updated or refused, and why."""

    line: int
    label: str
    outcome: str
    message: str = ""


def editable_project(store: Store, access: Access, ref: str) -> Project:
    """A project the visitor may add subjects to; 403 (with the API's wording) if not."""
    project = readable_project(store, access, ref)
    if not access.can_edit(project):
        raise HttpError(
            403, f"You don't have permission to add or change data in project {project.id}."
        )
    return project


def custom_fields(store: Store, project: Project) -> dict[str, str]:
    """The project's custom fields for subjects, name → type: those its custom variable
    definitions name (with their datatype), then any other its subjects use (``string``)."""
    fields = {
        v.name: v.datatype
        for v in store.custom_variables(project.id)
        if v.data_type == "xnat:subjectData"
    }
    used: set[str] = set()
    for subject in store.list_subjects(project.id):
        used.update(json.loads(subject.fields or "{}"))
    fields.update(dict.fromkeys(sorted(used - set(fields)), "string"))
    return fields


def subject_params(demographics: dict[str, str], fields: dict[str, str]) -> list[tuple[str, str]]:
    """A subject's values as REST parameters (a blank value clears a field)."""
    params = [("xsiType", "xnat:subjectData")]
    params += list(demographics.items())
    params += [(f"xnat:subjectData/fields/field[name={k}]/field", v) for k, v in fields.items()]
    return params


def _subject_path(project: Project, label: str) -> str:
    return f"/data/projects/{quote(project.id, safe='')}/subjects/{quote(label, safe='')}"


def _subject_href(project: Project, label: str) -> str:
    return f"/app/projects/{quote(project.id, safe='')}/subjects/{quote(label, safe='')}"


# -- the form ------------------------------------------------------------------------------
def subject_form(
    store: Store,
    access: Access,
    visit: Visit,
    project_ref: str,
    subject_ref: str = "",
    *,
    values: dict[str, str] | None = None,
    error: str = "",
    status: int = 200,
) -> Response:
    """``GET /app/projects/{P}/add-subject`` or ``…/subjects/{S}/edit``."""
    project = editable_project(store, access, project_ref)
    subject = project_subject(store, project, subject_ref) if subject_ref else None
    custom = custom_fields(store, project)
    if values is None:
        values = _values_of(subject) if subject else {}
    return page(
        "subject_form.html",
        status,
        visit=visit,
        project=project,
        subject=subject,
        values=values,
        custom=custom,
        genders=GENDER_CHOICES,
        handedness=HANDEDNESS,
        error=error,
    )


def _values_of(subject: Subject) -> dict[str, str]:
    values = {
        "label": subject.label,
        "gender": subject.gender,
        "dob": subject.dob,
        "yob": subject.yob,
        "handedness": subject.handedness,
    }
    values.update({f"field:{k}": v for k, v in json.loads(subject.fields or "{}").items()})
    return values


async def save_subject(
    store: Store,
    api: Api,
    access: Access,
    visit: Visit,
    user: User,
    project_ref: str,
    subject_ref: str,
    form: Sequence[tuple[str, str]],
) -> Response:
    """``POST`` of the form: create (``subject_ref`` empty) or update, through the API."""
    project = editable_project(store, access, project_ref)
    values = {k: v.strip() for k, v in form if k != "csrf"}
    label = values.get("label", "")
    subject = project_subject(store, project, subject_ref) if subject_ref else None

    def again(error: str, status: int) -> Response:
        return subject_form(
            store, access, visit, project.id, subject_ref, values=values, error=error,
            status=status,
        )  # fmt: skip

    if not label:
        return again("Give the subject a label.", 400)
    if subject is None and store.resolve_subject(project.id, label) is not None:
        return again(
            f"Project {project.id} already has a subject {label}; edit it from its page.", 409
        )
    demographics = {key: values.get(key, "") for key in spreadsheet.DEMOGRAPHICS}
    fields = {k.removeprefix("field:"): v for k, v in values.items() if k.startswith("field:")}
    if values.get(NEW_FIELD):
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", values[NEW_FIELD]):
            return again("A custom field's name is letters, digits and '_' (not first).", 400)
        fields[values[NEW_FIELD]] = values.get(NEW_VALUE, "")
    params = subject_params(demographics, fields)
    if subject is not None and label != subject.label:
        params.append(("label", label))  # the API renames with ?label=
    target = subject.label if subject else label
    answer = await api(user, "PUT", _subject_path(project, target), params)
    if not answer.ok:
        return again(answer.message, answer.status)
    return redirect(_subject_href(project, label))


# -- the spreadsheet -----------------------------------------------------------------------
def sheet_form(store: Store, access: Access, visit: Visit, project_ref: str) -> Response:
    """``GET /app/projects/{P}/spreadsheet``: the template link and the upload form."""
    project = editable_project(store, access, project_ref)
    return page("spreadsheet.html", visit=visit, project=project, report=None, error="")


def sheet_template(store: Store, access: Access, project_ref: str) -> Response:
    """``GET /app/projects/{P}/spreadsheet.csv``: the header row to fill in."""
    project = editable_project(store, access, project_ref)
    name = f"{project.id}_subjects.csv"
    return Response(
        200,
        spreadsheet.template(list(custom_fields(store, project))).encode(),
        "text/csv;charset=UTF-8",
        [("Content-Disposition", f'attachment; filename="{name}"'), ("Cache-Control", "no-store")],
    )


def _read_upload(body: bodies.Body, limit: int, what: str) -> bytes:
    if len(body.uploads) != 1 or not body.uploads[0].size:
        raise HttpError(400, f"Choose the {what} to upload.")
    upload = body.uploads[0]
    if upload.size > limit:
        raise HttpError(413, f"The {what} is larger than {limit // (1024 * 1024)} MiB.")
    return upload.path.read_bytes()


async def sheet_upload(
    store: Store,
    api: Api,
    access: Access,
    visit: Visit,
    user: User,
    project_ref: str,
    body: bodies.Body,
) -> Response:
    """``POST /app/projects/{P}/spreadsheet``: each row to the API; a report of each."""
    project = editable_project(store, access, project_ref)
    try:
        text = _read_upload(body, SHEET_BYTES, "spreadsheet (.csv)").decode("utf-8-sig")
        rows = spreadsheet.read(text)
    except UnicodeDecodeError:
        error = "The spreadsheet is not UTF-8 text: save it as CSV (UTF-8)."
        return page("spreadsheet.html", 400, visit=visit, project=project, report=None, error=error)
    except (spreadsheet.SheetError, HttpError) as exc:
        error = exc.message if isinstance(exc, HttpError) else str(exc)
        return page("spreadsheet.html", 400, visit=visit, project=project, report=None, error=error)
    report = []
    for row in rows:
        if row.refused:
            report.append(RowReport(row.line, row.label, "refused", row.refused))
            continue
        answer = await api(
            user, "PUT", _subject_path(project, row.label),
            subject_params(row.demographics, row.fields),
        )  # fmt: skip
        report.append(_row_report(row, answer))
    return page(
        "spreadsheet.html",
        visit=visit,
        project=project,
        report=report,
        counts={o: sum(r.outcome == o for r in report) for o in ("created", "updated", "refused")},
        error="",
    )


def _row_report(row: spreadsheet.Row, answer: Answer) -> RowReport:
    if not answer.ok:
        return RowReport(row.line, row.label, "refused", answer.message)
    return RowReport(row.line, row.label, "created" if answer.status == 201 else "updated")


# -- XML documents -------------------------------------------------------------------------
_PROLOGUE = re.compile(rb"\s*(<\?.*?\?>|<!--.*?-->)", re.S)
_ROOT = re.compile(rb"\s*<([A-Za-z_][\w.-]*:)?([A-Za-z_][\w.-]*)")


def document_kind(data: bytes) -> str:
    """``subjects`` or ``experiments``: where a document's root element says it belongs."""
    at = 0
    while found := _PROLOGUE.match(data, at):
        at = found.end()
    root = _ROOT.match(data, at)
    if root is None:
        raise HttpError(400, "The file is not an XML document: it must start with an element.")
    name = root.group(2).decode("ascii", "replace")
    return "subjects" if name in ("Subject", "subjectData") else "experiments"


def xml_form(store: Store, access: Access, visit: Visit, project_ref: str) -> Response:
    """``GET /app/projects/{P}/upload-xml``."""
    project = editable_project(store, access, project_ref)
    return page("upload_xml.html", visit=visit, project=project, error="")


async def xml_upload(
    store: Store,
    api: Api,
    access: Access,
    visit: Visit,
    user: User,
    project_ref: str,
    body: bodies.Body,
) -> Response:
    """``POST /app/projects/{P}/upload-xml``: the document to the project, as the API takes
    it (a subject, or a session that names its subject)."""
    project = editable_project(store, access, project_ref)
    try:
        data = _read_upload(body, XML_BYTES, "XML document")
        kind = document_kind(data)
    except HttpError as exc:
        return page("upload_xml.html", exc.status, visit=visit, project=project, error=exc.message)
    path = f"/data/projects/{quote(project.id, safe='')}/{kind}"
    answer = await api(user, "POST", path, body=data, content_type="text/xml")
    if not answer.ok:
        return page(
            "upload_xml.html", answer.status, visit=visit, project=project, error=answer.message
        )
    made = answer.body.decode("utf-8", "replace").strip()
    if kind == "subjects":
        found = store.get_subject(made)
        return redirect(_subject_href(project, found.label if found else made))
    return redirect(f"/app/experiments/{quote(made, safe='')}")
