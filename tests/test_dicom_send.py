"""``xnat-downloader dicom-send`` against dcmtk's storescp and minixnat's receiver."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import pydicom
import pytest
import requests
from pydicom.uid import generate_uid
from pynetdicom import AE, build_context, evt

from tests.conftest import BIN, Server, start_server
from tests.dicomfiles import (
    SYNTAXES,
    archived,
    dcmtk,
    get,
    instance,
    put,
    receiver_port,
    series_files,
)
from tests.standins import PassThrough, serve
from xnat_downloader.api.dicom import _elsewhere
from xnat_downloader.cli.progress import Tally
from xnat_downloader.plan.dicomsend import DicomFile, Target, parse_target
from xnat_downloader.transfer import dicomsend as transport
from xnat_downloader.transfer.events import FileFailed, FileRetrying, FileVerified, Planned
from xnat_downloader.transfer.jobs import Outcome, Status
from xnat_downloader.xnat.arrival import Arrived


def dataset_bytes(path: Path) -> bytes:
    """A Part-10 file's dataset, without preamble and meta group (whose implementation
    fields every writer fills in its own way)."""
    data = path.read_bytes()
    assert data[128:132] == b"DICM"
    # (0002,0000) UL, explicit VR: tag 4 + VR 2 + length 2 + value 4, then the group.
    (group_length,) = struct.unpack("<I", data[140:144])
    return data[144 + group_length :]


def md5s(paths: list[Path]) -> dict[Path, str]:
    return {p: hashlib.md5(p.read_bytes()).hexdigest() for p in paths}


def send(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BIN / "xnat-downloader", "dicom-send", *map(str, args)],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Storescp:
    """dcmtk's storescp accepting every transfer syntax, writing what it gets as received,
    one child process per association (so parallel senders really send in parallel).  It
    and its children are one process group, so :meth:`kill` stops the receiver whole, as a
    crash or a restart does."""

    def __init__(self, out: Path) -> None:
        self.port, self.out = free_port(), out
        out.mkdir(exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [dcmtk("storescp"), "-aet", "STORESCP", "+xa", "--bit-preserving", "--fork",
             "-od", str(self.out), str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise AssertionError(f"storescp did not start listening on port {self.port}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[Storescp]:
    receiver = Storescp(tmp_path / "storescp")
    receiver.start()
    yield receiver
    receiver.kill()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A private state folder, so the acknowledged-files log starts empty."""
    return {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}


def dicom_files(folder: Path, count: int) -> list[DicomFile]:
    """``count`` new instances of one series under ``folder``, read as dicom-send reads
    them (each must read)."""
    items = []
    for path in series_files(folder, count):
        item = transport.read_dicom(path)
        assert item is not None, path
        items.append(item)
    return items


def acknowledged_in(log: Path, items: list[DicomFile]) -> set[str]:
    """The SOP Instance UIDs of ``items`` that the log of acknowledged files at ``log``
    holds, read as the next run reads it."""
    reopened = transport.SentLog(log)
    try:
        return {i.sop_uid for i in items if reopened.acknowledged(i, "")}
    finally:
        reopened.close()


