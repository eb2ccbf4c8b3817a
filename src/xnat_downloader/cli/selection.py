"""The selection and layout flags that ``download``, ``ls``, ``copy`` and ``slurm`` share,
and what they become (a :class:`Selection`, a :class:`LayoutOptions`)."""

from __future__ import annotations

import argparse
from datetime import date
from pathlib import Path

from xnat_downloader.cli.inputs import expand, flags_given, parse_day
from xnat_downloader.errors import UsageError
from xnat_downloader.plan.layout import Layout, LayoutOptions, check_layout
from xnat_downloader.transfer.modes import Mode
from xnat_downloader.xnat.selection import Selection


def selection_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("selection")
    g.add_argument(
        "-p",
        "--project",
        action="extend",
        nargs="+",
        metavar="PROJECT",
        help="project IDs (-p A B or -p A -p B; @FILE reads a list)",
    )
    g.add_argument(
        "--subject",
        action="extend",
        nargs="+",
        metavar="S",
        help="subject ID or label (repeatable; @FILE)",
    )
    g.add_argument(
        "-s",
        "--session",
        action="extend",
        nargs="+",
        metavar="SESSION",
        help="session ID or label, mixed freely (repeatable; @FILE)",
    )
    g.add_argument("--since", metavar="YYYY-MM-DD", help="sessions on or after this date")
    g.add_argument("--until", metavar="YYYY-MM-DD", help="sessions on or before this date")
    g.add_argument(
        "--added-since",
        metavar="YYYY-MM-DD",
        help="sessions added to XNAT (their insert date) on or after this day",
    )
    g.add_argument(
        "--added-until",
        metavar="YYYY-MM-DD",
        help="sessions added to XNAT (their insert date) on or before this day",
    )
    g.add_argument(
        "--xsi-type",
        "--modality",
        dest="xsi_type",
        action="extend",
        nargs="+",
        metavar="T",
        help="session type or modality, e.g. xnat:mrSessionData, MR, PET",
    )
    g.add_argument(
        "--scan-type",
        action="extend",
        nargs="+",
        metavar="PATTERN",
        help="scan ID, type or series description (glob, case-insensitive)",
    )
    g.add_argument(
        "--quality",
        action="extend",
        nargs="+",
        metavar="Q",
        help="scan quality, e.g. usable (repeatable)",
    )
    g.add_argument(
        "--resource",
        action="extend",
        nargs="+",
        metavar="LABEL",
        help="resource label or format, e.g. DICOM (default: every resource)",
    )
    g.add_argument(
        "--exclude-scan-type",
        action="extend",
        nargs="+",
        metavar="PATTERN",
        help="leave out scans whose ID, type or series description matches (glob; repeatable)",
    )
    g.add_argument(
        "--exclude-resource",
        action="extend",
        nargs="+",
        metavar="LABEL",
        help="leave out resources whose label or format matches, e.g. SNAPSHOTS (glob; repeatable)",
    )
    g.add_argument("--no-scans", action="store_true", help="skip scan files")
    g.add_argument(
        "--session-resources", action="store_true", help="also fetch session-level resources"
    )
    g.add_argument(
        "--project-resources",
        action="store_true",
        help="also fetch the projects' own resources (PROJECT/resources/…)",
    )
    g.add_argument(
        "--subject-resources",
        action="store_true",
        help="also fetch the subjects' own resources (PROJECT/SUBJECT/resources/…): of the "
        "selected sessions' subjects, or of every subject --subject names (all by default)",
    )
    g.add_argument("--assessors", action="store_true", help="also fetch assessors")
    g.add_argument("--recons", action="store_true", help="also fetch reconstructions")
    g.add_argument(
        "--catalog",
        metavar="FILE|URL",
        help="fetch what an XNAT catalog XML lists: a file saved from the download page, or "
        "its link on the same server (the page's download-client hand-off)",
    )


