"""Single objects: ``{object}?format=json`` (items/meta/data_fields/children) and ``format=xml``.

Unlike listings, ``data_fields`` keep their types (integer keys are numbers).  ``meta`` carries
``xsi:type``, ``isHistory`` and a Java ``Date.toString()`` start date, which xnatpy parses.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from minixnat.http.messages import HttpError, Request, Response
from minixnat.rest.resolve import Node, Target
from minixnat.rest.xpaths import SCAN_PARAMETER, custom_field_path, named_fields, nested_xml
from minixnat.store import (
    CustomVariable,
    Experiment,
    Project,
    Recon,
    Resource,
    Scan,
    Store,
    Subject,
)

ROOT_ELEMENTS = {
    "xnat:projectData": "xnat:Project",
    "xnat:subjectData": "xnat:Subject",
    "xnat:mrSessionData": "xnat:MRSession",
    "xnat:ctSessionData": "xnat:CTSession",
    "xnat:petSessionData": "xnat:PETSession",
    "xnat:mrScanData": "xnat:MRScan",
    "xnat:ctScanData": "xnat:CTScan",
    "xnat:petScanData": "xnat:PETScan",
    "xnat:qcManualAssessorData": "xnat:QCManualAssessment",
    "xnat:reconstructedImageData": "xnat:ReconstructedImage",
}
NAMESPACES = (
    'xmlns:xnat="http://nrg.wustl.edu/xnat" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
    ' xmlns:prov="http://www.nbirn.net/prov"'
)
JAVA_DATE = "%a %b %d %H:%M:%S UTC %Y"


def _meta(xsi_type: str, insert_date: str = "") -> dict[str, Any]:
    meta: dict[str, Any] = {"xsi:type": xsi_type, "isHistory": False}
    if insert_date:
        try:
            stamp = datetime.strptime(insert_date[:19], "%Y-%m-%d %H:%M:%S")
            meta["start_date"] = stamp.strftime(JAVA_DATE)
        except ValueError:
            pass
    return meta


def _item(
    xsi_type: str,
    fields: dict[str, Any],
    children: list[dict[str, Any]] | None = None,
    insert_date: str = "",
) -> dict[str, Any]:
    return {"children": children or [], "meta": _meta(xsi_type, insert_date), "data_fields": fields}


def resource_item(store: Store, res: Resource, uri_base: str) -> dict[str, Any]:
    count, size = store.resource_stats(res.pk)
    return _item(
        "xnat:resourceCatalog",
        {
            "xnat_abstractresource_id": res.pk,
            "label": res.label,
            "file_count": count,
            "file_size": size,
            "format": res.format,
            "content": res.content,
            "URI": f"{uri_base}/resources/{res.pk}/catalog.xml",
        },
    )


def project_fields(p: Project) -> dict[str, Any]:
    return {
        "ID": p.id,
        "secondary_ID": p.secondary_id,
        "name": p.name,
        "description": p.description,
        "keywords": p.keywords,
        "PI/firstname": p.pi_firstname,
        "PI/lastname": p.pi_lastname,
    }


def subject_fields(s: Subject) -> dict[str, Any]:
    fields: dict[str, Any] = {"ID": s.id, "label": s.label, "project": s.project}
    for key, value in (
        ("gender", s.gender),
        ("dob", s.dob),
        ("yob", s.yob),
        ("handedness", s.handedness),
    ):
        if value:
            fields[f"demographics/{key}"] = value
    return fields


def experiment_fields(e: Experiment) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "ID": e.id,
        "id": e.id,
        "label": e.label,
        "project": e.project,
        "subject_ID": e.subject_id,
        "date": e.date,
        "time": e.time,
    }
    if e.session_id:
        fields["imageSession_ID"] = e.session_id
    else:
        fields.update({"modality": e.modality, "UID": e.uid, "session_type": e.modality})
    return fields


def scan_fields(s: Scan, project: str) -> dict[str, Any]:
    return {
        "xnat_imagescandata_id": s.pk,
        "ID": s.scan_id,
        "image_session_ID": s.experiment_id,
        "project": project,
        "type": s.type,
        "quality": s.quality,
        "note": s.note,
        "series_description": s.series_description,
        "UID": s.uid,
        "modality": s.modality,
        "frames": int(s.frames) if s.frames.isdigit() else s.frames,
    }


def recon_fields(r: Recon) -> dict[str, Any]:
    return {
        "xnat_reconstructedimagedata_id": r.pk,
        "ID": r.recon_id,
        "type": r.type,
        "baseScanType": r.base_scan_type,
        "image_session_ID": r.experiment_id,
    }


def _field_owner(target: Target) -> tuple[str, str] | None:
    """Whose stored fields (store/fields.py) belong in the object's document."""
    if target.kind == "project" and target.project:
        return "project", target.project.id
    if target.kind == "subject" and target.subject:
        return "subject", target.subject.id
    if target.kind == "experiment" and target.experiment:
        return "experiment", target.experiment.id
    node = target.nodes[0] if target.nodes else None
    if target.kind == "scan" and node and node.scan:
        return "scan", str(node.scan.pk)
    if target.kind == "reconstruction" and node and node.recon:
        return "recon", str(node.recon.pk)
    if target.kind == "assessor" and node and node.assessor:
        return "experiment", node.assessor.id
    return None


