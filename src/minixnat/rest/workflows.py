"""Workflow records and the built-in pipelines, over XNAT's REST paths.

- ``GET /data/services/workflows[/{PIPELINE[,PIPELINE…]}]?experiment=&project=&status=
  &display=LATEST|ALL``: XNAT's workflow service.  Pipeline names match the recorded name
  as XNAT's ``LIKE '%name%'`` does (``%`` matches them all).  For one experiment,
  ``display=LATEST`` (the default) answers its newest record as an item document, ``ALL``
  a table of all of them; without an experiment the table holds the newest record of each
  experiment (XNAT needs a pipeline name there; minixnat then lists every pipeline).
- ``GET /data/workflows/{wrk_workflowData_id}``: one record (XML, or ``format=json``).
- ``PUT /data/workflows/{wrk_workflowData_id}``, ``PUT /data/workflows``: a client's own
  record (a processing script saying what it did), its fields as ``wrk:workflowData/NAME=
  value`` query parameters or a ``<wrk:Workflow NAME="value" …/>`` body.  Without a number
  the record is the one with the same experiment ``ID``, ``pipeline_name``, ``launch_time``
  (and ``scan_id``), as in XNAT; when there is none a new one is made (``ID``,
  ``launch_time``, ``data_type``, ``pipeline_name`` and ``status`` needed; the caller must
  be able to edit the experiment's project).  Only the record's creator or a site admin may
  change it.  Statuses are free text (``Running``, ``Failed (Dismissed)``, …).  Answers the
  record's number.  ``GET /data/workflows?wrk:workflowData/ID=…&…`` finds one the same way.
- ``GET /data/projects/{P}/pipelines[/{NAME}]``, ``GET /data/projects/{P}/archive_spec``:
  the pipelines a project offers, as pyxnat reads them.
- ``POST /data/projects/{P}/pipelines/{NAME}/experiments/{E}``: launch a pipeline for one
  session.  minixnat has one, the snapshot generator (``WebBasedQCImageCreator``).

Records are shown only for experiments in projects the caller may read.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from minixnat.http.access import Access
from minixnat.http.messages import HttpError, Request, Response, text
from minixnat.rest.resolve import readable_project
from minixnat.rest.tables import Table, render
from minixnat.store import Experiment, Store, Workflow
from minixnat.store.workflows import SNAPSHOTS, SNAPSHOTS_STEP, WRITABLE

DATATYPE = "wrk:workflowData"
NAMESPACE = "http://nrg.wustl.edu/workflow"
# The pipelines a project offers: step name -> (descriptor path, description).
PIPELINES = {
    SNAPSHOTS_STEP: (SNAPSHOTS, "Makes a snapshot and a thumbnail of each scan (GIF)"),
}
# Record fields in XNAT's names, with how to read each from a Workflow.
FIELDS: list[tuple[str, str]] = [
    ("wrk_workflowData_id", "wrk_id"),
    ("ID", "experiment_id"),
    ("ExternalID", "project"),
    ("data_type", "data_type"),
    ("pipeline_name", "pipeline_name"),
    ("status", "status"),
    ("launch_time", "launch_time"),
    ("current_step_launch_time", "current_step_launch_time"),
    ("current_step_id", "current_step_id"),
    ("step_description", "step_description"),
    ("percentageComplete", "percentage_complete"),
    ("create_user", "create_user"),
    ("category", "category"),
    ("type", "type"),
    ("src", "src"),
    ("comments", "comments"),
    ("details", "details"),
    ("justification", "justification"),
    ("scan_id", "scan_id"),
    ("next_step_id", "next_step_id"),
    ("jobID", "job_id"),
]
PREFIX = DATATYPE.lower() + "/"
# What a client may send, by XNAT's name in lower case, and the column each goes to.
SENDABLE = {name.lower(): attr for name, attr in FIELDS if attr in WRITABLE}
NEEDED = ("ID", "launch_time", "data_type", "pipeline_name", "status")
TIMES = ("launch_time", "current_step_launch_time")
MAX_DOCUMENT = 1024 * 1024


def fields_of(workflow: Workflow) -> dict[str, str]:
    return {name: str(getattr(workflow, attr)) for name, attr in FIELDS}


def service(store: Store, access: Access, request: Request, names: str) -> Response:
    """``/data/services/workflows[/{names}]``."""
    pipelines = [n.strip() for n in names.split(",") if n.strip()]
    status = request.param("status") or None  # free text: a client's records have their own
    display = (request.param("display") or "LATEST").upper()
    if display not in ("LATEST", "ALL"):
        raise HttpError(400, f"display must be LATEST or ALL, not {display!r}.")
    project_ref = request.param("project") or None
    experiment_ref = request.param("experiment") or None
    if experiment_ref is not None:
        experiment = _experiment(store, access, project_ref, experiment_ref)
        found = store.list_workflows(
            experiment_id=experiment.id, pipelines=pipelines, status=status
        )
        if display == "LATEST":
            if not found:
                raise HttpError(
                    404,
                    f"Unable to find workflow entry for pipeline {names or '(any)'} and "
                    f"experiment {experiment.id}.",
                )
            return item(found[0], request)
        return render(_table(store, found, "All workflows"), request)
    projects = _readable_projects(store, access, project_ref)
    found = store.list_workflows(projects=projects, pipelines=pipelines, status=status)
    latest: dict[str, Workflow] = {}
    for workflow in found:  # newest first: keep the first of each experiment
        latest.setdefault(workflow.experiment_id, workflow)
    title = f"All {status or ''} workflows".replace("  ", " ")
    return render(_table(store, list(latest.values()), title), request)


def one(store: Store, access: Access, request: Request, wrk_id: str) -> Response:
    """``/data/workflows/{id}``."""
    workflow = _named(store, access, wrk_id, {}, "")
    assert workflow is not None  # by number: found, or 404 raised
    return item(workflow, request)


def put(store: Store, access: Access, request: Request, body: bytes, wrk_ref: str) -> Response:
    """``PUT /data/workflows[/{id}]``: make or change a client's record (see the module)."""
    user = access.user
    if user is None:
        raise HttpError(401, "Log in to write workflow records.")
    values, experiment_ref = _sent(request, body)
    existing = _named(store, access, wrk_ref, values, experiment_ref)
    if existing is not None:
        if existing.create_user != user.login and not access.is_admin:
            raise HttpError(403, "You are not allowed to make changes to this workflow.")
        if experiment_ref and store.get_experiment(experiment_ref) != store.get_experiment(
            existing.experiment_id
        ):
            raise HttpError(400, f"Workflow {existing.wrk_id} is about {existing.experiment_id}.")
        workflow = store.write_workflow(values, wrk_id=existing.wrk_id)
        return text(str(workflow.wrk_id))
    given = {"ID": experiment_ref, **{n: values.get(SENDABLE[n.lower()], "") for n in NEEDED[1:]}}
    missing = [name for name in NEEDED if not given[name]]
    if missing:
        raise HttpError(
            400,
            f"A new workflow record needs {', '.join(NEEDED)}; {', '.join(missing)} "
            "not given (scan_id may be given too).",
        )
    experiment = _experiment(store, access, None, experiment_ref)
    project = store.get_project(experiment.project)
    if project is None or not access.can_edit(project):
        raise HttpError(403, f"You may not record workflows in project {experiment.project}.")
    workflow = store.write_workflow(values, experiment=experiment, user=user.login)
    return text(str(workflow.wrk_id))


