"""The write side of ``/data``: PUT creates or updates, DELETE removes, files go into resources.

Status codes and bodies follow XNAT 1.8 (``xnat-rest-api.md`` §9.1, §9.2, §10): a new subject,
experiment or assessor answers 201 with its accession ID; an update 200; a resource that
exists 409; a file that exists without ``overwrite=true`` is left alone and named in a 200
``{"duplicates": […]}`` body.  Owners and members write; only owners delete objects;
collaborators and guests write nothing (403, or 404 where the project is hidden).
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from minixnat.http import bodies
from minixnat.http.access import Access
from minixnat.http.messages import HttpError, Request, Response, text
from minixnat.importer.build import safe_label
from minixnat.importer.unpack import Limits, UnpackError, budget_for, discard, sniff, unpack
from minixnat.rest import documents, xpaths
from minixnat.rest.resolve import Node, Target, resolve
from minixnat.store import Project, Resource, Store, StoreError, User, names
from minixnat.store.files import md5_of
from minixnat.store.records import GENDERS, HANDEDNESS

COLLECTIONS = ("projects", "subjects", "experiments", "scans", "reconstructions", "assessors")
PROJECT_SETTINGS = ("accessibility", "prearchive_code", "quarantine_code")
_LABEL = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_CUSTOM_FIELD = re.compile(r"fields/field\[name=([^\]]+)\]/field$", re.IGNORECASE)
SESSION_MODALITY = {
    "xnat:mrSessionData": "MR",
    "xnat:ctSessionData": "CT",
    "xnat:petSessionData": "PT",
    "xnat:petmrSessionData": "PT",
}


@dataclass
class WriteContext:
    store: Store
    access: Access
    user: User
    tmp_dir: Path
    limits: Limits


def split_owner(rest: list[str]) -> tuple[list[str], list[str]]:
    """The object part of a path and what follows it (``resources/…``, ``files/…`` or a verb)."""
    i = 0
    while i + 1 < len(rest) and rest[i] in COLLECTIONS:
        i += 2
        if i < len(rest) and rest[i] in ("in", "out"):
            i += 1
    return rest[:i], rest[i:]


def check_name(kind: str, text: str) -> None:
    """400 for a name with control characters (CR, LF, NUL, …), before anything is stored."""
    try:
        names.check_name(kind, text)
    except StoreError as exc:
        raise HttpError(400, f"{str(exc)[0].upper()}{str(exc)[1:]}.") from exc


def check_label(kind: str, label: str) -> None:
    check_name(f"{kind} label", label)
    if not _LABEL.match(label) or len(label) > 255:
        raise HttpError(
            417,
            f"Invalid character in {kind} label {label!r}: use letters, digits, '_', '-' and "
            "'.' (not first).",
        )


def field_params(request: Request, form: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """Simple fields (lower-cased last xpath step) and custom ``fields/field[name=…]`` values."""
    return split_pairs(xpaths.request_pairs(request.query_list, form))


def split_pairs(pairs: list[tuple[str, str]]) -> tuple[dict[str, str], dict[str, str]]:
    simple: dict[str, str] = {}
    custom: dict[str, str] = {}
    for key, value in pairs:
        found = _CUSTOM_FIELD.search(key)
        if found:
            custom[found.group(1)] = value
            continue
        name = re.sub(r"\[[^\]]*\]", "", key).rsplit("/", 1)[-1].lower()
        simple[name] = value
    return simple, custom


def _pick(simple: dict[str, str], names: dict[str, str]) -> dict[str, str]:
    return {column: simple[param] for param, column in names.items() if param in simple}


def node_of(target: Target) -> Node:
    """The single object a resolved path names."""
    if target.kind == "project" and target.project:
        return Node("project", target.project)
    if target.kind == "subject" and target.project and target.subject:
        return Node("subject", target.project, target.subject)
    if target.kind == "experiment" and target.project and target.experiment:
        return Node("experiment", target.project, target.subject, target.experiment)
    if target.kind in ("scan", "reconstruction", "assessor") and target.nodes:
        return target.nodes[0]
    raise HttpError(404, "The requested resource was not found.")


def _require_edit(access: Access, project: Project) -> None:
    if not access.can_edit(project):
        raise HttpError(
            403, f"You don't have permission to add or change data in project {project.id}."
        )


def _require_delete(access: Access, project: Project) -> None:
    if not access.can_delete(project):
        raise HttpError(
            403, f"Only owners of project {project.id} may delete its data; you may not."
        )


async def handle(ctx: WriteContext, request: Request, rest: list[str]) -> Response:
    """PUT, POST or DELETE on a ``/data`` path (``rest`` has ``/data[/archive]`` removed)."""
    owner, tail = split_owner(rest)
    if not owner:
        raise HttpError(405, f"{request.method} is not supported on this URL.")
    if tail and tail[0] in ("resources", "files"):
        node = _resolve_node(ctx, owner)
        return await _resources(ctx, request, node, tail)
    if (
        len(tail) == 2
        and owner[0] == "projects"
        and len(owner) == 2
        and tail[0] in PROJECT_SETTINGS
    ):
        project = _resolve_node(ctx, owner).project
        _require_delete(ctx.access, project)
        if tail[0] == "accessibility":
            ctx.store.set_accessibility(project.id, tail[1])
        elif not tail[1].isdigit():
            raise HttpError(400, f"{tail[0]} takes a number, not {tail[1]!r}.")
        else:
            ctx.store.set_project_code(project.id, tail[0], int(tail[1]))
        return text("")
    if request.method == "DELETE" and not tail:
        return _delete_object(ctx, _resolve_node(ctx, owner))
    if (
        request.method not in ("PUT", "POST")
        or len(tail) > 1
        or (tail and tail[0] not in COLLECTIONS)
    ):
        raise HttpError(405, f"{request.method} is not supported on …/{'/'.join(rest)}.")
    if request.flag("quarantine") and len(owner) >= 2 and owner[-2] in ("experiments", "assessors"):
        # minixnat keeps no quarantine: saying yes and doing nothing would mislead.
        raise HttpError(400, "minixnat does not quarantine experiments: every one stays active.")
    body = await bodies.receive(request, ctx.tmp_dir)
    try:
        document = _document_in(body)
    finally:
        body.discard()
    if tail:  # POST/PUT to a collection: the document names the new object
        label = document.attributes.get("label") if document is not None else None
        if not label:
            raise HttpError(400, f"Send an XML document with a label to create one of …/{tail[0]}.")
        owner = [*owner, tail[0], label]
    if document is not None:
        return _put_document(ctx, request, owner, document)
    return _put_object(ctx, request, owner, body.form)  # described by parameters and form


XML_TYPES = ("text/xml", "application/xml")


def _parent_for_document(ctx: WriteContext, path: list[str]) -> Node:
    """The parent a document goes under; a subject that ``…/subjects/{S}/experiments/{E}``
    names and that does not exist yet is created, as XNAT does for documents."""
    if len(path) == 4 and path[0] == "projects" and path[2] == "subjects":
        project = _resolve_node(ctx, path[:2]).project
        if ctx.store.resolve_subject(project.id, path[3]) is None:
            _require_edit(ctx.access, project)
            check_label("subject", path[3])
            ctx.store.add_subject(project.id, path[3], user=ctx.user.login)
    return _resolve_node(ctx, path)


def _document_in(body: bodies.Body) -> documents.Document | None:
    """The XML document a PUT or POST carries (as its body or one multipart file), if any."""
    if len(body.uploads) != 1:
        return None
    upload = body.uploads[0]
    kind = upload.content_type.split(";", 1)[0].strip().lower()
    named_xml = upload.filename.lower().endswith(".xml")
    if kind not in XML_TYPES and not named_xml:
        return None
    try:
        return documents.parse(upload.path.read_bytes()[: documents.MAX_BYTES + 1])
    except documents.DocumentError as exc:
        raise HttpError(400, f"Cannot store the document: {exc}.") from exc


def _put_document(
    ctx: WriteContext, request: Request, owner: list[str], doc: documents.Document
) -> Response:
    """Create or update an object (and a session's scans) from an XML document."""
    kind, name = owner[-2], owner[-1]
    pairs = doc.pairs()
    simple, custom = split_pairs(pairs)
    custom.update(doc.custom)
    extra = xpaths.generic_fields(pairs, kind, typed_hint=False)
    if kind != "subjects":  # a subject keeps its custom fields apart; others among its fields
        extra.update({xpaths.custom_field_path(n): v for n, v in doc.custom.items()})
    if kind == "projects" and len(owner) == 2:
        with ctx.store.transaction():
            response = _put_project(ctx, name, simple, [])
            ctx.store.set_fields("project", name, extra)
            if doc.protocols is not None:  # its study protocols name every definition
                for variable in doc.protocols:
                    check_name("custom variable", f"{variable.group_id}/{variable.name}")
                ctx.store.set_custom_variables(name, doc.protocols)
        return response
    store = ctx.store
    with store.transaction():
        parent = _parent_for_document(ctx, owner[:-2])
        _require_edit(ctx.access, parent.project)
        response, field_owner = _put_child(ctx, doc.xsi_type, parent, kind, name, simple, custom)
        if doc.has_provenance:  # the document's provenance replaces what was stored
            store.replace_fields(*field_owner, "provenance")
        store.set_fields(*field_owner, extra)
        if field_owner[0] == "experiment" and (doc.scans or doc.reconstructions):
            session = store.get_experiment(field_owner[1])
            assert session is not None
            node = Node(
                "experiment", parent.project, store.get_subject(session.subject_id), session
            )
            for child, collection in [
                *((s, "scans") for s in doc.scans),
                *((r, "reconstructions") for r in doc.reconstructions),
            ]:
                child_id = child.attributes.get("ID", "")
                if not child_id:
                    raise HttpError(400, f"A {collection[:-1]} in the document has no ID.")
                child_pairs = child.pairs()
                child_simple, _ = split_pairs(child_pairs)
                _, child_owner = _put_child(
                    ctx, child.xsi_type, node, collection, child_id, child_simple, {}
                )
                store.set_fields(
                    *child_owner, xpaths.generic_fields(child_pairs, collection, typed_hint=False)
                )
    return response


def _resolve_node(ctx: WriteContext, owner: list[str]) -> Node:
    target = resolve(ctx.store, ctx.access, owner)
    if target.kind == "experiment" and target.experiment and target.experiment.is_assessor:
        session = ctx.store.get_experiment(target.experiment.session_id or "")
        return Node(
            "assessor", target.project or _never(), target.subject, session,
            assessor=target.experiment,
        )  # fmt: skip
    return node_of(target)


def _never() -> Project:
    raise HttpError(404, "The requested resource was not found.")


# -- objects -------------------------------------------------------------------------------
def _home_path(ctx: WriteContext, owner: list[str]) -> list[str]:
    """``subjects/{ID}`` or ``experiments/{ID}`` (an object named at the top of ``/data``,
    as xnatpy and xnat4tests update one) as the path under its project, where a write
    goes; 404 if there is no such object (XNAT creates objects only under a project)."""
    node = _resolve_node(ctx, owner)
    path = ["projects", node.project.id]
    if node.subject is not None:
        path += ["subjects", node.subject.label]
    if node.experiment is not None and node.kind in ("experiment", "assessor"):
        path += ["experiments", node.experiment.label]
    if node.kind == "assessor" and node.assessor is not None:
        path += ["assessors", node.assessor.label]
    return path


def _put_object(
    ctx: WriteContext, request: Request, owner: list[str], form: dict[str, str]
) -> Response:
    simple, custom = field_params(request, form)
    if len(owner) == 2 and owner[0] in ("subjects", "experiments"):
        owner = _home_path(ctx, owner)
    kind, name = owner[-2], owner[-1]
    if owner[-1] in ("in", "out"):
        kind, name = owner[-3], owner[-2]
    pairs = xpaths.request_pairs(request.query_list, form)
    extra = xpaths.generic_fields(pairs, kind, typed_hint=bool(request.param("xsiType")))
    if kind == "projects" and len(owner) == 2:
        aliases = [v for k, v in pairs if k.lower() == "alias" and v]
        with ctx.store.transaction():
            response = _put_project(ctx, name, simple, aliases)
            ctx.store.set_fields("project", name, extra)
        return response
    parent = _resolve_node(ctx, owner[:-2] if owner[-1] not in ("in", "out") else owner[:-3])
    project = parent.project
    _require_edit(ctx.access, project)
    with ctx.store.transaction():  # an object and all its fields, or nothing
        response, field_owner = _put_child(
            ctx, request.param("xsiType"), parent, kind, name, simple, custom
        )
        ctx.store.set_fields(*field_owner, extra)
    return response


def _put_child(
    ctx: WriteContext,
    xsi_type: str,
    parent: Node,
    kind: str,
    name: str,
    simple: dict[str, str],
    custom: dict[str, str],
) -> tuple[Response, tuple[str, str]]:
    """Create or update the child; the answer and the owner of its other fields."""
    project = parent.project
    if kind == "subjects" and parent.kind == "project":
        return _put_subject(ctx, project, name, simple, custom)
    if kind == "experiments" and parent.kind in ("project", "subject"):
        return _put_experiment(ctx, xsi_type, parent, name, simple)
    if parent.kind == "experiment" and parent.experiment:
        if kind == "scans":
            return _put_scan(ctx, xsi_type, parent, name, simple)
        if kind == "reconstructions":
            return _put_recon(ctx, parent, name, simple)
        if kind == "assessors":
            return _put_assessor(ctx, xsi_type, parent, name, simple)
    raise HttpError(405, f"Cannot create {kind} here.")


def _put_project(
    ctx: WriteContext, pid: str, simple: dict[str, str], aliases: list[str]
) -> Response:
    store = ctx.store
    for alias in aliases:
        check_label("project alias", alias)
    values = _pick(
        simple,
        {
            "name": "name",
            "secondary_id": "secondary_id",
            "description": "description",
            "keywords": "keywords",
            "firstname": "pi_firstname",
            "lastname": "pi_lastname",
            "accessibility": "accessibility",
        },
    )
    existing = store.get_project(pid)
    # One answer for "exists but hidden from you" and "exists and is not yours", so that a
    # project you cannot see cannot be told apart from one you merely do not own.
    refused = HttpError(
        403, f"You may not create or change project {pid}: choose another ID, or ask its owner."
    )
    try:
        if existing is not None and existing.id == pid:
            if not ctx.access.can_see(existing) or not ctx.access.can_delete(existing):
                raise refused
            store.update_row("projects", "id", pid, values)
            for alias in aliases:
                store.add_alias(pid, alias)
            return text("")
        if ctx.user.login == "guest":
            raise HttpError(403, "The guest user cannot create projects.")
        check_label("project", pid)
        if len(pid) > 24:
            raise HttpError(417, f"Project ID {pid!r} is longer than 24 characters.")
        taken = store.get_project(values.get("secondary_id", "") or pid)
        if existing is not None or taken is not None:
            visible = [p for p in (existing, taken) if p is not None and ctx.access.can_see(p)]
            if not visible:
                raise refused
            raise HttpError(409, f"Requested new project conflicts with existing projects: {pid}")
        store.add_project(
            pid,
            name=values.get("name", ""),
            secondary_id=values.get("secondary_id", ""),
            description=values.get("description", ""),
            keywords=values.get("keywords", ""),
            pi_firstname=values.get("pi_firstname", ""),
            pi_lastname=values.get("pi_lastname", ""),
            accessibility=values.get("accessibility", "private") or "private",
            owner=ctx.user.login,
        )
        for alias in aliases:
            store.add_alias(pid, alias)
    except StoreError as exc:
        raise HttpError(exc.status, str(exc)) from exc
    return text("")


def subject_values(simple: dict[str, str]) -> dict[str, str]:
    """Demographics from request fields, normalised; HttpError 400 names a bad value."""
    values = _pick(
        simple, {"gender": "gender", "dob": "dob", "yob": "yob", "handedness": "handedness"}
    )
    if values.get("gender"):
        gender = GENDERS.get(values["gender"].lower())
        if gender is None:
            raise HttpError(
                400, f"Invalid gender {values['gender']!r}: use male, female, other or unknown."
            )
        values["gender"] = gender
    if values.get("handedness"):
        hand = values["handedness"].lower()
        if hand not in HANDEDNESS:
            raise HttpError(
                400,
                f"Invalid handedness {values['handedness']!r}: use {', '.join(HANDEDNESS)}.",
            )
        values["handedness"] = hand
    if values.get("dob"):
        try:
            born = date.fromisoformat(values["dob"])
        except ValueError:
            raise HttpError(
                400, f"Invalid date of birth {values['dob']!r}: use YYYY-MM-DD."
            ) from None
        if born > date.today():
            raise HttpError(400, f"Date of birth {values['dob']} is in the future.")
    if values.get("yob"):
        year = values["yob"]
        if not (year.isdigit() and len(year) == 4 and int(year) <= date.today().year):
            raise HttpError(400, f"Invalid year of birth {year!r}: use four digits, e.g. 1970.")
    return values


def _put_subject(
    ctx: WriteContext,
    project: Project,
    label: str,
    simple: dict[str, str],
    custom: dict[str, str],
) -> tuple[Response, tuple[str, str]]:
    store = ctx.store
    values = subject_values(simple)
    existing = store.resolve_subject(project.id, label)
    rename = simple.get("label", "")
    if rename:
        check_label("subject", rename)
    if existing is None:
        check_label("subject", label)
        subject = store.add_subject(project.id, rename or label, user=ctx.user.login)
        store.update_row("subjects", "id", subject.id, values)
        store.set_subject_fields(subject.id, custom)
        return text(subject.id, 201), ("subject", subject.id)
    if rename and rename != existing.label:
        if store.resolve_subject(project.id, rename) is not None:
            raise HttpError(409, f"Label {rename} is already in use in project {project.id}.")
        values["label"] = rename
    store.update_row("subjects", "id", existing.id, values)
    store.set_subject_fields(existing.id, custom)
    return text(existing.id), ("subject", existing.id)


def _put_experiment(
    ctx: WriteContext, xsi_type: str, parent: Node, label: str, simple: dict[str, str]
) -> tuple[Response, tuple[str, str]]:
    store = ctx.store
    project = parent.project
    values = _pick(simple, {"date": "date", "time": "time", "modality": "modality", "uid": "uid"})
    if values.get("date"):
        try:
            date.fromisoformat(values["date"])
        except ValueError:
            raise HttpError(400, f"Invalid date {values['date']!r}: use YYYY-MM-DD.") from None
    existing = store.resolve_experiment(project.id, label)
    subject = parent.subject
    if subject is None and simple.get("subject_id"):
        subject = store.resolve_subject(project.id, simple["subject_id"])
        if subject is None and existing is None:
            # XNAT creates the subject a new session names (as a label), rather than refuse.
            check_label("subject", simple["subject_id"])
            subject = store.add_subject(project.id, simple["subject_id"], user=ctx.user.login)
    if existing is not None:
        if subject is not None and existing.subject_id != subject.id:
            raise HttpError(
                409, f"Experiment {label} already exists in {project.id} under another subject."
            )
        rename = simple.get("label", "")
        if rename and rename != existing.label:  # ?label=NEW renames, as in XNAT
            check_label("experiment", rename)
            if store.resolve_experiment(project.id, rename) is not None:
                raise HttpError(409, f"Label {rename} is already in use in project {project.id}.")
            values["label"] = rename
        store.update_row("experiments", "id", existing.id, values)
        return text(existing.id), ("experiment", existing.id)
    if subject is None:
        raise HttpError(
            400,
            "Name the subject: PUT under /subjects/{S}/experiments/{label}, or send "
            "xnat:experimentData/subject_ID.",
        )
    if not xsi_type:
        raise HttpError(400, "Specify the new experiment's xsiType, e.g. xnat:mrSessionData.")
    check_label("experiment", label)
    created = store.add_experiment(
        project.id,
        subject.id,
        label,
        xsi_type,
        date=values.get("date", ""),
        time_=values.get("time", ""),
        modality=values.get("modality", "") or SESSION_MODALITY.get(xsi_type, ""),
        uid=values.get("uid", ""),
        user=ctx.user.login,
    )
    return text(created.id, 201), ("experiment", created.id)


def _put_scan(
    ctx: WriteContext, xsi_type: str, parent: Node, scan_id: str, simple: dict[str, str]
) -> tuple[Response, tuple[str, str]]:
    store = ctx.store
    session = parent.experiment
    assert session is not None
    values = _pick(
        simple,
        {
            "type": "type",
            "series_description": "series_description",
            "quality": "quality",
            "frames": "frames",
            "note": "note",
            "uid": "uid",
            "modality": "modality",
        },
    )
    existing = store.get_scan(session.id, scan_id)
    if existing is None and simple.get("id"):
        # As XNAT: the path's scan ID finds an existing scan; a new one takes the ID its
        # fields give (xnatpy puts MrScanData(id="1", type="T1w") at …/scans/T1w).
        scan_id = simple["id"]
        existing = store.get_scan(session.id, scan_id)
    if existing is not None:
        if xsi_type and xsi_type != existing.xsi_type:
            raise HttpError(409, "Specified xsiType differs from existing xsiType")
        store.update_row("scans", "pk", existing.pk, values)
        return text(""), ("scan", str(existing.pk))
    check_label("scan", scan_id)
    if not xsi_type:
        xsi_type = session.xsi_type.replace("SessionData", "ScanData")
    created = store.add_scan(
        session.id,
        scan_id,
        xsi_type,
        type_=values.get("type", ""),
        series_description=values.get("series_description", ""),
        quality=values.get("quality", "") or "usable",
        frames=values.get("frames", ""),
        note=values.get("note", ""),
        uid=values.get("uid", ""),
        modality=values.get("modality", "") or session.modality,
    )
    return text(""), ("scan", str(created.pk))


def _put_recon(
    ctx: WriteContext, parent: Node, recon_id: str, simple: dict[str, str]
) -> tuple[Response, tuple[str, str]]:
    store = ctx.store
    session = parent.experiment
    assert session is not None
    values = _pick(simple, {"type": "type", "basescantype": "base_scan_type"})
    existing = [r for r in store.list_recons(session.id) if r.recon_id == recon_id]
    if existing:
        store.update_row("reconstructions", "pk", existing[0].pk, values)
        return text(""), ("recon", str(existing[0].pk))
    check_label("reconstruction", recon_id)
    created = store.add_recon(
        session.id,
        recon_id,
        type_=values.get("type", ""),
        base_scan_type=values.get("base_scan_type", ""),
    )
    return text(""), ("recon", str(created.pk))


def _put_assessor(
    ctx: WriteContext, xsi_type: str, parent: Node, label: str, simple: dict[str, str]
) -> tuple[Response, tuple[str, str]]:
    store = ctx.store
    session = parent.experiment
    assert session is not None
    existing = store.resolve_experiment(parent.project.id, label)
    values = _pick(simple, {"date": "date", "time": "time"})
    if existing is not None:
        if existing.session_id != session.id:
            raise HttpError(409, f"{label} already exists in {parent.project.id}.")
        store.update_row("experiments", "id", existing.id, values)
        return text(existing.id), ("experiment", existing.id)
    if not xsi_type:
        raise HttpError(400, "Specify the assessor's xsiType, e.g. xnat:qcManualAssessorData.")
    check_label("assessor", label)
    created = store.add_experiment(
        parent.project.id,
        session.subject_id,
        label,
        xsi_type,
        date=values.get("date", ""),
        time_=values.get("time", ""),
        session_id=session.id,
        user=ctx.user.login,
    )
    return text(created.id, 201), ("experiment", created.id)


def _delete_object(ctx: WriteContext, node: Node) -> Response:
    store = ctx.store
    _require_delete(ctx.access, node.project)
    if node.kind == "project":
        store.delete_project(node.project.id)
    elif node.kind == "subject" and node.subject:
        store.delete_subject(node.subject.id)
    elif node.kind == "experiment" and node.experiment:
        store.delete_experiment(node.experiment.id)
    elif node.kind == "scan" and node.scan:
        store.delete_scan(node.scan.pk)
    elif node.kind == "recon" and node.recon:
        store.delete_recon(node.recon.pk)
    elif node.kind == "assessor" and node.assessor:
        store.delete_experiment(node.assessor.id)
    return text("")


# -- resources and files -------------------------------------------------------------------
def resource_directory(store: Store, node: Node, label: str) -> str:
    """A folder (relative to the archive) for a new resource, unused by any other."""
    p = node.project.id
    safe = safe_label(label) or "resource"
    if node.kind == "project":
        base = f"{p}/resources"
    elif node.kind == "subject" and node.subject:
        base = f"{p}/subjects/{node.subject.label}/RESOURCES"
    else:
        assert node.experiment is not None
        session = f"{p}/arc001/{node.experiment.label}"
        if node.kind == "experiment":
            base = f"{session}/RESOURCES"
        elif node.kind == "scan" and node.scan:
            base = f"{session}/SCANS/{node.scan.scan_id}"
        elif node.kind == "recon" and node.recon:
            base = f"{session}/PROCESSED/{node.recon.recon_id}"
        else:
            assert node.assessor is not None
            base = f"{session}/ASSESSORS/{node.assessor.label}"
    directory, n = f"{base}/{safe}", 2
    while store.directory_taken(directory) or (store.archive_dir / directory).exists():
        directory = f"{base}/{safe}_{n}"
        n += 1
    return directory


def _resource_label(label: str) -> str:
    check_name("resource label", label)
    if not label or label in (".", "..") or "/" in label or len(label) > 255:
        raise HttpError(400, f"Invalid resource label {label!r}.")
    return label


def find_resource(store: Store, node: Node, ref: str) -> Resource | None:
    """A resource of ``node`` by label, or by its numeric ID (``xnat_abstractresource_id``),
    as XNAT accepts either wherever a URL names a resource."""
    found = store.get_resource_by_label(*node.owner, ref)
    if found is None and ref.isdigit():
        by_id = store.get_resource(int(ref))
        if by_id is not None and (by_id.owner_kind, by_id.owner_key) == node.owner:
            found = by_id
    return found


def _get_or_create_resource(
    ctx: WriteContext, node: Node, label: str, simple: dict[str, str], *, create_only: bool
) -> Resource:
    store = ctx.store
    existing = find_resource(store, node, label)
    if existing is not None:
        if create_only:
            raise HttpError(409, "Specified resource already exists.")
        return existing
    return store.add_resource(
        *node.owner,
        _resource_label(label),
        resource_directory(store, node, label),
        format_=simple.get("format", ""),
        content=simple.get("content", ""),
        tags=simple.get("tags", ""),
        description=simple.get("description", ""),
    )


async def _resources(ctx: WriteContext, request: Request, node: Node, tail: list[str]) -> Response:
    store = ctx.store
    method = request.method
    if tail[0] == "files":
        raise HttpError(400, "Name the resource: …/resources/{label}/files/{path}.")
    if len(tail) < 2:
        raise HttpError(405, f"{method} is not supported on a resource listing.")
    label = tail[1]
    if method == "DELETE":
        _require_edit(ctx.access, node.project)
        resource = find_resource(store, node, label)
        if resource is None:
            raise HttpError(404, f"Unable to find resource {label}.")
        if len(tail) == 2:
            store.delete_resource(resource.pk)
            return text("")
        if tail[2] != "files" or len(tail) < 4:
            raise HttpError(400, "Name the file or folder to delete: …/files/{path}.")
        relpath = "/".join(tail[3:]) + ("/" if request.raw_path.endswith("/") else "")
        try:
            removed = store.delete_files(resource, relpath)
        except StoreError as exc:
            raise HttpError(400, str(exc)) from exc
        if not removed:
            raise HttpError(404, "No matched files")
        return text("")
    if method not in ("PUT", "POST"):
        raise HttpError(405, f"{method} is not supported here.")
    _require_edit(ctx.access, node.project)
    if len(tail) == 2:
        body = await bodies.receive(request, ctx.tmp_dir)
        body.discard()
        simple, _ = field_params(request, body.form)
        _get_or_create_resource(ctx, node, label, simple, create_only=True)
        return text("")
    if tail[2] != "files":
        raise HttpError(400, "File paths go under …/resources/{label}/files/{path}.")
    url_path = "/".join(tail[3:])
    body = await bodies.receive(request, ctx.tmp_dir)
    try:
        return await _store_files(ctx, request, node, label, url_path, body)
    finally:
        body.discard()


async def _store_files(
    ctx: WriteContext,
    request: Request,
    node: Node,
    label: str,
    url_path: str,
    body: bodies.Body,
) -> Response:
    store = ctx.store
    if not body.uploads:
        raise HttpError(400, bodies.NO_DATA)
    simple, _ = field_params(request, body.form)
    overwrite = request.flag("overwrite") or body.form.get("overwrite", "").lower() == "true"
    extract = request.flag("extract") or body.form.get("extract", "").lower() == "true"
    tags = ",".join(v for k, v in request.query_list if k.lower() == "tags")
    placed: list[tuple[str, Path, str]] = []  # (relpath, file on disk, md5)
    staging: list[Path] = []
    try:
        for upload in body.uploads:
            name = url_path if (url_path and len(body.uploads) == 1) else upload.filename
            name = name.replace("\\", "/").lstrip("/")
            if not name:
                raise HttpError(400, "The upload has no file name: put it under …/files/{name}.")
            if extract and sniff(upload.path) is not None:
                folder = ctx.tmp_dir / f"extract-{secrets.token_hex(8)}"
                staging.append(folder)
                files = await asyncio.to_thread(_unpack, upload.path, folder, ctx.limits)
                for path in files:
                    rel = path.relative_to(folder).as_posix()
                    placed.append((rel, path, await asyncio.to_thread(md5_of, path)))
            else:
                placed.append((name, upload.path, upload.md5))
        # Everything is received and hashed: the resource (if new) and every file appear
        # in one transaction, or nothing does.  No await from here on.
        with store.transaction():
            resource = _get_or_create_resource(ctx, node, label, simple, create_only=False)
            for rel, _, _ in placed:
                store.file_path(resource, rel)  # refuses unsafe names before anything is stored
            duplicates = [r for r, _, _ in placed if store.get_file(resource.pk, r) is not None]
            for rel, path, md5 in placed:
                if rel in duplicates and not overwrite:
                    continue
                store.place_file(
                    resource,
                    rel,
                    path,
                    md5,
                    format_=simple.get("format", ""),
                    content=simple.get("content", ""),
                    tags=tags,
                )
    except StoreError as exc:
        raise HttpError(400, str(exc)) from exc
    finally:
        for folder in staging:
            discard(folder)
    if duplicates and not overwrite:
        return Response(
            200, json.dumps({"duplicates": duplicates}).encode(), "text/html;charset=UTF-8"
        )
    return text("")


def _unpack(path: Path, folder: Path, limits: Limits) -> list[Path]:
    try:
        return unpack(path, folder, budget_for(path, limits))
    except UnpackError as exc:
        discard(folder)
        raise HttpError(400, f"Cannot extract the upload: {exc}.") from exc
