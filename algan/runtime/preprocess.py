"""Host-side image preparation shared by training, evaluation, export parity checks and the edge daemon.

This module is the single definition of what happens to a frame *before* it enters the model graph: optional
region-of-interest crop, then resize to the model's input size. Everything after that (BGR->RGB, scaling to
[0, 1], ImageNet/Lite normalisation, NHWC->NCHW) lives inside the model graph (see ``algan.model.detector``), so
the exported ONNX graph and the torch model see identical bytes.

Only numpy and OpenCV are used here: the edge runtime imports this module and must never import torch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import cv2
import numpy as np

#: OpenCV interpolation used everywhere a frame is resized for the model. INTER_AREA is the right choice for
#: down-scaling camera frames (it averages, so it does not alias fine texture such as scratches).
RESIZE_INTERPOLATION = cv2.INTER_AREA


#: the region of interest :func:`load_batch` crops when it is given none (set by :func:`using_roi`)
_ROI: ContextVar[tuple[int, int, int, int] | None] = ContextVar("algan_roi", default=None)


@contextmanager
def using_roi(roi: Sequence[int] | None) -> Iterator[None]:
    """Within the block, :func:`load_batch` (training, evaluation) and calibration scoring crop ``roi`` =
    ``(x, y, width, height)`` from every image before resizing: how ``algan-train --roi`` and
    ``algan-calibrate --roi`` make training and serving see the same crop. ``None`` = whole images."""
    token = _ROI.set(tuple(int(v) for v in roi) if roi is not None else None)  # type: ignore[arg-type]
    try:
        yield
    finally:
        _ROI.reset(token)


def current_roi() -> tuple[int, int, int, int] | None:
    """The ROI set by the enclosing :func:`using_roi`, or ``None``."""
    return _ROI.get()


class ImageReadError(ValueError):
    """Raised when an image file cannot be decoded.

    Attributes:
        incomplete: the file is empty or cut short (a writer may still be writing it).
    """

    def __init__(self, message: str, incomplete: bool = False) -> None:
        super().__init__(message)
        self.incomplete = incomplete


def crop_roi(frame: np.ndarray, roi: Sequence[int] | None) -> np.ndarray:
    """Crop a region of interest.

    Args:
        frame: uint8 BGR image, shape (H, W, 3).
        roi: ``(x, y, width, height)`` in pixels, or ``None`` for the whole frame.

    Returns:
        A view of ``frame``, shape (height, width, 3).

    Raises:
        ValueError: when the ROI lies (partly) outside the frame.
    """
    if roi is None:
        return frame
    x, y, w, h = (int(v) for v in roi)
    fh, fw = frame.shape[:2]
    if x < 0 or y < 0 or w <= 0 or h <= 0 or x + w > fw or y + h > fh:
        msg = f"ROI (x={x}, y={y}, w={w}, h={h}) does not fit in a {fw}x{fh} frame; give a ROI inside the frame"
        raise ValueError(msg)
    return frame[y : y + h, x : x + w]


def prepare_roi(frame: np.ndarray, roi: Sequence[int] | None = None) -> np.ndarray:
    """The region of interest of one frame at full resolution, as uint8 BGR ``(h, w, 3)`` (grayscale and BGRA frames
    converted): the first half of :func:`prepare_frame`, and what :func:`algan.runtime.tiling.tile_frame` cuts.

    Raises:
        ValueError: for a frame that is not uint8 or not 2-D/3-channel, or a ROI that does not fit in it.
    """
    if frame is None or not isinstance(frame, np.ndarray) or frame.dtype != np.uint8:
        msg = f"expected a uint8 numpy image, got {type(frame).__name__} {getattr(frame, 'dtype', '')}"
        raise ValueError(msg)
    if frame.ndim == 2:
        frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    elif frame.ndim != 3 or frame.shape[2] not in (3, 4):
        msg = f"expected an image of shape (H, W, 3), got {frame.shape}"
        raise ValueError(msg)
    elif frame.shape[2] == 4:
        frame = cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    return crop_roi(frame, roi)


def prepare_frame(frame: np.ndarray, size: tuple[int, int], roi: Sequence[int] | None = None) -> np.ndarray:
    """Crop and resize one frame to the model input.

    Args:
        frame: uint8 image, shape (H, W, 3) BGR as OpenCV delivers, or (H, W) grayscale (converted to BGR).
        size: model input ``(height, width)`` in pixels.
        roi: optional ``(x, y, width, height)`` crop applied before resizing.

    Returns:
        uint8 BGR array, shape (height, width, 3), C-contiguous.

    Raises:
        ValueError: for a frame that is not uint8 or not 2-D/3-channel.
    """
    frame = prepare_roi(frame, roi)
    h, w = size
    if frame.shape[0] != h or frame.shape[1] != w:
        frame = cv2.resize(frame, (w, h), interpolation=RESIZE_INTERPOLATION)
    return np.ascontiguousarray(frame)


#: Smallest image (pixels, each side) that is read; smaller ones are refused (a 1x1 thumbnail or a placeholder is not
#: a camera frame, and resized to the model input it scores as a flat grey image).
MIN_IMAGE_SIDE = 16


def decode_image(path: str | Path, data: bytes | None = None) -> np.ndarray:
    """The checked decoder: read and decode one image file, refusing what must not be trained on or scored. Training,
    calibration and the edge daemon's folder source all read images through it.

    Refused: an empty file, a JPEG without its end-of-image marker (``FF D9``, trailing zero padding allowed) or a PNG
    without its ``IEND`` chunk (both: a file cut short, which libjpeg/libpng would otherwise decode partially, grey
    below the cut), a file OpenCV cannot decode, and an image smaller than :data:`MIN_IMAGE_SIDE` pixels on a side.

    Args:
        path: the image file.
        data: its bytes when already read, else read here.

    Returns:
        uint8 BGR ``(H, W, 3)`` (grayscale expanded).

    Raises:
        ImageReadError: one line naming the file and what is wrong with it.
    """
    try:
        raw = Path(path).read_bytes() if data is None else data
    except OSError as e:
        raise ImageReadError(f"cannot read image {path} ({e.strerror or e}); check that it exists and its "
                             "permissions") from None
    if not raw:
        raise ImageReadError(f"image {path} is empty (0 bytes)", incomplete=True)
    if raw[:2] == b"\xff\xd8" and raw.rstrip(b"\x00")[-2:] != b"\xff\xd9":
        raise ImageReadError(f"image {path} is truncated (no JPEG end-of-image marker FFD9, {len(raw)} bytes)",
                             incomplete=True)
    if raw[:8] == b"\x89PNG\r\n\x1a\n" and raw[-8:-4] != b"IEND":
        raise ImageReadError(f"image {path} is truncated (no PNG IEND chunk, {len(raw)} bytes)", incomplete=True)
    try:
        img = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:
        img = None
    if img is None or img.ndim != 3:
        raise ImageReadError(f"cannot read image {path}: not an image format OpenCV decodes ({len(raw)} bytes)")
    h, w = img.shape[:2]
    if h < MIN_IMAGE_SIDE or w < MIN_IMAGE_SIDE:
        raise ImageReadError(f"image {path} is {w}x{h} pixels, smaller than the minimum "
                             f"{MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE}")
    return img


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as uint8 BGR (grayscale files are expanded to 3 channels) through the checked decoder
    :func:`decode_image`.

    Raises:
        ImageReadError: a missing, unreadable, truncated, undecodable or too small file.
    """
    return decode_image(path)


