"""DICOM test data and dcmtk helpers for the DICOM networking tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    generate_uid,
)

MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
COMPRESSED = (JPEGBaseline8Bit, JPEGLosslessSV1, JPEG2000Lossless)
SYNTAXES = (ImplicitVRLittleEndian, ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian,
            *COMPRESSED)  # fmt: skip


def dcmtk_path(tool: str) -> str | None:
    """The path of dcmtk's ``tool`` on PATH, or None.  pynetdicom installs Python apps of
    the same names (storescp, storescu, echoscu, ...) into the virtual environment's
    ``bin``, which an activated environment puts first on PATH: that folder is passed
    over, so that the peer is dcmtk's and not our own DICOM library's."""
    own = (Path(sys.prefix) / "bin").resolve()
    folders = os.environ.get("PATH", os.defpath).split(os.pathsep)
    path = os.pathsep.join(f for f in folders if f and Path(f).resolve() != own)
    return shutil.which(tool, path=path)


def dcmtk(tool: str) -> str:
    """The path of a dcmtk tool; fails (never skips) when dcmtk is missing."""
    found = dcmtk_path(tool)
    if found is None:
        pytest.fail(f"dcmtk's {tool} is not installed: 'make test' installs Debian's dcmtk")
    return found


def instance(
    path: Path,
    *,
    study: str,
    series: str = "",
    sop: str = "",
    series_number: int = 1,
    instance_number: int = 1,
    patient_name: str = "Doe^Jane",
    patient_id: str = "PID001",
    modality: str = "MR",
    series_description: str = "t1_mprage",
    syntax: str = ExplicitVRLittleEndian,
    side: int = 64,
    **fields: Any,
) -> Path:
    """Write one image instance; ``fields`` sets more attributes by keyword (e.g.
    ``PatientComments="Project:P"``)."""
    ds = Dataset()
    ds.SOPClassUID = CT_IMAGE if modality == "CT" else MR_IMAGE
    ds.SOPInstanceUID = sop or generate_uid()
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series or generate_uid(entropy_srcs=[study, str(series_number)])
    ds.SeriesNumber = series_number
    ds.InstanceNumber = instance_number
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.Modality = modality
    ds.SeriesDescription = series_description
    ds.StudyDate = "20240102"
    ds.StudyTime = "101500"
    for key, value in fields.items():
        setattr(ds, key, value)
    ds.Rows = ds.Columns = side
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    pixels = bytes((i * 7 + instance_number) % 251 for i in range(side * side * 2))
    if syntax in COMPRESSED:
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit = 7
        # Stored as received: the receiver never decodes, so any frame bytes will do.
        ds.PixelData = encapsulate([b"\xff\xd8" + pixels[: side * side] + b"\xff\xd9"])
        ds["PixelData"].VR = "OB"
    else:
        ds.PixelData = pixels
        ds["PixelData"].VR = "OW"
    return save(ds, path, syntax)


def save(ds: Dataset, path: Path, syntax: str = ExplicitVRLittleEndian) -> Path:
    """Write ``ds`` as a DICOM Part 10 file in ``syntax`` (its file meta from its UIDs)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = syntax
    ds.file_meta = meta
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def series_files(
    folder: Path, count: int, *, study: str = "", series_number: int = 1, **kw: Any
) -> list[Path]:
    study = study or generate_uid()
    return [
        instance(
            folder / f"s{series_number}_{i:04d}.dcm",
            study=study,
            series_number=series_number,
            instance_number=i + 1,
            **kw,
        )
        for i in range(count)
    ]


def receiver_port(process: subprocess.Popen[str]) -> int:
    """The port on ``serve``'s second stdout line (CONTRACT §6)."""
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    assert line.startswith("minixnat DICOM receiver on "), line
    return int(line.rsplit(":", 1)[1])


def storescu(port: int, *paths: Path, called: str = "MINIXNAT", calling: str = "STORESCU",
             extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:  # fmt: skip
    return subprocess.run(
        [dcmtk("storescu"), "-aec", called, "-aet", calling, *extra, "127.0.0.1", str(port),
         *map(str, paths)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def wait_for(probe: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """Poll ``probe`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def get(url: str, path: str, **params: str) -> Any:
    response = requests.get(
        url + path, params={"format": "json", **params}, auth=("admin", "admin"), timeout=30
    )
    response.raise_for_status()
    return response.json()


def prearchived(url: str, study: str, project: str | None = None) -> list[dict[str, str]]:
    where = "/data/prearchive/projects" + (f"/{project}" if project else "")
    rows: list[dict[str, str]] = get(url, where)["ResultSet"]["Result"]
    return [r for r in rows if r["tag"] == study]


def archived(url: str, study: str) -> list[dict[str, str]]:
    rows = get(url, "/data/experiments", columns="ID,label,project,subject_label,UID")
    return [r for r in rows["ResultSet"]["Result"] if r.get("UID") == study]


def prearchive_files(url: str, row: dict[str, str]) -> int:
    scans = get(url, f"/data{row['url']}/scans")["ResultSet"]["Result"]
    return sum(int(s["files"]) for s in scans)


def put(url: str, path: str) -> None:
    requests.put(url + path, auth=("admin", "admin"), timeout=30).raise_for_status()
