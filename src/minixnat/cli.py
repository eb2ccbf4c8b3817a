"""``minixnat``: generate demo data, serve an archive, manage users and project access."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from minixnat import __version__
from minixnat.store import ACCESS_LEVELS, ROLES, Store, StoreError
from minixnat.store.check import check
from minixnat.store.schema import SchemaError

if TYPE_CHECKING:
    from minixnat.dicom.receiver import Receiver


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        msg = f"{text} is not a probability between 0 and 1"
        raise argparse.ArgumentTypeError(msg)
    return value


def _int_from(low: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least ``low``."""

    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            msg = f"{text} must be {low} or more"
            raise argparse.ArgumentTypeError(msg)
        return value

    parse.__name__ = "whole number"  # argparse names the type in its error messages
    return parse


_positive_int = _int_from(1)
_non_negative_int = _int_from(0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="minixnat",
        description="A small XNAT-compatible archive server: generate demo data, serve an "
        "archive over XNAT's REST API (and DICOM), check it, manage users and project access.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo-data", help="create a deterministic synthetic archive")
    demo.add_argument("root", type=Path)
    for name, default in (
        ("projects", 2),
        ("subjects", 3),
        ("sessions", 2),
        ("scans", 3),
        ("files", 4),
        ("file-kb", 64),
        ("seed", 0),
    ):
        demo.add_argument(
            f"--{name}", type=_non_negative_int, default=default, help=f"(default {default})"
        )
    demo.add_argument(
        "--snapshots",
        action="store_true",
        help="queue a snapshot run for every session (made when the archive is served)",
    )
    _json_flag(demo)

    serve = sub.add_parser("serve", help="serve an archive over XNAT's REST API")
    serve.add_argument("--root", type=Path, required=True, help="the archive folder to serve")
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    serve.add_argument("--port", type=_non_negative_int, default=8080, help="0 picks a free port")
    serve.add_argument(
        "--latency-ms", type=_non_negative_int, default=0, help="delay every request by N ms"
    )
    serve.add_argument(
        "--no-range", action="store_true", help="ignore Range headers, as XNAT's /data API does"
    )
    serve.add_argument(
        "--drop-rate",
        type=_probability,
        default=0.0,
        help="fraction of file and archive bodies cut off part-way",
    )
    serve.add_argument(
        "--error-rate",
        type=_probability,
        default=0.0,
        help="fraction of requests answered 503 with Retry-After: 1",
    )
    serve.add_argument(
        "--chaos-seed",
        type=int,
        default=None,
        help="seed for --drop-rate/--error-rate, for reproducible faults",
    )
    serve.add_argument(
        "--session-ttl",
        type=float,
        default=900.0,
        help="JSESSION idle expiry in seconds (default 900, XNAT's 15 min)",
    )
    serve.add_argument(
        "--conn-mbps", type=float, default=0.0, help="pace each response body to at most X MB/s"
    )
    serve.add_argument(
        "--tls-cert",
        type=Path,
        metavar="FILE",
        help="serve HTTPS with this certificate chain (PEM); needs --tls-key",
    )
    serve.add_argument(
        "--tls-key", type=Path, metavar="FILE", help="the certificate's private key (PEM)"
    )
    serve.add_argument(
        "--access-log",
        metavar="FILE",
        help="write one line per request (time, client, method, path, status, bytes, ms) "
        "to FILE, or to stdout with '-'; query strings and token secrets are left out",
    )

    serve.add_argument(
        "--workers",
        type=_positive_int,
        default=1,
        metavar="N",
        help="serve from N processes (default 1), so that an import or a zip keeping one "
        "busy does not hold up other requests.  The fault switches then draw their "
        "chances in each process apart",
    )
    serve.add_argument(
        "--no-snapshots",
        action="store_true",
        help="do not make snapshots of sessions as they are archived (a pipeline launch "
        "through the REST API still makes them for one session)",
    )
    serve.add_argument(
        "--site-id",
        metavar="ID",
        help="set the site ID that new subjects', sessions' and assessors' IDs start with "
        "(default XNAT: XNAT_E00001), kept in ROOT; IDs already given stay",
    )

    dicom = serve.add_argument_group("DICOM receiver (C-ECHO, C-STORE)")
    dicom.add_argument(
        "--dicom-port",
        type=_non_negative_int,
        default=None,
        metavar="N",
        help="also receive DICOM on port N (0 picks a free one; named on stdout's second line)",
    )
    dicom.add_argument("--dicom-ae", metavar="TITLE", help="its AE title (default MINIXNAT)")
    dicom.add_argument(
        "--dicom-quiet",
        type=float,
        metavar="SECONDS",
        help="a study becomes a session once nothing arrived for it for this long (default 5)",
    )
    dicom.add_argument(
        "--dicom-refuse",
        action="append",
        default=[],
        metavar="TITLE",
        help="reject associations from this calling AE title (repeatable)",
    )
    dicom.add_argument(
        "--dicom-bind",
        action="append",
        default=[],
        metavar="TITLE=PROJECT",
        help="data sent to called AE TITLE goes to PROJECT when its headers name none",
    )

    check = sub.add_parser(
        "check",
        help="check an archive: every catalog row against its file on disk (size and MD5)",
        description="Compare every file the catalog lists with the disk: present, the same "
        "size, the same MD5; and list files on disk that no catalog row names. "
        "Exit 0 when all is consistent, 1 otherwise.",
    )
    check.add_argument("--root", type=Path, required=True, help="the archive folder")
    check.add_argument(
        "--quick", action="store_true", help="sizes only, no MD5s (what serve checks at start)"
    )
    _json_flag(check)

    user = sub.add_parser("user", help="manage users")
    user_sub = user.add_subparsers(dest="user_command", required=True)
    add = user_sub.add_parser("add", help="create a user (or reset their password)")
    add.add_argument("--root", type=Path, required=True, help="the archive folder")
    add.add_argument("name", help="the login name")
    add.add_argument("--password", required=True, help="the password")
    add.add_argument("--admin", action="store_true", help="make the user a site admin")
    add.add_argument("--firstname", default="", help="first name, as listed by /data/users")
    add.add_argument("--lastname", default="", help="last name")
    add.add_argument("--email", default="", help="e-mail address")
    _json_flag(add)

    project = sub.add_parser("project", help="manage project access")
    project_sub = project.add_subparsers(dest="project_command", required=True)
    access = project_sub.add_parser("access", help="set a project's accessibility")
    access.add_argument("--root", type=Path, required=True, help="the archive folder")
    access.add_argument("project")
    access.add_argument("level", choices=ACCESS_LEVELS)
    _json_flag(access)
    member = project_sub.add_parser("member", help="give a user a role in a project")
    member.add_argument("--root", type=Path, required=True, help="the archive folder")
    member.add_argument("project")
    member.add_argument("user")
    member.add_argument("role", choices=ROLES)
    _json_flag(member)
    return parser


