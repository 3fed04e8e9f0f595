"""Raw scores of image files through a bundle's detector, skipping (and counting) unreadable images."""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: default largest share of unreadable images tolerated before calibration is refused (the same as training's)
from algan.runtime.preprocess import MAX_BAD_FRACTION

log = logging.getLogger(__name__)


@dataclass
class ScoredImages:
    """Raw scores of the readable images, in input order.

    Attributes:
        paths: the images that were scored.
        scores: float64 (len(paths),) raw head scores (higher = more anomalous).
        bad: ``(path, reason)`` of images skipped because they could not be read or prepared.
        kept: uint8 BGR frames (H, W, 3) at the model input size for the requested indices (input positions).
        maps: float32 (len(paths), h, w) raw anomaly maps of the scored images (``with_maps`` and a detector with
            maps), else ``None``.
    """

    paths: list[Path] = field(default_factory=list)
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    bad: list[tuple[Path, str]] = field(default_factory=list)
    kept: dict[int, np.ndarray] = field(default_factory=dict)
    maps: np.ndarray | None = None


def score_images(detector, paths: Sequence[Path], batch_size: int = 32, keep: Collection[int] = (),
                 what: str = "images", max_bad_fraction: float = MAX_BAD_FRACTION,
                 with_maps: bool = False) -> ScoredImages:
    """Read, prepare (:func:`algan.runtime.preprocess.prepare_frame`) and score image files in batches.

    Args:
        detector: :class:`algan.model.detector.AnomalyDetector` (eval mode).
        paths: image files.
        batch_size: images per forward pass.
        keep: input positions whose prepared frames are returned in ``kept`` (e.g. the INT8 calibration set).
        what: name of the image group for messages.
        max_bad_fraction: largest share of unreadable images tolerated.
        with_maps: also return the raw anomaly maps (``out.maps``) when the detector has them (patch heads); the
            image scores are then the detector's reduction of those maps (the same values as ``raw_scores``).
            Untiled: float32 ``(N, h, w)``; tiled: every cell of the stitched frame maps (their sizes follow the
            frames'), flattened to float32 ``(C,)``.

    Raises:
        ValueError: when more than ``max_bad_fraction`` of the images cannot be read.
    """
    import torch

    from algan.runtime.preprocess import current_roi, prepare_frame, prepare_roi, read_image

    keep = set(keep)
    out = ScoredImages()
    scores: list[np.ndarray] = []
    maps: list[np.ndarray] = []
    batch: list[np.ndarray] = []
    size = detector.input_size
    tiled = getattr(detector, "tiling", None) is not None
    with_maps = with_maps and detector.has_maps

    def flush() -> None:
        if batch:
            if tiled and with_maps:  # each region's tiles, maps stitched (AnomalyDetector.frame_outputs)
                done = detector.frame_outputs(batch, batch_size)
                scores.append(done.scores.astype(np.float64))
                maps.append(np.concatenate([m.ravel() for m in done.maps]).astype(np.float32))
            elif tiled:  # image-only head: the max over each region's tiles (AnomalyDetector.frame_raw_scores)
                scores.append(detector.frame_raw_scores(batch, batch_size))
            else:
                with torch.no_grad():
                    x = torch.from_numpy(np.stack(batch))
                    if with_maps:
                        s, m = detector.raw_scores_and_maps(x)
                        maps.append(m.float().numpy())
                        scores.append(s.double().numpy())
                    else:
                        scores.append(detector.raw_scores(x).double().numpy())
            batch.clear()

    for i, p in enumerate(paths):
        try:
            frame = (prepare_roi(read_image(p), current_roi()) if tiled else
                     prepare_frame(read_image(p), size, current_roi()))
        except (ValueError, OSError) as exc:  # ImageReadError is a ValueError
            out.bad.append((Path(p), str(exc)))
            log.warning("skipped: %s", exc)
            continue
        out.paths.append(Path(p))
        batch.append(frame)
        if i in keep:  # the graph's input: a tiled bundle's graph sees tiles, the middle one is kept
            out.kept[i] = frame if not tiled else _middle_tile(frame, detector.tiling, size)
        if len(batch) >= batch_size:
            flush()
    flush()
    out.scores = np.concatenate(scores) if scores else np.zeros(0)
    if with_maps:
        empty = np.zeros((0,) if tiled else (0, *detector.map_size), np.float32)
        out.maps = np.concatenate(maps) if maps else empty
    n = len(paths)
    if n and len(out.bad) > max_bad_fraction * n:
        names = ", ".join(str(b[0]) for b in out.bad[:10]) + (f" and {len(out.bad) - 10} more"
                                                               if len(out.bad) > 10 else "")
        msg = (f"{len(out.bad)} of {n} {what} cannot be read (more than --max-bad-fraction {max_bad_fraction:g}): "
               f"{names}; fix or remove them, or raise --max-bad-fraction")
        raise ValueError(msg)
    return out


def _middle_tile(region: np.ndarray, tiling, size: tuple[int, int]) -> np.ndarray:  # noqa: ANN001
    """The middle tile of a region (uint8 (H, W, 3) at the model input size),
    :func:`algan.runtime.tiling.tile_frame`."""
    from algan.runtime.tiling import tile_frame

    tiles = tile_frame(region, tiling, size)
    return tiles[len(tiles) // 2]
