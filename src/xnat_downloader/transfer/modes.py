"""Which transfer mode each resource gets: per-file GETs, or one streamed zip.

A zip per resource saves a round trip per file, which is what makes many small files slow
over a long link; large files gain nothing from it and lose Range resume.  Decided from the
plan alone (pure), and explained in ``-v`` output.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from enum import StrEnum

from xnat_downloader.transfer.jobs import Job
from xnat_downloader.xnat.paths import path_in_resource_zip, split_resource_file

ZIP_MIN_FILES = 8  # fewer files than this: a zip saves too few round trips to matter
ZIP_MAX_MEDIAN = 2 * 1024 * 1024  # larger files: per-file GETs, which resume with Range
ZIP_MAX_FILE = 64 * 1024 * 1024  # one huge file in a resource keeps it per-file


class Mode(StrEnum):
    AUTO = "auto"
    FILES = "files"
    ZIP = "zip"


@dataclass(frozen=True)
class ZipBatch:
    """One resource fetched as a zip: its URI (``…/resources/{label}``) and its jobs, by
    their path inside the resource."""

    resource_uri: str
    jobs: dict[str, Job]


def split_uri(uri: str) -> tuple[str, str] | None:
    """``(…/resources/{label}, path)`` of a file URI, or None if it has no such shape."""
    return split_resource_file(uri)


def choose(jobs: list[Job], mode: Mode) -> tuple[list[ZipBatch], list[Job], list[str]]:
    """Split ``jobs`` into zip batches and per-file jobs, with one line of reasons each."""
    if mode == Mode.FILES:
        return [], list(jobs), []
    by_resource: dict[str, dict[str, Job]] = {}
    loose: list[Job] = []
    for job in jobs:
        split = split_uri(job.uri)
        if split is None:
            loose.append(job)
        else:
            by_resource.setdefault(split[0], {})[split[1]] = job
    batches: list[ZipBatch] = []
    reasons: list[str] = []
    for resource, members in by_resource.items():
        sizes = [j.size for j in members.values()]
        known = [s for s in sizes if s is not None]
        median = statistics.median(known) if known else 0
        if mode == Mode.ZIP:
            use = len(members) >= 2 and len(known) == len(sizes)
            why = "forced with --transfer zip" if use else "fewer than 2 files or sizes unknown"
        elif len(members) < ZIP_MIN_FILES:
            use, why = False, f"{len(members)} files; zips start at {ZIP_MIN_FILES}"
        elif len(known) != len(sizes):
            use, why = False, "the listing gives no size for some files"
        elif median > ZIP_MAX_MEDIAN or max(known) > ZIP_MAX_FILE:
            use, why = False, f"large files (median {median / 1000:.0f} kB)"
        else:
            use, why = True, f"{len(members)} small files (median {median / 1000:.0f} kB)"
        reasons.append(f"{'zip' if use else 'per-file'}: {resource} ({why})")
        if use:
            batches.append(ZipBatch(resource, members))
        else:
            loose.extend(members.values())
    return batches, loose, reasons


def member_path(
    name: str, expected: dict[str, Job], by_basename: dict[str, list[str]]
) -> str | None:
    """The planned path a zip member stands for, or None.  XNAT's structures put the
    resource's own path after ``/files/``; otherwise the longest planned path the name ends
    with (at a folder boundary) wins.  The zip's name itself is never used as a path."""
    name = name.replace("\\", "/")
    if name.startswith("/") or ".." in name.split("/"):
        return None  # a path trick: such a zip is not trusted for this member
    candidate = path_in_resource_zip(name)
    if candidate is not None and candidate in expected:
        return candidate
    best: str | None = None
    for path in by_basename.get(name.rsplit("/", 1)[-1], []):
        if (name == path or name.endswith("/" + path)) and (best is None or len(path) > len(best)):
            best = path
    return best
