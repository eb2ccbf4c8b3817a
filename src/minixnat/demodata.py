"""``minixnat demo-data``: a deterministic synthetic archive of real DICOM.

For one ``seed`` and the same counts, every file has the same bytes (so the same MD5) on every
machine: UIDs come from :func:`pydicom.uid.generate_uid` with fixed entropy sources, pixel
data is a drawn phantom with noise from a seeded PRNG, and nothing reads the clock.  Each
project gets MR, CT and PET sessions over a spread of dates; each session several scans of
different types and series descriptions; scan qualities ``usable``, ``questionable`` and
``unusable``; a session resource, an assessor and a reconstruction; a NIFTI resource with a
file in a sub-folder; and the site admin ``admin`` / ``admin``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian

from minixnat.store import Experiment, Store

SOP_CLASS = {
    "MR": "1.2.840.10008.5.1.4.1.1.4",
    "CT": "1.2.840.10008.5.1.4.1.1.2",
    "PT": "1.2.840.10008.5.1.4.1.1.128",
}
SESSION_TYPE = {"MR": "xnat:mrSessionData", "CT": "xnat:ctSessionData", "PT": "xnat:petSessionData"}
SCAN_TYPE = {"MR": "xnat:mrScanData", "CT": "xnat:ctScanData", "PT": "xnat:petScanData"}
# (scan type, series description) per modality, as a scanner would label them.
PROTOCOLS = {
    "MR": [
        ("T1w", "t1_mprage_sag_p2_iso"),
        ("T2w", "t2_spc_sag_p2_iso"),
        ("rest fMRI", "ep2d_bold_rest"),
        ("DWI", "ep2d_diff_mddw_64"),
        ("Localizer", "AAHead_Scout_32ch"),
    ],
    "CT": [
        ("CT HEAD", "Head 5.0 H31s"),
        ("CT BONE", "Head 2.0 H70h"),
        ("SCOUT", "Topogram 0.6 T20s"),
    ],
    "PT": [
        ("PET AC", "PET Brain AC 3D"),
        ("PET NAC", "PET Brain NAC 3D"),
        ("CT AC", "CTAC 3.75 Thick"),
    ],
}
QUALITIES = ("usable", "questionable", "unusable")


@dataclass(frozen=True)
class DemoSpec:
    """How much to generate.  Counts are per parent (sessions per subject, and so on)."""

    projects: int = 2
    subjects: int = 3
    sessions: int = 2
    scans: int = 3
    files: int = 4
    file_kb: int = 64
    seed: int = 0


def _uid(*parts: object) -> UID:
    """A valid UID (the 2.25 UUID-derived form) that depends only on ``parts``.

    pydicom's ``generate_uid(prefix=None)`` ignores its entropy sources and returns a random
    UUID, so the hash is taken here.
    """
    digest = hashlib.sha256("\0".join(str(p) for p in parts).encode()).digest()
    return UID(f"2.25.{int.from_bytes(digest[:16], 'big')}")


def make_dicom(
    *,
    seed: int,
    modality: str,
    patient: str,
    session_label: str,
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    study_date: str,
    series_number: int,
    instance: int,
    series_description: str,
    file_kb: int,
) -> bytes:
    """One DICOM Part 10 file whose bytes depend only on the arguments."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(SOP_CLASS[modality])
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = UID("1.2.826.0.1.3680043.8.498.1")
    meta.ImplementationVersionName = "MINIXNAT_010"
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SOP_CLASS[modality]
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = _uid("for", study_uid)
    ds.PatientName = patient
    ds.PatientID = patient
    ds.AccessionNumber = session_label[:16]
    ds.StudyID = session_label[:16]
    ds.StudyDate = study_date.replace("-", "")
    ds.SeriesDate = ds.StudyDate
    ds.StudyTime = "093000"
    ds.StudyDescription = "minixnat demo"
    ds.Modality = modality
    ds.Manufacturer = "minixnat"
    ds.SeriesNumber = series_number
    ds.InstanceNumber = instance
    ds.SeriesDescription = series_description
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    columns = 256
    rows = max(1, (file_kb * 1024) // (2 * columns))
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = phantom(rows, columns, modality, instance, random.Random(f"{seed}:{sop_uid}"))
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


# Intensities of the phantom's parts per modality: background, scalp and skull, brain,
# ventricles.  MR shows soft tissue, CT bone, PET a bright cortex.
PHANTOM_LEVELS = {
    "MR": (0, 300, 900, 1800),
    "CT": (0, 2400, 1040, 1010),
    "PT": (0, 200, 1500, 300),
}


def phantom(rows: int, columns: int, modality: str, instance: int, rng: random.Random) -> bytes:
    """16-bit little-endian pixels of a head-like phantom (an oval skull around a brain with
    two ventricles that grow with the slice number) plus a little seeded noise: a picture a
    person recognises in a snapshot, and bytes that depend only on the arguments."""
    background, skull, brain, ventricle = PHANTOM_LEVELS.get(modality, PHANTOM_LEVELS["MR"])
    y, x = np.mgrid[0:rows, 0:columns].astype(np.float64)
    u = (x - columns / 2) / (columns * 0.42)
    v = (y - rows / 2) / (rows * 0.46)
    radius = u * u + v * v
    image = np.full((rows, columns), float(background))
    image[radius <= 1.0] = skull
    image[radius <= 0.8] = brain
    size = 0.04 + 0.02 * (instance % 5)
    for side in (-0.18, 0.18):
        image[((u - side) / 0.5) ** 2 + (v / 1.6) ** 2 <= size] = ventricle
    noise = np.frombuffer(rng.randbytes(rows * columns), dtype=np.uint8).reshape(rows, columns)
    pixels = image + noise.astype(np.float64) * (0.1 * max(brain, 1) / 255)
    return np.clip(pixels, 0, 65535).astype("<u2").tobytes()


def _nifti_like(seed: int, name: str, size: int) -> bytes:
    """Deterministic gzip bytes standing in for a NIfTI volume (mtime fixed at 0)."""
    rng = random.Random(f"{seed}:{name}")
    raw = b"n+1\0" + rng.randbytes(size)
    return gzip.compress(raw, mtime=0)


def generate(root: Path, spec: DemoSpec) -> Store:
    """Create (or refill) the archive at ``root``; return the open store."""
    store = Store(root)
    store.add_user("admin", "admin", admin=True, firstname="Admin", lastname="Admin")
    rng = random.Random(spec.seed)
    base = date(2019, 1, 7)
    # One transaction per project: its rows and files appear together, with one journal.
    for p in range(1, spec.projects + 1):
        with store.transaction():
            pid = f"DEMO{p:02d}"
            store.add_project(
                pid,
                name=f"Demo project {p}",
                secondary_id=f"DEMO_{p:02d}",
                description="Synthetic archive made by minixnat demo-data",
                pi_firstname="Ada",
                pi_lastname="Lovelace",
                owner="admin",
            )
            docs = store.add_resource(
                "project", pid, "DOCS", f"{pid}/resources/DOCS", format_="TXT", content="DOCS"
            )
            store.write_file(
                docs,
                "README.txt",
                iter([f"Project {pid}: synthetic data, seed {spec.seed}.\n".encode()]),
                format_="TXT",
            )
            quality_index = 0
            for s in range(1, spec.subjects + 1):
                label = f"{pid}_S{s:03d}"
                subject = store.add_subject(
                    pid,
                    label,
                    gender="male" if s % 2 else "female",
                    yob=str(1950 + rng.randrange(50)),
                    handedness="right" if s % 5 else "left",
                )
                for k in range(1, spec.sessions + 1):
                    modality = ("MR", "MR", "CT", "PT")[(s + k - 2) % 4]
                    suffix = {"MR": "MR", "CT": "CT", "PT": "PET"}[modality]
                    session_label = f"{label}_{suffix}{k}"
                    when = base + timedelta(days=rng.randrange(0, 5 * 365))
                    study_uid = _uid(spec.seed, pid, session_label, "study")
                    session = store.add_experiment(
                        pid,
                        subject.id,
                        session_label,
                        SESSION_TYPE[modality],
                        date=when.isoformat(),
                        time_="09:30:00",
                        modality=modality,
                        uid=study_uid,
                    )
                    session_dir = f"{pid}/arc001/{session_label}"
                    protocols = PROTOCOLS[modality]
                    for j in range(spec.scans):
                        scan_type, description = protocols[j % len(protocols)]
                        scan_id = str(j + 1)
                        series_uid = _uid(spec.seed, study_uid, scan_id)
                        quality = QUALITIES[quality_index % 3]
                        quality_index += 1
                        scan = store.add_scan(
                            session.id,
                            scan_id,
                            SCAN_TYPE[modality],
                            type_=scan_type,
                            series_description=description,
                            quality=quality,
                            frames=str(spec.files),
                            uid=series_uid,
                            modality=modality,
                            note="" if quality == "usable" else f"marked {quality} by QC",
                        )
                        dicom = store.add_resource(
                            "scan",
                            str(scan.pk),
                            "DICOM",
                            f"{session_dir}/SCANS/{scan_id}/DICOM",
                            format_="DICOM",
                            content="RAW",
                        )
                        for i in range(1, spec.files + 1):
                            sop_uid = _uid(spec.seed, series_uid, i)
                            # CT and PET files carry bare UID names (no extension) as many PACS
                            # exports do: a client must never rewrite them into collisions.
                            name = f"{sop_uid}.dcm" if modality == "MR" else sop_uid
                            data = make_dicom(
                                seed=spec.seed,
                                modality=modality,
                                patient=label,
                                session_label=session_label,
                                study_uid=study_uid,
                                series_uid=series_uid,
                                sop_uid=sop_uid,
                                study_date=when.isoformat(),
                                series_number=j + 1,
                                instance=i,
                                series_description=description,
                                file_kb=spec.file_kb,
                            )
                            store.write_file(
                                dicom, name, iter([data]), format_="DICOM", content="RAW"
                            )
                        if j == 0 and modality == "MR":
                            nifti = store.add_resource(
                                "scan",
                                str(scan.pk),
                                "NIFTI",
                                f"{session_dir}/SCANS/{scan_id}/NIFTI",
                                format_="NIFTI",
                                content="NIFTI_RAW",
                            )
                            store.write_file(
                                nifti,
                                f"{scan_type}.nii.gz",
                                iter([_nifti_like(spec.seed, session_label, 4096)]),
                                format_="NIFTI",
                            )
                            sidecar = {"SeriesDescription": description, "RepetitionTime": 2.3}
                            store.write_file(
                                nifti,
                                f"sidecar/{scan_type}.json",
                                iter([json.dumps(sidecar, sort_keys=True).encode()]),
                                format_="JSON",
                            )
                    _session_extras(store, spec, session, session_dir, k)
    return store


def _session_extras(
    store: Store, spec: DemoSpec, session: Experiment, session_dir: str, k: int
) -> None:
    """A session resource on every session; an assessor and a recon on each first session."""
    qc = store.add_resource(
        "experiment", session.id, "QC", f"{session_dir}/RESOURCES/QC", format_="TXT", content="QC"
    )
    store.write_file(
        qc,
        "report.txt",
        iter([f"QC report for {session.label}: all scans reviewed.\n".encode()]),
        format_="TXT",
    )
    if k != 1:
        return
    assessor = store.add_experiment(
        session.project,
        session.subject_id,
        f"{session.label}_QC",
        "xnat:qcManualAssessorData",
        date=session.date,
        session_id=session.id,
    )
    out = store.add_resource(
        "assessor",
        assessor.id,
        "QC_DATA",
        f"{session_dir}/ASSESSORS/{assessor.label}/QC_DATA",
        format_="JSON",
        content="QC",
    )
    store.write_file(
        out,
        "qc.json",
        iter([json.dumps({"session": session.label, "pass": True}, sort_keys=True).encode()]),
        format_="JSON",
    )
    recon = store.add_recon(
        session.id, f"{session.label}_recon1", type_="brain_mask", base_scan_type="T1w"
    )
    recon_res = store.add_resource(
        "recon",
        str(recon.pk),
        "NIFTI",
        f"{session_dir}/PROCESSED/{recon.recon_id}/NIFTI",
        format_="NIFTI",
        content="MASK",
    )
    store.write_file(
        recon_res,
        "mask.nii.gz",
        iter([_nifti_like(spec.seed, recon.recon_id, 2048)]),
        format_="NIFTI",
    )
