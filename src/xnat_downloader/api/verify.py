"""The Python API for checking a download later: :func:`verify`.

Every file a download recorded as verified in ``DIR/.xnat-downloader/`` is hashed again and
compared with the MD5 recorded then; files the last plan names but no run verified are
missing; files under ``DIR`` that no download put there are extra.  With a server, each
recorded file is also looked up in its resource's listing: gone from the server, or
changed there.  Nothing is written, except an ``md5sum -c`` list when asked.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from xnat_downloader import aio
from xnat_downloader.api.connection import Connection
from xnat_downloader.errors import UsageError
from xnat_downloader.plan.plan import load_manifest
from xnat_downloader.transfer import workdir
from xnat_downloader.transfer.download import PART_SUFFIX
from xnat_downloader.transfer.localfs import write_whole
from xnat_downloader.transfer.state import Record, read_verified
from xnat_downloader.transfer.upload import md5_file
from xnat_downloader.xnat import paths
from xnat_downloader.xnat.services import remote_digests_if_listed


@dataclass
class VerifyReport:
    files: int = 0
    ok: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)  # no longer on the server
    changed_on_server: list[str] = field(default_factory=list)
    server: str = ""
    digests: dict[str, str] = field(default_factory=dict)  # local → md5 found on disk

    @property
    def clean(self) -> bool:
        return not (self.missing or self.changed or self.gone or self.changed_on_server)

    def line(self) -> str:
        return (
            f"verify: {self.files} files, {len(self.ok)} ok, {len(self.missing)} missing, "
            f"{len(self.changed) + len(self.changed_on_server)} changed, {len(self.extra)} "
            f"extra, {len(self.gone)} gone from server"
        )


def recorded(outdir: Path) -> tuple[str, list[Record]]:
    """(server, files) the downloads into ``outdir`` recorded, its shards' included: every
    verified file, and the last plans' files that no run verified (their MD5 as planned).
    A Slurm array's saved plan counts as the plan of its shards."""
    folders = [workdir.state_folder(outdir), *workdir.shard_folders(outdir)]
    states = [f.database for f in folders if f.database.exists()]
    manifests = [f.manifest_json for f in folders if f.manifest_json.exists()]
    array_plan = workdir.slurm(outdir) / "manifest.json"
    if array_plan.exists():
        manifests.append(array_plan)
    if not states and not manifests:
        msg = f"{outdir} holds no download (no {workdir.ROOT}/state.sqlite): nothing to verify"
        raise UsageError(msg)
    found: dict[str, Record] = {}
    server = ""
    for manifest in manifests:
        planned_on, plan = load_manifest(manifest)
        server = server or planned_on
        for e in plan.entries:
            found[e.local] = Record(e.local, e.file.uri, e.file.size, e.file.md5, "planned")
    for state in states:
        found.update((row.local, row) for row in read_verified(state))
    return server, sorted(found.values(), key=lambda r: r.local)


def check_local(outdir: Path, files: list[Record], report: VerifyReport) -> None:
    for item in files:
        path = outdir / item.local
        if not path.is_file():
            report.missing.append(item.local)
            continue
        digest = md5_file(path)
        report.digests[item.local] = digest
        size_ok = item.size is None or path.stat().st_size == item.size
        if size_ok and (not item.md5 or digest == item.md5.lower()):
            report.ok.append(item.local)
        else:
            report.changed.append(item.local)
    known = {f.local for f in files}
    for dirpath, dirnames, names in os.walk(outdir):
        dirnames[:] = [d for d in dirnames if d != workdir.ROOT]
        for name in names:
            rel = (Path(dirpath) / name).relative_to(outdir).as_posix()
            if rel not in known and not name.endswith(PART_SUFFIX):
                report.extra.append(rel)
    report.extra.sort()


async def check_server(conn: Connection, files: list[Record], report: VerifyReport) -> None:
    by_listing: dict[str, list[tuple[Record, str]]] = {}
    for item in files:
        found = paths.files_listing_of(item.uri)
        if found is not None:
            listing, rel = found
            by_listing.setdefault(listing, []).append((item, rel))
    anonymous = not conn.credentials.user
    hidden = 0
    async with conn.client() as xs:
        for listing, items in sorted(by_listing.items()):
            listed = await remote_digests_if_listed(xs, listing)
            if listed is None and anonymous:  # a guest is told 404 of what it may not see
                hidden += len(items)
                continue
            there = listed or {}
            for item, rel in items:
                if rel not in there:
                    report.gone.append(item.local)
                elif item.md5 and there[rel][1] and there[rel][1] != item.md5.lower():
                    report.changed_on_server.append(item.local)
    if hidden:
        msg = (
            f"{conn.url} answers 'not found' for {hidden} of the files to a visitor who is "
            "not logged in, which it also says of what a guest may not see: whether they "
            "are gone cannot be told. Log in (-u USER, $XNAT_USER or ~/.netrc), or check "
            "without the server (--offline)"
        )
        raise UsageError(msg)


def verify(outdir: str | Path, conn: Connection | None = None) -> VerifyReport:
    """Re-hash what a download recorded in ``outdir``; with ``conn``, also ask the server
    (first: a server that cannot be reached fails the check before any file is hashed)."""
    out = Path(outdir)
    server, files = recorded(out)
    report = VerifyReport(files=len(files), server=server)
    if conn is not None:
        aio.run(check_server(conn, files, report))
    check_local(out, files, report)
    return report


def write_md5sum(report: VerifyReport, path: Path) -> int:
    """An ``md5sum -c`` list of the files found intact; how many lines it has."""
    lines = [f"{report.digests[local]}  {local}\n" for local in sorted(report.ok)]
    write_whole(path, "".join(lines))
    return len(lines)


__all__ = ["VerifyReport", "recorded", "verify", "write_md5sum"]
