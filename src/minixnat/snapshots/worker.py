"""The snapshot worker: one background thread that works through queued snapshot runs.

Off the request path: archiving only queues a run (a workflow record, store/workflows.py);
this thread takes queued and interrupted runs oldest first, one at a time, so snapshot
generation uses at most one core however many sessions arrive.  The queue is the database,
so runs queued before a crash or a stop are done after the next start.
"""

from __future__ import annotations

import logging
import threading

from minixnat.snapshots import generate
from minixnat.store import Store
from minixnat.store.workflows import FAILED, SNAPSHOTS, Workflow

log = logging.getLogger("minixnat.snapshots")


class SnapshotWorker:
    """Runs queued snapshot work until :meth:`stop`.  ``poll``: seconds between looks at
    the queue when idle (:meth:`wake` looks at once)."""

    def __init__(self, store: Store, *, poll: float = 0.5) -> None:
        self.store = store
        self.poll = poll
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="minixnat-snapshots", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the run under way (an unfinished one is done after a restart)."""
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                pending = self.store.pending_workflows(SNAPSHOTS)
            except Exception:  # the store closed under us (shutdown): nothing more to do
                return
            for workflow in pending:
                if self._stopping.is_set():
                    return
                self._run_one(workflow)
            if not pending:
                self._wake.wait(self.poll)
                self._wake.clear()

    def _run_one(self, workflow: Workflow) -> None:
        try:
            status = generate.run(self.store, workflow)
            log.info("snapshots of %s: %s", workflow.experiment_id, status)
        except Exception as exc:  # a bug must not stop the worker, nor retry forever
            log.exception("snapshots of %s failed", workflow.experiment_id)
            try:
                self.store.set_workflow_status(
                    workflow.wrk_id, FAILED, step="Failed", details=f"internal error: {exc}"
                )
            except Exception:
                log.exception("could not record the failure of workflow %s", workflow.wrk_id)
