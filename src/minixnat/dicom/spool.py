"""Received DICOM instances, kept on disk until their study is built into a session.

Layout under the archive root::

    ROOT/dicom/incoming/{random}                  an instance being written
    ROOT/dicom/studies/{called AE}/{study}/{sop}.dcm   acknowledged instances

An instance is written to ``incoming``, flushed to disk, and renamed into its study folder
before the sender is told it was stored: what was acknowledged survives a crash, and a
crash never leaves a half-written instance in a study.  A resent instance (same SOP
Instance UID) replaces the earlier one.  A study folder's modification time is the time of
its last arrival, which is what the quiet period is measured from, across restarts too.
Folder names are built from the UIDs and AE title, never from free text.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from minixnat.store.journal import fsync_dir

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def uid_name(uid: str) -> str:
    """A folder or file name for a UID: the UID itself when it is well formed (digits and
    dots, at most 64 characters), else a digest of it."""
    uid = uid.strip().rstrip("\0")
    if _UID.match(uid) and len(uid) <= 64:
        return uid
    return "x" + hashlib.sha256(uid.encode("utf-8", "replace")).hexdigest()[:40]


def ae_name(title: str) -> str:
    """A folder name for an AE title (hex of its bytes; ``_`` for none)."""
    return title.strip().encode("ascii", "replace").hex() or "_"


def ae_from_name(name: str) -> str:
    return "" if name == "_" else bytes.fromhex(name).decode("ascii", "replace")


@dataclass(frozen=True)
class StudyFolder:
    path: Path
    called_ae: str
    last_arrival: float  # the folder's mtime

    @property
    def key(self) -> str:
        return f"{self.path.parent.name}/{self.path.name}"


class Spool:
    """The acknowledged instances, study by study (thread-safe)."""

    def __init__(self, root: Path, *, durable: bool = True) -> None:
        self.dir = root / "dicom"
        self.incoming = self.dir / "incoming"
        self.studies_dir = self.dir / "studies"
        self.durable = durable
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        # Whatever was being written when the process stopped was never acknowledged.
        shutil.rmtree(self.incoming, ignore_errors=True)
        self.incoming.mkdir(parents=True, exist_ok=True)
        self.studies_dir.mkdir(parents=True, exist_ok=True)

    @contextmanager
    def locked(self, key: str) -> Iterator[None]:
        """Hold the study ``key`` (``{ae}/{study}``): the receiver adding an instance and the
        builder taking the study's instances never overlap."""
        with self._locks_guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            yield

    def store(self, called_ae: str, study_uid: str, sop_uid: str, data: bytes) -> Path:
        """Keep one instance; return its path.  Raises OSError when the disk refuses."""
        folder = self.studies_dir / ae_name(called_ae) / uid_name(study_uid)
        final = folder / f"{uid_name(sop_uid)}.dcm"
        tmp = self.incoming / secrets.token_hex(8)
        try:
            with open(tmp, "wb") as out:
                out.write(data)
                if self.durable:
                    out.flush()
                    os.fsync(out.fileno())
            with self.locked(f"{folder.parent.name}/{folder.name}"):
                folder.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, final)
                if self.durable:
                    fsync_dir(folder)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return final

    def studies(self) -> list[StudyFolder]:
        """Every study folder, oldest arrival first."""
        found: list[StudyFolder] = []
        for ae_dir in sorted(p for p in self.studies_dir.iterdir() if p.is_dir()):
            for study in ae_dir.iterdir():
                if study.is_dir():
                    found.append(
                        StudyFolder(study, ae_from_name(ae_dir.name), study.stat().st_mtime)
                    )
        return sorted(found, key=lambda s: s.last_arrival)

    def discard_if_empty(self, study: StudyFolder) -> None:
        """Remove a built study's folder (call with the study locked).  The AE folder
        stays: another study may be arriving into it."""
        try:
            study.path.rmdir()
        except OSError:
            pass  # something arrived meanwhile: it is built next time
