"""Where a study sent over DICOM ended up on an XNAT, and what its scans hold.

An XNAT receiver builds a study into a session after a quiet period, in the prearchive
(found by its ``tag``, the Study Instance UID) or directly in the archive (found by the
session's ``UID``).  These functions find it and list its files per scan.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from xnat_downloader.http.client import XnatClient
from xnat_downloader.xnat.parse import result_rows


@dataclass(frozen=True)
class Arrived:
    """A built session: ``uri`` under ``/data``; ``prearchive`` tells which side, and
    ``status`` a prearchive entry's (``READY``, ``CONFLICT``)."""

    uri: str
    prearchive: bool
    label: str
    status: str = ""


async def find_study(xs: XnatClient, study_uid: str, project: str = "") -> list[Arrived]:
    """Every session built from ``study_uid``: archived ones first, then prearchive
    entries that are built (READY, or CONFLICT: a session of their label is archived
    already), newest first.  Empty while there is none.  One study may be in several: sent
    again after it was built, its instances make another prearchive entry."""
    where = (
        f"/data/projects/{quote(project, safe='')}/experiments" if project else "/data/experiments"
    )
    listing = await xs.get_json(
        where, params={"columns": "ID,label,project,UID"}, what="the sessions"
    )
    found = [
        Arrived(f"/data/experiments/{quote(row['ID'], safe='')}", False, row["label"])
        for row in result_rows(listing, "the sessions")
        if row.get("UID", "").strip() == study_uid
    ]
    pre = "/data/prearchive/projects" + (f"/{quote(project, safe='')}" if project else "")
    listing = await xs.get_json(pre, what="the prearchive")
    entries = [
        row
        for row in result_rows(listing, "the prearchive")
        if row.get("tag", "").strip() == study_uid and row.get("status") in ("READY", "CONFLICT")
    ]
    for row in sorted(entries, key=lambda r: r.get("timestamp", ""), reverse=True):
        parts = (row.get("project", ""), row.get("timestamp", ""), row.get("folderName", ""))
        uri = "/data/prearchive/projects/" + "/".join(quote(p, safe="") for p in parts)
        found.append(Arrived(uri, True, row.get("name", ""), row.get("status", "")))
    return found


async def file_names(xs: XnatClient, arrived: Arrived) -> dict[str, list[str]] | None:
    """Scan ID -> the names of its DICOM files, for an archived session; for a prearchive
    session (whose files XNAT does not list) None."""
    if arrived.prearchive:
        return None
    listing = await xs.get_json(
        f"{arrived.uri}/scans/ALL/resources/DICOM/files", what="the session's DICOM files"
    )
    found: dict[str, list[str]] = {}
    for row in result_rows(listing, "the session's DICOM files"):
        parts = row.get("URI", "").split("/")
        scan = parts[parts.index("scans") + 1] if "scans" in parts else ""
        found.setdefault(scan, []).append(row.get("Name", ""))
    return found


async def prearchive_counts(xs: XnatClient, arrived: Arrived) -> dict[str, int]:
    """Scan ID -> number of files, from a prearchive session's scan listing."""
    listing = await xs.get_json(f"{arrived.uri}/scans", what="the prearchive session's scans")
    counts: dict[str, int] = {}
    for row in result_rows(listing, "the prearchive session's scans"):
        text = row.get("files", "") or row.get("file_count", "")
        if text.isdigit():
            counts[row.get("ID", "")] = int(text)
    return counts
