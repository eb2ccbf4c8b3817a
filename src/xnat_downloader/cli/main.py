"""``xnat-downloader``: download (and list) data from any XNAT server, and upload to it.

Subcommands ``download``, ``ls``, ``copy``, ``verify``, ``upload``, ``xget``, ``project``,
``prearchive``, ``dicom-send``, ``slurm`` and ``status``.  With no
subcommand, the seed tool's invocation ``python -m xnat_downloader -o DIR -w URL -u USER``
keeps working: it offers the numbered project chooser on a terminal, then downloads the
chosen projects.
"""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NoReturn, TextIO

from xnat_downloader import api
from xnat_downloader._version import __version__
from xnat_downloader.api import copy as copying
from xnat_downloader.api import verify as checking
from xnat_downloader.cli import cluster as cluster_cli
from xnat_downloader.cli import dicomsend as dicomsend_cli
from xnat_downloader.cli import manage as manage_cli
from xnat_downloader.cli import upload as upload_cli
from xnat_downloader.cli import xget as xget_cli
from xnat_downloader.cli.common import (
    INTERRUPTED,
    Streams,
    Terminated,
    configure_logging,
    connection,
    connection_args,
    counts_document,
    debug_log,
    display,
    done_line,
    guarded,
    json_out,
    logging_sink,
    nothing_left_on_usage_error,
    print_summary,
    reader_gone,
    server_url,
    stop_on_sigterm,
    warn_insecure,
)
from xnat_downloader.cli.errors import EXIT_FAILED_FILES, EXIT_OK, EXIT_USAGE
from xnat_downloader.cli.inputs import expand, labelled, menu, parse_choice
from xnat_downloader.cli.parser import Parser, xget_flags_in
from xnat_downloader.cli.progress import human_bytes
from xnat_downloader.cli.selection import (
    check_plan_source,
    constraints_given,
    layout_args,
    layout_of,
    selection_args,
    selection_of,
)
from xnat_downloader.errors import ConnectionFailed, UsageError
from xnat_downloader.http import credentials as creds_mod
from xnat_downloader.plan.plan import Plan, load_manifest
from xnat_downloader.plan.shard import parse_shard
from xnat_downloader.plan.shard import select as select_shard
from xnat_downloader.transfer.modes import Mode
from xnat_downloader.words import counted
from xnat_downloader.xnat.derived import Derived
from xnat_downloader.xnat.model import Session
from xnat_downloader.xnat.parse import catalog_link, server_of_link
from xnat_downloader.xnat.selection import Selection


@dataclass(frozen=True)
class ModuleCommand:
    """A subcommand defined in its own module: its flags, its body, and its help."""

    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, Streams], int]
    help: str
    description: str
    abbreviations: bool = True  # xget's single-dash flags must not be read as prefixes


