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
``session.xml`` in those folders, ``scan.xml`` in each scan's folder (``{scan}_scan.xml``
in ``flat``).  The project and subject levels can be switched off.  Every component is
made safe; file names are kept byte-for-byte when they are already safe (DICOM UID names
are never rewritten).
"""

from __future__ import annotations

from dataclasses import dataclass
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
    layout: Layout = Layout.XNAT
    include_project: bool = True
    include_subject: bool = True


def check_levels(opts: LayoutOptions, subject_resources: bool) -> None:
    """UsageError when a subject's own resources would have no folder to go in."""
    if subject_resources and not opts.include_subject:
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
    scan = safe_component(f"{f.owner}-{f.owner_type}" if f.owner_type else f.owner)
    if opts.layout == Layout.XNAT:
        return [*session, "scans", scan, name]
    if opts.layout == Layout.SIMPLIFIED:
        return [*session, scan, name]
    return [*session, safe_component(f"{scan}_{f.path}")]


def local_parts(f: RemoteFile, opts: LayoutOptions) -> list[str]:
    """The local relative path of ``f``, as safe components."""
    if f.category == "metadata":
        return _metadata_parts(f, opts)
    if f.category == "catalog":
        # A download catalog names each resource's folder itself; keep it.
        return (
            [*safe_relpath(f.folder), *safe_relpath(f.path)] if f.folder else safe_relpath(f.path)
        )
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
