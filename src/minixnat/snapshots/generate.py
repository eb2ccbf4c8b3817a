"""One snapshot run: a session's scans, each to a SNAPSHOTS resource of two GIFs.

As XNAT names them: resource ``SNAPSHOTS`` (format GIF, content SNAPSHOTS) on each scan,
holding ``{session id}_{scan id}_qc.gif`` (content ORIGINAL: the representative slice at
its own size) and ``{session id}_{scan id}_qc_t.gif`` (content THUMBNAIL: half size).  The
representative slice is the middle one of the scan's DICOM images in spatial order (the
middle frame of a multi-frame object), or, for a scan without DICOM, the middle slice of
its NIfTI image.

A run decodes every scan first, then stores all of its pictures and marks its workflow
record Complete in one transaction: a crash at any point leaves either the whole set or
the record still pending, and running again replaces files of the same names, so there is
only ever one set.  Scans with no image (no pixel data, no files) are passed over quietly;
a scan whose images cannot be decoded fails the run, with the reason in its record, while
the other scans still get their pictures.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from minixnat.snapshots import render
from minixnat.store import Experiment, Scan, Store
from minixnat.store.workflows import COMPLETE, FAILED, IN_PROGRESS, SNAPSHOTS_RESOURCE, Workflow

log = logging.getLogger("minixnat.snapshots")

_HEADER_TAGS = [
    "InstanceNumber",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "NumberOfFrames",
    "Rows",
    "Columns",
]


Renderer = Callable[[list[Path], list[Path]], "tuple[bytes, bytes] | None"]


class SnapshotError(Exception):
    """A scan's images exist but cannot be turned into a picture; the message says why."""


@dataclass(frozen=True)
class Pictures:
    scan: Scan
    full: bytes
    thumbnail: bytes


def file_names(session_id: str, scan_id: str) -> tuple[str, str]:
    """XNAT's names for a scan's snapshot and thumbnail."""
    return f"{session_id}_{scan_id}_qc.gif", f"{session_id}_{scan_id}_qc_t.gif"


def run(store: Store, workflow: Workflow, render_scan: Renderer | None = None) -> str:
    """Make ``workflow``'s session's snapshots; return the status it ended with.

    ``render_scan`` turns a scan's files into its pictures (default :func:`pictures_of`,
    in this process; the worker runs it in a process of its own)."""
    render_scan = render_scan or pictures_of
    store.set_workflow_status(workflow.wrk_id, IN_PROGRESS, step="Generating snapshots")
    experiment = store.get_experiment(workflow.experiment_id)
    if experiment is None:  # deleted meanwhile; its records went with it
        return FAILED
    made: list[Pictures] = []
    problems: list[tuple[Scan, str]] = []
    for scan in store.list_scans(experiment.id):
        try:
            found = render_scan(*image_files(store, scan))
        except SnapshotError as exc:
            problems.append((scan, f"scan {scan.scan_id}: {exc}"))
            continue
        if found is not None:
            made.append(Pictures(scan, *found))
    with store.transaction():
        # Decoding took a while: the session, or some of its scans, may have been deleted
        # meanwhile.  Checked inside the transaction, so no picture lands in a scan (or a
        # folder) that is gone, and a scan that is gone reports nothing; a deleted session
        # took its workflow records with it.
        if store.get_experiment(experiment.id) is None:
            return FAILED
        stored = [p for p in made if store.get_scan_by_pk(p.scan.pk) is not None]
        for pictures in stored:
            _store_pictures(store, experiment, pictures)
        reasons = [why for scan, why in problems if store.get_scan_by_pk(scan.pk) is not None]
        status = FAILED if reasons else COMPLETE
        shown = f"{len(stored)} scan{'' if len(stored) == 1 else 's'} with snapshots"
        store.set_workflow_status(
            workflow.wrk_id, status, step=shown, details="; ".join(reasons) or shown
        )
    if reasons:
        log.warning("snapshots of %s: %s", experiment.id, "; ".join(reasons))
    return status


def image_files(store: Store, scan: Scan) -> tuple[list[Path], list[Path]]:
    """The files of the scan's DICOM resources, and its NIfTI files."""
    dicom: list[Path] = []
    nifti: list[Path] = []
    for resource in store.list_resources("scan", str(scan.pk)):
        kinds = {resource.label.upper(), resource.format.upper()}
        for row in store.list_files(resource.pk):
            path = store.file_path(resource, row.path)
            if "DICOM" in kinds:
                dicom.append(path)
            elif "NIFTI" in kinds and row.path.endswith((".nii", ".nii.gz")):
                nifti.append(path)
    return dicom, sorted(nifti)