def describe(store: Store, target: Target) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
    """(xsi type, data_fields, children) of the object a target names, with its stored
    fields (``age``, ``investigator/firstname``, …) among the data fields."""
    xsi_type, fields, children = _describe(store, target)
    owner = _field_owner(target)
    if owner is not None:
        custom, stored = named_fields(store.get_fields(*owner))
        if custom:  # a project's or session's custom fields (a subject's are its own)
            kind = "projectData" if owner[0] == "project" else "experimentData"
            items = [
                _item(f"xnat:{kind}_field", {"name": name, "field": value})
                for name, value in sorted(custom.items())
            ]
            children = [*children, {"field": "fields/field", "items": items}]
        fields = {**fields, **stored}
    return xsi_type, fields, children


def _describe(store: Store, target: Target) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
    if target.kind == "project":
        assert target.project
        node = Node("project", target.project)
        children = [resource_item(store, r, node.uri()) for r in store.list_resources(*node.owner)]
        # Each alias a child of its own, as XNAT keeps them (a row each), known by its value.
        aliases = [
            _item("xnat:projectData_alias", {"alias": alias})
            for alias in store.project_aliases(target.project.id)
        ]
        groups = [("resources/resource", children), ("aliases/alias", aliases)]
        return (
            "xnat:projectData",
            project_fields(target.project),
            [{"field": field, "items": items} for field, items in groups if items],
        )
    if target.kind == "subject":
        assert target.subject
        assert target.project
        node = Node("subject", target.project, target.subject)
        children = [resource_item(store, r, node.uri()) for r in store.list_resources(*node.owner)]
        custom = [
            _item(
                "xnat:subjectData_field",
                {"name": name, "field": value, "subject_id": target.subject.id},
            )
            for name, value in sorted(json.loads(target.subject.fields or "{}").items())
        ]
        groups = [("resources/resource", children), ("fields/field", custom)]
        return (
            "xnat:subjectData",
            subject_fields(target.subject),
            [{"field": field, "items": items} for field, items in groups if items],
        )
    if target.kind == "experiment":
        assert target.experiment
        assert target.project
        e = target.experiment
        children = []
        if not e.is_assessor:
            scans = [
                _item(
                    s.xsi_type,
                    {**scan_fields(s, e.project), **store.get_fields("scan", str(s.pk))},
                    [
                        {
                            "field": "file",
                            "items": [
                                resource_item(
                                    store, r, f"/data/experiments/{e.id}/scans/{s.scan_id}"
                                )
                                for r in store.list_resources("scan", str(s.pk))
                            ],
                        }
                    ],
                )
                for s in store.list_scans(e.id)
            ]
            if scans:
                children.append({"field": "scans/scan", "items": scans})
        owner = ("assessor", e.id) if e.is_assessor else ("experiment", e.id)
        resources = [
            resource_item(store, r, f"/data/experiments/{e.id}")
            for r in store.list_resources(*owner)
        ]
        if resources:
            field = "out/file" if e.is_assessor else "resources/resource"
            children.append({"field": field, "items": resources})
        return e.xsi_type, experiment_fields(e), children
    if target.kind == "scan" and target.nodes:
        node = target.nodes[0]
        assert node.scan
        assert target.project
        files = [resource_item(store, r, node.uri()) for r in store.list_resources(*node.owner)]
        return (
            node.scan.xsi_type,
            scan_fields(node.scan, target.project.id),
            [{"field": "file", "items": files}] if files else [],
        )
    if target.kind == "reconstruction" and target.nodes:
        node = target.nodes[0]
        assert node.recon
        files = [resource_item(store, r, node.uri()) for r in store.list_resources(*node.owner)]
        return (
            "xnat:reconstructedImageData",
            recon_fields(node.recon),
            [{"field": "out/file", "items": files}] if files else [],
        )
    if target.kind == "assessor" and target.nodes:
        node = target.nodes[0]
        assert node.assessor
        files = [resource_item(store, r, node.uri()) for r in store.list_resources(*node.owner)]
        return (
            node.assessor.xsi_type,
            experiment_fields(node.assessor),
            [{"field": "out/file", "items": files}] if files else [],
        )
    raise HttpError(404, "The requested resource was not found.")


