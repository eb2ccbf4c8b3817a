"""xget compatibility: xget's per-session zip files, fetched by our verified engine.

xget (seed 003) wrote, per session, ``{session}_acq.zip`` (scans), ``{session}_ass.zip``
(assessors) and ``{session}_recon.zip`` (reconstructions), or with ``-longname``
``p_{project}_sess_{session}_acq_{constraint}_q_{quality}_f_{format}.zip``; each zip unpacks
to ``{session}/scans/...`` as XNAT's own zips do.  We build the same zips locally from files
fetched in parallel and checked against XNAT's MD5s, so a zip is only ever written from
verified files, and an interrupted run resumes file by file:

1. plan the selection in the ``xnat`` layout without project and subject folders (the
   members' paths inside the zips);
2. group the plan by zip name (:func:`group_by_zip`, pure);
3. fetch each group's files into ``DIR/.xnat-downloader/xget/{zip}/`` (or, with ``-z``,
   straight into ``DIR``: the zip's contents, already extracted);
4. for each group whose files all verified, write ``{zip}.xnatdl-part``, fsync, rename to
   the final name, and remove the staged files.

As in xget, an existing zip is kept (and its session not fetched again) unless
``overwrite``.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from xnat_downloader import aio
from xnat_downloader.api.download import (
    Connection,
    PlanResult,
    Report,
    check_output_dir,
    plan_in,
    run_planned,
)
from xnat_downloader.plan.layout import Layout, LayoutOptions
from xnat_downloader.plan.plan import PlanEntry
from xnat_downloader.plan.sanitize import safe_component
from xnat_downloader.transfer import workdir
from xnat_downloader.transfer.download import PART_SUFFIX
from xnat_downloader.transfer.engine import EngineOptions
from xnat_downloader.transfer.events import EventSink, ignore
from xnat_downloader.transfer.jobs import Job
from xnat_downloader.transfer.state import State
from xnat_downloader.xnat.selection import Selection

STAGING = workdir.XGET_STAGING
KIND = {"scan": "acq", "assessor": "ass", "recon": "recon"}
MEMBER_LAYOUT = LayoutOptions(Layout.XNAT, include_project=False, include_subject=False)


@dataclass(frozen=True)
class ZipNaming:
    """What xget's ``-longname`` puts in a zip's name: the constraints of the run."""

    longname: bool = False
    acq: tuple[str, ...] = ()
    assessors: tuple[str, ...] = ()
    recons: tuple[str, ...] = ()
    quality: tuple[str, ...] = ()
    format: tuple[str, ...] = ("DICOM",)

    def constraint(self, kind: str) -> tuple[str, ...]:
        return {"acq": self.acq, "ass": self.assessors, "recon": self.recons}[kind]


def _joined(values: tuple[str, ...]) -> str:
    return "_".join(values) if values else "ALL"


def zip_name(project: str, session: str, kind: str, naming: ZipNaming) -> str:
    """``{session}_{kind}.zip``, or xget's long form; always one safe path component."""
    if naming.longname:
        stem = (
            f"p_{project}_sess_{session}_{kind}_{_joined(naming.constraint(kind))}"
            f"_q_{_joined(naming.quality)}_f_{_joined(naming.format)}"
        )
    else:
        stem = f"{session}_{kind}"
    return safe_component(f"{stem}.zip")


def group_by_zip(entries: list[PlanEntry], naming: ZipNaming) -> dict[str, list[PlanEntry]]:
    """The plan's entries by the zip they belong in.  Two sessions with one label (in two
    projects) would share a zip name; both then get the project as a prefix."""
    keyed: dict[tuple[str, str, str], list[PlanEntry]] = {}
    for e in entries:
        kind = KIND.get(e.file.category)
        if kind is not None:
            keyed.setdefault((e.file.project, e.file.session_label, kind), []).append(e)
    names = {key: zip_name(*key, naming) for key in keyed}
    counts = Counter(n.casefold() for n in names.values())
    groups: dict[str, list[PlanEntry]] = {}
    for key, members in keyed.items():
        name = names[key]
        if counts[name.casefold()] > 1:
            name = safe_component(f"{key[0]}_{name}")
        groups[name] = members
    return groups