def _json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", action="store_true", help="print one JSON document on stdout, and nothing else"
    )


def _said(args: argparse.Namespace, text: str, document: dict[str, object]) -> None:
    """What a command did: ``text`` on stdout, or ``document`` with ``--json``."""
    print(json.dumps(document) if getattr(args, "json", False) else text)


def _open(root: Path) -> Store:
    if not (root / "minixnat.sqlite").exists():
        msg = (
            f"{root} is not a minixnat archive (no minixnat.sqlite); create one with "
            f"'minixnat demo-data {root}' (add --projects 0 for an empty one)"
        )
        raise StoreError(msg)
    return Store(root)


def run_check(args: argparse.Namespace) -> int:
    store = _open(args.root)
    try:
        report = check(store, full=not args.quick)
    finally:
        store.close()
    if not args.json:
        for problem in report.problems:
            print(problem)
        if store.recovered:
            print(f"finished or undid {store.recovered} interrupted transaction(s) first")
    if not store.exclusive:
        print(
            "note: another process (a running server?) has this archive open; writes it has "
            "under way may show as problems until they finish",
            file=sys.stderr,
        )
    _said(
        args,
        f"check: {report.files} files, {len(report.problems)} problems",
        {"ok": report.ok, "files": report.files, "problems": list(report.problems),
         "recovered": store.recovered},
    )  # fmt: skip
    return 0 if report.ok else 1