def _insert_date(target: Target) -> str:
    for obj in (target.experiment, target.subject, target.project):
        if obj is not None:
            return obj.insert_date
    return ""


def render_object(store: Store, target: Target, request: Request) -> Response:
    xsi_type, fields, children = describe(store, target)
    fmt = (request.param("format") or "xml").lower()
    if fmt == "json":
        plain, nested = _split_children(fields)
        if target.kind == "project" and target.project is not None:
            nested.append(protocols_json(store, target.project))
        item = _item(xsi_type, plain, children + nested, _insert_date(target))
        doc = {"items": [item]}
        return Response(200, json.dumps(doc).encode(), "application/json;charset=UTF-8")
    if fmt == "xml":
        extra = protocols_xml(store, target.project) if target.kind == "project" else ""
        body = _to_xml(xsi_type, fields, children, extra=extra)
        return Response(200, body.encode(), "text/xml;charset=UTF-8")
    raise HttpError(400, f"Unsupported format {fmt!r} for a single object: use json or xml")


ATTRIBUTES = {"ID", "project", "label", "type", "UID", "secondary_ID"}
# Single nested objects that XNAT's JSON gives as children, not as data fields.
CHILD_TYPES = {
    "demographics": "xnat:demographicData",
    "investigator": "xnat:investigatorData",
    "PI": "xnat:investigatorData",
}


