"""``xnat-downloader xget``: xget's command line (seed 003), on our verified engine.

Flags are xget's, single dash: ``-host -u -p -passfile -s -proj -start -end -acq -q -ass
-recon -format -o -z -overwrite -longname``; dates are DDMMYYYY.  Beyond xget, a project
alone selects all its sessions, ``-subj`` constrains subjects, ``-j`` sets parallelism, and
``NONE`` for ``-acq``, ``-ass`` or ``-recon`` leaves that kind out.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import replace
from pathlib import Path
from typing import TextIO

from xnat_downloader import api
from xnat_downloader.api import xget
from xnat_downloader.cli.common import (
    Streams,
    counts_document,
    debug_log,
    display,
    logging_sink,
    print_summary,
)
from xnat_downloader.cli.errors import (
    EXIT_FAILED_FILES,
    EXIT_OK,
    EXIT_USAGE,
)
from xnat_downloader.cli.inputs import expand, parse_xget_day, read_list_file
from xnat_downloader.errors import UsageError
from xnat_downloader.http import credentials as creds_mod
from xnat_downloader.xnat.selection import Selection

SECRET_FLAGS = ("-p", "--password")


DESCRIPTION = (
    "xget's command line on xnat-downloader's verified engine: one zip per session "
    "(or files with -z). Flags are xget's, with a single dash; dates are DDMMYYYY. "
    "Beyond xget: a project alone selects all its sessions, -subj constrains "
    "subjects, -j sets parallelism, and NONE for -acq, -ass or -recon leaves that "
    "kind out."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """xget's flags (single dash; the parser is made with ``allow_abbrev=False``)."""
    p.add_argument("-host", metavar="URL", help="XNAT server (default: $XNAT_HOST or passfile)")
    p.add_argument("-u", metavar="USER", help="user name or alias token")
    p.add_argument("-p", metavar="PASSWORD", help="password (prefer -passfile or $XNAT_PASS)")
    p.add_argument("-passfile", type=Path, metavar="FILE", help="xget pass file (~/.xnatPass)")
    p.add_argument(
        "-s",
        action="append",
        metavar="SESSIONS",
        help="session IDs or labels, comma separated; or a file of them (or @FILE)",
    )
    p.add_argument("-proj", action="append", metavar="PROJECT", help="only this project")
    p.add_argument("-subj", action="append", metavar="SUBJECTS", help="only these subjects")
    p.add_argument("-start", metavar="DDMMYYYY", help="sessions on or after this date")
    p.add_argument("-end", metavar="DDMMYYYY", help="sessions on or before this date")
    p.add_argument(
        "-acq", action="append", metavar="SCANS", help="scan IDs, types or series descriptions"
    )
    p.add_argument("-q", "-quality", dest="q", action="append", metavar="QUALITY",
                   help="only scans of this quality (e.g. usable)")  # fmt: skip
    p.add_argument(
        "-ass", action="append", metavar="ASSESSORS", help="assessor IDs, labels or types"
    )
    p.add_argument("-recon", action="append", metavar="RECONS", help="reconstruction IDs or types")
    p.add_argument(
        "-format",
        action="append",
        metavar="FORMAT",
        help="resource label or format (default DICOM; ALL)",
    )
    p.add_argument("-o", type=Path, metavar="DIR", help="output directory (default: here)")
    p.add_argument("-z", action="store_true", help="extract: files instead of zips")
    p.add_argument("-overwrite", action="store_true", help="replace existing zips")
    p.add_argument("-longname", action="store_true", help="put the constraints in zip names")
    p.add_argument("-j", "-jobs", dest="jobs", type=int, default=8, help="parallel transfers")
    p.add_argument("--ca-bundle", metavar="FILE", help="CA certificates to trust for TLS")
    p.add_argument("--insecure", action="store_true", help="do not verify TLS (warns)")
    p.add_argument("-v", action="count", default=0, dest="verbose", help="more detail (-vv: debug)")
    p.add_argument("-quiet", action="store_true", dest="quiet", help="only errors and the summary")
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")


def session_values(values: list[str] | None) -> tuple[str, ...]:
    """``-s`` values: comma lists, ``@FILE``, or (as xget) the path of a file whose lines
    are comma lists."""
    out: list[str] = []
    for value in values or []:
        path = Path(value)
        if not value.startswith("@") and "," not in value and path.is_file():
            out.extend(read_list_file(path, comma_lists=True))
        else:
            out.extend(expand([value], "-s"))
    return tuple(dict.fromkeys(out))


