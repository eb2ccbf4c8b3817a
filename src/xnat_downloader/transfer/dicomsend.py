"""Send DICOM files over C-STORE (pynetdicom): parallel associations, reused, retried.

``jobs`` worker threads each hold one association to the receiver and send files from a
shared queue, reconnecting when an association is lost (a file whose C-STORE got no answer
is sent again, up to ``ATTEMPTS`` times, the later tries after ``RETRY_DELAYS``, so a
receiver that restarts is waited for).  When a file's every try found no association or
got no response while no other file was acknowledged, the receiver has stopped answering:
the files left fail at once with that one cause, as an HTTP server that stops answering
fails the rest of a download.  Each file's fate comes from its C-STORE status.
A file is sent as it is on disk (its encoded dataset, byte for byte) unless a routing
comment must be set: then a copy read into memory carries it, and the user's file is
never changed.

What a receiver acknowledged is remembered in a :class:`SentLog`, so a re-run sends only
the rest.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import queue
import random
import socket
import sqlite3
import threading
import weakref
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pynetdicom import AE, build_context, evt
from pynetdicom.association import Association
from pynetdicom.pdu_primitives import A_ASSOCIATE

from xnat_downloader.errors import ReceiverUnreachable
from xnat_downloader.plan.dicomsend import DicomFile, Target, context_groups, stored
from xnat_downloader.transfer.events import (
    BytesMoved,
    EventSink,
    FileFailed,
    FileRetrying,
    FileSkipped,
    FileStarted,
    FileVerified,
    Planned,
)
from xnat_downloader.transfer.jobs import Job, Outcome, Status
from xnat_downloader.transfer.localfs import files_under

log = logging.getLogger("xnat_downloader")
ATTEMPTS = 3
TIMEOUT = 60.0  # seconds for an association to open, and for a C-STORE's response
RETRY_DELAYS = (1.0, 3.0)  # before the 2nd and 3rd try of a file: a receiver restarting
ROOM_WAIT = 3.0  # before asking again for an association the receiver refused while busy
Work = queue.SimpleQueue[DicomFile | None]
HEADER_TAGS = ["SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID",
               "SeriesNumber"]  # fmt: skip


# -- finding DICOM files -------------------------------------------------------------------
def walk(paths: Iterable[Path]) -> list[Path]:
    """Every file under ``paths`` (folders walked in name order, hidden entries left out)."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(path / rel for rel in files_under(path))
        else:
            found.append(path)
    return found


def read_dicom(path: Path) -> DicomFile | None:
    """The header facts of a DICOM file (Part 10, with its meta), or None if it is not one."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
        if len(head) < 132 or head[128:132] != b"DICM":
            return None
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=HEADER_TAGS)
        meta = ds.file_meta
        sop_class = str(ds.get("SOPClassUID", "") or meta.get("MediaStorageSOPClassUID", ""))
        sop_uid = str(ds.get("SOPInstanceUID", "") or meta.get("MediaStorageSOPInstanceUID", ""))
        syntax = str(meta.get("TransferSyntaxUID", ""))
        study, series = str(ds.get("StudyInstanceUID", "")), str(ds.get("SeriesInstanceUID", ""))
        if not (sop_class and sop_uid and syntax and study and series):
            return None
        return DicomFile(
            path=path,
            size=path.stat().st_size,
            sop_class=sop_class.strip(),
            sop_uid=sop_uid.strip(),
            transfer_syntax=syntax.strip(),
            study_uid=study.strip(),
            series_uid=series.strip(),
            series_number=str(ds.get("SeriesNumber", "") or "").strip(),
        )
    except Exception:  # pydicom raises many kinds for files that are not DICOM
        return None


# -- what was acknowledged -------------------------------------------------------------------
def sent_log_path(target: Target, folder: Path | None = None) -> Path:
    """``$XDG_STATE_HOME/xnat-downloader/dicom-send/{target}.sqlite``."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    name = hashlib.sha256(str(target).encode()).hexdigest()[:16]
    return (folder or Path(base) / "xnat-downloader" / "dicom-send") / f"{name}.sqlite"