def _split_children(fields: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Data fields, and the child objects among them: demographics, investigator, PI, and a
    scan's named parameters (``parameters/addParam[name=TR]/addField``), which JSON gives
    as ``parameters/addParam`` children and XML as elements (:func:`nested_xml`)."""
    params, fields = named_fields(fields, SCAN_PARAMETER)
    plain: dict[str, Any] = {}
    grouped: dict[str, dict[str, Any]] = {}
    for key, value in fields.items():
        head, sep, rest = key.partition("/")
        if sep and head in CHILD_TYPES and "/" not in rest:
            grouped.setdefault(head, {})[rest] = value
        else:
            plain[key] = value
    children = [
        {"field": head, "items": [_item(CHILD_TYPES[head], values)]}
        for head, values in grouped.items()
    ]
    if params:
        items = [_item("xnat:addField", {"name": k, "addField": v}) for k, v in params.items()]
        children.append({"field": "parameters/addParam", "items": items})
    return plain, children


# The study protocols a project's document lists (XNAT's names for them), beside those of
# any other datatype its sessions have or its definitions name.
PROTOCOL_NAMES = {
    "xnat:subjectData": "Subjects",
    "xnat:mrSessionData": "MR Sessions",
    "xnat:petSessionData": "PET Sessions",
    "xnat:ctSessionData": "CT Sessions",
}


@dataclass(frozen=True)
class Protocol:
    """One ``xnat:studyProtocol`` of a project: a datatype, XNAT's name for it, and the
    custom variables the project defines for it, by definition (group) ID."""

    id: str
    name: str
    data_type: str
    groups: dict[str, list[CustomVariable]]


def protocols(store: Store, project: Project) -> list[Protocol]:
    """The project's study protocols with its custom variable definitions, as XNAT's project
    document has them (pyxnat's ``add_custom_variables`` edits these; xnatpy's
    ``custom_variables`` reads them)."""
    variables = store.custom_variables(project.id)
    sessions = {e.xsi_type for e in store.list_experiments(project=project.id, sessions_only=True)}
    data_types = list(PROTOCOL_NAMES)
    data_types += sorted((sessions | {v.data_type for v in variables}) - set(PROTOCOL_NAMES))
    found = []
    for data_type in data_types:
        groups: dict[str, list[CustomVariable]] = {}
        for v in variables:
            if v.data_type == data_type:
                groups.setdefault(v.group_id, []).append(v)
        found.append(
            Protocol(
                f"{project.id}_{data_type.replace(':', '_')}",
                PROTOCOL_NAMES.get(data_type, data_type.split(":")[-1]),
                data_type,
                groups,
            )
        )
    return found


def _xml_path(v: CustomVariable) -> str:
    return f"{v.data_type}/{custom_field_path(v.name)}"


def protocols_xml(store: Store, project: Project | None) -> str:
    """The project's protocols as ``xnat:studyProtocol`` elements of its XML document."""
    if project is None:
        return ""
    out = []
    for protocol in protocols(store, project):
        definitions = "".join(
            f"<xnat:definition ID={quoteattr(group)} data-type={quoteattr(protocol.data_type)} "
            'description="" project-specific="1"><xnat:fields>'
            + "".join(
                f'<xnat:field name={quoteattr(v.name)} type="custom" '
                f'datatype={quoteattr(v.datatype)} required="{int(v.required)}" '
                f"xmlPath={quoteattr(_xml_path(v))}/>"
                for v in variables
            )
            + "</xnat:fields></xnat:definition>"
            for group, variables in protocol.groups.items()
        )
        inner = f"<xnat:definitions>{definitions}</xnat:definitions>" if definitions else ""
        out.append(
            f"<xnat:studyProtocol ID={quoteattr(protocol.id)} name={quoteattr(protocol.name)} "
            f"data-type={quoteattr(protocol.data_type)}>{inner}</xnat:studyProtocol>"
        )
    return "".join(out)


def protocols_json(store: Store, project: Project) -> dict[str, Any]:
    """The same protocols as the ``studyProtocol`` children of the project's JSON."""
    items = []
    for protocol in protocols(store, project):
        definitions = [
            _item(
                "xnat:fieldDefinitionGroup",
                {"ID": group, "data-type": protocol.data_type, "description": "",
                 "project-specific": True},
                [{"field": "fields/field", "items": [
                    _item("xnat:fieldDefinitionGroup_field",
                          {"name": v.name, "type": "custom", "datatype": v.datatype,
                           "required": v.required, "sequence": n, "xmlPath": _xml_path(v)})
                    for n, v in enumerate(variables)
                ]}],
            )
            for group, variables in protocol.groups.items()
        ]  # fmt: skip
        children = (
            [{"field": "definitions/definition", "items": definitions}] if definitions else []
        )
        items.append(
            _item(
                "xnat:datatypeProtocol",
                {"ID": protocol.id, "name": protocol.name, "data-type": protocol.data_type},
                children,
            )
        )
    return {"field": "studyProtocol", "items": items}


def _to_xml(
    xsi_type: str,
    fields: dict[str, Any],
    children: list[dict[str, Any]],
    element: str | None = None,
    *,
    extra: str = "",
) -> str:
    name = element or ROOT_ELEMENTS.get(xsi_type, "xnat:Item")
    attrs = " ".join(
        f"{k}={quoteattr(str(v))}" for k, v in fields.items() if k in ATTRIBUTES and v != ""
    )
    inner = []
    nested: dict[str, str] = {}
    # An element with attributes (``scanner`` and ``scanner/manufacturer``) is built in one
    # place, nested_xml, from its text and its attributes together.
    heads = {key.split("/", 1)[0] for key in fields if "/" in key}
    for key, value in fields.items():
        if key in ATTRIBUTES or key == "id" or value == "" or key.startswith("xnat_"):
            continue
        if "/" in key or "[" in key or key in heads:
            nested[key] = str(value)
            continue
        inner.append(f"<xnat:{key}>{_xml_text(value)}</xnat:{key}>")
    inner.append(nested_xml(nested))
    for child in children:
        field = child["field"]
        parts = field.split("/")
        items = "".join(_child_xml(parts[-1], item) for item in child["items"])
        if len(parts) == 2:
            inner.append(f"<xnat:{parts[0]}>{items}</xnat:{parts[0]}>")
        else:
            inner.append(items)
    inner.append(extra)
    head = f"<{name} {attrs} {NAMESPACES}" if element is None else f"<{name} {attrs}"
    # Children always name their type; the root does where its element name does not.
    named = element is None and xsi_type in ROOT_ELEMENTS
    xsi = "" if named else f' xsi:type="{xsi_type}"'
    doc = f"{head.rstrip()}{xsi}>{''.join(inner)}</{name}>"
    if element is None:
        return '<?xml version="1.0" encoding="UTF-8"?>\n' + doc
    return doc


def _child_xml(tag: str, item: dict[str, Any]) -> str:
    xsi_type = item["meta"]["xsi:type"]
    fields = item["data_fields"]
    if xsi_type.endswith("Data_field"):  # a custom field: its name, and its value as text
        name = quoteattr(str(fields["name"]))
        return f"<xnat:field name={name}>{_xml_text(fields['field'])}</xnat:field>"
    if xsi_type == "xnat:projectData_alias":  # a project's alias: its value as text
        return f"<xnat:alias>{_xml_text(fields['alias'])}</xnat:alias>"
    if xsi_type == "xnat:resourceCatalog":
        attrs = " ".join(
            f"{k}={quoteattr(str(fields[k]))}"
            for k in ("label", "URI", "format", "content", "file_count", "file_size")
            if fields.get(k, "") != ""
        )
        return f'<xnat:{tag} {attrs} xsi:type="xnat:resourceCatalog"/>'
    return _to_xml(xsi_type, fields, item["children"], element=f"xnat:{tag}")


def _xml_text(value: object) -> str:
    return escape(str(value))
