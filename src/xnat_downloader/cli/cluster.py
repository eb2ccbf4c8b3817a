"""``xnat-downloader slurm`` and ``xnat-downloader status`` (CONTRACT §6).

``slurm`` plans once and writes ``DIR/.xnat-downloader/slurm/array.sbatch`` (submitting it
with ``--submit``); ``status`` merges every run's and shard's report.  Exit status of
``status``: 0 when every shard (and run) finished with nothing failed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TextIO

from xnat_downloader.api import cluster
from xnat_downloader.api.connection import Connection
from xnat_downloader.cli.common import (
    Streams,
    connection,
    connection_args,
    nothing_left_on_usage_error,
    server_url,
)
from xnat_downloader.cli.errors import EXIT_FAILED_FILES, EXIT_OK
from xnat_downloader.cli.inputs import expand
from xnat_downloader.cli.progress import human_bytes
from xnat_downloader.cli.selection import (
    check_plan_source,
    layout_of,
    selection_args,
    selection_of,
    tree_args,
)
from xnat_downloader.errors import UsageError
from xnat_downloader.plan.plan import load_manifest
from xnat_downloader.words import counted

SLURM_DESCRIPTION = (
    "Plan a download once and write it as a Slurm job array: N tasks, each fetching "
    "its shard (whole sessions, balanced by bytes) into one output tree, at most M at "
    "once. No password goes into the script or the job: tasks use your ~/.netrc, or "
    "an alias token this command writes to a file only you can read."
)
STATUS_DESCRIPTION = (
    "Merge every run's and every shard's latest report under DIR: per shard done, failed, "
    "running, unfinished or not started, the totals, and the command that runs the "
    "unfinished shards again."
)


def add_slurm_arguments(parser: argparse.ArgumentParser) -> None:
    connection_args(parser)
    selection_args(parser)
    g = parser.add_argument_group("the array")
    g.add_argument("-o", "--output", type=Path, required=True, metavar="DIR",
                   help="the output tree every task writes into")  # fmt: skip
    g.add_argument("--shards", type=int, required=True, metavar="N", help="number of tasks")
    g.add_argument("--max-running", type=int, metavar="M",
                   help="at most M tasks at once (default: all N)")  # fmt: skip
    g.add_argument("-j", "--jobs", type=int, default=4,
                   help="connections per task (default 4)")  # fmt: skip
    g.add_argument("--manifest", type=Path, metavar="FILE",
                   help="a saved manifest.json instead of a selection")  # fmt: skip
    tree_args(g)
    g.add_argument("--submit", action="store_true", help="submit it with sbatch")
    g.add_argument("--json", action="store_true", help="one JSON document on stdout")


def add_status_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="DIR",
                        help="the folder the downloads or the array write into")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")


def slurm_command(args: argparse.Namespace, io: Streams) -> int:
    return _slurm(args, io.stdout, io.stderr, io.interactive)


def _slurm(args: argparse.Namespace, stdout: TextIO, stderr: TextIO, interactive: bool) -> int:
    check_plan_source(args)
    projects = expand(args.project, "-p")
    planned_on = load_manifest(args.manifest)[0] if args.manifest is not None else ""
    url = server_url(args, planned_on)
    if args.manifest is None and not projects and not args.catalog:
        raise UsageError("say what to download: -p PROJECT (and other selection flags), or "
                         "--manifest FILE")  # fmt: skip
    conn = connection(args, url, interactive)
    with nothing_left_on_usage_error(args.output):  # a refused plan leaves nothing behind
        job = _prepare(args, conn, projects)
    if args.submit:  # outside: a refused sbatch keeps the script, to submit by hand
        job.job_id = cluster.submit_array(job.script)
    for gap in job.not_planned:
        print(f"not in the plan: {gap}", file=stderr)
    if args.json:
        print(json.dumps({
            "script": str(job.script), "manifest": str(job.manifest), "shards": job.shards,
            "max_running": job.max_running, "jobs": job.jobs, "connections": job.connections,
            "files": job.files, "bytes": job.bytes, "empty_shards": job.empty_shards,
            "login": job.login, "not_planned": job.not_planned, "job_id": job.job_id,
        }), file=stdout)  # fmt: skip
    else:
        print(f"plan: {job.files} files, {job.bytes} bytes ({human_bytes(job.bytes)}), "
              f"saved to {job.manifest}", file=stdout)  # fmt: skip
        print(f"script: {job.script}", file=stdout)
        print(
            f"array: {job.shards} tasks, at most {job.max_running} at once x {job.jobs} "
            f"connections = at most {job.connections} connections to {job.server}",
            file=stdout,
        )
        if job.empty_shards:
            one = job.empty_shards == 1
            print(f"note: {counted(job.empty_shards, 'shard')} {'gets' if one else 'get'} no "
                  f"session (more shards than sessions); {'it finishes' if one else 'they finish'}"
                  " at once", file=stderr)  # fmt: skip
        print(f"tasks log in with: {job.login}", file=stdout)
        if job.job_id:
            print(f"submitted: job {job.job_id}", file=stdout)
        else:
            print(f"submit it with: sbatch {job.script}", file=stdout)
        print(f"follow it with: xnat-downloader status -o {args.output}", file=stdout)
    return EXIT_FAILED_FILES if job.not_planned else EXIT_OK


def _prepare(
    args: argparse.Namespace, conn: Connection, projects: tuple[str, ...]
) -> cluster.ArrayJob:
    return cluster.prepare_array(
        conn,
        selection_of(args, projects),
        args.output,
        shards=args.shards,
        max_running=args.max_running,
        jobs=args.jobs,
        layout=layout_of(args),
        manifest=args.manifest,
        catalog=args.catalog,
        metadata=args.metadata,
    )


def status_command(args: argparse.Namespace, io: Streams) -> int:
    return _status(args, io.stdout)


def _status(args: argparse.Namespace, stdout: TextIO) -> int:
    found = cluster.status(args.output)
    states = [s.state for s in found.shards]
    verified = sum(s.verified for s in found.shards)
    failed = sum(s.failed for s in found.shards)
    if args.json:
        print(json.dumps({
            "output": str(found.outdir),
            "runs": [vars(s) for s in found.shards],
            "verified": verified, "failed": failed, "done": found.done, "rerun": found.rerun,
        }), file=stdout)  # fmt: skip
        return EXIT_OK if found.done else EXIT_FAILED_FILES
    for s in found.shards:
        name = f"shard {s.shard}" if s.shard else "download"
        so_far = s.state in ("running", "unfinished") and s.files
        shown = f"{s.verified} of {s.files}" if so_far else str(s.verified)
        print(f"{name}: {s.state}, {shown} verified, {s.failed} failed", file=stdout)
    if found.rerun:
        print(f"to finish: {found.rerun}", file=stdout)
    print(
        f"status: {counted(len(states), 'run')}, {states.count('done')} done, "
        f"{states.count('failed')} failed, {states.count('running')} running, "
        f"{states.count('unfinished')} unfinished, {states.count('not started')} not started; "
        f"{counted(verified, 'file')} verified, {failed} failed",
        file=stdout,
    )
    return EXIT_OK if found.done else EXIT_FAILED_FILES
