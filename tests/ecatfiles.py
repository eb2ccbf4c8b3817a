"""ECAT 7 files for the importer's tests: a main header with the fields the classic
importer reads, then a few bytes standing in for the matrix data (never decoded)."""

from __future__ import annotations

from datetime import UTC, datetime


def _put(block: bytearray, offset: int, length: int, text: str) -> None:
    raw = text.encode("latin-1")[:length]
    block[offset : offset + len(raw)] = raw


def ecat7(
    patient_id: str,
    started: datetime,
    *,
    patient_name: str = "",
    description: str = "",
    radiopharmaceutical: str = "FDG",
    payload: bytes = b"\x00" * 1024,
) -> bytes:
    """One ECAT 7 image file (big-endian main header of 512 bytes)."""
    block = bytearray(512)
    _put(block, 0, 14, "MATRIX72v")
    _put(block, 14, 32, f"{patient_id}.v")
    block[62:66] = int(started.astimezone(UTC).timestamp()).to_bytes(4, "big")
    _put(block, 78, 32, radiopharmaceutical)
    _put(block, 166, 16, patient_id)
    _put(block, 182, 32, patient_name)
    _put(block, 296, 32, description)
    return bytes(block) + payload
