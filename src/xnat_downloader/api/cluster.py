"""Downloads as a Slurm job array: :func:`prepare_array` and :func:`status`.

``prepare_array`` plans once and saves the plan where every task reads it
(``DIR/.xnat-downloader/slurm/manifest.json``), so no task walks the server; it then writes
``array.sbatch``, an array of N tasks of which at most M run at once, each fetching its
shard (:mod:`xnat_downloader.plan.shard`) with ``-j`` connections.  No password is written:
tasks log in through the user's ``~/.netrc`` entry for the server when there is one, or
else through an alias token issued now and kept in a 0600 file beside the script.

``status`` merges what every run and every shard reported into one view.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from xnat_downloader import aio
from xnat_downloader.api.connection import Connection
from xnat_downloader.api.download import check_output_dir, plan_in
from xnat_downloader.errors import UsageError
from xnat_downloader.plan.layout import LayoutOptions
from xnat_downloader.plan.plan import Plan, load_manifest, manifest_json
from xnat_downloader.plan.shard import Shard, assign
from xnat_downloader.transfer import workdir
from xnat_downloader.transfer.engine import check_jobs
from xnat_downloader.transfer.localfs import write_whole
from xnat_downloader.transfer.state import read_verified
from xnat_downloader.transfer.workdir import StateFolder
from xnat_downloader.xnat.selection import Selection
from xnat_downloader.xnat.tokens import issue_token


@dataclass
class ArrayJob:
    """What :func:`prepare_array` wrote (and submitted)."""

    script: Path
    manifest: Path
    shards: int
    max_running: int
    jobs: int
    server: str
    files: int
    bytes: int
    empty_shards: int  # shards no session fell to (more shards than sessions)
    login: str  # how tasks log in: "netrc (~/.netrc)", "alias token (FILE)" or "none"
    not_planned: list[str] = field(default_factory=list)  # selected, but not plannable
    job_id: str = ""

    @property
    def connections(self) -> int:
        """The most connections the array opens to the server at once."""
        return min(self.max_running, self.shards) * self.jobs


def slurm_dir(outdir: Path) -> Path:
    return workdir.slurm(outdir)


def _task_command(
    server: str, manifest: Path, outdir: Path, shards: int, jobs: int, rate: float | None
) -> str:
    argv = [sys.executable, "-m", "xnat_downloader", "download", "-w", server,
            "--manifest", str(manifest), "-o", str(outdir), "-j", str(jobs), "-q"]  # fmt: skip
    if rate is not None:
        argv += ["--max-requests", f"{rate:g}"]
    # The task's index is the shell's to expand; N is fixed here, so resubmitting a single
    # task (sbatch --array=K) still fetches shard K of N.
    return " ".join(shlex.quote(a) for a in argv) + f' --shard "${{SLURM_ARRAY_TASK_ID}}/{shards}"'


def render_script(
    *, outdir: Path, server: str, manifest: Path, shards: int, max_running: int, jobs: int,
    netrc: Path | None, max_requests: float | None = None,
) -> str:  # fmt: skip
    """The sbatch script (pure).  ``max_requests`` (request starts a second) is shared by
    the tasks that may run at once: each gets its part."""
    logs = slurm_dir(outdir) / "logs"
    host = urlsplit(server).netloc
    running = min(max_running, shards)
    per_task = max_requests / running if max_requests is not None else None
    lines = [
        "#!/bin/bash",
        "#SBATCH --job-name=xnat-downloader",
        f"#SBATCH --array=0-{shards - 1}%{max_running}",
        f"#SBATCH --output={logs}/task-%a.out",
        f"#SBATCH --chdir={outdir}",
        # The submitting shell's environment, but never its XNAT password.
        "#SBATCH --export=ALL,XNAT_PASS=,XNAT_USER=",
        "# Written by 'xnat-downloader slurm'. Each task fetches its shard of the saved plan;",
        f"# at most {max_running} tasks x {jobs} connections = "
        f"{running * jobs} connections reach {host} at once"
        + (
            f", starting at most {max_requests:g} requests a second ({per_task:g} each)."
            if per_task is not None
            else "."
        ),
        "# Resubmit unfinished shards with: sbatch --array=K[,K...] this-file",
        "set -u",
        "unset XNAT_PASS XNAT_USER",
    ]
    if netrc is not None:
        lines.append(f"export NETRC={shlex.quote(str(netrc))}  # an alias token, not a password")
    lines.append("exec " + _task_command(server, manifest, outdir, shards, jobs, per_task))
    return "\n".join(lines) + "\n"


def _write_token(folder: Path, server: str, alias: str, secret: str) -> Path:
    """A netrc file only the user can read, naming the server's host and the token."""
    path = folder / "netrc"
    host = urlsplit(server).hostname or ""
    write_whole(path, f"machine {host} login {alias} password {secret}\n", mode=0o600)
    return path