def pictures_of(dicom: list[Path], nifti: list[Path]) -> tuple[bytes, bytes] | None:
    """A scan's snapshot and thumbnail (GIF bytes) from its DICOM files, or from its NIfTI
    files when none of those is an image; None when it holds no image.  Reads only the
    files named, so it can run in another process."""
    pixels = _dicom_middle(dicom) if dicom else None
    if pixels is None and nifti:
        pixels = _nifti_middle(nifti)
    if pixels is None:
        return None
    return render.gifs(pixels)


def _dicom_middle(paths: list[Path]) -> np.ndarray[Any, Any] | None:
    """The middle slice of the images among ``paths``, or None if none is an image."""
    images: list[tuple[tuple[float, float, str], Path, int]] = []
    for path in paths:
        try:
            head = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
        except (InvalidDicomError, OSError, EOFError):
            continue  # not DICOM (a text file in the resource): not an image
        except Exception:  # a header pydicom cannot parse: not an image we can draw
            log.info("snapshots: %s has an unreadable header", path.name)
            continue
        if render.has_pixels(head):
            images.append((_slice_key(head, path), path, render.frame_count(head)))
    if not images:
        return None
    images.sort(key=lambda item: item[0])
    _, path, frames = images[len(images) // 2]
    try:
        ds = pydicom.dcmread(path)
        return render.dicom_slice(ds, frames // 2)
    except render.NoPixels:
        return None
    except Exception as exc:  # any decoder's failure: the scan's pictures cannot be made
        msg = f"cannot decode {path.name}: {exc}"
        raise SnapshotError(msg) from exc


def _slice_key(head: Any, path: Path) -> tuple[float, float, str]:
    """Sort key for a slice: its position along the slice normal where the header gives
    position and orientation, then the instance number, then the file name."""
    position = 0.0
    try:
        ipp = [float(v) for v in head.ImagePositionPatient]
        iop = [float(v) for v in head.ImageOrientationPatient]
        normal = np.cross(iop[:3], iop[3:])
        position = float(np.dot(normal, ipp))
    except (AttributeError, TypeError, ValueError, IndexError):
        pass
    try:
        instance = float(head.get("InstanceNumber") or 0)
    except (TypeError, ValueError):
        instance = 0.0
    return position, instance, path.name


def _nifti_middle(paths: list[Path]) -> np.ndarray[Any, Any] | None:
    import nibabel  # only scans without DICOM need it

    problems = []
    for path in paths:
        try:
            return render.nifti_slice(nibabel.load(path))
        except render.NoPixels:
            continue
        except Exception as exc:  # nibabel raises many kinds for a file it cannot read
            problems.append(f"cannot read {path.name}: {exc}")
    if problems:
        raise SnapshotError("; ".join(problems))
    return None


def _store_pictures(store: Store, experiment: Experiment, pictures: Pictures) -> None:
    """Write one scan's pictures into its SNAPSHOTS resource (inside the run's transaction)."""
    scan = pictures.scan
    resource = store.get_resource_by_label("scan", str(scan.pk), SNAPSHOTS_RESOURCE)
    if resource is None:
        siblings = store.list_resources("scan", str(scan.pk))
        base = (
            PurePosixPath(siblings[0].directory).parent
            if siblings
            else PurePosixPath(
                experiment.project, "arc001", experiment.label, "SCANS", scan.scan_id
            )
        )
        resource = store.add_resource(
            "scan",
            str(scan.pk),
            SNAPSHOTS_RESOURCE,
            str(base / SNAPSHOTS_RESOURCE),
            format_="GIF",
            content=SNAPSHOTS_RESOURCE,
            description=f"Snapshots for session {experiment.id} scan {scan.scan_id}",
        )
    full, thumbnail = file_names(experiment.id, scan.scan_id)
    store.write_file(resource, full, iter([pictures.full]), format_="GIF", content="ORIGINAL")
    store.write_file(
        resource, thumbnail, iter([pictures.thumbnail]), format_="GIF", content="THUMBNAIL"
    )