def tree_args(g: argparse._ActionsContainer) -> None:
    """The flags that shape the folders on disk (download and slurm)."""
    g.add_argument(
        "--layout",
        choices=[m.value for m in Layout],
        help="folders on disk: xnat (project/subject/session/scans/…, the default), "
        "simplified or flat",
    )
    g.add_argument(
        "--include-project",
        action=argparse.BooleanOptionalAction,
        help="a folder per project (default: yes)",
    )
    g.add_argument(
        "--include-subject",
        action=argparse.BooleanOptionalAction,
        help="a folder per subject (default: yes)",
    )
    g.add_argument(
        "--path-template",
        metavar="TEMPLATE",
        help="folders and names of your own, e.g. '{subject}/{session}/{scan_id}-{scan_type}/"
        "{path}'; fields: project, subject, session, session_id, category, owner, scan_id, "
        "scan_type, resource, path, name (a folder whose fields a file lacks is left out)",
    )
    g.add_argument(
        "--metadata",
        choices=("xml", "json"),
        help="also save XNAT's project, subject, session and scan documents beside the data "
        "(project.xml, subject.xml, session.xml, scan.xml), each checked to parse",
    )


def layout_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("layout and transfer")
    g.add_argument(
        "-o",
        "--output",
        "--output_dir",
        dest="output",
        type=Path,
        metavar="DIR",
        help="output directory (default: current directory)",
    )
    tree_args(g)
    g.add_argument("-j", "--jobs", type=int, default=8, help="parallel transfers (default 8)")
    g.add_argument(
        "--max-rate", metavar="MB/S", type=float, help="limit total download speed, in MB/s"
    )
    g.add_argument(
        "--transfer",
        choices=[m.value for m in Mode],
        default="auto",
        help="per resource: a streamed zip for many small files, per-file GETs otherwise "
        "(auto, the default; -v says which and why), or force one",
    )
    g.add_argument(
        "--dry-run",
        action="store_true",
        help="print what would be fetched, per session, and the plan: line; transfer nothing",
    )
    g.add_argument(
        "--list-files", action="store_true", help="with --dry-run: list every planned file"
    )
    g.add_argument(
        "--rescan",
        action="store_true",
        help="list every session again, even those unchanged since the last run (for servers "
        "that do not update last_modified when files change)",
    )
    g.add_argument(
        "--prune",
        action="store_true",
        help="remove the local files of sessions that vanished since the last run (from the "
        "server or the selection); without it they are only reported",
    )
    g.add_argument("--json", action="store_true", help="machine-readable output")
    g.add_argument(
        "--overwrite",
        "-ow",
        action="store_true",
        help="replace existing files instead of keeping verified ones",
    )
    g.add_argument(
        "--checksum",
        action="store_true",
        help="hash files verified by earlier runs before trusting them (default: trust them "
        "while their size and modification time are unchanged)",
    )
    g.add_argument(
        "--no-space-check",
        dest="space_check",
        action="store_false",
        help="start even if the plan does not fit in the output's free space",
    )
    g.add_argument(
        "--manifest",
        type=Path,
        metavar="FILE",
        help="download a manifest saved by an earlier run (manifest.json)",
    )
    g.add_argument(
        "--shard",
        metavar="K/N|slurm",
        help="fetch only shard K (0-based) of N: whole sessions, balanced by bytes; 'slurm' "
        "takes K and N from the Slurm array task (SLURM_ARRAY_TASK_ID/COUNT)",
    )


def _days(
    first: str | None, last: str | None, first_flag: str, last_flag: str
) -> tuple[date | None, date | None]:
    """The days of a pair of range flags; UsageError when the range is empty."""
    start = parse_day(first, first_flag) if first else None
    end = parse_day(last, last_flag) if last else None
    if start and end and start > end:
        raise UsageError(f"{first_flag} {start} is after {last_flag} {end}: no session could match")
    return start, end