def find(store: Store, access: Access, request: Request) -> Response:
    """``GET /data/workflows?wrk:workflowData/ID=…&…pipeline_name=…&…launch_time=…``."""
    values, experiment_ref = _sent(request, b"")
    found = _named(store, access, "", values, experiment_ref)
    if found is None:
        raise HttpError(404, "Unable to find the specified workflow.")
    return item(found, request)


def _named(
    store: Store, access: Access, wrk_ref: str, values: dict[str, str], experiment_ref: str
) -> Workflow | None:
    """The record a request names: by number (404 unless it exists and is readable), or by
    experiment, pipeline, launch time and scan (None when there is none)."""
    if wrk_ref:
        workflow = store.get_workflow(int(wrk_ref)) if wrk_ref.isdigit() else None
        project = store.get_project(workflow.project) if workflow else None
        if workflow is None or project is None or not access.can_read(project):
            raise HttpError(404, f"No workflow {wrk_ref}.")
        return workflow
    pipeline, launched = values.get("pipeline_name"), values.get("launch_time")
    if not (experiment_ref and pipeline and launched):
        return None
    experiment = _experiment(store, access, None, experiment_ref)
    return store.find_workflow(experiment.id, pipeline, launched, values.get("scan_id", ""))


def _sent(request: Request, body: bytes) -> tuple[dict[str, str], str]:
    """The record's fields a request carries (a ``<wrk:Workflow/>`` body, then the query's
    ``wrk:workflowData/NAME`` parameters), as columns, and the experiment it names."""
    pairs: list[tuple[str, str]] = []
    if body.strip():
        pairs += _document(body)
    for key, value in request.query_list:
        if key.lower().startswith(PREFIX):
            pairs.append((key[len(PREFIX) :], value))
    values: dict[str, str] = {}
    experiment = ""
    unknown: list[str] = []
    for name, value in pairs:
        lowered = name.lower()
        if lowered == "id":
            experiment = value.strip()
        elif lowered in SENDABLE:
            values[SENDABLE[lowered]] = value
        elif lowered not in ("externalid", "create_user", "wrk_workflowdata_id"):
            unknown.append(name)  # the project, the creator and the number are the server's
    if unknown:
        known = ", ".join(n for n, a in FIELDS if a in WRITABLE)
        raise HttpError(
            400, f"minixnat keeps no workflow field {', '.join(unknown)}; it keeps ID, {known}."
        )
    for name in TIMES:
        if name in values:
            values[name] = _timestamp(values[name], name)
    return values, experiment


