"""``GET /data/services/dicomdump?src=…``: the DICOM header of a session's or a scan's
first DICOM file, one row per element (xnatpy's ``services.dicom_dump``).

``src`` names an archived session or scan (``/archive/projects/{P}/experiments/{E}``,
``…/scans/{S}``, with or without ``/data``) or a prearchive one
(``/prearchive/projects/{P}/{timestamp}/{folder}[/scans/{S}]``).  Each row has ``tag1``
(``(0010,0010)``), ``tag2`` (the element inside a sequence item, else empty), ``vr``,
``value`` and ``desc``; ``field`` parameters (a keyword such as ``PatientName`` or a tag as
``00100010``) keep only those elements.  Pixel data is never read.
"""

from __future__ import annotations

from pathlib import Path

import pydicom
from pydicom.dataelem import DataElement

from minixnat.http.access import Access
from minixnat.http.messages import HttpError
from minixnat.rest.resolve import resolve, uri_segments
from minixnat.rest.tables import Table
from minixnat.store import Store

COLUMNS = ["tag1", "tag2", "vr", "value", "desc"]
BINARY_VRS = {"OB", "OW", "OF", "OD", "OL", "OV", "UN"}


def source_parts(src: str) -> tuple[str, list[str]]:
    """``("archive" | "prearchive", the path's segments after that)``; 400 for anything else."""
    parts = uri_segments(src)
    if parts[:1] == ["prearchive"]:
        return "prearchive", parts[1:]
    if parts[:1] in (["projects"], ["experiments"]):
        return "archive", parts
    raise HttpError(
        400,
        "src must name a session or scan: /archive/projects/{P}/experiments/{E}[/scans/{S}] "
        f"or /prearchive/projects/{{P}}/{{timestamp}}/{{folder}}[/scans/{{S}}], not {src!r}.",
    )


def archive_files(store: Store, access: Access, parts: list[str]) -> list[Path]:
    """The DICOM files of the archived session or scan ``parts`` names, in path order."""
    target = resolve(store, access, parts)
    if target.kind == "experiment" and target.experiment is not None:
        owners = [("scan", str(s.pk)) for s in store.list_scans(target.experiment.id)]
    elif target.kind == "scan" and target.nodes:
        owners = [n.owner for n in target.nodes]
    else:
        raise HttpError(400, "src must name a session or a scan.")
    found: list[Path] = []
    for owner in owners:
        for res in store.list_resources(*owner):
            if res.label.upper() == "DICOM" or res.format.upper() == "DICOM":
                found += [Path(store.file_location(res, f.path)) for f in store.list_files(res.pk)]
    return found


def dump(files: list[Path], wanted: list[str]) -> Table:
    """The header of the first of ``files`` that reads as DICOM, as rows."""
    keep = {w.strip().upper().replace(",", "").strip("()") for w in wanted if w.strip()}
    for path in files:
        try:
            dataset = pydicom.dcmread(path, stop_before_pixels=True)
            if not len(dataset):  # a file meta header and nothing after it: not a header
                continue
            rows = [row for element in dataset for row in _rows(element, keep)]
        except Exception:
            # A stored file is whatever was uploaded (not DICOM, unreadable, cut short), and
            # pydicom raises many kinds of error on malformed data: it is passed over.
            continue
        return Table(COLUMNS, rows)
    raise HttpError(404, "No DICOM file that can be read was found there.")


def _rows(element: DataElement, keep: set[str], parent: str = "") -> list[dict[str, str]]:
    tag = f"({element.tag.group:04X},{element.tag.element:04X})"
    named = {f"{element.tag.group:04X}{element.tag.element:04X}", element.keyword.upper()}
    chosen = not keep or bool(named & keep)
    rows = []
    if chosen:
        rows.append(
            {
                "tag1": parent or tag,
                "tag2": tag if parent else "",
                "vr": str(element.VR),
                "value": "" if element.VR == "SQ" else _text(element),
                "desc": element.name,
            }
        )
    if element.VR == "SQ" and not parent:
        for item in element.value or []:
            for inner in item:
                rows += _rows(inner, set() if chosen else keep, tag)
    return rows


def _text(element: DataElement) -> str:
    if element.VR in BINARY_VRS or isinstance(element.value, bytes):
        return "" if element.value is None else f"<{len(element.value)} bytes>"
    if element.VM > 1:
        return "\\".join(str(v) for v in element.value)
    return "" if element.value is None else str(element.value)