class CannotServe(Exception):
    """The server could not start; the message says why."""


def serve(args: argparse.Namespace) -> int:
    from minixnat.server.accesslog import AccessLog
    from minixnat.server.app import App, clear_leftovers
    from minixnat.server.faults import Faults
    from minixnat.server.run import Tls, listening_sockets, run_workers, url_of

    receiver_flags = [
        flag
        for flag, value in (
            ("--dicom-ae", args.dicom_ae),
            ("--dicom-quiet", args.dicom_quiet),
            ("--dicom-refuse", args.dicom_refuse),
            ("--dicom-bind", args.dicom_bind),
        )
        if value not in (None, [])
    ]
    if receiver_flags and args.dicom_port is None:
        print(
            f"minixnat: {', '.join(receiver_flags)} set up the DICOM receiver, which only "
            "--dicom-port N (0: a free port) starts; add it, or leave them out",
            file=sys.stderr,
        )
        return 2
    try:
        both = "--tls-cert and --tls-key go together; give both"
        tls = Tls.given(args.tls_cert, args.tls_key, both=both)
    except ValueError as exc:
        print(f"minixnat: {exc}", file=sys.stderr)
        return 2
    store = _open(args.root)
    report = check(store, full=False)
    if not report.ok:
        shown = "\n".join(f"  {p}" for p in report.problems[:10])
        more = len(report.problems) - 10
        print(
            f"minixnat: {args.root} is inconsistent; refusing to serve it:\n{shown}"
            + (f"\n  … and {more} more" if more > 0 else "")
            + f"\nRun 'minixnat check --root {args.root}' for the whole list.",
            file=sys.stderr,
        )
        return 2
    if args.site_id is not None:
        store.set_site_id(args.site_id)
    faults = Faults(
        latency_ms=args.latency_ms,
        no_range=args.no_range,
        drop_rate=args.drop_rate,
        error_rate=args.error_rate,
        chaos_seed=args.chaos_seed,
        session_ttl=args.session_ttl,
        conn_mbps=args.conn_mbps,
    )
    bound = _bindings(args.dicom_bind)
    if bound is None:
        return 2
    try:
        access_log = AccessLog(args.access_log) if args.access_log else None
    except OSError as exc:
        print(f"minixnat: cannot write the access log {args.access_log}: {exc}", file=sys.stderr)
        return 2
    try:
        socks = listening_sockets(args.host, args.port, args.workers)
    except OSError as exc:
        print(
            f"minixnat: cannot listen on {args.host}:{args.port}: {exc.strerror}", file=sys.stderr
        )
        return 2
    clear_leftovers(store)
    if args.workers > 1:
        store.close()  # each process opens its own, after the fork
    receiver: Receiver | None = None

    def app(primary: bool) -> App:
        own = store if args.workers == 1 else _open(args.root)
        return App(
            own, faults, access_log=access_log, snapshots=not args.no_snapshots, primary=primary
        )

    def primary() -> App:
        nonlocal receiver
        made = app(primary=True)
        if args.dicom_port is not None:
            from minixnat.dicom.receiver import Receiver, ReceiverOptions

            options = ReceiverOptions(
                ae_title=args.dicom_ae or "MINIXNAT",
                host=args.host,
                port=args.dicom_port,
                quiet=5.0 if args.dicom_quiet is None else args.dicom_quiet,
                refuse=args.dicom_refuse,
                bound=bound,
            )
            try:
                receiver = Receiver(made.store, options)
            except (OSError, ValueError) as exc:
                made.close()
                raise CannotServe(f"cannot start the DICOM receiver: {exc}") from exc
        print(f"minixnat listening on {url_of(socks[0], tls)}", flush=True)
        if receiver is not None:
            print(receiver.line, flush=True)
        return made

    try:
        run_workers(socks, primary, lambda: app(primary=False), tls)
    except CannotServe as exc:
        print(f"minixnat: {exc}", file=sys.stderr)
        return 2
    finally:
        if receiver is not None:
            receiver.stop()
    return 0