def _document(body: bytes) -> list[tuple[str, str]]:
    """The attributes of a ``<wrk:Workflow …/>`` document."""
    if len(body) > MAX_DOCUMENT:
        raise HttpError(413, "A workflow document is at most 1 MiB.")
    try:
        root = ET.fromstring(body)
    except (ET.ParseError, RecursionError) as exc:
        raise HttpError(400, f"The workflow document cannot be read: {exc}") from None
    if root.tag.rsplit("}", 1)[-1] != "Workflow":
        raise HttpError(400, "Send a <wrk:Workflow …/> document, its fields as attributes.")
    return [(k, v) for k, v in root.attrib.items() if "}" not in k]


def _timestamp(value: str, name: str) -> str:
    """A date and time as minixnat keeps them (``YYYY-MM-DD HH:MM:SS.mmm``, UTC when the
    value says its zone), so that a record is found again by the launch time it was given."""
    text_ = value.strip()
    moment = None
    try:
        moment = datetime.fromisoformat(text_)
    except ValueError:
        for layout in ("%m/%d/%Y %H:%M:%S", "%m/%d/%Y %H:%M", "%m/%d/%Y"):
            try:
                moment = datetime.strptime(text_, layout)
                break
            except ValueError:
                continue
    if moment is None:
        raise HttpError(400, f"{name} {value!r} is not a date and time: give YYYY-MM-DD HH:MM:SS.")
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def item(workflow: Workflow, request: Request) -> Response:
    """One record as an item document: XML (``<wrk:Workflow …/>``) or ``format=json``."""
    fields = fields_of(workflow)
    fmt = (request.param("format") or "xml").lower()
    if fmt == "json":
        doc = {
            "items": [
                {
                    "children": [],
                    "meta": {"xsi:type": DATATYPE, "isHistory": False},
                    "data_fields": fields,
                }
            ]
        }
        return Response(200, json.dumps(doc).encode(), "application/json;charset=UTF-8")
    if fmt != "xml":
        raise HttpError(400, f"Unsupported format {fmt!r} for a single object: use json or xml")
    attrs = " ".join(
        f"{name}={quoteattr(value)}"
        for name, value in fields.items()
        if value and name != "wrk_workflowData_id"
    )
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<wrk:Workflow {attrs} xmlns:wrk="{NAMESPACE}" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"/>'
    )
    return Response(200, body.encode(), "text/xml;charset=UTF-8")


