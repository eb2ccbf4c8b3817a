"""Pictures of one slice: pixel values to an 8-bit image, and the image to XNAT's two GIFs.

Pure functions over arrays and datasets; reading files and storing results is
``generate.py``'s job.  Decoding is pydicom's (its pixel handlers, with Pillow for JPEG and
JPEG 2000) and nibabel's; nothing here parses an image format by hand.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels.processing import apply_modality_lut
from pydicom.pixels.utils import pixel_array

Gray = NDArray[np.uint8]
# The share of the darkest and brightest pixels clipped when no window is given.
PERCENTILES = (1.0, 99.0)
THUMBNAIL_SCALE = 0.5
# The largest slice drawn (a 8192 x 8192 image): headers are the uploader's word, and a
# compressed frame that claims 60,000 x 60,000 pixels would decode into gigabytes.
MAX_PIXELS = 8192 * 8192


class NoPixels(Exception):
    """The object holds no image (a structured report, a presentation state, …)."""


class TooLarge(ValueError):
    """The slice is larger than snapshots are made of (:data:`MAX_PIXELS`)."""


def check_size(rows: int, columns: int) -> None:
    if rows * columns > MAX_PIXELS:
        msg = f"a slice of {columns} x {rows} pixels is larger than snapshots are made of"
        raise TooLarge(msg)


def has_pixels(ds: Dataset) -> bool:
    """Whether a dataset read with ``stop_before_pixels`` describes an image."""
    return "Rows" in ds and "Columns" in ds and int(ds.Rows or 0) > 0


def frame_count(ds: Dataset) -> int:
    try:
        return max(1, int(ds.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        return 1


def dicom_slice(ds: Dataset, frame: int = 0) -> Gray | NDArray[np.uint8]:
    """Frame ``frame`` of ``ds`` as 8-bit pixels: grey (rows, cols) or RGB (rows, cols, 3).

    Grey values pass the modality LUT (rescale slope and intercept), then the window the
    object names (its first Window Center/Width), or, without one, the 1st to 99th percentile
    range; MONOCHROME1 is inverted so that bright means dense, as viewers show it.
    """
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise NoPixels("no pixel data")
    check_size(int(ds.get("Rows") or 0), int(ds.get("Columns") or 0))
    arr = pixel_array(ds, index=frame if frame_count(ds) > 1 else None)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if samples == 3 or arr.ndim == 3:
        return _to_uint8(arr.astype(np.float64), None)
    values = np.asarray(apply_modality_lut(arr, ds), dtype=np.float64)
    gray = _to_uint8(values, _window(ds))
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        gray = 255 - gray
    return gray


def nifti_slice(image: Any) -> Gray:
    """The middle axial slice of a NIfTI image (its first volume if 4-D), percentile
    windowed, turned so that the first voxel axis runs left to right on screen."""
    shape = image.shape
    if len(shape) < 2:
        raise NoPixels(f"a NIfTI image of shape {shape} has no slices")
    check_size(int(shape[0]), int(shape[1]))
    index: tuple[Any, ...] = (slice(None), slice(None))
    if len(shape) >= 3:
        index += (shape[2] // 2,)
    index += (0,) * max(0, len(shape) - 3)
    plane = np.asarray(image.dataobj[index], dtype=np.float64)
    return _to_uint8(np.rot90(plane), None)


def gifs(pixels: NDArray[np.uint8]) -> tuple[bytes, bytes]:
    """The full-size snapshot and its thumbnail (half the size each way), as GIF bytes."""
    full = Image.fromarray(pixels, "RGB" if pixels.ndim == 3 else "L")
    width, height = full.size
    thumb = full.resize(
        (max(1, round(width * THUMBNAIL_SCALE)), max(1, round(height * THUMBNAIL_SCALE))),
        Image.Resampling.LANCZOS,
    )
    return _gif(full), _gif(thumb)


def _gif(image: Image.Image) -> bytes:
    out = io.BytesIO()
    if image.mode == "RGB":
        image = image.quantize(256)
    image.save(out, format="GIF")
    return out.getvalue()


def _window(ds: Dataset) -> tuple[float, float] | None:
    """(low, high) from the first Window Center and Width, when both are usable."""
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center is None or width is None:
        return None
    try:
        c = float(center[0] if _multiple(center) else center)
        w = float(width[0] if _multiple(width) else width)
    except (TypeError, ValueError, IndexError):
        return None
    if w <= 0:
        return None
    return c - w / 2, c + w / 2


def _multiple(value: Any) -> bool:
    return isinstance(value, list | tuple) or type(value).__name__ == "MultiValue"


def _to_uint8(values: NDArray[np.float64], window: tuple[float, float] | None) -> Gray:
    """Map ``window`` (default: the percentile range of the finite values) onto 0 to 255."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.zeros(values.shape, dtype=np.uint8)
    low, high = window if window else tuple(np.percentile(finite, PERCENTILES))
    if high <= low:  # a flat image: mid grey where it has signal, black where it has none
        return np.where(values > low, 128, 0).astype(np.uint8)
    scaled = (np.nan_to_num(values, nan=low) - low) * (255.0 / (high - low))
    clipped: Gray = np.clip(scaled, 0, 255).astype(np.uint8)
    return clipped
