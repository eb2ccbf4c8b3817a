"""The plan: every selected remote file with its local path, decided before any transfer.

Two different remote files never share a local path.  Collisions (including ones only a
case-insensitive file system would see, and a file whose path is another's folder) are found
here, before anything is written, and resolved by a suffix derived from the remote URI, so
the outcome is the same on every run and nothing is silently overwritten.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import quoteattr

from xnat_downloader.errors import UsageError
from xnat_downloader.plan.layout import LayoutOptions, local_parts
from xnat_downloader.xnat.model import RemoteFile, as_dict

MANIFEST_VERSION = 1


@dataclass(frozen=True)
class PlanEntry:
    file: RemoteFile
    local: str  # POSIX relative path under the output directory


@dataclass
class Plan:
    entries: list[PlanEntry]
    renamed: list[tuple[str, str]] = field(default_factory=list)  # (uri, new local path)
    # (what, why) of each thing the selection named that no file could stand for: kept in
    # a saved manifest, so that the runs made from it still count it as failed.
    unplanned: list[tuple[str, str]] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(e.file.size or 0 for e in self.entries)


def _disambiguate(parts: list[str], uri: str) -> list[str]:
    tag = hashlib.sha1(uri.encode()).hexdigest()[:8]
    name = parts[-1]
    match = re.fullmatch(r"(.+?)(\.(?:nii\.gz|tar\.gz|[A-Za-z][A-Za-z0-9]{0,5}))", name)
    name = f"{match.group(1)}~{tag}{match.group(2)}" if match else f"{name}~{tag}"
    return [*parts[:-1], name]


def build_plan(files: list[RemoteFile], opts: LayoutOptions) -> Plan:
    """Map every file to a unique local path.  Duplicate remote URIs are fetched once."""
    seen_uris: set[str] = set()
    unique = []
    for f in files:
        if f.uri not in seen_uris:
            seen_uris.add(f.uri)
            unique.append(f)
    proposed = [(f, local_parts(f, opts)) for f in sorted(unique, key=lambda f: f.uri)]
    by_key: dict[str, list[int]] = {}
    for index, (_, parts) in enumerate(proposed):
        by_key.setdefault("/".join(parts).casefold(), []).append(index)
    folders = {
        "/".join(parts[:i]).casefold() for _, parts in proposed for i in range(1, len(parts))
    }
    plan = Plan([])
    for f, parts in proposed:
        key = "/".join(parts).casefold()
        if len(by_key[key]) > 1 or key in folders:
            parts = _disambiguate(parts, f.uri)
            plan.renamed.append((f.uri, "/".join(parts)))
        plan.entries.append(PlanEntry(f, "/".join(parts)))
    final = [e.local.casefold() for e in plan.entries]
    if len(set(final)) != len(final):  # a suffix collided too: refuse rather than guess
        raise UsageError(
            "two remote files still map to one local path after renaming; choose another --layout"
        )
    return plan


def manifest_json(plan: Plan, server: str) -> str:
    """The plan as JSON, one file to a line: readable and diffable, and written by the C
    encoder (an indented document goes through the pure-Python one, 4 times slower)."""
    meta: dict[str, object] = {"version": MANIFEST_VERSION, "server": server}
    if plan.unplanned:
        meta["unplanned"] = [list(item) for item in plan.unplanned]
    head = json.dumps(meta)[:-1]  # open: no "}"
    files = ",\n".join(json.dumps({**as_dict(e.file), "local": e.local}) for e in plan.entries)
    return f'{head}, "files": [\n{files}\n]}}\n' if files else f'{head}, "files": []}}\n'


def load_manifest(path: Path) -> tuple[str, Plan]:
    """A saved JSON manifest back into (server, plan); validates every entry's local path."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("version") != MANIFEST_VERSION:
            raise ValueError(f"unsupported manifest version {doc.get('version')!r}")
        entries = []
        for item in doc["files"]:
            local = item.pop("local")
            if local.startswith("/") or ".." in local.split("/") or "\\" in local:
                raise ValueError(f"unsafe local path {local!r}")
            entries.append(PlanEntry(RemoteFile(**item), local))
        unplanned = []
        for item in doc.get("unplanned", []):
            if not (isinstance(item, list) and len(item) == 2 and all(isinstance(x, str)
                                                                    for x in item)):  # fmt: skip
                raise ValueError(f"unplanned entry {item!r} is not [what, why]")
            unplanned.append((item[0], item[1]))
        return str(doc.get("server", "")), Plan(entries, unplanned=unplanned)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        msg = f"cannot use manifest {path}: {exc}"
        raise UsageError(msg) from exc


def manifest_catalog(plan: Plan, server: str) -> str:
    """The plan as an XNAT ``cat:Catalog`` (seed 000's XML-catalog download method)."""
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<cat:Catalog xmlns:cat="http://nrg.wustl.edu/catalog">',
        "\t<cat:entries>",
    ]
    for e in plan.entries:
        attrs = {
            "URI": server + e.file.uri,
            "ID": e.file.path,
            "name": e.file.path.rsplit("/", 1)[-1],
            "cachePath": e.local,
        }
        if e.file.md5:
            attrs["digest"] = e.file.md5
        text = " ".join(f"{k}={quoteattr(v)}" for k, v in sorted(attrs.items()))
        meta = (
            f'<cat:metaFields><cat:metaField name="SIZE">{e.file.size}</cat:metaField>'
            "</cat:metaFields>"
            if e.file.size is not None
            else ""
        )
        lines.append(f"\t\t<cat:entry {text}>{meta}</cat:entry>")
    lines += ["\t</cat:entries>", "</cat:Catalog>", ""]
    return "\n".join(lines)
