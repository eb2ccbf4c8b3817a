"""The snapshot worker: a background thread that works through queued snapshot runs.

Off the request path: archiving only queues a run (a workflow record, store/workflows.py);
this thread takes queued and interrupted runs oldest first, one at a time.  The decoding
and drawing (pure Python header parsing for every slice, then the pixels) happen in one
child process at lower priority, started on first use: in the server's own process they
would hold the interpreter lock against the requests being served (an import of 2,000
files took 16 % longer while a run drew).  So generation uses at most one core, and
requests keep theirs.  The queue is the database, so runs queued before a crash or a stop
are done after the next start.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from minixnat.lifetime import end_with_parent
from minixnat.snapshots import generate
from minixnat.store import Store
from minixnat.store.workflows import FAILED, SNAPSHOTS, Workflow

log = logging.getLogger("minixnat.snapshots")


class SnapshotWorker:
    """Runs queued snapshot work until :meth:`stop`.  ``poll``: seconds between looks at
    the queue when idle (a run queued by a request starts within that)."""

    def __init__(self, store: Store, *, poll: float = 0.5) -> None:
        self.store = store
        self.poll = poll
        self._pool: ProcessPoolExecutor | None = None
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="minixnat-snapshots", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the run under way (an unfinished one is done after a restart)."""
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout)
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

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
            status = generate.run(self.store, workflow, self._render)
            log.info("snapshots of %s: %s", workflow.experiment_id, status)
        except Exception as exc:  # a bug must not stop the worker, nor retry forever
            log.exception("snapshots of %s failed", workflow.experiment_id)
            try:
                self.store.set_workflow_status(
                    workflow.wrk_id, FAILED, step="Failed", details=f"internal error: {exc}"
                )
            except Exception:
                log.exception("could not record the failure of workflow %s", workflow.wrk_id)

    def _render(self, dicom: list[Path], nifti: list[Path]) -> tuple[bytes, bytes] | None:
        """:func:`generate.pictures_of` in the child process (a new one if the last died)."""
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_child_setup,
                initargs=(os.getpid(),),
            )
        try:
            return self._pool.submit(generate.pictures_of, dicom, nifti).result()
        except BrokenProcessPool:
            self._pool = None
            raise


def _child_setup(server: int) -> None:
    """In the child: yield the CPU to the server's requests when both want it, and end with
    the server.  A server stopped by a signal runs no cleanup (uvicorn re-raises SIGTERM
    once it has shut down), so on Linux the kernel is asked to end the child then
    (``PR_SET_PDEATHSIG``); otherwise the child would live on, holding the server's
    standard output open."""
    try:
        os.nice(10)
    except OSError:
        pass
    end_with_parent(server, signal.SIGTERM)
