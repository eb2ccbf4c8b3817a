"""Workflow records (XNAT's ``wrk:workflowData``): what happened to an experiment, step by step.

Part of :class:`minixnat.store.Store`.  Archiving a session (an import, a prearchive archive,
the DICOM receiver) writes a ``Transfer`` record in the same transaction as the session, so
the record and the data appear together.  It also queues a snapshot run: a ``Queued`` record
of :data:`SNAPSHOTS` that the snapshot worker (minixnat/snapshots) takes up.  Queued and In
Progress records are the worker's queue, kept in the database, so a crash or restart loses
no work: the worker starts again from what the table says.  Clients write records of their
own too (``PUT /data/workflows``, :meth:`WorkflowTables.write_workflow`), with any status word
their pipeline uses.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from minixnat.store.clock import now_stamp
from minixnat.store.db import Database
from minixnat.store.records import Experiment, StoreError

# Pipeline names as XNAT records them: the archiving step, and the pipeline descriptor of
# the snapshot generator (clients match on the name without folder and extension).
TRANSFER = "Transfer"
SNAPSHOTS = "xnat_tools/WebBasedQCImageCreator.xml"
SNAPSHOTS_STEP = "WebBasedQCImageCreator"
# The scan resource a snapshot run fills (XNAT's name).
SNAPSHOTS_RESOURCE = "SNAPSHOTS"
QUEUED, IN_PROGRESS, COMPLETE, FAILED = "Queued", "In Progress", "Complete", "Failed"
STATES = (QUEUED, IN_PROGRESS, COMPLETE, FAILED)
# What a client may write in a record of its own (PUT /data/workflows), besides the
# experiment it is about; the project, the creator and the record's number are the server's.
WRITABLE = (
    "data_type",
    "pipeline_name",
    "status",
    "launch_time",
    "current_step_launch_time",
    "current_step_id",
    "step_description",
    "percentage_complete",
    "category",
    "type",
    "src",
    "comments",
    "details",
    "justification",
    "scan_id",
    "next_step_id",
    "job_id",
)


@dataclass(frozen=True)
class Workflow:
    wrk_id: int
    experiment_id: str
    project: str
    data_type: str
    pipeline_name: str
    status: str
    launch_time: str
    current_step_launch_time: str
    current_step_id: str
    step_description: str
    percentage_complete: str
    create_user: str
    category: str
    type: str
    src: str
    comments: str
    details: str
    justification: str
    scan_id: str = ""
    next_step_id: str = ""
    job_id: str = ""

    @property
    def short_name(self) -> str:
        """The pipeline's name without folder and extension, as clients compare it."""
        return self.pipeline_name.rsplit("/", 1)[-1].removesuffix(".xml")