@dataclass
class XgetReport:
    """What an xget run did: the files fetched, and the zips written, kept or not written."""

    files: Report
    written: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)  # already there; not fetched again
    not_written: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.files.ok and not self.not_written


def write_zip(target: Path, members: list[tuple[Path, str]]) -> None:
    """Write ``members`` (local file, name in the zip) to ``target`` atomically: a partial
    zip never carries the final name.  Stored, not deflated: DICOM barely compresses, and
    the zip is a container here, not an archive format."""
    part = target.with_name(target.name + PART_SUFFIX)
    try:
        with zipfile.ZipFile(part, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            for source, arcname in members:
                aio.check_abandoned()
                zf.write(source, arcname)
        with open(part, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(part, target)
    except BaseException:
        part.unlink(missing_ok=True)
        raise


async def _xget(
    conn: Connection,
    selection: Selection,
    outdir: Path,
    naming: ZipNaming,
    *,
    extract: bool,
    options: EngineOptions,
    sink: EventSink,
    on_plan: Callable[[PlanResult], None] | None,
) -> XgetReport:
    state = State(outdir)  # held until the zips are written: no other run may interleave
    try:
        async with conn.client() as xs:
            planned = await plan_in(xs, selection, MEMBER_LAYOUT, None)
            if on_plan is not None:
                on_plan(planned)
            kept: list[Path] = []
            todo: dict[str, list[tuple[Job, str]]] = {}  # zip name -> (job, name in the zip)
            for name, entries in group_by_zip(planned.plan.entries, naming).items():
                if not extract and (outdir / name).exists() and not options.overwrite:
                    kept.append(outdir / name)
                    continue
                prefix = "" if extract else f"{STAGING}/{name}/"
                todo[name] = [(Job.of(e, prefix), e.local) for e in entries]
            jobs = [job for members in todo.values() for job, _ in members]
            files = await run_planned(xs, planned, jobs, outdir, state, options, sink)
        report = XgetReport(files, kept=kept)
        if not extract:
            failed = {o.job.local for o in files.outcomes if o.status == "failed"}
            for name, members in todo.items():
                await _zip_group(outdir, name, members, failed, report)
        return report
    finally:
        state.close()


async def _zip_group(
    outdir: Path, name: str, members: list[tuple[Job, str]], failed: set[str], report: XgetReport
) -> None:
    """Write one zip from its staged, verified files, then remove them; or say why not."""
    bad = sum(1 for job, _ in members if job.local in failed)
    if bad:
        report.not_written.append(
            (outdir / name, f"{bad} of its files failed; run again to finish it")
        )
        return
    try:
        await aio.in_thread(
            write_zip, outdir / name, [(outdir / job.local, arc) for job, arc in members]
        )
    except OSError as exc:
        report.not_written.append((outdir / name, f"cannot write it: {exc.strerror or exc}"))
        return
    report.written.append(outdir / name)
    shutil.rmtree(outdir / STAGING / name, ignore_errors=True)


def xget(
    conn: Connection,
    selection: Selection,
    outdir: str | Path,
    naming: ZipNaming | None = None,
    *,
    extract: bool = False,
    jobs: int = 8,
    overwrite: bool = False,
    max_rate: float | None = None,
    sink: EventSink = ignore,
    on_plan: Callable[[PlanResult], None] | None = None,
) -> XgetReport:
    """Fetch a selection as xget did: one zip per session and kind (or, with ``extract``,
    the zips' contents in place).  Every file is verified before it goes into a zip."""
    out = Path(outdir)
    check_output_dir(out)
    return aio.run(
        _xget(
            conn,
            selection,
            out,
            naming or ZipNaming(),
            extract=extract,
            options=EngineOptions(jobs=jobs, overwrite=overwrite, max_rate=max_rate),
            sink=sink,
            on_plan=on_plan,
        )
    )