def constraint(values: list[str] | None, flag: str) -> tuple[tuple[str, ...], bool]:
    """(patterns, wanted): ``ALL`` or nothing means no constraint; ``NONE`` leaves it out."""
    items = expand(values, flag)
    upper = {v.upper() for v in items}
    if "NONE" in upper:
        if len(items) > 1:
            msg = f"{flag} NONE cannot be combined with other values"
            raise UsageError(msg)
        return (), False
    if "ALL" in upper:
        return (), True
    return items, True


def host_from_passfile(path: Path | None) -> str:
    """xget takes the host from the pass file when it is not on the command line."""
    target = path or creds_mod.default_home() / ".xnatPass"
    if target.is_file():
        entries = creds_mod.xnatpass_entries(target)
        if entries:
            return entries[0][1]
    return ""


def command(args: argparse.Namespace, io: Streams) -> int:
    return _run(args, list(args.argv[1:]), io.stdout, io.stderr, io.interactive)


def _run(
    args: argparse.Namespace, argv: list[str], stdout: TextIO, stderr: TextIO, interactive: bool
) -> int:
    url = args.host or os.environ.get("XNAT_HOST") or host_from_passfile(args.passfile)
    if not url:
        raise UsageError("no XNAT server given: use -host URL, $XNAT_HOST or a -passfile")
    sessions = session_values(args.s)
    projects = expand(args.proj, "-proj")
    if not sessions and not projects:
        raise UsageError("name sessions with -s or a project with -proj")
    acq, want_scans = constraint(args.acq, "-acq")
    ass, want_ass = constraint(args.ass, "-ass")
    recon, want_recon = constraint(args.recon, "-recon")
    quality, _ = constraint(args.q, "-q")
    formats, _ = constraint(args.format or ["DICOM"], "-format")
    selection = Selection(
        projects=projects,
        subjects=expand(args.subj, "-subj"),
        sessions=sessions,
        since=parse_xget_day(args.start, "-start") if args.start else None,
        until=parse_xget_day(args.end, "-end") if args.end else None,
        scan_types=acq,
        qualities=quality,
        resources=formats,
        scans=want_scans,
        assessors=want_ass,
        recons=want_recon,
        assessor_patterns=ass,
        recon_patterns=recon,
    )
    naming = xget.ZipNaming(args.longname, acq, ass, recon, quality, formats)
    outdir: Path = args.o or Path.cwd()
    api.check_output_dir(outdir)
    found = creds_mod.resolve(
        url, args.u, args.p, os.environ, creds_mod.default_home(), passfile=args.passfile
    )
    conn = api.Connection(
        url,
        creds_mod.complete(found, interactive=interactive),
        verify=not args.insecure,
        ca_bundle=args.ca_bundle,
    )
    if not projects:
        # xget looked for the sessions on the whole server: so do we, project by project.
        projects = tuple(p.id for p in api.list_projects(conn))
        selection = replace(selection, projects=projects)
    with (
        debug_log(outdir, ["xnat-downloader", "xget", *argv], SECRET_FLAGS, stderr) as log_path,
        display(interactive, args.quiet or args.json, stderr) as shown,
    ):
        report = xget.xget(
            conn,
            selection,
            outdir,
            naming,
            extract=args.z,
            jobs=args.jobs,
            overwrite=args.overwrite,
            sink=logging_sink(shown),
        )
    if args.json:
        print(json.dumps({
            **counts_document(report.files), "ok": report.ok,
            "written": [str(p) for p in report.written], "kept": [str(p) for p in report.kept],
            "not_written": [{"path": str(p), "error": why} for p, why in report.not_written],
            "log": str(log_path),
        }), file=stdout)  # fmt: skip
        return EXIT_OK if report.ok else EXIT_FAILED_FILES
    if not args.quiet:
        for path in report.kept:
            print(f"kept {path} (it exists; -overwrite replaces it)", file=stderr)
        for path in report.written:
            print(f"wrote {path}", file=stderr)
    for path, why in report.not_written:
        print(f"error: did not write {path}: {why}", file=stderr)
    if report.files.files == 0 and not report.kept:
        # As xget itself: constraints that match nothing are a mistake to report (exit 2).
        print(f"nothing matched: {selection.describe()}", file=stdout)
        return EXIT_USAGE
    print_summary(report.files, args.quiet, stdout, stderr)
    if not args.quiet:
        print(f"debug log: {log_path}", file=stderr)
    return EXIT_OK if report.ok else EXIT_FAILED_FILES
