"""XNAT services: the import service and the digest listings that prove what a server
holds (for uploads), and the workflow service (what processing did to each session)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from xnat_downloader.errors import LoginPageError, NotFound, ServerError
from xnat_downloader.http.client import XnatClient, looks_like_html
from xnat_downloader.xnat import paths
from xnat_downloader.xnat.model import WorkflowState
from xnat_downloader.xnat.parse import parse_uri_list, result_rows


async def import_archive(
    xs: XnatClient,
    body: Callable[[], AsyncIterator[bytes]],
    content_type: str,
    params: dict[str, str],
    what: str,
    length: int | None = None,
) -> list[str]:
    """POST one archive to the import service; the URIs it created.  ``length``: the body's
    size when known (sent as Content-Length; otherwise the body goes chunked)."""
    headers = {"Content-Type": content_type}
    if length is not None:
        headers["Content-Length"] = str(length)
    _status, answer = await xs.send(
        "POST",
        paths.IMPORT_SERVICE,
        params=params,
        headers=headers,
        body=body,
        what=what,
        idempotent=False,
    )
    uris = parse_uri_list(answer)
    if not uris and looks_like_html(answer):
        msg = (
            f"the import of {what} was answered with an HTML page (a login or error page), "
            "not the URI of a session: check the server URL and that your session is valid"
        )
        raise LoginPageError(msg)
    if not uris:
        text = answer[:200].decode("utf-8", "replace").strip()
        raise ServerError(f"the import of {what} answered without the URI of a session: {text!r}")
    return uris


async def remote_digests(xs: XnatClient, files_path: str) -> dict[str, tuple[int, str]]:
    """{path in resource: (size, md5)} from one resource's ``…/files`` listing; empty if
    none exist."""
    return dict(await _listed(xs, files_path))


async def remote_digests_if_listed(
    xs: XnatClient, files_path: str
) -> dict[str, tuple[int, str]] | None:
    """:func:`remote_digests`, or None when the server answers that the listing is not
    there (404: gone, or hidden from this visitor)."""
    try:
        listing = await xs.get_json(files_path, what=files_path)
    except NotFound:
        return None
    return dict(_rows(listing, files_path))


async def remote_digest_list(xs: XnatClient, files_path: str) -> list[tuple[int, str]]:
    """(size, md5) of every file a ``…/files`` listing names, across resources (where two
    files may share a path)."""
    return [digest for _, digest in await _listed(xs, files_path)]


async def _listed(xs: XnatClient, files_path: str) -> list[tuple[str, tuple[int, str]]]:
    try:
        listing = await xs.get_json(files_path, what=files_path)
    except NotFound:
        return []
    return _rows(listing, files_path)


def _rows(listing: object, files_path: str) -> list[tuple[str, tuple[int, str]]]:
    """(path in resource, (size, md5)) of each row of a ``…/files`` listing."""
    found: list[tuple[str, tuple[int, str]]] = []
    for row in result_rows(listing, files_path):
        uri = str(row.get("URI", ""))
        _, sep, rel = uri.partition("/files/")
        rel = rel if sep else str(row.get("Name", ""))
        try:
            size = int(row.get("Size") or 0)
        except ValueError:
            size = 0
        found.append((rel, (size, str(row.get("digest") or "").lower())))
    return found


async def ensure_subject(xs: XnatClient, project: str, label: str) -> None:
    """Make ``project``'s subject ``label`` unless it is there (a subject already there is
    not touched: a PUT would be an update)."""
    try:
        await xs.get_json(paths.owner(project, label), what=f"subject {label} of {project}")
    except NotFound:
        await xs.send("PUT", paths.owner(project, label), what=f"subject {label} of {project}")


async def find_session(xs: XnatClient, project: str, label: str) -> str | None:
    """The URI of ``project``'s session ``label``, if the server has one."""
    path = paths.project_experiments(project)
    listing = await xs.get_json(path, params={"label": label}, what=f"the sessions of {project}")
    for row in result_rows(listing, f"the sessions of {project}"):
        if row.get("label") == label:
            return row.get("URI") or paths.owner(project, session=label)
    return None