class SentLog:
    """Files a receiver acknowledged: (path, size, mtime, routing) -> SOP Instance UID."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS sent (path TEXT, size INTEGER, mtime_ns INTEGER, "
            "routing TEXT, sop_uid TEXT, PRIMARY KEY (path, routing))"
        )
        self._lock = threading.Lock()
        self._closed = False

    @staticmethod
    def _key(item: DicomFile) -> tuple[str, int, int]:
        st = item.path.stat()
        return str(item.path.resolve()), st.st_size, st.st_mtime_ns

    def acknowledged(self, item: DicomFile, routing: str) -> bool:
        path, size, mtime = self._key(item)
        with self._lock:
            row = self._conn.execute(
                "SELECT size, mtime_ns, sop_uid FROM sent WHERE path=? AND routing=?",
                (path, routing),
            ).fetchone()
        return row is not None and tuple(row) == (size, mtime, item.sop_uid)

    def record(self, item: DicomFile, routing: str) -> None:
        """Note an acknowledged file.  Once the log is closed (a run stopped by a second
        interrupt, its senders not waited for) nothing is noted: that file goes again next
        time."""
        path, size, mtime = self._key(item)
        with self._lock:
            if self._closed:
                return
            self._conn.execute(
                "INSERT OR REPLACE INTO sent VALUES (?, ?, ?, ?, ?)",
                (path, size, mtime, routing, item.sop_uid),
            )

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._conn.close()


# -- sending -----------------------------------------------------------------------------
def outcome(item: DicomFile, status: Status, error: str = "") -> Outcome:
    job = Job(uri=item.sop_uid, local=str(item.path), size=item.size, md5=None)
    return Outcome(job, status, item.size, "", False, error)


class _Sender:
    def __init__(
        self,
        target: Target,
        comment: str,
        sink: EventSink,
        calling_ae: str,
        log_: SentLog | None,
    ) -> None:
        self.target = target
        self.comment = comment
        self._sink = sink
        self._sink_lock = threading.Lock()
        self.calling_ae = calling_ae
        self.sent_log = log_
        self.results: list[Outcome] = []
        self._results_lock = threading.Lock()
        self.stopping = threading.Event()  # set on Ctrl-C or SIGTERM: no new C-STORE starts
        self.acks = 0  # files acknowledged so far in this run, by every sender
        self.gave_up = ""  # why the receiver is taken to have stopped answering
        self._running = 0  # senders inside worker(), counted by the senders themselves
        self._idle = threading.Condition()
        # Each rejected association: whether for good (permanent) and the receiver's reason.
        self._rejections: weakref.WeakKeyDictionary[Association, tuple[bool, str]] = (
            weakref.WeakKeyDictionary()
        )
        self._connected: weakref.WeakSet[Association] = weakref.WeakSet()  # TCP got through

    def emit(self, event: Any) -> None:
        with self._sink_lock:
            self._sink(event)

    def done(self, item: DicomFile, result: Outcome) -> None:
        with self._results_lock:
            self.results.append(result)
        if result.status == "failed":
            self.emit(FileFailed(str(item.path), result.error))

    def associate(self, ae: AE, contexts: list[Any]) -> Association:
        return ae.associate(
            self.target.host,
            self.target.port,
            contexts=contexts,
            ae_title=self.target.ae_title,
            max_pdu=0,
            evt_handlers=[
                (evt.EVT_CONN_OPEN, self.connected),
                (evt.EVT_CONN_CLOSE, wake_sender),
                (evt.EVT_ABORTED, wake_sender),
                (evt.EVT_ACSE_RECV, self.note_rejection),
            ],
        )

    def connected(self, event: evt.Event) -> None:
        self._connected.add(event.assoc)
        no_delay(event)

    def note_rejection(self, event: evt.Event) -> None:
        """Keep an A-ASSOCIATE-RJ's result (1: permanent, 2: transient) and reason, which
        pynetdicom only logs."""
        primitive = event.primitive  # type: ignore[attr-defined]
        if isinstance(primitive, A_ASSOCIATE) and primitive.result in (0x01, 0x02):
            reason = primitive.reason_str
            self._rejections[event.assoc] = (primitive.result == 0x01, reason)

    def refusal(self, assoc: Association) -> tuple[str, bool]:
        """Why ``assoc`` was not opened, and whether that is for good (a permanent
        rejection: asking again gets the same answer)."""
        if assoc.is_rejected:
            permanent, reason = self._rejections.get(assoc, (False, ""))
            said = f"{self.target} rejected the association" + (" permanently" if permanent else "")
            if reason and reason != "(no value available)":
                said += f": {reason[0].lower()}{reason[1:]}"
            return said, permanent
        if assoc.is_aborted and assoc in self._connected:
            return f"{self.target} aborted the association", False
        # pynetdicom calls a connection that failed an abort too: say what it was.
        return f"no connection to {self.target} (is the receiver running?)", False

    def payload(self, item: DicomFile) -> Dataset | Path:
        if not self.comment:
            return item.path  # the encoded dataset goes out as it is on disk
        ds = pydicom.dcmread(item.path)
        ds.PatientComments = self.comment
        return ds

    def worker(
        self, ae: AE, contexts: list[Any], work: queue.SimpleQueue[DicomFile | None]
    ) -> None:
        assoc: Association | None = None
        with self._idle:
            self._running += 1
        try:
            while not self.stopping.is_set() and (item := work.get()) is not None:
                self.emit(FileStarted(str(item.path), item.size))
                error, assoc = self.send_one(item, ae, contexts, assoc)
                if error:
                    self.done(item, outcome(item, Status.FAILED, error))
                    continue
                if self.sent_log is not None:
                    self.sent_log.record(item, self.comment)
                self.emit(BytesMoved(str(item.path), item.size))
                self.emit(FileVerified(str(item.path), item.size, "", False))
                self.done(item, outcome(item, Status.VERIFIED))
        finally:
            try:
                if assoc is not None and assoc.is_established:
                    assoc.release()
            finally:
                with self._idle:
                    self._running -= 1
                    self._idle.notify_all()

    def send_one(
        self, item: DicomFile, ae: AE, contexts: list[Any], assoc: Association | None
    ) -> tuple[str, Association | None]:
        """Send ``item`` over ``assoc`` (opened or opened again as needed): "" once the
        receiver acknowledged it, else why it failed; and the association to go on with.

        Up to ``ATTEMPTS`` tries, the later ones after ``RETRY_DELAYS``.  An association
        refused while other files were acknowledged since this file's last try is not a
        try: the receiver is up and limits how many associations it takes, so this sender
        waits ``ROOM_WAIT`` for one to close rather than failing the file."""
        error = ""
        acks_seen = self.acks  # files acknowledged, by every sender, at this file's last try
        tries = unanswered = 0  # unanswered: tries that got no association or no response
        rejected = False  # the last try's association was rejected (the receiver answered)
        delay = 0.0
        while tries < ATTEMPTS:
            if self.stopping.wait(delay):
                return "the run was interrupted before it was sent", assoc
            tries += 1
            delay = spread(RETRY_DELAYS[min(tries, len(RETRY_DELAYS)) - 1])  # before the next
            if assoc is None or not assoc.is_established:
                if self.gave_up:
                    return self.gave_up, None
                assoc = self.associate(ae, contexts)
                if not assoc.is_established:
                    (error, permanent), rejected = self.refusal(assoc), assoc.is_rejected
                    assoc = None
                    if permanent:  # asking again gets the same answer
                        return self.give_up(error, acks_seen, tries, rejected) or error, None
                    if self.acks != acks_seen:  # others are served: wait for room
                        acks_seen, tries, delay = self.acks, tries - 1, spread(ROOM_WAIT)
                    else:
                        unanswered += 1
                    if tries < ATTEMPTS:
                        self.emit(FileRetrying(str(item.path), error, delay))
                    continue
            try:
                status = assoc.send_c_store(self.payload(item))
            except (ValueError, AttributeError) as exc:
                # No accepted context for the file's SOP class and transfer syntax.
                return f"the receiver does not take it: {exc}", assoc
            except (OSError, RuntimeError) as exc:
                error, assoc, unanswered = f"association lost: {exc}", None, unanswered + 1
                rejected = False
                continue
            if "Status" not in status:
                # No answer: the association was aborted or timed out.
                error, assoc = "no C-STORE response (association lost)", None
                unanswered, rejected = unanswered + 1, False
                if tries < ATTEMPTS:
                    self.emit(FileRetrying(str(item.path), error, delay))
                continue
            code = int(status.Status)
            if stored(code):
                with self._results_lock:
                    self.acks += 1
                return "", assoc
            comment = str(status.get("ErrorComment", "") or "").strip()
            refused = f"the receiver refused it: status 0x{code:04X}"
            return refused + (f" ({comment})" if comment else ""), assoc
        if unanswered == ATTEMPTS:
            error = self.give_up(error, acks_seen, ATTEMPTS, rejected) or error
        return error, assoc

    def give_up(self, error: str, acks_before: int, tries: int, rejected: bool) -> str:
        """A file's every try got no association or no C-STORE response.  If no file was
        acknowledged meanwhile (by any sender), the receiver has stopped answering: the
        files left fail with this one cause instead of three tries each (returned, and kept
        in ``gave_up``; worded for a receiver that ``rejected`` the last association, or for
        one that did not answer).  If others were acknowledged meanwhile, the receiver is up
        and only this file failed: "" is returned."""
        with self._results_lock:
            if self.acks != acks_before or self.gave_up:
                return self.gave_up
        attempts = f"{tries} {'try' if tries == 1 else 'tries'}"
        if rejected:  # it answers, but not us (the AE title?)
            said = f"{error} ({attempts}): the files left were not sent"
        else:  # "Connection refused" says it plainest, where that is what it is
            said = (
                f"the receiver stopped answering ({connect_error(self.target) or error}; "
                f"{attempts}): the files left were not sent; run the same command again to "
                "send them"
            )
        with self._results_lock:
            self.gave_up = self.gave_up or said
            return self.gave_up

    def wait_idle(self) -> None:
        """Return once no sender is inside :meth:`worker`.  Only after ``stopping`` is set:
        a sender that enters later sees it and leaves without sending."""
        with self._idle:
            self._idle.wait_for(lambda: self._running == 0)


def no_delay(event: evt.Event) -> None:
    """Send each PDU at once: with Nagle's algorithm the last part of every C-STORE waited
    for the peer's delayed ACK (tens of ms per instance)."""
    sock = event.assoc.dul.socket
    if sock is not None and sock.socket is not None:
        sock.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def spread(delay: float) -> float:
    """``delay`` give or take a quarter: senders turned away together (a receiver that
    limits its associations rejects all of several asked for at once) ask again apart."""
    return delay * random.uniform(0.75, 1.25)


