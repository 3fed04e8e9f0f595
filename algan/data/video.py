"""Write image sequences as MPEG-4 videos, and build a labelled "production line" video from an MVTec-layout folder.

The line video is what the demo and the edge-daemon tests feed to a camera source: runs of normal parts, then a run
of several consecutive parts with the same defect class (long enough for a debounced alarm to fire), then normal
parts again, several times. Its frame-by-frame ground truth is written next to it as JSON.

numpy + OpenCV only (the edge runtime imports nothing heavier).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np

from algan.contract import IMAGE_SUFFIXES

__all__ = ["DEFAULT_PATTERN", "VideoWriteError", "count_frames", "labels_path_for", "make_sequence_video",
           "parse_pattern", "write_video"]

#: Default line pattern: 12 good, 6 defective, 10 good, 6 defective, 10 good, 6 defective, 12 good (62 frames).
DEFAULT_PATTERN = "12g 6d 10g 6d 10g 6d 12g"

_TOKEN = re.compile(r"^(\d+)(?:(g|d)|:([A-Za-z0-9_\-]+))$")


class VideoWriteError(RuntimeError):
    """The video could not be written (no encoder, unwritable path) or did not read back as written."""


def _to_bgr(frame: np.ndarray, where: str) -> np.ndarray:
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8:
        raise ValueError(f"{where}: expected a uint8 numpy image, got {type(frame).__name__} "
                         f"{getattr(frame, 'dtype', '')}")
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    if frame.ndim == 3 and frame.shape[2] == 3:
        return frame
    if frame.ndim == 3 and frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    if frame.ndim == 3 and frame.shape[2] == 1:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    raise ValueError(f"{where}: expected an image of shape (H, W), (H, W, 3) or (H, W, 4), got {frame.shape}")


def _load(item: np.ndarray | str | Path, index: int) -> np.ndarray:
    if isinstance(item, (str, Path)):
        img = cv2.imread(str(item), cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError(f"frame {index}: cannot read image {item}")
        return img
    return _to_bgr(item, f"frame {index}")


def count_frames(path: str | Path) -> int:
    """Number of frames OpenCV decodes from a video file (reads them all; 0 if it cannot be opened)."""
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            return 0
        n = 0
        while cap.grab():
            n += 1
        return n
    finally:
        cap.release()


#: container suffix -> (fourcc, description). ``.mkv`` FFV1 is lossless: the frames decode to exactly the pixels
#: written, which keeps a labelled test video free of compression artefacts that shift anomaly scores.
CODECS = {".mp4": ("mp4v", "MPEG-4 part 2, lossy"), ".mkv": ("FFV1", "FFV1, lossless"), ".avi": ("MJPG", "Motion JPEG")}


def write_video(
    frames_or_paths: Iterable[np.ndarray | str | Path],
    out_path: str | Path,
    fps: float = 10.0,
    size: tuple[int, int] | None = None,
) -> int:
    """Write frames to a video file and verify it reads back.

    The container picks the codec (:data:`CODECS`): ``.mp4`` MPEG-4 (lossy, plays everywhere), ``.mkv`` FFV1
    (lossless) or ``.avi`` Motion JPEG.

    Args:
        frames_or_paths: uint8 images (shape (H, W, 3) BGR, (H, W) grayscale or (H, W, 4) BGRA) and/or image file
            paths, in display order. Consumed once (a generator is fine).
        out_path: output file ending in ``.mp4``, ``.mkv`` or ``.avi``; parent folders are created.
        fps: frames per second, > 0.
        size: frame size ``(width, height)`` in pixels (OpenCV's convention). ``None``: the first frame's size.
            Frames of another size are resized (INTER_AREA). MPEG-4 needs even dimensions, so an odd width or
            height is rounded down to the next even number.

    Returns:
        The number of frames written (equal to the number that reads back).

    Raises:
        ValueError: bad arguments, no frames, or an unreadable frame/path.
        VideoWriteError: the writer cannot be opened (no ``mp4v`` encoder in this OpenCV build, unwritable path)
            or the file does not read back with as many frames as were written.
    """
    out_path = Path(out_path)
    if out_path.suffix.lower() not in CODECS:
        raise ValueError(f"video path must end in {', '.join(CODECS)}, got {out_path}")
    fourcc = CODECS[out_path.suffix.lower()][0]
    if not (isinstance(fps, (int, float)) and fps > 0 and np.isfinite(fps)):
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    if size is not None:
        w, h = (int(v) for v in size)
        if w < 2 or h < 2:
            raise ValueError(f"size must be (width, height) with both >= 2, got {size!r}")
        size = (w, h)
    out_path.parent.mkdir(parents=True, exist_ok=True)

    writer: cv2.VideoWriter | None = None
    n = 0
    try:
        for i, item in enumerate(frames_or_paths):
            frame = _load(item, i)
            if writer is None:
                w, h = size if size is not None else (frame.shape[1], frame.shape[0])
                size = (max(2, w - w % 2), max(2, h - h % 2))
                writer = cv2.VideoWriter(str(out_path), cv2.VideoWriter_fourcc(*fourcc), float(fps), size)
                if not writer.isOpened():
                    raise VideoWriteError(f"cannot open a video writer for {out_path} (fourcc {fourcc}, {size[0]}x"
                                          f"{size[1]} @ {fps} fps): this OpenCV build lacks that encoder "
                                          "or the path is not writable")
            if (frame.shape[1], frame.shape[0]) != size:
                frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
            writer.write(np.ascontiguousarray(frame))
            n += 1
    finally:
        if writer is not None:
            writer.release()
    if n == 0:
        raise ValueError("no frames to write")
    got = count_frames(out_path)
    if got != n:
        raise VideoWriteError(f"{out_path}: wrote {n} frames but {got} read back; the file is incomplete or the "
                              "codec is unavailable for reading")
    return n


def parse_pattern(pattern: str | Sequence[tuple[str, int]]) -> list[tuple[str, int]]:
    """Parse a line pattern into runs ``[(kind, length), ...]``.

    A string is whitespace/comma separated tokens: ``<n>g`` (n good frames), ``<n>d`` (n frames of the next
    defect class in rotation) or ``<n>:<class>`` (n frames of that defect class), e.g. ``"12g 6d 10g 5:crack"``.
    A sequence of ``(kind, n)`` pairs is accepted as is (kind ``"good"``, ``"defect"`` or a class name).

    Returns:
        List of ``(kind, n)`` with kind ``"good"``, ``"defect"`` or a class name, n >= 1.

    Raises:
        ValueError: malformed token, a run shorter than one frame, or an empty pattern.
    """
    runs: list[tuple[str, int]] = []
    if isinstance(pattern, str):
        for tok in re.split(r"[\s,]+", pattern.strip()):
            if not tok:
                continue
            m = _TOKEN.match(tok)
            if not m:
                raise ValueError(f"bad pattern token {tok!r}: use <n>g, <n>d or <n>:<class> (e.g. '12g 6d 4:crack')")
            n = int(m.group(1))
            kind = {"g": "good", "d": "defect"}[m.group(2)] if m.group(2) else m.group(3)
            runs.append((kind, n))
    else:
        runs = [(str(k), int(n)) for k, n in pattern]
    if not runs:
        raise ValueError("empty line pattern")
    for kind, n in runs:
        if n < 1:
            raise ValueError(f"run {kind!r} has length {n}; every run needs at least one frame")
    return runs


def labels_path_for(video_path: str | Path) -> Path:
    """Where :func:`make_sequence_video` writes the labels by default: ``<video stem>.labels.json`` beside it."""
    p = Path(video_path)
    return p.with_name(p.stem + ".labels.json")


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def make_sequence_video(
    dataset_root: str | Path,
    out_path: str | Path,
    *,
    pattern: str | Sequence[tuple[str, int]] = DEFAULT_PATTERN,
    fps: float = 10.0,
    seed: int = 0,
    size: tuple[int, int] | None = None,
    labels_path: str | Path | None = None,
) -> list[dict]:
    """Build a labelled production-line video from the ``test`` split of an MVTec-layout folder.

    Good runs draw from ``test/good``; each defect run draws all its frames from one defect class
    (``test/<class>``), so the defect persists over consecutive frames as a debounced alarm needs. ``<n>d`` runs
    take the classes in rotation (order shuffled by ``seed``). Within a class, images are drawn without
    replacement in a seeded random order (reshuffled when exhausted), so consecutive frames are different parts.

    Args:
        dataset_root: MVTec-layout folder (e.g. from :func:`algan.data.synthetic.generate_dataset`, or an MVTec AD
            category).
        out_path: output ``.mp4`` path.
        pattern: see :func:`parse_pattern`. Default :data:`DEFAULT_PATTERN`.
        fps: frames per second.
        seed: seed for the class rotation and image order.
        size: frame ``(width, height)``; ``None``: the size of the first frame's image. Every frame is an
            image of the data set resized to this size.
        labels_path: where to write the labels JSON; default :func:`labels_path_for` ``(out_path)``.

    Returns:
        One dict per video frame, in order: ``{"frame": int, "label": 0 | 1, "class": "good" | <defect>,
        "source": str, "mask": str | None}``; ``source``/``mask`` are POSIX paths relative to ``dataset_root``
        (``mask`` is the ground-truth mask when the folder has one). The same list is written as JSON.

    Raises:
        FileNotFoundError: missing ``test/good`` or a requested defect class folder, or no images in it.
        ValueError: bad pattern (also: a ``<n>d`` run when the folder has no defect classes).
        VideoWriteError: see :func:`write_video`.
    """
    root = Path(dataset_root)
    test = root / "test"
    if not (test / "good").is_dir():
        raise FileNotFoundError(f"{root} is not an MVTec-layout folder: {test / 'good'} is missing")
    runs = parse_pattern(pattern)
    defect_classes = sorted(p.name for p in test.iterdir() if p.is_dir() and p.name != "good" and _images(p))
    rng = np.random.default_rng(seed)

    pools: dict[str, list[Path]] = {}
    queues: dict[str, list[Path]] = {}

    def draw(cls: str) -> Path:
        if cls not in pools:
            folder = test / cls
            files = _images(folder) if folder.is_dir() else []
            if not files:
                raise FileNotFoundError(f"no images in {folder} (classes present: good, {', '.join(defect_classes)})")
            pools[cls] = files
            queues[cls] = []
        if not queues[cls]:
            queues[cls] = [pools[cls][i] for i in rng.permutation(len(pools[cls]))]
        return queues[cls].pop()

    rotation = [defect_classes[i] for i in rng.permutation(len(defect_classes))]
    next_defect = 0
    labels: list[dict] = []
    for kind, n in runs:
        if kind == "defect":
            if not rotation:
                raise ValueError(f"pattern asks for a defect run but {test} has no defect class folders")
            cls = rotation[next_defect % len(rotation)]
            next_defect += 1
        else:
            cls = kind
        for _ in range(n):
            src = draw(cls)
            rel = src.relative_to(root).as_posix()
            mask = None
            if cls != "good":
                m = root / "ground_truth" / cls / f"{src.stem}_mask.png"
                mask = m.relative_to(root).as_posix() if m.is_file() else None
            labels.append({"frame": len(labels), "label": int(cls != "good"), "class": cls, "source": rel,
                           "mask": mask})

    if size is None:
        first = cv2.imread(str(root / labels[0]["source"]), cv2.IMREAD_COLOR)
        if first is None:
            raise ValueError(f"cannot read image {root / labels[0]['source']}")
        size = (first.shape[1], first.shape[0])
    n = write_video((root / rec["source"] for rec in labels), out_path, fps=fps, size=size)
    if n != len(labels):  # pragma: no cover - write_video verifies this already
        raise VideoWriteError(f"wrote {n} frames for {len(labels)} labels")
    lp = Path(labels_path) if labels_path is not None else labels_path_for(out_path)
    lp.parent.mkdir(parents=True, exist_ok=True)
    lp.write_text(json.dumps(labels, indent=1) + "\n", encoding="utf-8")
    return labels