@contextmanager
def pynetdicom_receiver(
    title: str, files: list[DicomFile], on_store: Callable[[evt.Event], int],
    max_associations: int = 10,
) -> Iterator[Target]:  # fmt: skip
    """An in-process pynetdicom receiver taking ``files``' contexts, answering each
    C-STORE with ``on_store``'s status; stopped on leaving."""
    receiver = AE(ae_title=title)
    receiver.maximum_associations = max_associations
    for sop_class, syntax in {f.context for f in files}:
        receiver.add_supported_context(sop_class, syntax)
    server = receiver.start_server(
        ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )
    try:
        yield parse_target(f"{title}@127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()


def test_the_peers_are_dcmtks_even_in_an_activated_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """pynetdicom puts Python apps named storescp and storescu into this environment's
    bin; with the environment first on PATH (activated), the tests still start dcmtk's."""
    own = Path(sys.prefix) / "bin"
    assert (own / "storescp").exists()  # pynetdicom's app, the one to pass over
    monkeypatch.setenv("PATH", f"{own}{os.pathsep}{os.environ.get('PATH', '')}")
    for tool in ("storescp", "storescu", "echoscu"):
        found = Path(dcmtk(tool)).resolve()
        assert own.resolve() not in found.parents, found
        assert (
            "dcmtk" in subprocess.run([found, "--version"], capture_output=True, text=True).stdout
        )


def test_dicom_send_to_dcmtk_storescp_delivers_every_dataset_byte_for_byte(
    storescp: Storescp, tmp_path: Path, env: dict[str, str]
) -> None:
    port, received = storescp.port, storescp.out
    study = generate_uid()
    files = [
        instance(tmp_path / "in" / f"{i}.dcm", study=study, syntax=syntax, instance_number=i)
        for i, syntax in enumerate(SYNTAXES)
    ] + series_files(tmp_path / "in" / "more", 20, study=study, series_number=2)
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    before = md5s(files)
    done = send("--to", f"STORESCP@127.0.0.1:{port}", tmp_path / "in", "-j", "3", env=env)
    assert done.returncode == 0, done.stderr
    total = sum(p.stat().st_size for p in files)
    assert done.stdout.strip().splitlines()[-1] == (
        f"done: {len(files)} files, {total} bytes, {len(files)} verified, 0 failed"
    )
    assert f"skipped (not DICOM): {tmp_path / 'in' / 'notes.txt'}" in done.stderr
    got = {str(pydicom.dcmread(p).SOPInstanceUID): p for p in received.iterdir()}
    assert len(got) == len(files)
    for path in files:
        sop = str(pydicom.dcmread(path).SOPInstanceUID)
        assert dataset_bytes(got[sop]) == dataset_bytes(path)
    assert md5s(files) == before  # the user's files are never touched
    # A re-run sends nothing: the receiver acknowledged every file already.
    for path in received.iterdir():
        path.unlink()
    again = send("--to", f"STORESCP@127.0.0.1:{port}", tmp_path / "in", env=env)
    assert again.returncode == 0, again.stderr
    assert f"{len(files)} were acknowledged before" in again.stderr
    assert list(received.iterdir()) == []


class Stop(KeyboardInterrupt):
    """What the command line's SIGTERM handler raises in the main thread."""


def test_an_interrupted_send_waits_for_its_senders_and_records_what_was_acknowledged(
    storescp: Storescp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM (or Ctrl-C) while instances are being sent: each sender finishes the
    instance in hand and starts no other, and the interrupt reaches the caller only then,
    so every instance the receiver got is in the log of acknowledged files (a re-run sends
    it no more).  The log was once closed under senders still running: an acknowledged
    instance went unrecorded, with a thread's traceback on stderr.

    The signal comes while the first sender started is recording its second
    acknowledgement, so the main thread is waiting for that sender when the interrupt
    lands.  On Python 3.11 a Thread.join cut short that way marks the thread as ended while
    it still runs, and the run once stopped waiting for it: the log was closed before that
    sender recorded what the receiver had acknowledged (one run in twenty under load)."""
    port, received = storescp.port, storescp.out
    items = dicom_files(tmp_path / "in", 60)
    log = transport.SentLog(tmp_path / "sent.sqlite")
    thread_errors: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: thread_errors.append(args.exc_value))
    senders: list[threading.Thread] = []
    first_senders: list[DicomFile] = []  # what the first sender started recorded
    record, thread_class = transport.SentLog.record, threading.Thread

    class Sender(thread_class):  # type: ignore[misc,valid-type]
        def start(self) -> None:
            if self.name == "dicom-send":
                senders.append(self)
            super().start()

    def record_slowly(self: transport.SentLog, item: DicomFile, routing: str) -> None:
        if threading.current_thread() is senders[0]:
            first_senders.append(item)
            if len(first_senders) == 2:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.3)  # the acknowledgement in hand while the interrupt lands
        record(self, item, routing)

    monkeypatch.setattr(threading, "Thread", Sender)
    monkeypatch.setattr(transport.SentLog, "record", record_slowly)

    def raise_stop(signum: int, frame: FrameType | None) -> None:
        raise Stop("SIGTERM")

    before = signal.signal(signal.SIGTERM, raise_stop)
    try:
        with pytest.raises(Stop):
            transport.send(
                items, parse_target(f"STORESCP@127.0.0.1:{port}"), jobs=3,
                sink=lambda event: None, sent_log=log,
            )  # fmt: skip
    finally:
        signal.signal(signal.SIGTERM, before)
    # No sender still running (a thread just ended can stay listed a moment, not alive).
    assert [t for t in threading.enumerate() if t.name == "dicom-send" and t.is_alive()] == []
    log.close()
    got = {str(pydicom.dcmread(p).SOPInstanceUID) for p in received.iterdir()}
    assert 3 <= len(got) < len(items)  # stopped part-way
    assert acknowledged_in(tmp_path / "sent.sqlite", items) == got
    assert thread_errors == []


def send_while(
    storescp: Storescp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *,
    after_acks: int, then: Callable[[], None],
) -> tuple[list[Outcome], set[str], int]:  # fmt: skip
    """Send 60 files over 3 associations and call ``then`` (in the sender thread) once the
    receiver has acknowledged ``after_acks`` of them.  Returns the outcomes, the SOP
    Instance UIDs the log of acknowledged files holds, and how many associations were
    asked for."""
    items = dicom_files(tmp_path / "in", 60)
    log = transport.SentLog(tmp_path / "sent.sqlite")
    record, associate = transport.SentLog.record, transport._Sender.associate
    acks: list[DicomFile] = []
    associations: list[int] = []
    lock = threading.Lock()

    def record_then(self: transport.SentLog, item: DicomFile, routing: str) -> None:
        record(self, item, routing)
        with lock:
            acks.append(item)
            if len(acks) == after_acks:
                then()

    def counted(self: transport._Sender, ae: Any, contexts: list[Any]) -> Any:
        with lock:
            associations.append(1)
        return associate(self, ae, contexts)

    monkeypatch.setattr(transport.SentLog, "record", record_then)
    monkeypatch.setattr(transport._Sender, "associate", counted)
    outcomes = transport.send(
        items, parse_target(f"STORESCP@127.0.0.1:{storescp.port}"), jobs=3,
        sink=lambda event: None, sent_log=log,
    )  # fmt: skip
    log.close()
    return outcomes, acknowledged_in(tmp_path / "sent.sqlite", items), len(associations)


def test_a_receiver_that_stops_answering_fails_the_files_left_with_one_cause(
    storescp: Storescp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The receiver dies after 10 acknowledgements.  Each sender tries a file a few times;
    once a file's every try finds no association while nothing else is acknowledged, the
    receiver is taken to be gone and the files left fail at once, saying so, instead of
    three refused associations each (the run once asked for over a hundred).  What was
    acknowledged is in the log, so a re-run sends the rest."""
    monkeypatch.setattr(transport, "RETRY_DELAYS", (0.05, 0.1))
    monkeypatch.setattr(transport, "ROOM_WAIT", 0.1)
    outcomes, recorded, associations = send_while(
        storescp, tmp_path, monkeypatch, after_acks=10, then=storescp.kill
    )
    verified = {o.job.uri for o in outcomes if o.status == Status.VERIFIED}
    failed = [o for o in outcomes if o.status == Status.FAILED]
    assert len(outcomes) == 60
    assert len(verified) + len(failed) == 60
    assert 10 <= len(verified) < 60
    assert recorded == verified
    gone = [o for o in failed if "the receiver stopped answering" in o.error]
    # Only the files in hand when it died failed with their own tries' reason.
    assert len(failed) - len(gone) <= 3 + 3
    for o in gone:  # said as plainly as it can be: nothing listens there any more
        assert o.error == (
            f"the receiver stopped answering (Connection refused; {transport.ATTEMPTS} tries): "
            "the files left were not sent; run the same command again to send them"
        )
    assert associations <= 3 + 3 * transport.ATTEMPTS * 2


def test_a_receiver_that_stops_responding_is_given_up_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A receiver that still takes associations but, after 5 acknowledgements, answers no
    C-STORE (hung): each sender's file waits out its three tries, and then the files left
    fail at once with that cause, rather than three timeouts each (at the real 60 s, over
    an hour for these 60 files on 3 associations)."""
    monkeypatch.setattr(transport, "TIMEOUT", 1.0)
    monkeypatch.setattr(transport, "RETRY_DELAYS", (0.05, 0.1))
    monkeypatch.setattr(transport, "ROOM_WAIT", 0.1)
    files = dicom_files(tmp_path / "in", 60)
    seen: list[str] = []
    lock, release = threading.Lock(), threading.Event()

    def hang_after_five(event: evt.Event) -> int:
        with lock:
            seen.append(str(event.request.AffectedSOPInstanceUID))
            hang = len(seen) > 5
        if hang:
            release.wait(60)
        return 0x0000

    with pynetdicom_receiver("HUNG", files, hang_after_five) as target:
        try:
            outcomes = transport.send(files, target, jobs=3, sink=lambda event: None)
        finally:
            release.set()  # the hung handlers return before the receiver stops
    verified = [o for o in outcomes if o.status == Status.VERIFIED]
    failed = [o for o in outcomes if o.status == Status.FAILED]
    assert (len(verified), len(failed)) == (5, 55)
    gone = [o for o in failed if o.error.startswith("the receiver stopped answering (no C-STORE")]
    assert len(failed) - len(gone) <= 3  # the files in hand when it hung
    assert len(seen) <= 5 + 3 * transport.ATTEMPTS  # not three tries of every file


def test_a_receiver_that_takes_fewer_associations_gets_every_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A receiver that takes two associations at once and rejects more (as many PACS
    limit each sender): the senders it turns away wait for room while the others are
    acknowledged, and every file arrives.  They once failed a file at each refusal; and
    pynetdicom's receiver rejects all of several associations asked for at once, so the
    senders turned away together ask again at different moments."""
    monkeypatch.setattr(transport, "RETRY_DELAYS", (0.5, 1.0))
    monkeypatch.setattr(transport, "ROOM_WAIT", 0.1)
    files = dicom_files(tmp_path / "in", 40)
    stored: list[str] = []
    lock = threading.Lock()

    def store(event: evt.Event) -> int:
        time.sleep(0.01)  # a receiver that takes a moment, so that senders overlap
        with lock:
            stored.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    events: list[object] = []
    with pynetdicom_receiver("TWOATONCE", files, store, max_associations=2) as target:
        outcomes = transport.send(files, target, jobs=4, sink=events.append)
    assert [o.error for o in outcomes if o.status != Status.VERIFIED] == []
    assert sorted(stored) == sorted(f.sop_uid for f in files)
    # The limit was met: some associations were turned away, and waited out.
    assert any(
        isinstance(e, FileRetrying) and "rejected the association" in e.reason for e in events
    )


def test_a_receiver_that_restarts_is_waited_for(
    storescp: Storescp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The receiver is killed after 10 acknowledgements and back half a second later: the
    associations lost are opened again after a pause, and every file is acknowledged
    (they once were retried at once, all three tries before it was back)."""

    def restart() -> None:
        storescp.kill()
        threading.Timer(0.5, storescp.start).start()

    outcomes, recorded, _ = send_while(storescp, tmp_path, monkeypatch, after_acks=10, then=restart)
    assert [o.error for o in outcomes if o.status != Status.VERIFIED] == []
    assert recorded == {o.job.uri for o in outcomes}
    # storescp names each file it keeps by its SOP Instance UID (one it got part of when
    # killed may be there too, cut short: not read here).
    kept = {p.name.split(".", 1)[1] for p in storescp.out.iterdir()}
    assert {o.job.uri for o in outcomes} <= kept


def test_a_connection_that_failed_is_not_called_an_aborted_association(
    storescp: Storescp, tmp_path: Path
) -> None:
    """pynetdicom marks an association whose TCP connection failed as aborted; a file's
    reason then read "aborted the association" for a receiver that was not there at all.
    A receiver that really aborts (it was there) is still said to."""
    item = dicom_files(tmp_path / "in", 1)[0]
    contexts = [build_context(*item.context)]
    nobody = parse_target(f"STORESCP@127.0.0.1:{free_port()}")
    sender = transport._Sender(nobody, "", lambda event: None, "XNATDL", None)
    assoc = sender.associate(AE(ae_title="XNATDL"), contexts)
    assert (assoc.is_established, assoc.is_aborted) == (False, True)
    assert sender.refusal(assoc) == (
        f"no connection to {nobody} (is the receiver running?)",
        False,
    )
    # One that connected and was then aborted by the receiver (no context it takes).
    there = parse_target(f"STORESCP@127.0.0.1:{storescp.port}")
    sender = transport._Sender(there, "", lambda event: None, "XNATDL", None)
    assoc = sender.associate(AE(ae_title="XNATDL"), [build_context("1.2.3.4.5.6", ["1.2.3"])])
    assert (assoc.is_established, assoc.is_aborted) == (False, True)
    assert sender.refusal(assoc) == (f"{there} aborted the association", False)


def test_a_lost_association_leaves_word_for_a_c_store_waiting_on_it(
    storescp: Storescp, tmp_path: Path
) -> None:
    """pynetdicom tells a C-STORE waiting for its response that the connection is gone
    with one empty message on the association's queue, which the association's own thread
    can take first: a C-STORE sent in that moment waited the whole DIMSE timeout (60 s)
    for an answer that could not come (one run in two, when a receiver died mid-send).  Once the
    association has ended, a message is still there for such a C-STORE."""
    item = dicom_files(tmp_path / "in", 1)[0]
    target = parse_target(f"STORESCP@127.0.0.1:{storescp.port}")
    sender = transport._Sender(target, "", lambda event: None, "XNATDL", None)
    assoc = sender.associate(AE(ae_title="XNATDL"), [build_context(*item.context)])
    assert assoc.is_established
    storescp.kill()
    assoc.join(timeout=30)  # its thread ends once it has seen the connection closed
    assert assoc.is_aborted
    assert assoc.dimse.msg_queue.get_nowait() == (None, None)


def test_dicom_send_routes_to_minixnat_and_checks_the_built_session(
    archive: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    server: Server = start_server(archive, "--dicom-port", "0", "--dicom-quiet", "0.5")
    try:
        port = receiver_port(server.process)
        put(server.url, "/data/projects/DS")
        put(server.url, "/data/projects/DS/prearchive_code/0")  # first, into the prearchive
        study = generate_uid()
        files = series_files(tmp_path / "a", 4, study=study) + series_files(
            tmp_path / "a", 3, study=study, series_number=2
        )
        before = md5s(files)
        routed = send(
            "--to", f"MINIXNAT@127.0.0.1:{port}", tmp_path / "a", "--project", "DS",
            "--subject", "SUBJ1", "--session", "SESS1", "-w", server.url, "-u", "admin",
            "--password", "admin", "--wait", "60", "--json", env=env,
        )  # fmt: skip
        assert routed.returncode == 0, routed.stderr
        document = json.loads(routed.stdout)
        assert (document["files"], document["verified"], document["failed"]) == (7, 7, 0)
        assert len(document["sessions"]) == 1
        # A report, as downloads write: one JSON line per file, with its status.
        lines = Path(document["report"]).read_text().splitlines()
        assert sorted(json.loads(line)["local"] for line in lines) == sorted(map(str, files))
        assert {json.loads(line)["status"] for line in lines} == {"verified"}
        assert md5s(files) == before  # routing went into copies only
        rows = get(server.url, "/data/prearchive/projects/DS")["ResultSet"]["Result"]
        assert [(r["subject"], r["name"], r["tag"]) for r in rows] == [("SUBJ1", "SESS1", study)]
        # Archived directly when asked for by the project: the -w check finds every UID.
        put(server.url, "/data/projects/DS/prearchive_code/4")
        other = generate_uid()
        series_files(tmp_path / "b", 5, study=other)
        done = send(
            "--to", f"MINIXNAT@127.0.0.1:{port}", tmp_path / "b", "--project", "DS",
            "--subject", "SUBJ2", "--session", "SESS2", "-w", server.url, "-u", "admin",
            "--password", "admin", env=env,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip().endswith("5 verified, 0 failed")
        assert [r["label"] for r in archived(server.url, other)] == ["SESS2"]
        # An acknowledged instance the server lost is caught by the -w check.
        lost = next(archive.joinpath("archive", "DS").rglob("*.dcm"))
        requests.delete(
            f"{server.url}/data/projects/DS/subjects/SUBJ2/experiments/SESS2/scans/1/"
            f"resources/DICOM/files/{lost.name}", auth=("admin", "admin"), timeout=30,
        ).raise_for_status()  # fmt: skip
        check = send(
            "--to", f"MINIXNAT@127.0.0.1:{port}", tmp_path / "b", "--project", "DS",
            "--subject", "SUBJ2", "--session", "SESS2", "-w", server.url, "-u", "admin",
            "--password", "admin", "--wait", "2", env=env,
        )  # fmt: skip
        assert check.returncode == 1
        assert check.stdout.strip().endswith("1 failed")
        assert "acknowledged, but not in /data/experiments/" in check.stderr
    finally:
        server.stop()


def test_a_study_in_several_places_is_checked_where_it_is_whole(
    archive: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    """A study whose session label is taken in the archive lands in the prearchive as
    CONFLICT, and each later send of it makes another entry.  Sent in part, then whole: it
    is verified by the entry that holds it all, whichever is listed first, and a note says
    where it waits, with the command that archives it."""
    server: Server = start_server(archive, "--dicom-port", "0", "--dicom-quiet", "0.5")
    try:
        port = receiver_port(server.process)
        put(server.url, "/data/projects/DS")  # prearchive code 4: archived when built
        to = (
            "--to",
            f"MINIXNAT@127.0.0.1:{port}",
            "--project",
            "DS",
            "--subject",
            "S2",
            "--session",
            "E2",
            "-w",
            server.url,
            "-u",
            "admin",
            "--password",
            "admin",
        )
        first, second = generate_uid(), generate_uid()
        assert send(*to, *series_files(tmp_path / "b", 2, study=first), env=env).returncode == 0
        assert [r["label"] for r in archived(server.url, first)] == ["E2"]
        files = series_files(tmp_path / "c", 3, study=second)
        part = send(*to, *files[:2], env=env)
        assert part.returncode == 0, part.stderr
        whole = send(*to, *files, "--resend", "--wait", "30", env=env)
        assert whole.returncode == 0, whole.stderr
        assert whole.stdout.strip().endswith("3 verified, 0 failed")
        rows = get(server.url, "/data/prearchive/projects/DS")["ResultSet"]["Result"]
        entries = sorted((r for r in rows if r["tag"] == second), key=lambda r: r["timestamp"])
        assert [r["status"] for r in entries] == ["CONFLICT", "CONFLICT"]
        path = f"/prearchive/projects/DS/{entries[-1]['timestamp']}/{entries[-1]['folderName']}"
        assert (
            f"note: study {second} is verified in the prearchive, as {path}, with status "
            "CONFLICT: the archive has a session labelled E2 already; archive the study under "
            "another label (on the server's prearchive page), or add it to that session with: "
            f"xnat-downloader prearchive archive -w {server.url} {path} --overwrite\n"
        ) in whole.stderr
    finally:
        server.stop()


def test_a_failure_names_the_other_places_of_its_study() -> None:
    session = Arrived("/data/experiments/X_E1", False, "E1")
    entry = Arrived("/data/prearchive/projects/P/20260101_1/E1", True, "E1", "CONFLICT")
    other = Arrived("/data/experiments/X_E2", False, "E1b")
    assert _elsewhere("http://x", session, [entry, other]) == (
        "; the server holds this study in 3 places, also in /prearchive/projects/P/20260101_1/E1"
        " (CONFLICT), /data/experiments/X_E2: to add an entry's files to the session, run: "
        "xnat-downloader prearchive archive -w http://x /prearchive/projects/P/20260101_1/E1 "
        "--overwrite"
    )
    assert _elsewhere("http://x", entry, [other]) == (
        "; the server holds this study in 2 places, also in /data/experiments/X_E2"
    )


def test_files_the_server_cannot_be_asked_about_fail_as_not_checked(
    storescp: Storescp, archive: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    """With -w, a study the server cannot be asked about after the send (here it answers
    the lookup with a login page; it may also have stopped answering) fails its files as
    acknowledged but not checked, and the run still ends with its report and the done
    line; the other studies are checked.  Such an error once ended the run (an error line,
    no report, no done line) after every file had been sent."""
    first, second = generate_uid(), generate_uid()
    series_files(tmp_path / "in", 3, study=first)  # sent first with -j 1: looked up first
    series_files(tmp_path / "in", 2, study=second, series_number=2)
    server = start_server(archive)
    asked: list[str] = []

    class LoginPageAfterOne(PassThrough):
        upstream = server.url

        def intercept(self, path: str) -> bool:
            if path.startswith("/data/experiments?"):
                asked.append(path)
                if len(asked) > 1:  # the first study is looked up; then a login page
                    self.reply(200, b"<html><body>Login</body></html>", "text/html")
                    return True
            return False

    proxy, stop = serve(LoginPageAfterOne)
    to = f"STORESCP@127.0.0.1:{storescp.port}"
    try:
        done = send("--to", to, tmp_path / "in", "-j", "1", "-w", proxy, "-u", "admin",
                    "--password", "admin", "--wait", "0", env=env)  # fmt: skip
    finally:
        stop()
        server.stop()
    assert done.returncode == 1, done.stderr
    assert done.stdout.strip().splitlines()[-1].endswith("0 verified, 5 failed")
    assert "error:" not in done.stderr
    failed = [line for line in done.stderr.splitlines() if line.startswith("failed: ")]
    assert len(failed) == 5
    assert sum(f"no session of study {first}" in line for line in failed) == 3
    assert sum("not checked on the server (the server answered" in line for line in failed) == 2
    assert "report: " in done.stderr


def test_a_server_to_check_that_refuses_the_login_is_found_before_sending(
    storescp: Storescp, archive: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    """-w's server is logged in to before anything is sent: a wrong password, or nothing
    answering there, is one error line and exit 2, and the receiver gets nothing (the
    files once went out first, and the error came after)."""
    series_files(tmp_path / "in", 3)
    to = f"STORESCP@127.0.0.1:{storescp.port}"
    server = start_server(archive)
    try:
        wrong = send("--to", to, tmp_path / "in", "-w", server.url, "-u", "admin",
                     "--password", "not-it", env=env)  # fmt: skip
    finally:
        server.stop()
    nobody = send("--to", to, tmp_path / "in", "-w", f"http://127.0.0.1:{free_port()}", "-u",
                  "admin", "--password", "admin", env=env)  # fmt: skip
    for result, said in ((wrong, "wrong user name or password"), (nobody, "cannot reach")):
        assert result.returncode == 2, result.stderr
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("error: ")
        assert said in last
        assert "(checked before sending: nothing was sent)" in last
        assert "Traceback" not in result.stderr
    assert list(storescp.out.iterdir()) == []


def test_dicom_send_reports_a_refusing_receiver_and_bad_arguments(
    archive: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    server = start_server(archive, "--dicom-port", "0", "--dicom-refuse", "XNATDL")
    try:
        port = receiver_port(server.process)
        files = series_files(tmp_path / "a", 2)
        refused = send("--to", f"MINIXNAT@127.0.0.1:{port}", *files, env=env)
        assert refused.returncode == 1
        assert refused.stdout.strip().splitlines()[-1].endswith("0 verified, 2 failed")
        # The receiver's reason, and no asking again: a permanent rejection is final.
        assert (
            f"MINIXNAT@127.0.0.1:{port} rejected the association permanently: calling AE title "
            "not recognised (1 try): the files left were not sent"
        ) in refused.stderr
    finally:
        server.stop()
    # Now nothing listens there: one line saying so, exit 2, not a failure per file.
    gone = send("--to", f"MINIXNAT@127.0.0.1:{port}", *files, env=env)
    assert gone.returncode == 2
    assert gone.stderr.strip().splitlines()[-1] == (
        f"error: cannot reach the DICOM receiver MINIXNAT@127.0.0.1:{port} (Connection "
        "refused): nothing was sent; check its host and port, and that it is running"
    )
    assert "failed:" not in gone.stderr
    for bad, message in (
        ("127.0.0.1:104", "give the receiver as AE@HOST:PORT"),
        ("AE@127.0.0.1", "give the receiver's host and port"),
        ("A_TITLE_FAR_TOO_LONG@h:1", "must be 1-16 printable ASCII characters"),
    ):
        result = send("--to", bad, *files, env=env)
        assert result.returncode == 2
        assert message in result.stderr
        assert "Traceback" not in result.stderr
    nothing = tmp_path / "empty"
    nothing.mkdir()
    (nothing / "a.txt").write_text("x")
    result = send("--to", "AE@127.0.0.1:104", nothing, env=env)
    assert result.returncode == 2
    assert "no DICOM files" in result.stderr
    routed = send("--to", "AE@127.0.0.1:104", *files, "--project", "two words", env=env)
    assert routed.returncode == 2
    assert "XNAT's routing takes letters" in routed.stderr
    waited = send("--to", "AE@127.0.0.1:104", *files, "--wait", "10", env=env)
    assert waited.returncode == 2  # nothing to wait for without -w: said, not ignored
    assert "add -w URL to check the sessions there, or leave out --wait" in waited.stderr


def test_a_file_the_later_check_fails_is_counted_once() -> None:
    """Acknowledged (done), then not found on the server: one file, failed; the display
    never shows more files done than planned (it once said 4/3)."""
    tally = Tally()
    tally.update(Planned(1, 10))
    tally.update(FileVerified("a.dcm", 10, "", False))
    tally.update(FileFailed("a.dcm", "acknowledged, but not in …", counted=True))
    assert (tally.files, tally.done, tally.failed) == (1, 1, 1)
