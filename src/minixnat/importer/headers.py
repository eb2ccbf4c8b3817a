"""Read the header fields the importer builds sessions from: DICOM (pydicom, no pixels),
and ECAT 7's main header for the classic importer."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

from minixnat.store.names import has_control_characters

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
    # What XNAT keeps of the acquisition: the scanner, the site, the accession number, and
    # an MR series' timing.
    "StationName",
    "Manufacturer",
    "ManufacturerModelName",
    "InstitutionName",
    "OperatorsName",
    "AccessionNumber",
    "RepetitionTime",
    "EchoTime",
    "InversionTime",
    "FlipAngle",
]
# Header fields kept as a session's fields, and as a scan's: (field path, DICOM keyword),
# the paths as XNAT's image session and scan documents name them (``scanner/manufacturer``
# is an attribute of ``<xnat:scanner>``).
SESSION_FIELDS = (
    ("scanner", "StationName"),
    ("scanner/manufacturer", "Manufacturer"),
    ("scanner/model", "ManufacturerModelName"),
    ("acquisition_site", "InstitutionName"),
    ("operator", "OperatorsName"),
    ("dcmAccessionNumber", "AccessionNumber"),
    ("dcmPatientId", "PatientID"),
    ("dcmPatientName", "PatientName"),
)
SCAN_FIELDS = (
    ("scanner", "StationName"),
    ("scanner/manufacturer", "Manufacturer"),
    ("scanner/model", "ManufacturerModelName"),
    ("parameters/tr", "RepetitionTime"),
    ("parameters/te", "EchoTime"),
    ("parameters/ti", "InversionTime"),
    ("parameters/flip", "FlipAngle"),
)


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
    #: The resource the file goes into, and its format.
    kind: str = "DICOM"
    #: What the session and the scan keep of the header (SESSION_FIELDS, SCAN_FIELDS):
    #: (field path, value) pairs, the empty ones left out.
    session_fields: tuple[tuple[str, str], ...] = ()
    scan_fields: tuple[tuple[str, str], ...] = ()


def is_ecat(path: Path) -> bool:
    """ECAT 7 files start with ``MATRIX7``; ECAT 6 has no magic and is not recognised."""
    with open(path, "rb") as f:
        return f.read(6) == b"MATRIX"


# ECAT 7's 512-byte big-endian main header: (offset, length) of the text fields read, and
# the offset of the scan start time (a 32-bit count of seconds since 1970, UTC).
ECAT_MAIN_HEADER = 512
ECAT_ORIGINAL_FILE_NAME = (14, 32)
ECAT_SCAN_START_TIME = 62
ECAT_RADIOPHARMACEUTICAL = (78, 32)
ECAT_PATIENT_ID = (166, 16)
ECAT_PATIENT_NAME = (182, 32)
ECAT_STUDY_DESCRIPTION = (296, 32)


def _ecat_text(block: bytes, where: tuple[int, int]) -> str:
    start, length = where
    return block[start : start + length].split(b"\0", 1)[0].decode("latin-1").strip()


def read_ecat(path: Path) -> Header | None:
    """A PET header from an ECAT 7 file's main header, or None if it has none.

    ECAT has no UIDs: the session is the patient on the scan's day, each file a scan
    (named by the upload's folders, or by the file), its type the study description (or
    the radiopharmaceutical when that is empty).
    """
    with open(path, "rb") as f:
        block = f.read(ECAT_MAIN_HEADER)
    if len(block) < ECAT_MAIN_HEADER or not block.startswith(b"MATRIX7"):
        return None
    seconds = int.from_bytes(block[ECAT_SCAN_START_TIME : ECAT_SCAN_START_TIME + 4], "big")
    started = datetime.fromtimestamp(seconds, UTC) if seconds else None
    patient_id = _ecat_text(block, ECAT_PATIENT_ID)
    day = started.date().isoformat() if started else ""
    description = _ecat_text(block, ECAT_STUDY_DESCRIPTION) or _ecat_text(
        block, ECAT_RADIOPHARMACEUTICAL
    )
    return Header(
        study_uid="",
        series_uid="",
        series_number="",
        series_description=description,
        modality="PT",
        patient_name=_ecat_text(block, ECAT_PATIENT_NAME),
        patient_id=patient_id,
        study_date=day,
        study_time=started.time().isoformat() if started else "",
        kind="ECAT",
    )


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
            session_fields=_kept(ds, SESSION_FIELDS),
            scan_fields=_kept(ds, SCAN_FIELDS),
        )
    except Exception:
        return None


def _kept(ds: pydicom.Dataset, wanted: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """The non-empty ones of ``wanted``'s header fields, as (field path, text).  A value with
    control characters (a header is the sender's) is left out, by the rule names obey."""
    kept = []
    for path, keyword in wanted:
        text = _text(ds, keyword)
        if text and not has_control_characters(text):
            kept.append((path, text))
    return tuple(kept)