MODULE_COMMANDS = {
    "upload": ModuleCommand(upload_cli.add_arguments, upload_cli.command,
                            "import sessions, fill resources, add subjects from a CSV",
                            upload_cli.DESCRIPTION),
    "xget": ModuleCommand(xget_cli.add_arguments, xget_cli.command,
                          "xget's flags and per-session zips", xget_cli.DESCRIPTION,
                          abbreviations=False),
    "project": ModuleCommand(manage_cli.add_project_arguments, manage_cli.project_command,
                             "create a project", manage_cli.PROJECT_DESCRIPTION),
    "prearchive": ModuleCommand(manage_cli.add_prearchive_arguments,
                                manage_cli.prearchive_command,
                                "list, archive, move or delete prearchive sessions",
                                manage_cli.PREARCHIVE_DESCRIPTION),
    "dicom-send": ModuleCommand(dicomsend_cli.add_arguments, dicomsend_cli.command,
                                "send DICOM files to a C-STORE receiver",
                                dicomsend_cli.DESCRIPTION),
    "slurm": ModuleCommand(cluster_cli.add_slurm_arguments, cluster_cli.slurm_command,
                           "write (and submit) a download as a Slurm job array",
                           cluster_cli.SLURM_DESCRIPTION),
    "status": ModuleCommand(cluster_cli.add_status_arguments, cluster_cli.status_command,
                            "merge every run's and shard's report",
                            cluster_cli.STATUS_DESCRIPTION),
}  # fmt: skip
COMMANDS = ("download", "ls", "verify", "copy", *MODULE_COMMANDS)
# Flags every command that talks to a server takes, so they may also come before its name.
LEADING_FLAGS = ("-v", "-vv", "-vvv", "--verbose", "-q", "--quiet")
SECRET_FLAGS = ("--password",)
DESCRIPTION = """\
Parallel, resumable, verified transfers out of and into XNAT.

With no command, the older form 'xnat-downloader -o DIR -w URL -u USER' still works: on a
terminal it offers a numbered list of projects, then downloads the chosen ones.
Run 'xnat-downloader COMMAND -h' for a command's flags."""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="xnat-downloader",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command")
    download = sub.add_parser("download", help="plan and fetch a selection")
    connection_args(download)
    selection_args(download)
    layout_args(download)
    download.set_defaults(handler=_download_or_ls)
    listing = sub.add_parser("ls", help="list what a selection matches")
    connection_args(listing)
    selection_args(listing)
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(handler=_download_or_ls)
    checking = sub.add_parser(
        "verify",
        help="re-hash every file a download recorded in DIR; with a server, ask it too",
    )
    connection_args(checking)
    checking.add_argument("-o", "--output", type=Path, required=True, metavar="DIR",
                          help="the folder a download wrote")  # fmt: skip
    checking.add_argument("--offline", action="store_true",
                          help="only the disk: do not ask the server")  # fmt: skip
    checking.add_argument("--json", action="store_true", help="one JSON document on stdout")
    checking.add_argument("--write-md5sum", type=Path, metavar="FILE",
                          help="write an 'md5sum -c' list of the intact files")  # fmt: skip
    checking.set_defaults(handler=_verify)
    copying = sub.add_parser(
        "copy", help="copy sessions from one XNAT to another, every file verified on the target"
    )
    _copy_args(copying)
    selection_args(copying)
    copying.set_defaults(handler=_copy)
    for name, command in MODULE_COMMANDS.items():
        sub_parser = sub.add_parser(
            name,
            help=command.help,
            description=command.description,
            allow_abbrev=command.abbreviations,
        )
        command.add_arguments(sub_parser)
        sub_parser.set_defaults(handler=command.run)
    return parser


def _copy_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("source and target")
    g.add_argument(
        "--from", dest="source", required=True, metavar="URL", help="the XNAT to copy from"
    )
    g.add_argument("--to", dest="target", required=True, metavar="URL", help="the XNAT to copy to")
    g.add_argument("--from-user", help="login on the source (default: ~/.netrc, $XNAT_USER, …)")
    g.add_argument("--to-user", help="login on the target (default: ~/.netrc, $XNAT_USER, …)")
    g.add_argument(
        "--to-project", metavar="PROJECT", help="the target project (default: the same ID)"
    )
    g.add_argument("--ca-bundle", metavar="FILE", help="CA certificates to trust for TLS")
    g.add_argument("--insecure", action="store_true", help="do not verify TLS certificates (warns)")
    g.add_argument("-j", "--jobs", type=int, default=4, help="parallel transfers (default 4)")
    g.add_argument("--json", action="store_true", help="one JSON document on stdout")
    g.add_argument("-v", "--verbose", action="count", default=0, help="more detail")
    g.add_argument("-q", "--quiet", action="store_true", help="only errors and the summary")


