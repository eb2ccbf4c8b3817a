"""Turn quiet studies in the spool into sessions, as XNAT's receiver does.

A study whose last instance arrived at least ``quiet`` seconds ago is built with the
import service's own code (one scan per series, the type from Series Description) and
routed by :mod:`minixnat.dicom.routing`:

- to the archive when the study asks for it (``AA:TRUE``) or its project's prearchive code
  says so (4, 5); a study already archived under the same label and Study Instance UID is
  added to (resent instances replace earlier ones);
- otherwise to the project's prearchive (``Unassigned`` when no project was found),
  added to a prearchive session of the same study if one is waiting there.

A study that cannot be archived (a label taken by another study, another subject) goes to
the prearchive marked CONFLICT with the reason: received data is never dropped.  The move
from the spool is one store transaction, so a crash leaves each instance either in the
spool or in its session.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pydicom

from minixnat.dicom.routing import Fields, Route, route
from minixnat.dicom.spool import Spool, StudyFolder
from minixnat.importer.build import BuildError, ImportSession, Options, build, safe_label
from minixnat.importer.commit import (
    DICOM_RECEIVER,
    CommitError,
    add_to_prearchive,
    archive_session,
    hash_files,
    record_failure,
    to_prearchive,
)
from minixnat.store import Store
from minixnat.store.prearchive import UNASSIGNED

log = logging.getLogger("minixnat.dicom")

ROUTING_TAGS = [
    "PatientComments",
    "StudyComments",
    "StudyDescription",
    "AccessionNumber",
    "PatientName",
    "PatientID",
    "StudyInstanceUID",
]
LOGIN = "dicom"  # the account named in provenance: C-STORE carries no XNAT user


@dataclass(frozen=True)
class Built:
    """What became of one study: its URI and where it went."""

    uri: str
    where: str  # "archive", "prearchive" or "conflict"
    files: int


def routing_fields(path: Path) -> Fields:
    ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=ROUTING_TAGS)

    def text(name: str) -> str:
        value = ds.get(name, "")
        return str(value).strip() if value is not None else ""

    return Fields(
        patient_comments=text("PatientComments"),
        study_comments=text("StudyComments"),
        study_description=text("StudyDescription"),
        accession_number=text("AccessionNumber"),
        patient_name=text("PatientName"),
        patient_id=text("PatientID"),
    )


class Builder:
    """Builds quiet studies from ``spool`` into ``store``, in a thread or on demand."""

    def __init__(
        self,
        store: Store,
        spool: Spool,
        *,
        quiet: float,
        bound: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.spool = spool
        self.quiet = quiet
        self.bound = dict(bound or {})
        self.clock = clock
        self._stop = threading.Event()
        self._failed: dict[str, float] = {}  # study key -> its last arrival when it failed
        self._thread: threading.Thread | None = None

    # -- the loop ----------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True, name="dicom-builder")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.wait(min(max(self.quiet / 4, 0.05), 1.0)):
            self.build_due()

    def build_due(self, *, force: bool = False) -> list[Built]:
        """Build every study quiet for ``quiet`` seconds (every study with ``force``)."""
        done: list[Built] = []
        now = self.clock()
        for study in self.spool.studies():
            if not force and now - study.last_arrival < self.quiet:
                continue
            if self._failed.get(study.key) == study.last_arrival:
                continue  # failed as it is now: tried again when something new arrives
            try:
                built = self.build_study(study)
            except Exception as exc:  # one bad study must not stop the others
                self._failed[study.key] = study.last_arrival
                log.error(
                    "could not build the study in %s (%s: %s); it stays in the spool and is "
                    "tried again when more of it arrives", study.path, type(exc).__name__, exc,
                )  # fmt: skip
                continue
            self._failed.pop(study.key, None)
            if built is not None:
                done.append(built)
        return done

    # -- one study ---------------------------------------------------------------------
    def project_of(self, name: str) -> str | None:
        project = self.store.get_project(name)
        return project.id if project is not None else None

    def build_study(self, study: StudyFolder) -> Built | None:
        with self.spool.locked(study.key):
            files = sorted(study.path.glob("*.dcm"))
            if not files:
                self.spool.discard_if_empty(study)
                return None
            fields = routing_fields(files[0])
            where = route(fields, self.project_of, called_ae=study.called_ae, bound=self.bound)
            session = self._session(files, where)
            hash_files([session])
            result = self._place(session, where)
            self.spool.discard_if_empty(study)
        log.info(
            "DICOM study %s (%d instances, %s) -> %s", session.uid, result.files,
            where.project_rule, result.uri,
        )  # fmt: skip
        return result

    def _session(self, files: list[Path], where: Route) -> ImportSession:
        pairs = [(p, PurePosixPath(p.name)) for p in files]
        # The receiver stored only instances with study and series UIDs, so the build
        # finds exactly one session; the labels fall back to the Study Instance UID.
        subject = safe_label(where.subject) or "unknown"
        try:
            built = build(pairs, Options(subject=subject, label=where.session))
        except BuildError:
            built = build(pairs, Options(subject=subject, label="", ignore_unparsable=True))
        session = built.sessions[0]
        if not session.label:
            session.label = safe_label(session.uid) or "session"
        return session

    def _place(self, session: ImportSession, where: Route) -> Built:
        count = session.file_count()
        project = self.store.get_project(where.project) if where.project else None
        archive = project is not None and (where.auto_archive or project.prearchive_code in (4, 5))
        if archive:
            assert project is not None
            existing = self.store.resolve_experiment(project.id, session.label)
            same = existing is not None and existing.label == session.label
            if same and existing is not None and existing.uid != session.uid:
                return self._conflict(
                    session,
                    project.id,
                    f"session {session.label} of project {project.id} holds another study",
                )
            try:
                uri = archive_session(
                    self.store, project, session, login=LOGIN,
                    overwrite="override" if same else "none", how=DICOM_RECEIVER,
                )  # fmt: skip
            except CommitError as exc:
                return self._conflict(session, project.id, str(exc))
            return Built(uri, "archive", count)
        target = project.id if project is not None else UNASSIGNED
        with self.store.transaction():
            waiting = [
                row
                for row in self.store.list_prearc([target])
                if row.tag == session.uid and row.folder == session.label and row.status == "READY"
            ]
            if waiting:
                uri = add_to_prearchive(self.store, waiting[-1], session)
            else:
                uri = f"/data{to_prearchive(self.store, target, session, login=LOGIN).url}"
        return Built(uri, "prearchive", count)

    def _conflict(self, session: ImportSession, project: str, reason: str) -> Built:
        owner = self.store.get_project(project)
        if owner is not None:  # the session it would have changed records the refusal
            record_failure(
                self.store, owner, session.label, reason, login=LOGIN, how=DICOM_RECEIVER
            )
        with self.store.transaction():
            row = to_prearchive(self.store, project, session, login=LOGIN)
            self.store.set_prearc_status(row, "CONFLICT", reason)
        uri = f"/data{row.url}"
        log.warning("DICOM study %s: %s; it waits in the prearchive", session.uid, reason)
        return Built(uri, "conflict", session.file_count())
