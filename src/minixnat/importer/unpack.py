"""Unpack an uploaded zip, tar or tar.gz into a staging folder, refusing hostile archives.

Refused, before anything reaches the archive: member names that are absolute or climb out
with ``..`` (zip-slip), links and device files, more than ``Limits.max_members`` members,
and more than ``Limits.max_bytes`` of uncompressed data.  The byte budget is counted while
writing, from the bytes actually produced, so a zip that lies about its sizes (a zip bomb)
is stopped at the budget, not at the size it declares.
"""

from __future__ import annotations

import shutil
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from minixnat.errors import MinixnatError
from minixnat.store.names import has_control_characters

CHUNK = 1024 * 1024
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")


class UnpackError(MinixnatError):
    """The upload is not a readable, safe archive (400).  The message says why."""


@dataclass
class Limits:
    """What one upload may expand to.  ``max_ratio`` bounds output over input size."""

    max_members: int = 100_000
    max_bytes: int = 256 * 1024**3
    max_ratio: int = 200


@dataclass
class Budget:
    members_left: int
    bytes_left: int

    def take_member(self) -> None:
        self.members_left -= 1
        if self.members_left < 0:
            raise UnpackError("the archive has too many members (a zip bomb?); split it up")

    def take_bytes(self, count: int) -> None:
        self.bytes_left -= count
        if self.bytes_left < 0:
            raise UnpackError(
                "the archive expands to more data than this server accepts from one upload "
                "(a zip bomb?); split it into smaller archives"
            )


def sniff(path: Path) -> str | None:
    """``zip``, ``tar.gz`` or ``tar`` from the file's first bytes, else None."""
    with open(path, "rb") as f:
        head = f.read(512)
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if head[:2] == b"\x1f\x8b":
        return "tar.gz"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    return None


def safe_member(name: str) -> PurePosixPath | None:
    """The member's relative path, None for folder entries; UnpackError if it escapes."""
    clean = name.replace("\\", "/")
    if clean.endswith("/"):
        return None
    rel = PurePosixPath(clean)
    if clean.startswith("/") or rel.is_absolute() or ".." in rel.parts or "\0" in clean:
        raise UnpackError(f"the archive member {name!r} would be written outside its folder")
    parts = [p for p in rel.parts if p not in ("", ".")]
    if parts and len(parts[0]) >= 2 and parts[0][1] == ":":
        raise UnpackError(f"the archive member {name!r} is an absolute Windows path")
    if has_control_characters(clean):
        raise UnpackError(f"the archive member {name!r} has control characters in its name")
    return PurePosixPath(*parts) if parts else None


def _copy(src: IO[bytes], dest: Path, budget: Budget) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "wb") as out:
        while chunk := src.read(CHUNK):
            budget.take_bytes(len(chunk))
            out.write(chunk)


def _members(path: Path, kind: str) -> Iterator[tuple[str, IO[bytes] | None]]:
    """(name, reader) per regular member; reader None for folders.  Raises UnpackError."""
    try:
        if kind == "zip":
            with zipfile.ZipFile(path) as zf:
                for info in zf.infolist():
                    if info.flag_bits & 0x1:
                        raise UnpackError(f"the archive member {info.filename!r} is encrypted")
                    if info.is_dir():
                        yield info.filename, None
                        continue
                    with zf.open(info) as reader:
                        yield info.filename, reader
            return
        with tarfile.open(path, "r:gz" if kind == "tar.gz" else "r:") as tf:
            for member in tf:
                if member.isdir():
                    yield member.name, None
                    continue
                if not member.isfile():
                    raise UnpackError(
                        f"the archive member {member.name!r} is a link or device file; "
                        "only regular files are accepted"
                    )
                extracted = tf.extractfile(member)
                if extracted is not None:
                    yield member.name, extracted
    except UnpackError:
        raise
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, ValueError) as exc:
        raise UnpackError(f"the archive is truncated or corrupt ({exc})") from exc


def unpack(path: Path, dest: Path, budget: Budget, *, kind: str | None = None) -> list[Path]:
    """Extract every regular member of the archive at ``path`` under ``dest``.

    Returns the extracted files (absolute).  On UnpackError the caller discards ``dest``.
    """
    kind = kind or sniff(path)
    if kind is None:
        raise UnpackError("unable to identify upload format: send a zip, tar or tar.gz archive")
    written: list[Path] = []
    for name, reader in _members(path, kind):
        budget.take_member()
        rel = safe_member(name)
        if rel is None or reader is None:
            continue
        target = dest / rel
        if target.exists():
            raise UnpackError(f"the archive holds {name!r} twice")
        try:
            _copy(reader, target, budget)
        except (zipfile.BadZipFile, EOFError, OSError, tarfile.TarError) as exc:
            if isinstance(exc, OSError) and exc.errno is not None:
                raise  # a disk error on our side, not a bad archive
            raise UnpackError(
                f"the archive member {name!r} is truncated or corrupt ({exc})"
            ) from exc
        written.append(target)
    return written


def budget_for(path: Path, limits: Limits) -> Budget:
    size = max(path.stat().st_size, 1)
    return Budget(limits.max_members, min(limits.max_bytes, max(size * limits.max_ratio, 64 << 20)))


def is_archive_name(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def discard(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