async def _plan_and_login(
    conn: Connection, selection: Selection, layout: LayoutOptions, catalog: str | None,
    need_plan: bool, need_token: bool, metadata: str | None = None,
) -> tuple[Plan | None, str, tuple[str, str] | None]:  # fmt: skip
    async with conn.client() as xs:
        plan = None
        if need_plan:
            planned = await plan_in(xs, selection, layout, catalog, metadata)
            plan = planned.plan
            plan.unplanned = [(g.what, g.reason) for g in planned.gaps]  # into the manifest
        token = await issue_token(xs) if need_token else None
        return plan, xs.base_url, (token.alias, token.secret) if token else None


def prepare_array(
    conn: Connection,
    selection: Selection,
    outdir: str | Path,
    *,
    shards: int,
    max_running: int | None = None,
    jobs: int = 4,
    layout: LayoutOptions | None = None,
    manifest: Path | None = None,
    catalog: str | None = None,
    metadata: str | None = None,
    submit: bool = False,
) -> ArrayJob:
    """Plan (or take ``manifest``), then write the array script; ``submit`` runs sbatch."""
    out = Path(outdir).resolve()
    check_jobs(jobs)
    if shards < 1:
        raise UsageError(f"--shards {shards}: give at least 1")
    running = shards if max_running is None else max_running  # 0 is refused, not 'all'
    if running < 1:
        raise UsageError(f"--max-running {running}: give at least 1")
    check_output_dir(out)
    folder = slurm_dir(out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "logs").mkdir(exist_ok=True)
    saved: Plan | None = None
    server = conn.url
    if manifest is not None:
        server_in_file, saved = load_manifest(manifest)
        server = server_in_file or server
    source = conn.credentials.source
    # Files the tasks can read themselves; anything else (flags, environment, a prompt) is
    # replaced by an alias token, so that no password reaches the script or the job.
    use_netrc = source.startswith(("netrc", "xnatPass")) or not conn.credentials.complete
    plan, base, token = aio.run(
        _plan_and_login(
            conn,
            selection,
            layout or LayoutOptions(),
            catalog,
            saved is None,
            not use_netrc,
            metadata,
        )
    )
    plan = saved if saved is not None else plan
    assert plan is not None
    server = base if saved is None else server
    if not plan.entries:
        raise UsageError(f"nothing matched: {selection.describe()}; no job array was written")
    manifest_path = folder / "manifest.json"
    write_whole(manifest_path, manifest_json(plan, server))
    netrc = _write_token(folder, server, *token) if token is not None else None
    script = folder / "array.sbatch"
    write_whole(
        script,
        render_script(
            outdir=out,
            server=server,
            manifest=manifest_path,
            shards=shards,
            max_running=running,
            jobs=jobs,
            netrc=netrc,
            max_requests=conn.max_requests_per_second,
        ),
    )
    script.chmod(0o755)
    used = set(assign(plan, shards).values())
    job = ArrayJob(
        script=script,
        manifest=manifest_path,
        shards=shards,
        max_running=running,
        jobs=jobs,
        server=server,
        files=len(plan.entries),
        bytes=plan.total_bytes,
        empty_shards=shards - len(used),
        login=f"alias token ({netrc})" if netrc else (source if conn.credentials.user else "none"),
        # What this run could not plan (a saved plan's own list was said when it was made).
        not_planned=[] if saved is not None else [f"{w}: {r}" for w, r in plan.unplanned],
    )
    write_whole(folder / "array.json", json.dumps({"shards": shards, "script": str(script),
                                                   "server": server}))  # fmt: skip
    if submit:
        job.job_id = submit_array(script)
    return job


def submit_array(script: Path, array: str | None = None) -> str:
    """``sbatch`` the script (``array``: only those task indices); the job ID."""
    argv = ["sbatch", "--parsable"] + ([f"--array={array}"] if array else []) + [str(script)]
    env = {k: v for k, v in os.environ.items() if k not in ("XNAT_PASS", "XNAT_USER")}
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
    except FileNotFoundError as exc:
        msg = f"sbatch is not installed here; submit {script} on a Slurm login node"
        raise UsageError(msg) from exc
    if done.returncode != 0:
        msg = f"sbatch refused {script}: {done.stderr.strip() or done.stdout.strip()}"
        raise UsageError(msg)
    return done.stdout.strip().split(";")[0]