#: default of ``--max-bad-fraction`` (training and calibration): the largest share of unreadable images skipped
MAX_BAD_FRACTION = 0.01


def screen_images(paths: Sequence[str | Path], what: str = "images", max_bad_fraction: float = MAX_BAD_FRACTION,
                  say=None) -> list[Path]:  # noqa: ANN001
    """Decode every file once with :func:`decode_image` and keep the readable ones; each unreadable file is said in
    one line (``say``, default: stderr) naming it and why.

    Args:
        paths: image files.
        what: the group's name in messages (``training images``).
        max_bad_fraction: largest share of unreadable files skipped before giving up, in [0, 1).
        say: callable taking one line (default ``print`` to stderr).

    Returns:
        The readable files, in order.

    Raises:
        ImageReadError: more than ``max_bad_fraction`` of the files are unreadable; the message lists them (the first
            ten, then a count).
    """
    import sys

    if say is None:
        def say(line: str) -> None:
            print(line, file=sys.stderr, flush=True)

    good: list[Path] = []
    bad: list[tuple[Path, str]] = []
    for p in paths:
        try:
            decode_image(p)
        except ImageReadError as e:
            bad.append((Path(p), str(e)))
            say(f"skipped: {e}")
            continue
        good.append(Path(p))
    n = len(paths)
    if bad and len(bad) > max_bad_fraction * n:
        names = ", ".join(str(b[0]) for b in bad[:10]) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
        raise ImageReadError(f"{len(bad)} of {n} {what} cannot be read (more than --max-bad-fraction "
                             f"{max_bad_fraction:g}): {names}; fix or remove them, or raise --max-bad-fraction")
    if bad:
        say(f"skipped {len(bad)} of {n} unreadable {what} (--max-bad-fraction {max_bad_fraction:g})")
    return good


def load_batch(paths: Sequence[str | Path], size: tuple[int, int], roi: Sequence[int] | None = None) -> np.ndarray:
    """Read and prepare images into one batch (crop ``roi``, default :func:`current_roi`, then resize).

    Returns:
        uint8 BGR array, shape (N, height, width, 3).

    Raises:
        ImageReadError: an unreadable file. ValueError: a ROI that does not fit in an image.
    """
    roi = roi if roi is not None else current_roi()
    out = np.empty((len(paths), size[0], size[1], 3), dtype=np.uint8)
    for i, p in enumerate(paths):
        out[i] = prepare_frame(read_image(p), size, roi)
    return out
