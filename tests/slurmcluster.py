"""A real single-node Slurm cluster for the tests (Debian's slurm-wlm and munge).

slurmctld and slurmd run from a configuration in a temporary folder (``SLURM_CONF``), with
``proctrack/linuxproc`` and ``task/none`` so that no cgroups are needed.  A machine where
they cannot run fails the tests that need them, saying why; it never skips them.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

TOOLS = ("slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo", "munged", "munge")


def _need_tools() -> None:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        pytest.fail(
            f"Slurm is not installed ({', '.join(missing)} missing): 'make test' installs "
            "Debian's slurm-wlm and munge"
        )


def _sudo() -> list[str]:
    return [] if os.geteuid() == 0 else ["sudo", "-n"]


def _munge_running() -> bool:
    try:
        cred = subprocess.run(["munge", "-n"], capture_output=True, timeout=10)
        if cred.returncode != 0:
            return False
        back = subprocess.run(["unmunge"], input=cred.stdout, capture_output=True, timeout=10)
        return back.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _start_munge() -> None:
    if _munge_running():
        return
    sudo = _sudo()
    key = Path("/etc/munge/munge.key")
    steps = [
        [*sudo, "mkdir", "-p", "/run/munge"],
        [*sudo, "chown", "munge:munge", "/run/munge"],
    ]
    if not key.exists():
        make_key = (
            "mungekey -c -k /etc/munge/munge.key && chown munge:munge /etc/munge/munge.key "
            "&& chmod 0400 /etc/munge/munge.key"
        )
        steps.append([*sudo, "sh", "-c", make_key])
    steps.append([*sudo, "su", "-s", "/bin/sh", "munge", "-c", "/usr/sbin/munged"])
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            pytest.fail(f"cannot start munge ({' '.join(step)}): {done.stderr.strip()}")
    deadline = time.monotonic() + 10
    while not _munge_running():
        if time.monotonic() > deadline:
            pytest.fail("munged started but 'munge -n | unmunge' does not work")
        time.sleep(0.1)


class Cluster:
    """slurmctld and slurmd on this machine; :attr:`env` points Slurm's commands at it."""

    def __init__(self, folder: Path) -> None:
        _need_tools()
        _start_munge()
        self.folder = folder
        host = socket.gethostname().split(".")[0]
        user = getpass.getuser()
        conf = folder / "slurm.conf"
        conf.write_text(
            f"""ClusterName=xnatdl
SlurmctldHost={host}
SlurmUser={user}
SlurmdUser={user}
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
NodeName={host} CPUs={os.cpu_count() or 2} RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE
"""
        )
        (folder / "state").mkdir()
        (folder / "spool").mkdir()
        self.env = {**os.environ, "SLURM_CONF": str(conf)}
        for daemon in ("/usr/sbin/slurmctld", "/usr/sbin/slurmd"):
            done = subprocess.run([daemon], env=self.env, capture_output=True, text=True,
                                  timeout=60)  # fmt: skip
            if done.returncode != 0:
                self.stop()
                pytest.fail(f"{daemon} did not start: {done.stderr.strip()}{self._logs()}")
        deadline = time.monotonic() + 60
        while True:
            state = self.run("sinfo", "-h", "-o", "%t").stdout.strip()
            if state.startswith("idle"):
                break
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"the Slurm node is not idle after 60 s ({state!r}){self._logs()}")
            time.sleep(0.3)

    def _logs(self) -> str:
        text = ""
        for name in ("slurmctld.log", "slurmd.log"):
            path = self.folder / name
            if path.exists():
                text += f"\n--- {name}:\n" + "\n".join(path.read_text().splitlines()[-15:])
        return text

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(argv), env=self.env, capture_output=True, text=True,
                               timeout=120)  # fmt: skip

    def wait_for_job(self, job_id: str, timeout: float = 180.0) -> None:
        """Until no task of ``job_id`` is pending or running."""
        deadline = time.monotonic() + timeout
        while self.run("squeue", "-h", "-j", job_id).stdout.strip():
            if time.monotonic() > deadline:
                pytest.fail(f"Slurm job {job_id} did not finish in {timeout:.0f} s{self._logs()}")
            time.sleep(0.5)

    def stop(self) -> None:
        for name in ("slurmd.pid", "slurmctld.pid"):
            pid_file = self.folder / name
            if pid_file.exists():
                try:
                    os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
                except (ValueError, ProcessLookupError):
                    pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
