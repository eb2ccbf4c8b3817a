"""``xnat-downloader project create`` and ``xnat-downloader prearchive ls|archive|move|delete``.

Exit status: 0 when everything asked for was done, 1 when any session failed (or the project
existed already), 2 for usage, login and permission errors.  ``--json`` prints one JSON
document on stdout and nothing else.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import TextIO

from xnat_downloader import api
from xnat_downloader.api import manage
from xnat_downloader.cli.common import (
    Streams,
    connection,
    connection_args,
    server_url,
)
from xnat_downloader.cli.errors import EXIT_FAILED_FILES, EXIT_OK
from xnat_downloader.errors import UsageError
from xnat_downloader.words import counted

PROJECT_DESCRIPTION = "Manage projects on an XNAT server."
PREARCHIVE_DESCRIPTION = (
    "List, archive, move and delete sessions in XNAT's prearchive. A session is named by its "
    "path (/prearchive/projects/P/TIMESTAMP/FOLDER), its name or folder."
)


def add_project_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    create = sub.add_parser("create", help="create a project (uploads need one)")
    connection_args(create)
    create.add_argument("project", help="the new project's ID")
    create.add_argument("--name", default="", help="its title (default: the ID)")
    create.add_argument("--description", default="", help="a description")
    create.add_argument(
        "--access",
        choices=manage.ACCESS,
        default="private",
        help="who may see it (default private)",
    )
    create.add_argument("--json", action="store_true", help="one JSON document on stdout")


def add_prearchive_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    for action, text in (
        ("ls", "list the prearchive sessions"),
        ("archive", "archive sessions (checked against what an upload sent, when known)"),
        ("move", "move sessions to another project's prearchive"),
        ("delete", "delete sessions from the prearchive"),
    ):
        p = sub.add_parser(action, help=text)
        connection_args(p)
        p.add_argument("-p", "--project", help="only this project's sessions")
        p.add_argument("--json", action="store_true", help="one JSON document on stdout")
        if action != "ls":
            p.add_argument("sessions", nargs="*", metavar="SESSION", help="sessions to act on")
            p.add_argument(
                "--all", action="store_true", help="every session listed (with -p: the project's)"
            )
        if action == "archive":
            p.add_argument(
                "--overwrite", action="store_true", help="add to a session that is archived"
            )
        if action == "move":
            p.add_argument("--to", required=True, metavar="PROJECT", help="the project to move to")


def _connect(args: argparse.Namespace, stderr: TextIO, interactive: bool) -> api.Connection:
    url = server_url(args)
    return connection(args, url, interactive)


def project_command(args: argparse.Namespace, io: Streams) -> int:
    stdout, stderr, interactive = io.stdout, io.stderr, io.interactive

    def command() -> int:
        conn = _connect(args, stderr, interactive)
        done = manage.create_project(
            conn, args.project, name=args.name, description=args.description, access=args.access
        )
        if args.json:
            print(json.dumps(asdict(done)), file=stdout)
        elif done.created:
            print(f"created project {done.id} ({args.access})", file=stdout)
        else:
            print(f"project {done.id} exists already; nothing was changed", file=stderr)
        return EXIT_OK if done.created else EXIT_FAILED_FILES

    return command()


def prearchive_command(args: argparse.Namespace, io: Streams) -> int:
    stdout, stderr, interactive = io.stdout, io.stderr, io.interactive

    def command() -> int:
        conn = _connect(args, stderr, interactive)
        if args.action == "ls":
            sessions = manage.list_prearchive(conn, args.project)
            if args.json:
                print(json.dumps([{**asdict(s), "src": s.src} for s in sessions]), file=stdout)
            else:
                for s in sessions:
                    print(
                        f"{s.src}  {s.status}  subject {s.subject or '-'}  "
                        f"scanned {s.scan_date or '-'}  uploaded {s.uploaded}",
                        file=stdout,
                    )
                print(f"prearchive: {counted(len(sessions), 'session')}", file=stdout)
            return EXIT_OK
        wanted = list(args.sessions)
        if args.all:
            wanted += [s.src for s in manage.list_prearchive(conn, args.project)]
        if not wanted and not args.all:
            raise UsageError("name the sessions (or --all); see 'prearchive ls'")
        if not wanted:  # --all over an empty prearchive: nothing to do is not a failure
            report = manage.ManageReport()
        elif args.action == "archive":
            report = manage.archive_prearchived(
                conn, wanted, project=args.project, overwrite=args.overwrite
            )
        elif args.action == "move":
            report = manage.move_prearchived(conn, wanted, args.to, project=args.project)
        else:
            report = manage.delete_prearchived(conn, wanted, project=args.project)
        _print(report, args.action, args.json, stdout, stderr)
        return EXIT_OK if report.ok else EXIT_FAILED_FILES

    return command()


def _print(
    report: manage.ManageReport, action: str, as_json: bool, out: TextIO, err: TextIO
) -> None:
    if as_json:
        rows = [
            {**asdict(r), "session": {**asdict(r.session), "src": r.session.src}}
            for r in report.results
        ]
        print(json.dumps({"action": action, "ok": report.ok, "sessions": rows}), file=out)
        return
    for r in report.results:
        if r.error:
            print(f"failed: {r.session.src}: {r.error}", file=err)
        elif action == "archive":
            checked = (
                f", {counted(r.verified, 'file')} verified against the upload"
                if r.checked
                else " (no record of an upload to check it against)"
            )
            print(f"archived: {r.session.src} -> {r.uri}{checked}", file=out)
        else:
            print(f"{action}d: {r.session.src}", file=out)
    failed = sum(1 for r in report.results if r.error)
    print(f"{action}: {counted(len(report.results), 'session')}, {failed} failed", file=out)
