"""Where each remote file goes on disk: the ``xnat``, ``simplified`` and ``flat`` layouts.

``xnat`` (the default, CONTRACT §5) mirrors XNAT's hierarchy::

    {project}/{subject}/{session}/scans/{scan_id}-{scan_type}/resources/{resource}/files/{path}
    {project}/{subject}/{session}/resources/{resource}/files/{path}
    {project}/{subject}/{session}/assessors/{assessor}/resources/{resource}/files/{path}
    {project}/{subject}/{session}/reconstructions/{recon}/resources/{resource}/files/{path}
    {project}/resources/{resource}/files/{path}
    {project}/{subject}/resources/{resource}/files/{path}

``simplified`` drops the ``scans``, ``resources`` and ``files`` folders (seed 000's
"Simplify downloaded archive structure"): ``{session}/{scan_id}-{type}/{resource}/{path}``.
``flat`` puts every file of a session in one folder, named
``{scan_id}-{type}_{resource}_{path with / as _}``.  A project's or subject's own
resources go in its folder as a session's do (``{project}/resources/{resource}/files/…``,
``{project}/{subject}/resources/…``); a subject's need the subject level, so a plan with
them and without that level is refused before it is made (``api``).  With
``--metadata``, XNAT's documents go beside the data: ``project.xml``, ``subject.xml`` and
``session.xml`` in those folders, ``scan.xml``, ``assessor.xml`` and ``recon.xml`` in each
scan's, assessor's and reconstruction's folder (``{scan}_scan.xml`` in ``flat``).  The
project and subject levels can be switched off.  Every component is made safe; file
names are kept byte-for-byte when they are already safe (DICOM UID names are never
rewritten).

A path template (``--path-template``) replaces the named layouts: see
:func:`template_parts` and :func:`check_template`.
"""

from __future__ import annotations

import functools
import string
from dataclasses import dataclass, replace
from enum import StrEnum

from xnat_downloader.errors import UsageError
from xnat_downloader.plan.sanitize import safe_component, safe_relpath
from xnat_downloader.xnat.model import RemoteFile


class Layout(StrEnum):
    XNAT = "xnat"
    SIMPLIFIED = "simplified"
    FLAT = "flat"


@dataclass(frozen=True)
class LayoutOptions:
    """A named layout with its project and subject levels, or a path ``template`` (see
    :func:`template_parts`), which then decides every folder."""

    layout: Layout = Layout.XNAT
    include_project: bool = True
    include_subject: bool = True
    template: str = ""


# What a path template may name; each is a file's own value ("" where it has none).
TEMPLATE_FIELDS = {
    "project": "project ID",
    "subject": "subject label",
    "session": "session label",
    "session_id": "session ID",
    "category": "scan, session, assessor, recon, project or subject",
    "owner": "the scan ID, assessor label or reconstruction ID",
    "scan_id": "scan ID (scans only)",
    "scan_type": "scan type (scans only)",
    "resource": "resource label",
    "path": "the path inside the resource, its sub-folders kept",
    "name": "the file name alone",
}