def legacy_parser() -> argparse.ArgumentParser:
    """The seed tool's flags: -w, -u, -o/--output_dir, -v, -ow, plus our download flags."""
    parser = Parser(
        prog="xnat-downloader",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    connection_args(parser)
    selection_args(parser)
    layout_args(parser)
    return parser


def _choose_projects(
    conn: api.Connection, ask: Callable[[str], str], terminal: TextIO
) -> tuple[str, ...]:
    """The seed tool's numbered chooser, on the terminal (stderr): stdout stays for
    results even when it is redirected."""
    projects = [p.id for p in api.list_projects(conn)]
    if not projects:
        raise UsageError("this user can see no projects on the server")
    print(menu(projects), file=terminal)
    print("(numbers or IDs separated by spaces, ranges such as 2-5, or all)", file=terminal)
    while True:
        try:
            # The seed tool's own prompt, word for word: scripts that answer it wait for it.
            answer = ask("Choose the project(s): ")
        except (KeyboardInterrupt, EOFError):
            raise UsageError("no project chosen: nothing was started") from None
        chosen = parse_choice(answer, projects)
        if isinstance(chosen, list):
            print(f"projects to download: {', '.join(chosen)}", file=terminal)
            return tuple(chosen)
        print(chosen, file=terminal)


def terminal_prompt(terminal: TextIO) -> Callable[[str], str]:
    """``input`` with its prompt on ``terminal`` (the command's stderr: ``input()`` itself
    would write it to stdout)."""

    def ask(prompt: str) -> str:
        terminal.write(prompt)
        terminal.flush()
        if sys.stdin.isatty():
            return input()  # line editing; EOFError on Ctrl-D
        line = sys.stdin.readline()
        if not line:
            raise EOFError
        return line.rstrip("\n")

    return ask


def _print_completion(argv: list[str], stdout: TextIO, stderr: TextIO) -> int:
    """``--print-completion bash|zsh|tcsh``: a completion script generated by shtab."""
    import shtab

    shells = ("bash", "zsh", "tcsh")
    if len(argv) != 1 or argv[0] not in shells:
        print(f"error: --print-completion takes one of {', '.join(shells)}", file=stderr)
        return EXIT_USAGE
    print(shtab.complete(build_parser(), shell=argv[0]), file=stdout)
    return EXIT_OK


def command_first(argv: list[str]) -> list[str]:
    """``-v copy …`` read as ``copy … -v``: verbosity flags put before a command's name
    (as many tools allow) go after its arguments, ahead of any ``--``.  Without a command
    name after them, ``argv`` is the seed tool's form and stays as it is."""
    lead = 0
    while lead < len(argv) and argv[lead] in LEADING_FLAGS:
        lead += 1
    if lead == 0 or lead == len(argv) or argv[lead] not in COMMANDS:
        return argv
    rest = argv[lead:]
    cut = rest.index("--") if "--" in rest else len(rest)
    return rest[:cut] + argv[:lead] + rest[cut:]


def run(
    argv: Sequence[str],
    *,
    stdout: TextIO,
    stderr: TextIO,
    interactive: bool,
    ask: Callable[[str], str] | None = None,
) -> int:
    """The command line, with its streams injected: every word of output goes to ``stdout``
    or ``stderr``, usage errors included (exit 2, as a return value, never SystemExit)."""
    argv = command_first(list(argv))
    io = Streams(stdout, stderr, interactive, ask or terminal_prompt(stderr))
    if argv and argv[0] == "--print-completion":
        return _print_completion(argv[1:], stdout, stderr)
    if argv and not argv[0].startswith("-") and argv[0] not in COMMANDS:
        close = difflib.get_close_matches(argv[0], COMMANDS, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}?" if close else f"the commands: {', '.join(COMMANDS)}"
        print(f"error: unknown command {argv[0]!r}; {hint}", file=stderr)
        return EXIT_USAGE
    if not argv or argv[0] != "xget":
        misplaced = xget_flags_in(argv)
        if misplaced:
            for advice in misplaced:
                print(f"error: {advice}", file=stderr)
            return EXIT_USAGE
    tree = argv and (argv[0] in COMMANDS or argv[0] in ("-h", "--help", "--version"))
    # The seed tool's bare form ("-o DIR -w URL -u USER") is a download.
    parser = build_parser() if tree else legacy_parser()
    parser.use_streams(stdout, stderr)  # type: ignore[attr-defined]
    Parser.last_error = ""
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # help, --version, or a usage error already printed
        code = exc.code if isinstance(exc.code, int) else EXIT_USAGE
        if code != EXIT_OK and "--json" in argv:  # stdout still holds one JSON document
            error = Parser.last_error or "usage error"
            print(json.dumps({"ok": False, "error": error, "exit": code}), file=stdout)
        return code
    if not tree:
        args.command, args.handler = "download", _download_or_ls
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return EXIT_USAGE
    args.argv, args.legacy = argv, not tree
    configure_logging(getattr(args, "verbose", 0), getattr(args, "quiet", False), stderr)
    if getattr(args, "insecure", False):  # said once, for every command, before any request
        warn_insecure(stderr)
    handler: Callable[[argparse.Namespace, Streams], int] = args.handler
    return guarded(lambda: handler(args, io), stderr, json_out(args, stdout))


def _verify(args: argparse.Namespace, io: Streams) -> int:
    stdout, stderr, interactive = io.stdout, io.stderr, io.interactive
    server, _ = checking.recorded(args.output)
    url = "" if args.offline else (args.web or server or os.environ.get("XNAT_HOST", ""))
    conn = None
    if url:
        conn = connection(args, url, interactive)
    try:
        report = checking.verify(args.output, conn)
    except ConnectionFailed as exc:
        if args.web:
            raise
        hint = f"it is the server recorded in {args.output}: add --offline to check without it"
        raise ConnectionFailed(f"{exc}; {hint}") from exc
    if args.write_md5sum is not None:
        checking.write_md5sum(report, args.write_md5sum)
    problems = [
        ("missing", report.missing),
        ("changed", report.changed),
        ("changed on server", report.changed_on_server),
        ("gone from server", report.gone),
        ("extra", report.extra),
    ]
    if args.json:
        document = {
            "files": report.files,
            "ok": len(report.ok),
            "server": url or None,
            **{name.replace(" ", "_"): paths for name, paths in problems},
        }
        print(json.dumps(document), file=stdout)
    else:
        for name, paths in problems:
            for path in paths:
                print(f"{name}: {path}", file=stdout)
        if not url:
            print("note: the server was not asked (--offline, or none recorded)", file=stderr)
        print(report.line(), file=stdout)
    return EXIT_OK if report.clean else EXIT_FAILED_FILES


def _copy(args: argparse.Namespace, io: Streams) -> int:
    stdout, stderr, interactive = io.stdout, io.stderr, io.interactive
    if args.catalog:
        raise UsageError("copy takes a selection (-p PROJECT and other flags), not a catalog")
    projects = expand(args.project, "-p")
    if not projects:
        raise UsageError("name what to copy with -p PROJECT (and any other selection flags)")

    def side(url: str, user: str | None) -> api.Connection:
        return connection(args, url, interactive, argparse.Namespace(user=user, password=None))

    source, target = side(args.source, args.from_user), side(args.target, args.to_user)
    with display(interactive, args.quiet or args.json, stderr) as shown:
        report = copying.copy(
            source,
            target,
            selection_of(args, projects),
            target_project=labelled(args.to_project, "--to-project") or None,
            jobs=args.jobs,
            sink=logging_sink(shown),
        )
    if args.json:
        document = {**counts_document(report), "sessions": report.sessions,
                    "notes": report.notes}  # fmt: skip
        print(json.dumps(document), file=stdout)
    else:
        if not args.quiet:
            for session, state in sorted(report.sessions.items()):
                print(f"{state}: {session}", file=stderr)
            for note in report.notes:
                print(f"note: {note}", file=stderr)
        print(done_line(report), file=stdout)
    return EXIT_OK if report.ok else EXIT_FAILED_FILES


def _server_of_catalog(args: argparse.Namespace) -> str:
    """With no -w, a catalog link names its own server."""
    link = catalog_link(getattr(args, "catalog", None) or "")
    return server_of_link(link) if link else ""


def _download_or_ls(args: argparse.Namespace, io: Streams) -> int:
    url = server_url(args, _server_of_catalog(args))
    if getattr(args, "max_rate", None) is not None and args.max_rate <= 0:
        raise UsageError(f"--max-rate {args.max_rate} must be a positive number of MB/s")
    if args.command != "download":
        if args.catalog:
            raise UsageError(
                "ls lists a selection; to see what a catalog holds, run download --catalog "
                "FILE --dry-run"
            )
        return _select_and_run(args, url, None, io)
    check_plan_source(args)
    if args.list_files and not args.dry_run:
        raise UsageError("--list-files lists what a --dry-run would fetch: add --dry-run")
    layout_of(args)  # a layout that cannot hold the selection is refused before any request
    outdir: Path = getattr(args, "output", None) or Path.cwd()
    with nothing_left_on_usage_error(outdir):
        if not args.dry_run:
            api.check_output_dir(outdir)  # before any request, as promised
        return _select_and_run(args, url, outdir, io)


def _select_and_run(args: argparse.Namespace, url: str, outdir: Path | None, io: Streams) -> int:
    projects = expand(args.project, "-p")
    sessions = expand(args.session, "-s")
    conn = connection(args, url, io.interactive)
    legacy_menu = io.interactive and args.legacy  # the seed tool's own form, on a terminal
    if not projects and sessions and not args.catalog and not legacy_menu:
        # -s alone: the sessions' projects, from one listing of every visible session.  (The
        # seed tool's own form on a terminal still offers its project menu.)
        projects = tuple(api.projects_for_sessions(conn, list(sessions)))
    if not projects and not args.catalog and not getattr(args, "manifest", None):
        if args.command == "ls":
            given = constraints_given(args)
            if given:  # they narrow a selection, and none was named
                raise UsageError(
                    f"{', '.join(given)} narrow what a project holds: name the project with "
                    "-p PROJECT (ls -w URL alone lists the projects)"
                )
            # Nothing selected: what there is to select from.
            return _ls_projects(conn, args.json, io.stdout)
        if not io.interactive:
            raise UsageError(
                "no project selected: use -p PROJECT (or run on a terminal to choose from a list)"
            )
        projects = _choose_projects(conn, io.ask, io.stderr)
    selection = selection_of(args, projects)
    if args.command == "ls":
        return _ls(conn, selection, args, io.stdout, io.stderr)
    return _download(conn, selection, args, outdir or Path.cwd(), io)


def _not_in_plan(result: api.PlanResult, stderr: TextIO) -> int:
    """What the selection named but no file stands for, a line each; exit 1 if any (a
    dry run or a listing must not look complete when something selected is missing)."""
    for gap in result.gaps:
        print(f"not in the plan: {gap.what}: {gap.reason}", file=stderr)
    return EXIT_FAILED_FILES if result.gaps else EXIT_OK


def _print_plan(result: api.PlanResult, args: argparse.Namespace, out: TextIO, err: TextIO) -> None:
    """A dry run: per-session totals (every file with ``--list-files``) and the ``plan:``
    line; with ``--json`` only the list of planned files."""
    plan = result.plan
    _print_renamed(plan, err)
    if args.json:
        files = [
            {"uri": e.file.uri, "local": e.local, "size": e.file.size, "md5": e.file.md5}
            for e in plan.entries
        ]
        print(json.dumps(files, indent=1), file=out)
        return
    if args.list_files:
        for e in plan.entries:
            size = "?" if e.file.size is None else str(e.file.size)
            print(f"{size:>12}  {e.local}", file=out)
    else:
        for line in session_totals(plan):
            print(line, file=out)
    print(f"plan: {len(plan.entries)} files, {plan.total_bytes} bytes", file=out)


def session_totals(plan: Plan) -> list[str]:
    """One line per session: files, bytes, scans and where it goes."""
    totals: dict[str, list[int]] = {}
    scans: dict[str, set[str]] = {}
    for e in plan.entries:
        f = e.file
        key = "/".join(x for x in (f.project, f.subject_label, f.session_label) if x) or "other"
        counts = totals.setdefault(key, [0, 0])
        counts[0] += 1
        counts[1] += f.size or 0
        if f.category == "scan":
            scans.setdefault(key, set()).add(f.owner)
    return [
        f"{n:>7} files {human_bytes(size):>10} {len(scans.get(key, ())):>4} scans  {key}"
        for key, (n, size) in sorted(totals.items())
    ]


def own_resources(plan: Plan) -> list[tuple[tuple[str, str, str], tuple[int, int]]]:
    """The plan's project and subject resources: (project, subject, resource) with their
    files and bytes, in order."""
    totals: dict[tuple[str, str, str], tuple[int, int]] = {}
    for e in plan.entries:
        f = e.file
        if f.category in ("project", "subject"):
            n, size = totals.get((f.project, f.subject_label, f.resource), (0, 0))
            totals[(f.project, f.subject_label, f.resource)] = (n + 1, size + (f.size or 0))
    return sorted(totals.items())


def _print_renamed(plan: Plan, stream: TextIO) -> None:
    for uri, local in plan.renamed:
        print(f"note: {uri} renamed to {local} to avoid a name collision", file=stream)


def _nothing_matched(selection: Selection, out: TextIO) -> int:
    print(f"nothing matched: {selection.describe()}", file=out)
    return EXIT_OK


def _download(
    conn: api.Connection, selection: Selection, args: argparse.Namespace, outdir: Path,
    io: Streams,
) -> int:  # fmt: skip
    stdout, stderr, interactive = io.stdout, io.stderr, io.interactive
    saved: Plan | None = None
    shard = parse_shard(args.shard, os.environ) if args.shard else None
    if shard is not None and args.prune:
        raise UsageError(
            "--prune cannot be used with --shard: a shard sees only its part of the tree; "
            "prune with a download of the whole selection"
        )
    if args.manifest:
        _server, saved = load_manifest(args.manifest)
    if args.dry_run:
        result = (
            api.PlanResult(saved, [], [], 0, conn.url)
            if saved
            else api.plan(
                conn,
                selection,
                layout=layout_of(args),
                catalog=args.catalog,
                metadata=args.metadata,
            )
        )
        if shard is not None:
            result = replace(result, plan=select_shard(result.plan, shard))
        if args.verbose:
            print(f"the plan took {counted(result.requests, 'request')}", file=stderr)
        _print_plan(result, args, stdout, stderr)
        return _not_in_plan(result, stderr)

    def on_plan(result: api.PlanResult) -> None:
        if args.verbose:
            print(
                f"plan: {len(result.plan.entries)} files, {result.plan.total_bytes} bytes "
                f"({counted(result.requests, 'request')}; not asked about again: "
                f"{counted(result.reused, 'session')} unchanged since the last run)",
                file=stderr,
            )
        _print_renamed(result.plan, stderr)

    with (
        debug_log(outdir, ["xnat-downloader", *args.argv], SECRET_FLAGS, stderr) as log_path,
        display(interactive, args.quiet or args.json, stderr) as shown,
    ):
        report = api.download(
            conn,
            selection,
            outdir,
            layout=layout_of(args),
            catalog=args.catalog,
            saved_plan=saved,
            jobs=args.jobs,
            overwrite=args.overwrite,
            checksum=args.checksum,
            space_check=args.space_check,
            max_rate=args.max_rate * 1_000_000 if args.max_rate else None,
            mode=Mode(args.transfer),
            sink=logging_sink(shown),
            on_plan=on_plan,
            shard=shard,
            metadata=args.metadata,
            prune=args.prune,
            rescan=args.rescan,
        )
    if args.json:
        print(json.dumps(report_document(report, log_path)), file=stdout)
        return EXIT_OK if report.ok else EXIT_FAILED_FILES
    _print_vanished(report, args.prune, stderr)
    if report.files == 0 and shard is not None and not report.outcomes:
        print(f"shard {shard}: no sessions fell to this shard; nothing to do", file=stderr)
        print(done_line(report), file=stdout)
        return EXIT_OK
    if report.files == 0:
        return _nothing_matched(selection, stdout)
    print_summary(report, args.quiet, stdout, stderr)
    if not args.quiet:
        print(f"debug log: {log_path}", file=stderr)
    return EXIT_OK if report.ok else EXIT_FAILED_FILES


def _print_vanished(report: api.Report, pruned: bool, err: TextIO) -> None:
    for session in report.vanished:
        print(f"vanished: {session} (no longer on the server or in the selection)", file=err)
    if report.vanished:
        print(
            f"pruned {counted(report.pruned, 'file')} of those sessions"
            if pruned
            else "their files are kept; --prune removes them",
            file=err,
        )


def report_document(report: api.Report, log_path: Path | None) -> dict[str, object]:
    """``download --json``: the counts, every failure with its reason, and where the
    report and the debug log are."""
    return {
        **counts_document(report),
        "seconds": round(report.seconds, 3),
        "renamed": [{"uri": uri, "local": local} for uri, local in report.renamed],
        "vanished": report.vanished,
        "pruned": report.pruned,
        "sessions_unchanged": report.reused,
        "report": str(report.report_path) if report.report_path else None,
        "report_error": report.report_error,
        "log": str(log_path) if log_path else None,
    }


def _ls_projects(conn: api.Connection, as_json: bool, out: TextIO) -> int:
    """``ls`` with no project, session or catalog named: the projects this user can see,
    one a line (ID, then its name), or as ``{"projects": [...]}`` with ``--json``."""
    projects = api.list_projects(conn)
    if as_json:
        rows = [{"id": p.id, "name": p.name, "secondary_id": p.secondary_id} for p in projects]
        print(json.dumps({"projects": rows}, indent=1), file=out)
        return EXIT_OK
    if not projects:
        print("this user can see no projects on the server", file=out)
        return EXIT_OK
    width = max(len(p.id) for p in projects)
    for p in projects:
        print(f"{p.id:<{width}}  {p.name}".rstrip(), file=out)
    print(f"\n{counted(len(projects), 'project')}; list one's sessions with -p PROJECT", file=out)
    return EXIT_OK


def _ls(
    conn: api.Connection, selection: Selection, args: argparse.Namespace, out: TextIO,
    err: TextIO,
) -> int:  # fmt: skip
    result = api.ls(conn, selection)
    counts = api.scan_type_counts(result.scans)
    if args.json:
        states = api.session_workflows(conn, result.sessions)
        print(
            json.dumps(
                {
                    "sessions": [
                        {
                            "id": s.id,
                            "label": s.label,
                            "project": s.project,
                            "subject": s.subject_label,
                            "date": str(s.date or ""),
                            "xsiType": s.xsi_type,
                            "workflows": _workflows_entry(states, s.id),
                        }
                        for s in result.sessions
                    ],
                    "scan_types": dict(counts),
                    "own_resources": [
                        {"project": p, "subject": s, "resource": r, "files": n, "bytes": b}
                        for (p, s, r), (n, b) in own_resources(result.plan)
                    ],
                    "assessors_and_reconstructions": [
                        {
                            "session": s.label,
                            "session_id": s.id,
                            "kind": d.category,
                            "name": d.name,
                            "id": d.source_id,
                            "xsiType": d.xsi_type,
                        }
                        for s, d in _derived_rows(result)
                    ],
                    "files": len(result.plan.entries),
                    "bytes": result.plan.total_bytes,
                    "not_in_plan": [{"what": g.what, "why": g.reason} for g in result.gaps],
                },
                indent=1,
            ),
            file=out,
        )
        return _not_in_plan(result, err)
    owned = own_resources(result.plan)
    if not result.sessions and not owned:
        return max(_nothing_matched(selection, out), _not_in_plan(result, err))
    print(f"{'session':<28} {'subject':<20} {'date':<10}  type", file=out)
    for s in result.sessions:
        day = str(s.date or "")  # a date's own format spec would take "<10" as strftime text
        print(f"{s.label:<28} {s.subject_label:<20} {day:<10}  {s.xsi_type}", file=out)
    print("\nscan types:", file=out)
    for scan_type, count in counts:
        print(f"  {count:>5}  {scan_type}", file=out)
    derived = _derived_rows(result)
    if derived:
        print("\nassessors and reconstructions:", file=out)
        for s, d in derived:
            kind = "assessor" if d.category == "assessor" else "reconstruction"
            print(f"  {s.label:<28} {kind:<14} {d.name}  {d.xsi_type}", file=out)
    if owned:
        print("\nresources of projects and subjects:", file=out)
        for (project, subject, resource), (n, size) in owned:
            where = "/".join(x for x in (project, subject) if x)
            print(f"  {n:>5} files {human_bytes(size):>10}  {where}: {resource}", file=out)
    print(
        f"\ntotal: {counted(len(result.sessions), 'session')}, "
        f"{counted(len(result.scans), 'scan')}, {counted(len(result.plan.entries), 'file')}, "
        f"{counted(result.plan.total_bytes, 'byte')} "
        f"({human_bytes(result.plan.total_bytes)})",
        file=out,
    )
    return _not_in_plan(result, err)


def _derived_rows(result: api.PlanResult) -> list[tuple[Session, Derived]]:
    """Each session's selected assessors and reconstructions, in the sessions' order."""
    return [(s, d) for s in result.sessions for d in result.derived.get(s.id, [])]


def _workflows_entry(states: dict[str, api.WorkflowState], session: str) -> dict[str, Any]:
    """``ls --json``'s per-session workflow state: ``complete`` is true when the session's
    newest workflow record is Complete, or when it has none (nothing is waiting)."""
    state = states.get(session)
    if state is None:
        return {"complete": True, "latest": None}
    latest = {"pipeline": state.pipeline, "status": state.status, "step": state.step,
              "launched": state.launched}  # fmt: skip
    return {"complete": state.complete, "latest": latest}


def main(argv: Sequence[str] | None = None) -> int:
    stop_on_sigterm()
    code: int | None = None
    try:
        code = run(
            list(sys.argv[1:] if argv is None else argv),
            stdout=sys.stdout,
            stderr=sys.stderr,
            interactive=creds_mod.stdin_is_tty(),
        )
        sys.stdout.flush()  # a reader that went away shows here, not at interpreter exit
        return code
    except BrokenPipeError:
        return reader_gone()
    except Terminated:  # outside the command's own handling
        if code is None:  # before it began: the run stops as it would have inside
            print(INTERRUPTED, file=sys.stderr)
        return 143


def console() -> NoReturn:
    """The ``xnat-downloader`` program: :func:`main`, then out of the process at once.

    By the time :func:`main` returns, a command has renamed its files into place,
    committed its state and closed its logs; what Python's own shutdown would still do,
    take every module apart and collect their garbage, cost 45-50 ms of every run (a fifth
    of ``--version``, as much again after a download of 2,000 files).  Only the standard
    streams and the logging handlers are left to flush, and they are flushed here.  A
    worker thread still running (hashing for a run that was interrupted) ends with the
    process, as a thread of a killed command would."""
    code = main()
    # The command is over: an interrupt from here on only sets the exit status, as it
    # would if the process had already gone.
    late: list[int] = []
    signal.signal(signal.SIGTERM, lambda *_: late.append(143))
    signal.signal(signal.SIGINT, lambda *_: late.append(130))
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError):  # its reader went, or it was closed
            code = reader_gone() if stream is sys.stdout else code
        except OSError:  # stderr is nowhere to be written: there is no one to tell
            pass
    os._exit(late[0] if late else code)


__all__ = ["EXIT_FAILED_FILES", "console", "main", "run"]