def _bindings(pairs: list[str]) -> dict[str, str] | None:
    """``TITLE=PROJECT`` flags as a dict; None (after saying why) when one is malformed."""
    bound: dict[str, str] = {}
    for pair in pairs:
        title, sep, project = pair.partition("=")
        if not sep or not title.strip() or not project.strip():
            print(f"minixnat: --dicom-bind {pair!r} must be TITLE=PROJECT", file=sys.stderr)
            return None
        bound[title.strip()] = project.strip()
    return bound


def main(argv: Sequence[str] | None = None) -> int:
    try:
        code = _command(argv)
        sys.stdout.flush()  # a reader that went away shows here, not at interpreter exit
        return code
    except KeyboardInterrupt:  # Ctrl-C before a server is up, or in another command
        return 130
    except BrokenPipeError:
        # The output's reader closed its end (`check | head`): end quietly, as a command
        # killed by SIGPIPE would (141), with the streams on /dev/null for the final flush.
        devnull = os.open(os.devnull, os.O_WRONLY)
        for stream in (sys.stdout, sys.stderr):
            try:
                os.dup2(devnull, stream.fileno())
            except (OSError, ValueError):
                pass
        os.close(devnull)
        return 141


def _command(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "demo-data":
            from minixnat.demodata import DemoSpec, generate

            if (args.root / "minixnat.sqlite").exists():
                msg = f"{args.root} already holds an archive; choose an empty folder"
                raise StoreError(msg)
            spec = DemoSpec(
                projects=args.projects,
                subjects=args.subjects,
                sessions=args.sessions,
                scans=args.scans,
                files=args.files,
                file_kb=args.file_kb,
                seed=args.seed,
            )
            store = generate(args.root, spec)
            if args.snapshots:
                for experiment in store.list_experiments(sessions_only=True):
                    store.queue_snapshots(experiment, user="admin", why="demo data")
            store.close()
            _said(
                args,
                f"demo archive written to {args.root} (admin / admin)",
                {"ok": True, "root": str(args.root), "admin": "admin"},
            )
            return 0
        if args.command == "serve":
            return serve(args)
        if args.command == "check":
            return run_check(args)
        if args.command == "user":
            _open(args.root).add_user(
                args.name,
                args.password,
                admin=args.admin,
                firstname=args.firstname,
                lastname=args.lastname,
                email=args.email,
            )
            if args.json:  # otherwise silent, as before
                print(json.dumps({"ok": True, "user": args.name, "admin": args.admin}))
            return 0
        if args.command == "project":
            store = _open(args.root)
            if args.project_command == "access":
                store.set_accessibility(args.project, args.level)
                done: dict[str, object] = {"project": args.project, "access": args.level}
            else:
                store.set_role(args.project, args.user, args.role)
                done = {"project": args.project, "user": args.user, "role": args.role}
            if args.json:  # otherwise silent, as before
                print(json.dumps({"ok": True, **done}))
            return 0
    except (StoreError, SchemaError) as exc:
        print(f"minixnat: {exc}", file=sys.stderr)
        if getattr(args, "json", False):
            print(json.dumps({"ok": False, "error": str(exc), "exit": 2}))
        return 2
    return 2