@functools.lru_cache(maxsize=16)
def _folders(template: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """A checked template's folders, each with the names of its fields: parsed once per
    template, not once per file of the plan."""
    return tuple(
        (piece, tuple(name for _, name, _, _ in string.Formatter().parse(piece) if name))
        for piece in template.split("/")
    )


def check_template(template: str) -> None:
    """UsageError for a template that cannot place files: an absolute path, an empty,
    ``.`` or ``..`` folder, braces that do not parse, a field it does not know (or a
    conversion, or a format spec that does not apply), or neither ``{path}`` nor ``{name}``
    (every file of a folder would get one name)."""
    known = ", ".join("{" + name + "}" for name in TEMPLATE_FIELDS)
    said = f"--path-template {template!r}"
    if template.startswith("/"):
        raise UsageError(f"{said} starts at /: it is a path under the output directory")
    names: list[str] = []
    for piece in template.split("/"):
        if piece in ("", ".", ".."):
            raise UsageError(f"{said} has an empty, '.' or '..' folder")
        try:
            parsed = list(string.Formatter().parse(piece))
        except ValueError as exc:
            raise UsageError(f"{said} does not parse ({exc}); its fields: {known}") from None
        for _, name, _, conversion in parsed:
            if name is None:
                continue
            if name not in TEMPLATE_FIELDS:
                raise UsageError(f"{said} names no such field {{{name}}}; its fields: {known}")
            if conversion:
                raise UsageError(f"{said}: a field takes no conversion (!{conversion})")
            names.append(name)
        try:
            piece.format(**dict.fromkeys(TEMPLATE_FIELDS, "x"))
        except (ValueError, TypeError) as exc:
            raise UsageError(f"{said}: {exc}") from None
    if "path" not in names and "name" not in names:
        raise UsageError(f"{said} needs {{path}} or {{name}}, or every file would share a name")


def _template_values(f: RemoteFile) -> dict[str, str]:
    scan = f.category == "scan"
    return {
        "project": f.project,
        "subject": f.subject_label,
        "session": f.session_label,
        "session_id": f.session_id,
        "category": f.category,
        "owner": f.owner,
        "scan_id": f.owner if scan else "",
        "scan_type": f.owner_type if scan else "",
        "resource": f.resource,
        "path": f.path,
        "name": f.path.replace("\\", "/").rsplit("/", 1)[-1],
    }


def template_parts(template: str, f: RemoteFile) -> list[str]:
    """Where ``f`` goes under a checked template: each folder of the template filled with
    the file's values, each value made safe (``{path}`` keeps its sub-folders); a folder
    whose every field is empty for this file (``{scan_id}-{scan_type}`` of a session
    resource) is left out for it."""
    values = _template_values(f)
    parts: list[str] = []
    for piece, fields in _folders(template):
        if fields and not any(values[name] for name in fields):
            continue
        filled = {
            name: "/".join(safe_relpath(values[name])) if name == "path"
            else safe_component(values[name]) if values[name] else ""
            for name in fields
        }  # fmt: skip
        parts += [safe_component(p) for p in piece.format(**filled).split("/") if p]
    return parts or [safe_component(values["name"])]


def check_layout(
    opts: LayoutOptions, *, subject_resources: bool = False, metadata: bool = False,
    catalog: bool = False,
) -> None:  # fmt: skip
    """UsageError when the layout cannot hold what is asked for: a subject's own resources
    without subject folders; with a path template, XNAT's documents (which go beside the
    data in the named layouts) or a catalog (which names its own folders)."""
    if opts.template:
        check_template(opts.template)
        for asked, flag, why in (
            (metadata, "--metadata", "places its documents in the named layouts' folders"),
            (catalog, "--catalog", "names the folders its files go in"),
        ):
            if asked:
                raise UsageError(f"{flag} {why}: leave out --path-template, or {flag}")
    elif subject_resources and not opts.include_subject:
        raise UsageError(
            "subjects' own resources go in the subject folders: leave out "
            "--no-include-subject, or --subject-resources"
        )


def _owner_folder(f: RemoteFile) -> list[str]:
    if f.category == "scan":
        name = f"{f.owner}-{f.owner_type}" if f.owner_type else f.owner
        return ["scans", safe_component(name)]
    if f.category == "assessor":
        return ["assessors", safe_component(f.owner)]
    if f.category == "recon":
        return ["reconstructions", safe_component(f.owner)]
    return []


def _metadata_parts(f: RemoteFile, opts: LayoutOptions) -> list[str]:
    """Where a project, subject, session or scan document goes: beside the data it describes,
    in the highest folder of that level the layout has (``project.xml`` in the project
    folder, or in the subject or session folder when the layout has no project level)."""
    project = [safe_component(f.project)] if opts.include_project else []
    subject = [safe_component(f.subject_label)] if opts.include_subject else []
    session = [*project, *subject, safe_component(f.session_label)]
    name = safe_component(f.path)
    if f.resource == "project":
        return [*(project or subject or session[-1:]), name]
    if f.resource == "subject":
        return [*project, *(subject or session[-1:]), name]
    if f.resource == "session":
        return [*session, name]
    # A scan's, an assessor's or a reconstruction's: in its folder, as its files are.
    owner = _owner_folder(replace(f, category=f.resource))
    if opts.layout == Layout.XNAT:
        return [*session, *owner, name]
    if opts.layout == Layout.SIMPLIFIED:
        return [*session, *owner[1:], name]
    return [*session, safe_component(f"{owner[-1]}_{f.path}")]


def local_parts(f: RemoteFile, opts: LayoutOptions) -> list[str]:
    """The local relative path of ``f``, as safe components."""
    if f.category == "metadata":
        return _metadata_parts(f, opts)
    if f.category == "catalog":
        # A download catalog names each resource's folder itself; keep it.
        return (
            [*safe_relpath(f.folder), *safe_relpath(f.path)] if f.folder else safe_relpath(f.path)
        )
    if opts.template:
        return template_parts(opts.template, f)
    head: list[str] = []
    if opts.include_project:
        head.append(safe_component(f.project))
    if f.category == "subject":
        head.append(safe_component(f.subject_label))  # its own level (see the docstring)
    elif f.category != "project":
        if opts.include_subject:
            head.append(safe_component(f.subject_label))
        head.append(safe_component(f.session_label))
    owner = _owner_folder(f)
    resource = safe_component(f.resource)
    rel = safe_relpath(f.path)
    if opts.layout == Layout.XNAT:
        return [*head, *owner, "resources", resource, "files", *rel]
    if opts.layout == Layout.SIMPLIFIED:
        return [*head, *owner[1:], resource, *rel]
    prefix = "_".join([*owner[1:], resource])
    return [*head, safe_component(f"{prefix}_{'_'.join(rel)}")]
