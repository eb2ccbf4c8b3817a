"""``xnat-downloader dicom-send``: DICOM files to a C-STORE receiver (CONTRACT §6).

Exit status: 0 when every DICOM file was acknowledged (and, with ``-w``, found on the
server), 1 when any failed, 2 for usage errors.  The last line on stdout is
``done: N files, B bytes, V verified, F failed``; with ``--json`` stdout holds one JSON
document instead.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, TextIO

from xnat_downloader.cli.common import (
    Streams,
    connection,
    connection_args,
    counts_document,
    display,
    done_line,
    existing_paths,
    logging_sink,
    report_lines,
    took,
)
from xnat_downloader.cli.errors import EXIT_FAILED_FILES, EXIT_OK
from xnat_downloader.cli.inputs import labelled
from xnat_downloader.cli.progress import human_bytes
from xnat_downloader.errors import UsageError
from xnat_downloader.transfer.engine import MAX_JOBS
from xnat_downloader.words import counted

if TYPE_CHECKING:
    from xnat_downloader.api.dicom import DicomSendReport


DESCRIPTION = (
    "Send DICOM files to a DICOM receiver (an XNAT's C-STORE SCP, a PACS) over "
    "C-STORE, several associations at once. Folders are walked; files that are not "
    "DICOM are listed and left out. A re-run sends only what the receiver has not "
    "acknowledged. With -w, the session the receiver built is checked on the server."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("what and where")
    g.add_argument("paths", nargs="+", metavar="PATH", help="DICOM files or folders")
    g.add_argument("--to", required=True, metavar="AE@HOST:PORT", help="the receiver")
    g.add_argument("--project", help="XNAT project to route to (Patient Comments)")
    g.add_argument("--subject", help="XNAT subject label to route to")
    g.add_argument("--session", help="XNAT session label to route to")
    g.add_argument(
        "-j", "--jobs", type=int, default=4,
        help=f"parallel associations (1-{MAX_JOBS}, default 4)",
    )  # fmt: skip
    g.add_argument("--calling-ae", default="XNATDL", metavar="TITLE",
                   help="our AE title (default XNATDL)")  # fmt: skip
    g.add_argument("--resend", action="store_true",
                   help="send every file, even those acknowledged before")  # fmt: skip
    g.add_argument("--wait", type=float, metavar="SECONDS",
                   help="with -w: how long to wait for the server to build each study "
                   "(default 300)")  # fmt: skip
    g.add_argument("--json", action="store_true", help="one JSON document on stdout")
    connection_args(parser)


def command(args: argparse.Namespace, io: Streams) -> int:
    return _command(args, io.stdout, io.stderr, io.interactive)


def _command(args: argparse.Namespace, stdout: TextIO, stderr: TextIO, interactive: bool) -> int:
    # pydicom and pynetdicom load here, only for this command (0.15 s).
    from xnat_downloader.api import dicom as dicomsend

    paths = existing_paths(args.paths)
    if args.wait is not None and not args.web:
        raise UsageError(
            "--wait is how long -w's server may take to build each study: add -w URL to "
            "check the sessions there, or leave out --wait"
        )
    conn = None
    if args.web:  # only when asked: the receiver need not be an XNAT
        conn = connection(args, args.web, interactive)
    with display(interactive, args.quiet or args.json, stderr) as shown:
        report = dicomsend.dicom_send(
            paths,
            args.to,
            project=labelled(args.project, "--project"),
            subject=labelled(args.subject, "--subject"),
            session=labelled(args.session, "--session"),
            jobs=args.jobs,
            conn=conn,
            wait=300.0 if args.wait is None else args.wait,
            resend=args.resend,
            calling_ae=args.calling_ae,
            sink=logging_sink(shown),
        )
    if args.json:
        print(json.dumps(_document(report)), file=stdout)
    else:
        _print_report(report, args.quiet, stdout, stderr)
    return EXIT_OK if report.ok else EXIT_FAILED_FILES


def _document(report: DicomSendReport) -> dict[str, object]:
    return {
        **counts_document(report),
        "target": report.target,
        "not_dicom": report.not_dicom,
        "sessions": report.sessions,
        "notes": report.notes,
        "seconds": round(report.seconds, 3),
        "report": str(report.report_path) if report.report_path else None,
        "report_error": report.report_error,
    }


def _print_report(report: DicomSendReport, quiet: bool, out: TextIO, err: TextIO) -> None:
    if not quiet:
        for path in report.not_dicom:
            print(f"skipped (not DICOM): {path}", file=err)
        for uri in report.sessions:
            print(f"session: {uri}", file=err)
    for note in report.notes:  # even with -q: each says what is left to do
        print(f"note: {note}", file=err)
    if not quiet:
        print(
            f"{counted(report.files, 'file')} ({human_bytes(report.bytes)}) to {report.target} "
            f"{took(report, report.seconds)}; {report.skipped} were acknowledged before",
            file=err,
        )
    report_lines(report.report_path if not quiet else None, report.report_error, err)
    print(done_line(report), file=out)
