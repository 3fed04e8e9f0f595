"""Raw scores of image files through a bundle's detector, skipping (and counting) unreadable images."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: default largest share of unreadable images tolerated before calibration is refused
MAX_BAD_FRACTION = 0.05


@dataclass
class ScoredImages:
    """Raw scores of the readable images, in input order.

    Attributes:
        paths: the images that were scored.
        scores: float64 (len(paths),) raw head scores (higher = more anomalous).
        bad: ``(path, reason)`` of images skipped because they could not be read or prepared.
        kept: uint8 BGR frames (H, W, 3) at the model input size for the requested indices (input positions).
    """

    paths: list[Path] = field(default_factory=list)
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    bad: list[tuple[Path, str]] = field(default_factory=list)
    kept: dict[int, np.ndarray] = field(default_factory=dict)


def score_images(detector, paths: Sequence[Path], batch_size: int = 32, keep: Collection[int] = (),
                 what: str = "images", max_bad_fraction: float = MAX_BAD_FRACTION) -> ScoredImages:
    """Read, prepare (:func:`algan.data.preprocess.prepare_frame`) and score image files in batches.

    Args:
        detector: :class:`algan.model.detector.AnomalyDetector` (eval mode).
        paths: image files.
        batch_size: images per forward pass.
        keep: input positions whose prepared frames are returned in ``kept`` (e.g. the INT8 calibration set).
        what: name of the image group for messages.
        max_bad_fraction: largest share of unreadable images tolerated.

    Raises:
        ValueError: when more than ``max_bad_fraction`` of the images cannot be read.
    """
    import torch

    from algan.data.preprocess import current_roi, prepare_frame, prepare_roi, read_image

    keep = set(keep)
    out = ScoredImages()
    scores: list[np.ndarray] = []
    batch: list[np.ndarray] = []
    size = detector.input_size

    tiled = getattr(detector, "tiling", None) is not None

    def flush() -> None:
        if batch:
            if tiled:  # a tiled bundle: each region's tiles, maps stitched (AnomalyDetector.frame_raw_scores)
                scores.append(detector.frame_raw_scores(batch, batch_size))
            else:
                with torch.no_grad():
                    scores.append(detector.raw_scores(torch.from_numpy(np.stack(batch))).double().numpy())
            batch.clear()

    for i, p in enumerate(paths):
        try:
            frame = (prepare_roi(read_image(p), current_roi()) if tiled else
                     prepare_frame(read_image(p), size, current_roi()))
        except (ValueError, OSError) as exc:  # ImageReadError is a ValueError
            out.bad.append((Path(p), str(exc)))
            continue
        out.paths.append(Path(p))
        batch.append(frame)
        if i in keep:  # the graph's input: a tiled bundle's graph sees tiles, the middle one is kept
            out.kept[i] = frame if not tiled else _middle_tile(frame, detector.tiling, size)
        if len(batch) >= batch_size:
            flush()
    flush()
    out.scores = np.concatenate(scores) if scores else np.zeros(0)
    n = len(paths)
    if n and len(out.bad) > max_bad_fraction * n:
        first = out.bad[0]
        msg = (f"{len(out.bad)} of {n} {what} could not be read (more than {max_bad_fraction:.0%}), e.g. "
               f"{first[0]}: {first[1]}; fix or remove the corrupt files")
        raise ValueError(msg)
    return out


def _middle_tile(region: np.ndarray, tiling, size: tuple[int, int]) -> np.ndarray:  # noqa: ANN001
    """The middle tile of a region (uint8 (H, W, 3) at the model input size), :func:`algan.data.tiling.tile_frame`."""
    from algan.data.tiling import tile_frame

    tiles = tile_frame(region, tiling, size)
    return tiles[len(tiles) // 2]
