"""A session's assessors and reconstructions: what a server lists of them (the walk
selects them with :func:`list_derived`), an assessor's document made fit for another
project, and the calls that make them there (``copy``, ``upload``).  Their files are not
here: they are listed and travel as resources (``…/out``)."""

from __future__ import annotations

import contextlib
import io
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from xnat_downloader.errors import NotFound, ServerError
from xnat_downloader.http.client import XnatClient
from xnat_downloader.xnat import paths
from xnat_downloader.xnat.parse import result_rows
from xnat_downloader.xnat.selection import Selection, owner_matches

XNAT_NS = "http://nrg.wustl.edu/xnat"
# Children of an assessor's document that describe it on its own server: the IDs of its
# subject and session there (the target takes them from the URL the document is sent to),
# its files (sent as resources, to be verified) and the projects it is shared into.
SERVER_CHILDREN = frozenset(
    f"{{{XNAT_NS}}}{name}"
    for name in ("subject_ID", "imageSession_ID", "out", "in", "resources", "sharing")
)
RECON_TYPE = "xnat:reconstructedImageData"
# A collection of a session (its URL's part) → the plan's category of its files, and back.
CATEGORY_OF = {"assessors": "assessor", "reconstructions": "recon"}
COLLECTION_OF = {category: collection for collection, category in CATEGORY_OF.items()}


@dataclass(frozen=True)
class Derived:
    """An assessor or reconstruction of a source session.  ``name`` is what it is called on
    the target and in the download layout (an assessor's label, a reconstruction's ID);
    ``fields``: a reconstruction's type and base scan type."""

    collection: str  # "assessors" or "reconstructions"
    source_id: str
    name: str
    xsi_type: str
    fields: dict[str, str] = field(default_factory=dict)

    @property
    def category(self) -> str:
        """The plan's category of its files."""
        return CATEGORY_OF[self.collection]


async def list_derived(
    xs: XnatClient, session_id: str, collection: str, sel: Selection
) -> list[Derived]:
    """The ``collection`` (assessors or reconstructions) of session ``session_id`` that
    ``sel``'s patterns select, from one listing (a 404 for it: none, as for a files listing
    of nothing)."""
    try:
        listing = await xs.get_json(
            f"{paths.experiment(session_id)}/{collection}",
            what=f"the {collection} of {session_id}",
        )
    except NotFound:
        return []
    found: list[Derived] = []
    for r in result_rows(listing, collection):
        if collection == "assessors":
            aid, xsi = r.get("ID", ""), r.get("xsiType", "")
            label = r.get("label") or aid
            if aid and owner_matches((aid, label, xsi), sel.assessor_patterns):
                found.append(Derived("assessors", aid, label, xsi))
        else:
            rid, kind = r.get("ID", ""), r.get("type", "")
            if rid and owner_matches((rid, kind), sel.recon_patterns):
                kept = {k: r[k] for k in ("type", "baseScanType") if r.get(k)}
                found.append(Derived("reconstructions", rid, rid, RECON_TYPE, kept))
    return found


def assessor_document(body: bytes, project: str) -> bytes:
    """The source's assessor document as the target is sent it (pure): its fields kept,
    with the target's ``project`` (wherever it named the source's), and without what names
    the source's objects (its ``ID``, which the target gives, its subject's and session's
    IDs, its files, its sharing).  ServerError if it is not XML."""
    try:
        # Its prefixes are kept (an xsi:type value names a type by its prefix).
        for _, (prefix, uri) in ET.iterparse(io.BytesIO(body), events=("start-ns",)):
            if prefix:
                with contextlib.suppress(ValueError):  # ns0, ns1, …: ElementTree's own
                    ET.register_namespace(prefix, uri)
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise ServerError(f"the assessor's document does not parse: {exc}") from exc
    root.attrib.pop("ID", None)
    source = root.get("project")
    for element in root.iter():  # nested ones too (a QC assessment's scans name it)
        if element is root or (source and element.get("project") == source):
            element.set("project", project)
    for child in list(root):
        if child.tag in SERVER_CHILDREN:
            root.remove(child)
    return bytes(ET.tostring(root, encoding="utf-8", xml_declaration=True))


def recon_fields(body: bytes) -> dict[str, str]:
    """A reconstruction's type and base scan type from its document (pure), as its PUT
    takes them.  ServerError if it is not XML."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise ServerError(f"the reconstruction's document does not parse: {exc}") from exc
    found = {"type": root.get("type", "")}
    base = root.find(f"{{{XNAT_NS}}}baseScanType")
    if base is not None and base.text:
        found["baseScanType"] = base.text.strip()
    return {k: v for k, v in found.items() if v}


async def put_assessor(
    xs: XnatClient, session_uri: str, label: str, document: bytes, project: str
) -> None:
    """Make (or update) assessor ``label`` of a session (``session_uri``, by label) from a
    document of it, made fit by :func:`assessor_document`.  The same PUT again changes
    nothing, so a re-run may send it again."""
    body = assessor_document(document, project)
    await xs.send(
        "PUT",
        paths.derived(session_uri, "assessors", label),
        params={"inbody": "true"},
        headers={"Content-Type": "text/xml"},
        body=lambda: body,
        what=f"assessor {label}",
    )


async def put_recon(xs: XnatClient, session_uri: str, recon: str, fields: dict[str, str]) -> None:
    """Make (or update) reconstruction ``recon`` of a session with ``fields`` (its type and
    base scan type)."""
    await xs.send(
        "PUT",
        paths.derived(session_uri, "reconstructions", recon),
        params={"xsiType": RECON_TYPE, **fields},
        what=f"reconstruction {recon}",
    )


async def make_derived(
    source: XnatClient, target: XnatClient, item: Derived, session_uri: str, project: str
) -> None:
    """Make ``item`` under the target's session ``session_uri`` (by label) of ``project``,
    or update it there: an assessor from its source document, a reconstruction from its
    type."""
    if item.collection == "reconstructions":
        await put_recon(target, session_uri, item.name, item.fields)
        return
    what = f"the document of assessor {item.name}"
    body = await source.get_bytes(
        paths.experiment(item.source_id), params={"format": "xml"}, what=what
    )
    await put_assessor(target, session_uri, item.name, body, project)