def selection_of(args: argparse.Namespace, projects: tuple[str, ...]) -> Selection:
    since, until = _days(args.since, args.until, "--since", "--until")
    added_since, added_until = _days(
        args.added_since, args.added_until, "--added-since", "--added-until"
    )
    return Selection(
        projects=projects,
        subjects=expand(args.subject, "--subject"),
        sessions=expand(args.session, "-s"),
        since=since,
        until=until,
        added_since=added_since,
        added_until=added_until,
        xsi_types=expand(args.xsi_type, "--xsi-type"),
        scan_types=expand(args.scan_type, "--scan-type"),
        qualities=expand(args.quality, "--quality"),
        resources=expand(args.resource, "--resource"),
        exclude_resources=expand(args.exclude_resource, "--exclude-resource"),
        exclude_scan_types=expand(args.exclude_scan_type, "--exclude-scan-type"),
        scans=not args.no_scans,
        session_resources=args.session_resources,
        project_resources=args.project_resources,
        subject_resources=args.subject_resources,
        assessors=args.assessors,
        recons=args.recons,
    )


# What a saved plan or a catalog already decides: the files (selection flags) and where they
# go (layout flags).  Given beside --manifest or --catalog, each would be ignored; it is
# refused instead.
DECIDED_BY_A_PLAN = (
    ("project", "-p"), ("subject", "--subject"), ("session", "-s"), ("since", "--since"),
    ("until", "--until"), ("added_since", "--added-since"), ("added_until", "--added-until"),
    ("xsi_type", "--xsi-type"), ("scan_type", "--scan-type"),
    ("quality", "--quality"), ("resource", "--resource"),
    ("exclude_scan_type", "--exclude-scan-type"), ("exclude_resource", "--exclude-resource"),
    ("no_scans", "--no-scans"), ("session_resources", "--session-resources"),
    ("project_resources", "--project-resources"),
    ("subject_resources", "--subject-resources"), ("assessors", "--assessors"),
    ("recons", "--recons"), ("catalog", "--catalog"), ("layout", "--layout"),
    ("include_project", "--[no-]include-project"),
    ("include_subject", "--[no-]include-subject"), ("path_template", "--path-template"),
    ("metadata", "--metadata"),
)  # fmt: skip
# The --X/--no-X pairs among them: not given is None, and --no-X gives False.
ON_OFF = ("include_project", "include_subject")


def constraints_given(args: argparse.Namespace) -> list[str]:
    """The selection flags given that narrow what projects hold (not -p, -s or --catalog)."""
    narrowing = [f for f in DECIDED_BY_A_PLAN if f[0] not in ("project", "session", "catalog")]
    return flags_given(args, narrowing, on_off=ON_OFF)


def check_plan_source(args: argparse.Namespace) -> None:
    """UsageError naming the selection and layout flags given beside ``--manifest`` or
    ``--catalog``: a saved plan, or a catalog, fixes what is fetched and where it goes."""
    source = "--manifest" if getattr(args, "manifest", None) is not None else ""
    if not source and getattr(args, "catalog", None):
        source = "--catalog"
    if not source:
        return
    given = flags_given(args, (f for f in DECIDED_BY_A_PLAN if f[1] != source), on_off=ON_OFF)
    if given:
        raise UsageError(
            f"{source} fixes what is fetched and where it goes: leave out {', '.join(given)}"
        )


def layout_of(args: argparse.Namespace) -> LayoutOptions:
    """The layout the flags ask for; UsageError when they contradict each other or the
    selection (checked before any request)."""
    template = args.path_template
    if template is not None:
        layout_flags = (
            ("layout", "--layout"),
            ("include_project", "--[no-]include-project"),
            ("include_subject", "--[no-]include-subject"),
        )
        given = flags_given(args, layout_flags, on_off=ON_OFF)
        if given:
            raise UsageError(
                f"--path-template decides every folder: leave out {' and '.join(given)}"
            )
        if not template.strip():
            raise UsageError("--path-template is empty: give a template, or leave it out")
    options = LayoutOptions(
        Layout(args.layout or Layout.XNAT),
        args.include_project is not False,
        args.include_subject is not False,
        template or "",
    )
    check_layout(
        options,
        subject_resources=args.subject_resources,
        metadata=bool(args.metadata),
        catalog=bool(getattr(args, "catalog", None)),
    )
    return options
