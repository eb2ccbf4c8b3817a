"""Read the DICOM header fields the importer builds sessions from (pydicom, no pixels)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

# Read only the tags we use; a header-only read stays fast on large files.
TAGS = [
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SeriesNumber",
    "SeriesDescription",
    "Modality",
    "PatientName",
    "PatientID",
    "StudyDate",
    "StudyTime",
]


@dataclass(frozen=True)
class Header:
    study_uid: str
    series_uid: str
    series_number: str
    series_description: str
    modality: str
    patient_name: str
    patient_id: str
    study_date: str  # YYYY-MM-DD or ""
    study_time: str  # HH:MM:SS or ""


def is_ecat(path: Path) -> bool:
    """ECAT 7 files start with ``MATRIX7``; ECAT 6 has no magic and is not recognised."""
    with open(path, "rb") as f:
        return f.read(6) == b"MATRIX"


def _text(ds: pydicom.Dataset, name: str) -> str:
    value = ds.get(name, "")
    return str(value).strip() if value is not None else ""


def _date(raw: str) -> str:
    raw = raw.strip()
    if len(raw) == 8 and raw.isdigit():
        return f"{raw[:4]}-{raw[4:6]}-{raw[6:]}"
    return ""


def _time(raw: str) -> str:
    raw = raw.strip().split(".")[0]
    if len(raw) >= 4 and raw.isdigit():
        raw = raw.ljust(6, "0")
        return f"{raw[:2]}:{raw[2:4]}:{raw[4:6]}"
    return ""


def read_header(path: Path) -> Header | None:
    """The header of a DICOM file, or None when the file is not DICOM with study and series.

    Files without the 128-byte preamble are read too (as dcm4che does); such a read only
    counts when both UIDs come out, so arbitrary bytes are never taken for DICOM.
    """
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=TAGS)
    except (InvalidDicomError, TypeError, ValueError):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=TAGS, force=True)
        except Exception:
            return None
    except (OSError, EOFError, AttributeError, KeyError, IndexError):
        return None
    try:
        study = _text(ds, "StudyInstanceUID")
        series = _text(ds, "SeriesInstanceUID")
        if not study or not series:
            return None
        return Header(
            study_uid=study,
            series_uid=series,
            series_number=_text(ds, "SeriesNumber"),
            series_description=_text(ds, "SeriesDescription"),
            modality=_text(ds, "Modality").upper(),
            patient_name=_text(ds, "PatientName"),
            patient_id=_text(ds, "PatientID"),
            study_date=_date(_text(ds, "StudyDate")),
            study_time=_time(_text(ds, "StudyTime")),
        )
    except Exception:
        return None