def wake_sender(event: evt.Event) -> None:
    """Wake a C-STORE waiting for its response on an association that is gone.

    pynetdicom tells a waiting C-STORE of a lost connection with one empty message on the
    association's queue, but the association's own thread can take that message first (it
    polls the queue too): a C-STORE sent in that moment then waited the whole DIMSE timeout
    (60 s) for an answer that could not come.  Another empty message, put when the loss is
    known, ends that wait at once; on a closed association nothing reads it."""
    event.assoc.dimse.msg_queue.put((None, None))


def connect_error(target: Target, timeout: float = 10.0) -> str:
    """Why nothing answers at the receiver's host and port ("Connection refused"), or ""
    when something does."""
    try:
        with socket.create_connection((target.host, target.port), timeout=timeout):
            return ""
    except OSError as exc:
        return exc.strerror or str(exc) or type(exc).__name__


def check_reachable(target: Target) -> None:
    """ReceiverUnreachable, one line, when nothing answers at the receiver's host and port:
    a wrong port or a stopped receiver is one error, not a refused association per file."""
    if reason := connect_error(target):
        raise ReceiverUnreachable(
            f"cannot reach the DICOM receiver {target} ({reason}): nothing was sent"
        )


def send(
    files: list[DicomFile],
    target: Target,
    *,
    comment: str = "",
    jobs: int = 4,
    sink: EventSink,
    sent_log: SentLog | None = None,
    calling_ae: str = "XNATDL",
) -> list[Outcome]:
    """Send ``files``; one outcome per file: verified (acknowledged), skipped (the log says
    it was acknowledged before) or failed (with the reason; once the receiver has stopped
    answering, the files left fail untried, with that reason).  ReceiverUnreachable when
    nothing answers at the target before anything is sent."""
    sender = _Sender(target, comment, sink, calling_ae, sent_log)
    done: list[DicomFile] = []
    todo: list[DicomFile] = []
    for item in files:
        acked = sent_log is not None and sent_log.acknowledged(item, comment)
        (done if acked else todo).append(item)
    if todo:
        check_reachable(target)
    sink(Planned(len(files), sum(f.size for f in files)))
    for item in done:
        sender.results.append(outcome(item, Status.SKIPPED))
        sink(FileSkipped(str(item.path), item.size, "acknowledged by the receiver before"))
    for group in context_groups(todo):
        pairs = sorted({f.context for f in group})
        contexts = [build_context(sop, [syntax]) for sop, syntax in pairs]
        ae = AE(ae_title=calling_ae)
        ae.maximum_pdu_size = 0
        ae.network_timeout = ae.dimse_timeout = ae.acse_timeout = TIMEOUT
        work: Work = queue.SimpleQueue()
        for item in group:
            work.put(item)
        threads = [
            threading.Thread(
                target=sender.worker, args=(ae, contexts, work), name="dicom-send", daemon=True
            )
            for _ in range(max(1, min(jobs, len(group))))
        ]
        for _ in threads:
            work.put(None)
        try:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        except BaseException:
            # Ctrl-C or SIGTERM, raised here in the main thread (while the senders start, or
            # while they run).  Each sender finishes the instance it has in hand (its
            # acknowledgement is recorded), starts no other and releases its association;
            # closing the log under a sender still running would lose that acknowledgement.
            # Not Thread.join: on Python 3.11 a join cut short by the interrupt marks the
            # thread it waited for as ended while it still runs, and joining it again
            # returns at once.  The senders count themselves in and out instead.
            # A second interrupt stops the waiting.
            sender.stopping.set()
            sender.wait_idle()
            for thread in threads:  # each has left worker(): only its last moments remain
                with contextlib.suppress(RuntimeError):  # never started: nothing to wait for
                    thread.join()
            raise
    return sender.results