# -- status ---------------------------------------------------------------------------------
@dataclass
class ShardStatus:
    shard: str  # "K/N", or "" for a run without shards
    state: str  # done | failed | running | unfinished (stopped before its end) | not started
    files: int = 0
    verified: int = 0
    failed: int = 0
    report: str = ""


@dataclass
class DownloadStatus:
    outdir: Path
    shards: list[ShardStatus]
    rerun: str = ""  # the command that runs the unfinished shards again

    @property
    def done(self) -> bool:
        return bool(self.shards) and all(s.state == "done" for s in self.shards)


def _held(lock: Path) -> bool:
    """Whether a running download holds this state folder's lock."""
    if not lock.exists():
        return False
    with open(lock, "a+") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        return False


def _folder_status(name: str, folder: StateFolder) -> ShardStatus:
    # A task killed before its end leaves state but no report: some of it is on disk.
    started = folder.database.exists()
    status = ShardStatus(name, "unfinished" if started else "not started")
    reports = folder.report_files()
    report = reports[-1] if reports else None
    rows = _report_rows(report) if report is not None else None
    if report is not None and rows is not None:
        status.files = len(rows)
        status.verified = sum(1 for r in rows if r.get("status") in ("verified", "skipped"))
        status.failed = sum(1 for r in rows if r.get("status") == "failed")
        status.report = str(report)
        status.state = "failed" if status.failed else "done"
    elif started:
        # No report yet: what its state database records as verified so far (a running
        # task's last commit), out of the files its plan holds.
        status.verified = _count(lambda: len(read_verified(folder.database)))
        if folder.manifest_json.exists():
            status.files = _count(lambda: len(load_manifest(folder.manifest_json)[1].entries))
    if _held(folder.lock):
        status.state = "running"
    return status


def _array_meta(path: Path) -> tuple[int, str | None] | None:
    """(shards, script) that ``slurm`` wrote; None when absent or unreadable (the shards'
    own folders then say how many there are)."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or not isinstance(meta.get("shards"), int):
        return None
    if meta["shards"] < 1:
        return None
    script = meta.get("script")
    return meta["shards"], script if isinstance(script, str) else None


def _report_rows(report: Path) -> list[dict[str, Any]] | None:
    """A run's report, one row a file; None when it cannot be read whole (the run was cut
    off while writing it): the task then counts as unfinished, from its state database."""
    try:
        rows = [json.loads(line) for line in report.read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        return None
    return rows if all(isinstance(r, dict) for r in rows) else None


def _count(how: Callable[[], int]) -> int:
    """A count read from a task's files, 0 when they cannot be read (being written, gone):
    both readers, :func:`read_verified` and :func:`load_manifest`, say so as a UsageError."""
    try:
        return how()
    except UsageError:
        return 0


def status(outdir: str | Path) -> DownloadStatus:
    """Every run's and shard's latest report under ``outdir``, merged."""
    out = Path(outdir)
    if not workdir.root(out).is_dir():
        raise UsageError(f"{out} holds no download (no {workdir.ROOT}/): nothing to report")
    found: list[ShardStatus] = []
    own = workdir.state_folder(out)
    if own.reports.is_dir() or own.lock.exists():
        found.append(_folder_status("", own))
    counts: set[int] = set()
    for folder in workdir.shard_folders(out):
        first, _, total = folder.path.name.partition("-of-")
        if first.isdigit() and total.isdigit():
            counts.add(int(total))
    array = slurm_dir(out) / "array.json"
    script = None
    meta = _array_meta(array)
    if meta is not None:
        counts.add(meta[0])
        script = meta[1]
    for n in sorted(counts):
        for k in range(n):
            shard = Shard(k, n)
            found.append(_folder_status(str(shard), workdir.state_folder(out, shard)))
    result = DownloadStatus(out, found)
    unfinished = [
        s for s in found if s.shard and s.state in ("failed", "unfinished", "not started")
    ]
    if unfinished and script:
        indices = ",".join(s.shard.split("/")[0] for s in unfinished)
        result.rerun = f"sbatch --array={indices} {shlex.quote(script)}"
    elif unfinished:
        result.rerun = "; ".join(
            f"xnat-downloader download … -o {shlex.quote(str(out))} --shard {s.shard}"
            for s in unfinished
        )
    return result