async def sessions_by_study(xs: XnatClient, project: str) -> dict[str, list[tuple[str, str]]]:
    """{study instance UID: [(label, URI)]} of ``project``'s sessions, in one listing: how
    an archive imported without a label (the importer named it from its DICOM) is found."""
    path = paths.project_experiments(project)
    listing = await xs.get_json(
        path, params={"columns": "ID,label,UID"}, what=f"the sessions of {project}"
    )
    found: dict[str, list[tuple[str, str]]] = {}
    for row in result_rows(listing, f"the sessions of {project}"):
        if row.get("UID") and row.get("label"):
            uri = row.get("URI") or paths.experiment(row.get("ID", ""))
            found.setdefault(str(row["UID"]), []).append((row["label"], uri))
    return found


async def set_scan_fields(
    xs: XnatClient, session_uri: str, wanted: dict[str, dict[str, str]]
) -> None:
    """Give a session's scans the fields ``wanted`` names (scan ID → {``type``,
    ``quality`` or ``note``: value}, as the scan listing's columns name them), each scan in
    one PUT of the fields that differ; none for a scan already so (a re-run asks only for
    the listing)."""
    listing = await xs.get_json(f"{session_uri}/scans", what=f"{session_uri}/scans")
    current = {r.get("ID", ""): r for r in result_rows(listing, "scans")}
    for scan_id, fields in wanted.items():
        row = current.get(scan_id)
        changed = {k: v for k, v in fields.items() if row is not None and row.get(k, "") != v}
        if changed:
            await xs.send(
                "PUT",
                paths.scan_of(session_uri, scan_id),
                params=changed,
                what=f"the {' and '.join(sorted(changed))} of scan {scan_id}",
            )


async def prearchive_rows(xs: XnatClient, project: str | None) -> list[dict[str, str]]:
    """The prearchive listing (of ``project`` only, if given), a row per session."""
    listing = await xs.get_json(paths.prearchive(project), what="the prearchive")
    return result_rows(listing, "the prearchive")


async def latest_workflows(xs: XnatClient, project: str) -> dict[str, WorkflowState] | None:
    """The newest workflow record of each of ``project``'s experiments, by experiment ID,
    in one request; None when the server cannot answer that (XNAT's project-wide workflow
    query is broken on some versions: ask per experiment with :func:`latest_workflow`)."""
    what = f"the workflows of {project}"
    try:
        listing = await xs.get_json(paths.ALL_WORKFLOWS, params={"project": project}, what=what)
    except NotFound:
        return None
    found: dict[str, WorkflowState] = {}
    for row in result_rows(listing, what):
        eid = row.get("ID") or row.get("id") or ""
        if eid and eid not in found:
            found[eid] = _workflow_state(row)
    return found


async def latest_workflow(xs: XnatClient, experiment: str) -> WorkflowState | None:
    """The newest workflow record of one experiment (a query every XNAT answers); None when
    it has none (XNAT then answers 404)."""
    what = f"the workflows of {experiment}"
    try:
        doc = await xs.get_json(
            paths.ALL_WORKFLOWS, params={"experiment": experiment, "display": "LATEST"}, what=what
        )
    except NotFound:
        return None
    try:
        fields = doc["items"][0]["data_fields"]
    except (KeyError, IndexError, TypeError) as exc:
        msg = f"the server's answer for {what} is not an XNAT item document"
        raise ServerError(msg) from exc
    return _workflow_state({k: str(v) for k, v in fields.items()})


def _workflow_state(fields: dict[str, str]) -> WorkflowState:
    return WorkflowState(
        pipeline=fields.get("pipeline_name", "").rsplit("/", 1)[-1].removesuffix(".xml"),
        status=fields.get("status", ""),
        step=fields.get("step_description", ""),
        launched=fields.get("launch_time", ""),
    )