def pipelines(
    access: Access, store: Store, request: Request, project_ref: str, name: str
) -> Response:
    """``/data/projects/{P}/pipelines[/{name}]``."""
    readable_project(store, access, project_ref)
    if name:
        if name not in PIPELINES:
            raise HttpError(404, f"No pipeline {name} in project {project_ref}.")
        path, description = PIPELINES[name]
        # the keys of XNAT's pipeline descriptor, as pyxnat's Pipeline.info() reads them
        body = {
            "path": path,
            "description": description,
            "version": "1",
            "authors": [{"firstname": "minixnat", "lastname": ""}],
            "appliesTo": "xnat:imageSessionData",
            "inputParameters": [],
            "resourceRequirements": {},
            "steps": [{"id": "1", "description": description}],
        }
        return Response(200, json.dumps(body).encode(), "application/json")
    rows: list[dict[str, Any]] = [
        {"Name": step, "Path": path, "Description": desc, "Datatype": "All Datatypes"}
        for step, (path, desc) in PIPELINES.items()
    ]
    return render(Table(["Name", "Path", "Description", "Datatype"], rows), request)


def archive_spec(store: Store, access: Access, project_ref: str) -> Response:
    """``/data/projects/{P}/archive_spec``: the project's pipelines and their step ids."""
    project = readable_project(store, access, project_ref)
    steps = "".join(
        f'<arc:descendant xsi:type="xnat:imageSessionData"><arc:pipeline stepId={quoteattr(step)}>'
        f"<arc:name>{escape(step)}</arc:name><arc:location>{escape(path)}</arc:location>"
        "</arc:pipeline></arc:descendant>"
        for step, (path, _) in PIPELINES.items()
    )
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<arc:project id={quoteattr(project.id)} xmlns:arc="http://nrg.wustl.edu/arc" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        f"<arc:pipelines><arc:descendants>{steps}</arc:descendants></arc:pipelines></arc:project>"
    )
    return Response(200, body.encode(), "text/xml;charset=UTF-8")


def launch(
    store: Store, access: Access, login: str, project_ref: str, name: str, ref: str
) -> Response:
    """``POST /data/projects/{P}/pipelines/{name}/experiments/{E}``: queue a run; answers
    the new record's ``wrk_workflowData_id``."""
    project = readable_project(store, access, project_ref)
    if name not in PIPELINES:
        known = ", ".join(PIPELINES)
        raise HttpError(404, f"No pipeline {name} in project {project.id}; minixnat has {known}.")
    if not access.can_edit(project):
        raise HttpError(403, f"You may not launch pipelines in project {project.id}.")
    experiment = _experiment(store, access, project.id, ref)
    if experiment.is_assessor:
        raise HttpError(400, f"{experiment.label} is an assessor; snapshots are of image sessions.")
    workflow = store.queue_snapshots(experiment, user=login, why="launched through the REST API")
    return text(str(workflow.wrk_id))


def _experiment(store: Store, access: Access, project_ref: str | None, ref: str) -> Experiment:
    """An experiment by ID, or by label within ``project_ref``; 404 unless readable."""
    found = store.get_experiment(ref)
    if found is None and project_ref:
        project = store.get_project(project_ref)
        if project is not None:
            found = store.resolve_experiment(project.id, ref)
    project = store.get_project(found.project) if found else None
    if found is None or project is None or not access.can_read(project):
        raise HttpError(404, f"No experiment {ref}.")
    return found


def _readable_projects(store: Store, access: Access, ref: str | None) -> list[str]:
    if ref is not None:
        return [readable_project(store, access, ref).id]
    return access.readable_project_ids()


def _table(store: Store, found: list[Workflow], title: str) -> Table:
    labels: dict[str, str] = {}
    rows = []
    for workflow in found:
        if workflow.experiment_id not in labels:
            experiment = store.get_experiment(workflow.experiment_id)
            labels[workflow.experiment_id] = experiment.label if experiment else ""
        rows.append({**fields_of(workflow), "label": labels[workflow.experiment_id]})
    columns = [name for name, _ in FIELDS] + ["label"]
    return Table(columns, rows, title=title)