class WorkflowTables(Database):
    """Workflow rows."""

    #: Whether archiving a session queues its snapshots (``serve --no-snapshots``: no).
    auto_snapshots = True

    def add_workflow(
        self,
        experiment: Experiment,
        pipeline: str,
        status: str,
        *,
        user: str,
        step: str = "",
        details: str = "",
        justification: str = "",
        src: str = "",
    ) -> Workflow:
        now = now_stamp()
        percentage = "100.0" if status == COMPLETE else "0.0"
        wrk_id = self._exec(
            "INSERT INTO workflows (experiment_id, project, data_type, pipeline_name, status, "
            "launch_time, current_step_launch_time, step_description, percentage_complete, "
            "create_user, src, details, justification) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                experiment.id,
                experiment.project,
                experiment.xsi_type,
                pipeline,
                status,
                now,
                now,
                step,
                percentage,
                user,
                src,
                details,
                justification,
            ),
        )
        found = self.get_workflow(wrk_id)
        assert found is not None
        return found

    def queue_snapshots(self, experiment: Experiment, *, user: str, why: str) -> Workflow:
        """Queue a snapshot run for ``experiment``, unless one is queued already (one run
        then makes them all: it reads the session as it is when it starts)."""
        with self.transaction():
            row = self._one(
                "SELECT wrk_id FROM workflows WHERE experiment_id=? AND pipeline_name=? "
                "AND status=?",
                (experiment.id, SNAPSHOTS, QUEUED),
            )
            if row is not None:
                found = self.get_workflow(int(row[0]))
                assert found is not None
                return found
            return self.add_workflow(
                experiment, SNAPSHOTS, QUEUED, user=user, step="Queued", justification=why
            )

    def set_workflow_status(
        self, wrk_id: int, status: str, *, step: str = "", details: str = ""
    ) -> None:
        if status not in STATES:
            msg = f"unknown workflow status {status!r}"
            raise ValueError(msg)
        percentage = "100.0" if status == COMPLETE else "0.0"
        self._exec(
            "UPDATE workflows SET status=?, current_step_launch_time=?, step_description=?, "
            "percentage_complete=?, details=? WHERE wrk_id=?",
            (status, now_stamp(), step, percentage, details, wrk_id),
        )

    def write_workflow(
        self,
        values: Mapping[str, str],
        *,
        experiment: Experiment | None = None,
        wrk_id: int | None = None,
        user: str = "",
    ) -> Workflow:
        """A client's record: a new one about ``experiment`` (created by ``user``; its
        ``current_step_launch_time`` is its launch time unless given), or record ``wrk_id``
        with ``values`` changed.  ``values`` hold :data:`WRITABLE` columns only (ValueError
        otherwise); statuses are free text, as in XNAT.  A new record whose experiment,
        pipeline, launch time and scan another one has is refused (StoreError, 409): two
        PUTs that both found none (in two server processes) make one record, not two."""
        unknown = set(values) - set(WRITABLE)
        if unknown:
            msg = f"workflow columns that cannot be written: {sorted(unknown)}"
            raise ValueError(msg)
        if not values.get("status", "x"):
            raise StoreError("A workflow record's status cannot be empty.")
        if wrk_id is not None:
            if values:
                names = list(values)
                self._exec(
                    f"UPDATE workflows SET {', '.join(f'{n}=?' for n in names)} WHERE wrk_id=?",
                    (*(values[n] for n in names), wrk_id),
                )
        else:
            if experiment is None:
                raise ValueError("a new workflow record needs its experiment")
            row = {"current_step_launch_time": values.get("launch_time", ""), **values}
            names = list(row)
            key = (row.get("pipeline_name", ""), row.get("launch_time", ""), row.get("scan_id", ""))
            with self.transaction():  # the look and the insert together, across processes
                if self.find_workflow(experiment.id, *key) is not None:
                    msg = (
                        f"A workflow record of {experiment.id}, {key[0]} launched {key[1]} was "
                        "made meanwhile; send the PUT again to change it."
                    )
                    raise StoreError(msg, status=409)
                wrk_id = self._exec(
                    f"INSERT INTO workflows (experiment_id, project, create_user, "
                    f"{', '.join(names)}) VALUES (?, ?, ?, {', '.join('?' * len(names))})",
                    (experiment.id, experiment.project, user, *(row[n] for n in names)),
                )
        found = self.get_workflow(wrk_id)
        if found is None:
            raise StoreError(f"No workflow {wrk_id}.", status=404)
        return found

    def find_workflow(
        self, experiment_id: str, pipeline: str, launch_time: str, scan_id: str = ""
    ) -> Workflow | None:
        """The record of ``pipeline`` launched at ``launch_time`` about ``experiment_id``
        (and ``scan_id``): how XNAT finds a record a client names without its number."""
        row = self._one(
            "SELECT * FROM workflows WHERE experiment_id=? AND pipeline_name=? "
            "AND launch_time=? AND scan_id=? ORDER BY wrk_id DESC",
            (experiment_id, pipeline, launch_time, scan_id),
        )
        return Workflow(**dict(row)) if row else None

    def get_workflow(self, wrk_id: int) -> Workflow | None:
        row = self._one("SELECT * FROM workflows WHERE wrk_id=?", (wrk_id,))
        return Workflow(**dict(row)) if row else None

    def list_workflows(
        self,
        *,
        experiment_id: str | None = None,
        projects: list[str] | None = None,
        pipelines: list[str] | None = None,
        status: str | None = None,
    ) -> list[Workflow]:
        """Workflows, newest launch first.  ``pipelines`` match the pipeline name as
        XNAT's ``LIKE '%name%'`` does (so ``%`` matches every pipeline)."""
        where: list[str] = []
        args: list[object] = []
        if experiment_id is not None:
            where.append("experiment_id=?")
            args.append(experiment_id)
        if projects is not None:
            where.append(f"project IN ({','.join('?' * len(projects))})")
            args.extend(projects)
        if pipelines:
            like = " OR ".join("pipeline_name LIKE ? ESCAPE '\\'" for _ in pipelines)
            where.append(f"({like})")
            args.extend(f"%{_like_text(name)}%" for name in pipelines)
        if status is not None:
            where.append("status=?")
            args.append(status)
        sql = "SELECT * FROM workflows"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = self._q(sql + " ORDER BY launch_time DESC, wrk_id DESC", tuple(args))
        return [Workflow(**dict(r)) for r in rows]

    def pending_workflows(self, pipeline: str) -> list[Workflow]:
        """Queued and In Progress runs of ``pipeline``, oldest first (In Progress ones were
        cut short by a crash or a stop)."""
        rows = self._q(
            "SELECT * FROM workflows WHERE pipeline_name=? AND status IN (?, ?) ORDER BY wrk_id",
            (pipeline, QUEUED, IN_PROGRESS),
        )
        return [Workflow(**dict(r)) for r in rows]


def _like_text(name: str) -> str:
    """A pipeline name in a LIKE pattern: ``_`` and ``\\`` literal (pipeline names hold
    underscores), ``%`` a wildcard as in XNAT's query."""
    return name.replace("\\", "\\\\").replace("_", "\\_")
