"""The archive's consistency check: catalog rows against the files on disk.

The cheap check (``full=False``) compares every file row's presence and size with the disk
and looks for files that no row names; ``serve`` runs it before it answers anything.  The
full check also re-hashes every file against its recorded MD5.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from minixnat.store.files import md5_of
from minixnat.store.prearchive import PrearcSession
from minixnat.store.records import FileRow, Resource


class Checkable(Protocol):
    """What the check needs of a store (:class:`minixnat.store.Store` has it)."""

    root: Path
    archive_dir: Path

    @property
    def prearchive_dir(self) -> Path: ...
    def all_resources(self) -> list[Resource]: ...
    def list_files(self, resource_pk: int) -> list[FileRow]: ...
    def list_prearc(self, projects: list[str] | None = None) -> list[PrearcSession]: ...
    def prearc_folder(self, row: PrearcSession) -> Path: ...


@dataclass(frozen=True)
class Problem:
    kind: str  # missing | size | md5 | untracked | outside
    path: str  # relative to the archive root
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.kind}: {self.path}" + (f" ({self.detail})" if self.detail else "")


@dataclass
class Report:
    files: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _walk_files(folder: Path) -> Iterator[Path]:
    for dirpath, _, names in os.walk(folder):
        for name in names:
            yield Path(dirpath) / name


def check(store: Checkable, *, full: bool) -> Report:
    """Every problem found, in a stable order."""
    problems: list[Problem] = []
    known: set[Path] = set()
    archive = store.archive_dir.resolve()
    count = 0

    def rel(path: Path) -> str:
        return path.relative_to(store.root.resolve()).as_posix()

    for resource in store.all_resources():
        folder = (archive / resource.directory).resolve()
        if archive not in folder.parents:
            problems.append(Problem("outside", resource.directory, f"resource {resource.pk}"))
            continue
        for row in store.list_files(resource.pk):
            count += 1
            path = folder / row.path
            known.add(path)
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                problems.append(Problem("missing", rel(path), f"resource {resource.label}"))
                continue
            if size != row.size:
                problems.append(Problem("size", rel(path), f"catalog {row.size}, disk {size}"))
            elif full and md5_of(path) != row.md5:
                problems.append(Problem("md5", rel(path), f"catalog {row.md5}"))
    for path in sorted(_walk_files(archive)):
        if path.resolve() not in known:
            problems.append(Problem("untracked", rel(path), "no catalog row names it"))
    known_folders: set[Path] = set()
    for session in store.list_prearc():
        folder = store.prearc_folder(session).resolve()
        known_folders.add(folder)
        for scan in session.session().get("scans", {}).values():
            for item in scan.get("files", []):
                count += 1
                if not (folder / item.get("source", "")).is_file():
                    problems.append(Problem("missing", rel(folder / item.get("source", ""))))
    prearchive = store.prearchive_dir.resolve()
    for path in sorted(_walk_files(prearchive)) if prearchive.is_dir() else []:
        if not known_folders.intersection(path.resolve().parents):
            problems.append(Problem("untracked", rel(path), "no prearchive session holds it"))
    return Report(count, problems)
