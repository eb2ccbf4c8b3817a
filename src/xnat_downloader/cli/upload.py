"""``xnat-downloader upload``: sessions through XNAT's import service, files into resources,
subjects from a spreadsheet (CONTRACT §4).

Exit status as for downloads: 0 when everything sent is on the server and verified (or
waiting in the prearchive), 1 when any file or row failed, 2 for usage, login and
permission errors.  The last line on stdout is ``done: N files, B bytes, V verified,
F failed`` (``done: N subjects, C created, U updated, F failed`` for a CSV).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TextIO

from xnat_downloader import api
from xnat_downloader.api import subjects
from xnat_downloader.api import upload as uploads
from xnat_downloader.cli.common import (
    Streams,
    connection,
    connection_args,
    counts_document,
    display,
    done_line,
    existing_paths,
    logging_sink,
    server_url,
    took,
)
from xnat_downloader.cli.errors import EXIT_FAILED_FILES, EXIT_OK
from xnat_downloader.cli.inputs import flags_given, labelled
from xnat_downloader.cli.progress import human_bytes
from xnat_downloader.errors import UsageError
from xnat_downloader.transfer.engine import MAX_JOBS
from xnat_downloader.words import counted

DESCRIPTION = (
    "Upload to XNAT. PATH is a session .zip, .tar.gz or .tar; a bundle zip of session "
    "zips; a folder (a download-layout tree of sessions, or a folder of DICOM, zipped "
    "while it streams); or a .csv of subjects. With --resource, PATHs go into that "
    "resource instead of the import service."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    connection_args(parser)
    g = parser.add_argument_group("what and where")
    g.add_argument("paths", nargs="+", metavar="PATH", help="archives, folders or a .csv")
    g.add_argument("-p", "--project", required=True, help="the project (ID) to upload into")
    g.add_argument("--subject", help="subject label (default: from the data)")
    g.add_argument("--session", help="session label (default: from the data)")
    g.add_argument("--scan", help="with --resource: a scan of --session")
    g.add_argument(
        "--dest",
        choices=uploads.DESTINATIONS,
        help="archive directly (default) or leave the sessions in the prearchive",
    )
    g.add_argument(
        "--importer",
        choices=uploads.IMPORTERS,
        help="XNAT's import handler (SI is the classic session importer)",
    )
    g.add_argument(
        "--ignore-unparsable",
        action="store_true",
        help="leave out files that are not DICOM instead of refusing the upload",
    )
    g.add_argument(
        "--overwrite",
        action="store_true",
        help="add to a session that exists (replacing its files), or replace resource files",
    )
    g.add_argument(
        "--resource",
        metavar="LABEL",
        help="put PATHs' files into this resource of the project, --subject, --session or --scan",
    )
    g.add_argument(
        "-j", "--jobs", type=int, default=4, help=f"parallel file uploads (1-{MAX_JOBS}, default 4)"
    )  # fmt: skip
    g.add_argument("--json", action="store_true", help="one JSON document on stdout")


def command(args: argparse.Namespace, io: Streams) -> int:
    return _command(args, server_url(args), io.stdout, io.stderr, io.interactive)


def _command(
    args: argparse.Namespace, url: str, stdout: TextIO, stderr: TextIO, interactive: bool
) -> int:
    project = labelled(args.project, "-p")
    subject, session = labelled(args.subject, "--subject"), labelled(args.session, "--session")
    scan = labelled(args.scan, "--scan")
    resource = None if args.resource is None else labelled(args.resource, "--resource")
    paths = existing_paths(args.paths)
    csvs = [p for p in paths if p.suffix.lower() == ".csv" and p.is_file()]
    check_combination(args, csvs=bool(csvs) and resource is None)
    if csvs and resource is None:
        if len(csvs) != len(paths):
            raise UsageError("upload a subjects .csv on its own, not with archives or folders")
        conn = connection(args, url, interactive)
        return max(_subjects(conn, p, project, stdout, stderr, args.json) for p in csvs)
    conn = connection(args, url, interactive)
    with display(interactive, args.quiet or args.json, stderr) as shown:
        report = uploads.upload(
            conn,
            list(paths),
            project,
            subject=subject,
            session=session,
            scan=scan,
            dest=args.dest or "archive",
            importer=args.importer or "DICOM-zip",
            ignore_unparsable=args.ignore_unparsable,
            overwrite=args.overwrite,
            resource=resource,
            jobs=args.jobs,
            sink=logging_sink(shown),
        )
    if args.json:
        print(json.dumps(_document(report)), file=stdout)
    else:
        _print_report(report, args.quiet, stdout, stderr)
    return EXIT_OK if report.ok else EXIT_FAILED_FILES


def check_combination(args: argparse.Namespace, *, csvs: bool) -> None:
    """UsageError for flags the kind of upload asked for would ignore: a subjects .csv names
    its own subjects; --resource bypasses the import service; --scan names the scan whose
    resource --resource fills."""
    import_flags = (
        ("dest", "--dest"),
        ("importer", "--importer"),
        ("ignore_unparsable", "--ignore-unparsable"),
    )
    if csvs:
        labels = (("subject", "--subject"), ("session", "--session"), ("scan", "--scan"))
        extra = flags_given(args, (*labels, *import_flags, ("overwrite", "--overwrite")))
        if extra:
            raise UsageError(
                f"a subjects .csv names its own subjects: leave out {', '.join(extra)}"
            )
    elif args.resource is not None:
        extra = flags_given(args, import_flags)
        if extra:
            raise UsageError(
                "--resource puts files into a resource, not through the import service: "
                f"leave out {', '.join(extra)}"
            )
    elif args.scan is not None:
        raise UsageError(
            "--scan names the scan whose resource --resource fills: add --resource LABEL, "
            "or leave out --scan"
        )


def _document(report: uploads.UploadReport) -> dict[str, object]:
    return {
        **counts_document(report),
        "in_prearchive": report.sent,
        "seconds": round(report.seconds, 3),
        "sessions": report.sessions,
        "notes": report.notes,
    }


def _print_report(report: uploads.UploadReport, quiet: bool, out: TextIO, err: TextIO) -> None:
    if not quiet:
        for uri in report.sessions:
            print(f"session: {uri}", file=err)
        for note in report.notes:
            print(f"note: {note}", file=err)
        # Failures were shown as they happened (one line for a refused session).
        if report.sent:
            print(
                f"{counted(report.sent, 'file')} in the prearchive: checked when archived",
                file=err,
            )
        print(
            f"{counted(report.files, 'file')} ({human_bytes(report.bytes)}) "
            f"{took(report, report.seconds)}; {report.skipped} were already on the server",
            file=err,
        )
    print(done_line(report), file=out)


def _subjects(
    conn: api.Connection, path: Path, project: str, out: TextIO, err: TextIO, as_json: bool
) -> int:
    results = subjects.upload_subjects(conn, path, project)
    failed = sum(1 for r in results if r.status == "failed")
    if as_json:
        rows = [vars(r) for r in results]
        print(json.dumps({"csv": str(path), "subjects": rows, "failed": failed}), file=out)
        return EXIT_FAILED_FILES if failed else EXIT_OK
    for result in results:
        if result.status == "failed":
            print(f"{path}:{result.line}: {result.label or '?'}: {result.message}", file=err)
    created = sum(1 for r in results if r.status == "created")
    updated = sum(1 for r in results if r.status == "updated")
    failed = sum(1 for r in results if r.status == "failed")
    print(
        f"done: {len(results)} subjects, {created} created, {updated} updated, {failed} failed",
        file=out,
    )
    return EXIT_FAILED_FILES if failed else EXIT_OK
