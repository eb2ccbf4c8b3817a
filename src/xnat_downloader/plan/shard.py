"""Shards: a plan split into N parts of whole sessions, balanced by bytes (pure).

Every task that computes shard K of N from the same plan gets the same files: sessions are
taken largest first (ties by key) and each goes to the shard with the fewest bytes so far
(ties to the lowest index).  A session is never split, so its layout and its zip batches
stay intact, and two shards never write one path.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from xnat_downloader.errors import UsageError
from xnat_downloader.plan.plan import Plan, PlanEntry

_K_OF_N = re.compile(r"^(\d+)/(\d+)$")


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (0-based) of ``count``."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def folder(self) -> str:
        """Its folder under ``.xnat-downloader/shards/``."""
        return f"{self.index}-of-{self.count}"


def parse_shard(text: str, env: Mapping[str, str]) -> Shard:
    """``K/N``, or ``slurm``: the array task's index among ``SLURM_ARRAY_TASK_COUNT`` tasks
    (``SLURM_ARRAY_TASK_ID`` minus ``SLURM_ARRAY_TASK_MIN``, so 1-based arrays work too)."""
    if text == "slurm":
        try:
            task = int(env["SLURM_ARRAY_TASK_ID"])
            count = int(env["SLURM_ARRAY_TASK_COUNT"])
            first = int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
        except (KeyError, ValueError) as exc:
            msg = (
                "--shard slurm needs SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT: run it "
                "as a task of a Slurm job array (sbatch --array), or give --shard K/N"
            )
            raise UsageError(msg) from exc
        shard = Shard(task - first, count)
    else:
        match = _K_OF_N.match(text.strip())
        if match is None:
            raise UsageError(f"--shard {text!r}: give K/N (e.g. 0/4) or 'slurm'")
        shard = Shard(int(match.group(1)), int(match.group(2)))
    if shard.count < 1 or not 0 <= shard.index < shard.count:
        raise UsageError(
            f"--shard {text}: the shard index must be from 0 to N-1 and N at least 1 "
            f"(got {shard.index} of {shard.count})"
        )
    return shard


def session_key(entry: PlanEntry) -> str:
    """What a shard keeps together: the session (or, for a catalog's loose files, the
    folder they go to)."""
    f = entry.file
    if f.session_id or f.session_label:
        return f"{f.project}/{f.session_id or f.session_label}"
    return f"folder:{f.folder or entry.local.rsplit('/', 1)[0]}"


def assign(plan: Plan, count: int) -> dict[str, int]:
    """Session key -> shard index, for ``count`` shards."""
    sizes: dict[str, int] = {}
    for entry in plan.entries:
        key = session_key(entry)
        sizes[key] = sizes.get(key, 0) + (entry.file.size or 0)
    loads = [0] * count
    where: dict[str, int] = {}
    for key in sorted(sizes, key=lambda k: (-sizes[k], k)):
        target = min(range(count), key=lambda i: (loads[i], i))
        where[key] = target
        loads[target] += sizes[key]
    return where


def select(plan: Plan, shard: Shard) -> Plan:
    """The part of ``plan`` that ``shard`` fetches (renames kept for its own files)."""
    where = assign(plan, shard.count)
    entries = [e for e in plan.entries if where[session_key(e)] == shard.index]
    uris = {e.file.uri for e in entries}
    return Plan(entries, [r for r in plan.renamed if r[0] in uris])
