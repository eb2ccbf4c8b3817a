"""minixnat's DICOM receiver: C-ECHO and C-STORE over pynetdicom (seed 002).

Every standard storage SOP class is accepted in every transfer syntax pynetdicom knows
(implicit and explicit little endian, deflated, JPEG baseline/lossless, JPEG 2000, …), and
each instance is kept exactly as it was encoded by the sender.  An instance is answered
"success" only once it is on disk (:mod:`minixnat.dicom.spool`); one that is not DICOM, is
cut short, or lacks its study, series or instance UID is answered with a failure status
and not kept.  Associations from refused calling AE titles are rejected.
"""

from __future__ import annotations

import io
import logging
import socket
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.pdu_primitives import A_ASSOCIATE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from minixnat.dicom.builder import Builder
from minixnat.dicom.spool import Spool
from minixnat.store import Store

log = logging.getLogger("minixnat.dicom")

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
DATA_SET_DOES_NOT_MATCH = 0xA900
CANNOT_UNDERSTAND = 0xC000
UNDEFINED_LENGTH = 0xFFFFFFFF
PIXEL_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


class Incomplete(ValueError):
    """The instance is not a whole DICOM object."""


def _check_elements(ds: Dataset) -> None:
    for tag in list(ds.keys()):
        elem: Any = ds.get_item(tag)
        if isinstance(elem, RawDataElement):
            value = elem.value
            if elem.length != UNDEFINED_LENGTH and value is not None and len(value) != elem.length:
                raise Incomplete(f"element {tag} is cut short")
        elif elem is not None and elem.VR == "SQ":
            for item in elem.value:
                _check_elements(item)


def _expected_pixel_bytes(ds: Dataset) -> int | None:
    try:
        rows, columns = int(ds.Rows), int(ds.Columns)
        bits = int(ds.BitsAllocated)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (AttributeError, TypeError, ValueError):
        return None
    return (rows * columns * samples * frames * bits + 7) // 8


def checked_instance(encoded: bytes, transfer_syntax: str) -> Dataset:
    """The dataset of a whole instance; :class:`Incomplete` when it is not one.

    pydicom reads a truncated stream without complaint, so completeness is checked here:
    every element as long as it says, nothing left over, the UIDs XNAT files it by, and
    for uncompressed images all the pixel data their size calls for.
    """
    stream = io.BytesIO(encoded)
    try:
        ds = pydicom.dcmread(stream)
    except Exception as exc:
        raise Incomplete(f"not readable as DICOM: {exc}") from exc
    syntax = UID(transfer_syntax)
    if not syntax.is_deflated and stream.tell() != len(encoded):
        raise Incomplete("bytes left over after the last element")
    _check_elements(ds)
    for name in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        if not str(ds.get(name, "") or "").strip():
            raise Incomplete(f"no {name}")
    has_pixels = any(name in ds for name in PIXEL_TAGS)
    if "Rows" in ds and "Columns" in ds and not has_pixels:
        raise Incomplete("an image without its pixel data")
    if "PixelData" in ds and not syntax.is_compressed:
        expected = _expected_pixel_bytes(ds)
        if expected is not None and len(ds.get_item("PixelData").value or b"") < expected:
            raise Incomplete("the pixel data is cut short")
    return ds


@dataclass
class ReceiverOptions:
    ae_title: str = "MINIXNAT"
    host: str = "127.0.0.1"
    port: int = 0
    quiet: float = 5.0  # seconds without a new instance before a study is built
    refuse: Iterable[str] = ()  # calling AE titles whose associations are rejected
    bound: Mapping[str, str] = field(default_factory=dict)  # called AE title -> project
    durable: bool = True  # fsync each instance before acknowledging it


class Receiver:
    """A running C-STORE SCP with its study builder.  :meth:`stop` ends both."""

    def __init__(self, store: Store, options: ReceiverOptions) -> None:
        self.options = options
        self.spool = Spool(store.root, durable=options.durable)
        self.builder = Builder(store, self.spool, quiet=options.quiet, bound=options.bound)
        self.refused = {t.strip() for t in options.refuse}
        self.received = 0
        self._count_lock = threading.Lock()
        ae = AE(ae_title=options.ae_title)
        ae.maximum_pdu_size = 0  # no limit: fewer, larger P-DATA PDUs
        ae.maximum_associations = 64
        ae.network_timeout = 60
        ae.dimse_timeout = 60
        for context in AllStoragePresentationContexts:
            assert context.abstract_syntax is not None
            ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification, ALL_TRANSFER_SYNTAXES)
        handlers: list[Any] = [
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_CONN_OPEN, _no_delay),
        ]
        self.ae = ae
        server = ae.start_server((options.host, options.port), block=False, evt_handlers=handlers)
        assert server is not None  # block=False always returns the server
        self.server = server
        self.builder.start()

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.server.server_address[:2]
        return str(host), int(port)

    @property
    def line(self) -> str:
        """The line ``serve`` prints (CONTRACT §6)."""
        host, port = self.address
        return f"minixnat DICOM receiver on {self.options.ae_title}@{host}:{port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.builder.stop()

    # -- handlers ----------------------------------------------------------------------
    def _on_requested(self, event: evt.Event) -> None:
        calling = _request(event).calling_ae_title.strip()
        if calling in self.refused:
            log.warning("association from refused AE title %s rejected", calling)
            # Permanent, by the service user, calling AE title not recognised.
            event.assoc.acse.send_reject(0x01, 0x01, 0x03)
            event.assoc.kill()  # returns once the rejection has gone out

    def _on_echo(self, event: evt.Event) -> int:
        return SUCCESS

    def _on_store(self, event: evt.Event) -> int | Dataset:
        try:
            encoded = event.encoded_dataset()
            ds = checked_instance(encoded, str(event.context.transfer_syntax))
        except Incomplete as exc:
            log.warning("C-STORE refused: %s", exc)
            return _status(CANNOT_UNDERSTAND, str(exc))
        sop = str(ds.SOPInstanceUID).strip()
        affected = str(getattr(event.request, "AffectedSOPInstanceUID", "") or "").strip()
        if affected and affected != sop:
            return _status(DATA_SET_DOES_NOT_MATCH, "SOP Instance UID differs from the request")
        called = _request(event).called_ae_title.strip()
        try:
            self.spool.store(called, str(ds.StudyInstanceUID), sop, encoded)
        except OSError as exc:
            log.error("C-STORE of %s not kept: %s", sop, exc)
            return _status(OUT_OF_RESOURCES, "the receiver cannot write the instance")
        with self._count_lock:
            self.received += 1
        return SUCCESS


def _no_delay(event: evt.Event) -> None:
    """Answer each C-STORE at once (no Nagle wait for the sender's delayed ACK)."""
    sock = event.assoc.dul.socket
    if sock is not None and sock.socket is not None:
        sock.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _request(event: evt.Event) -> A_ASSOCIATE:
    primitive = event.assoc.requestor.primitive
    assert primitive is not None  # set before any handler runs
    return primitive


def _status(code: int, comment: str) -> Dataset:
    status = Dataset()
    status.Status = code
    status.ErrorComment = comment[:64]
    return status
