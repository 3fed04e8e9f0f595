"""Parity of exported graphs with the torch detector, and the AUROC change on labelled data.

The one parity rule of the package (graphs against torch here, TensorRT engines against ONNX Runtime in
:mod:`algan.export.engine_build`); torch-free at module level. Tolerances are on the calibrated scale (1.0 = alarm
threshold). FP32: ``max |onnx - torch| <= 1e-4``. FP16:
``max |onnx - torch| / max(1, |torch|) <= 1e-2``: an absolute 1e-2 up to the threshold and a relative 1e-2 above
it, since float16 keeps ~3 significant digits and anomalous frames score 10x the threshold or more (a score of
17.7 off by 0.011 decides the same alarm as the exact one).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

FP32_TOLERANCE = 1e-4
FP16_TOLERANCE = 1e-2
#: INT8 engines against the FP32 graph (ONNX Runtime CPU): 5e-2 on the scaled metric
INT8_TOLERANCE = 5e-2
#: engine precision -> (tolerance, metric) of its parity against the FP32 graph (algan-export and
#: algan-edge build-engine check engines with these)
TOLERANCES = {"fp32": (FP32_TOLERANCE, "abs"), "fp16": (FP16_TOLERANCE, "scaled"), "int8": (INT8_TOLERANCE, "scaled")}
#: images of a ``--data`` test split used for the torch parity check (torch is the slow side on a CPU)
DATA_PARITY_IMAGES = 48


@dataclass(frozen=True)
class ParityResult:
    """One comparison of a graph's scores with the reference (torch) scores.

    Attributes:
        name: what was compared, e.g. ``onnx-fp32``.
        n_images: number of images.
        max_abs_diff: ``max |candidate - reference|``.
        max_scaled_diff: ``max |candidate - reference| / max(1, |reference|)``.
        metric: which of the two is held against ``tolerance`` (``abs`` or ``scaled``).
        tolerance: the bound.
        ok: whether the bound holds.
    """

    name: str
    n_images: int
    max_abs_diff: float
    max_scaled_diff: float
    metric: str
    tolerance: float
    ok: bool

    def to_json(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        """One human-readable line."""
        value = self.max_abs_diff if self.metric == "abs" else self.max_scaled_diff
        what = "max |diff|" if self.metric == "abs" else "max |diff|/max(1,|score|)"
        extra = "" if self.metric == "abs" else f", max |diff| {self.max_abs_diff:.2e}"
        return (f"parity ({self.name}): {what} = {value:.2e} over {self.n_images} images "
                f"(tolerance {self.tolerance:g}{extra}) {'OK' if self.ok else 'FAILED'}")


def compare(name: str, reference: np.ndarray, candidate: np.ndarray, tolerance: float,
            metric: str = "abs") -> ParityResult:
    """Compare float scores (N,) or anomaly maps (N, h, w) of a candidate graph with the reference, element-wise.

    Raises:
        ValueError: empty or mismatched arrays, or an unknown metric.
    """
    reference = np.asarray(reference, np.float64)
    candidate = np.asarray(candidate, np.float64)
    if reference.shape != candidate.shape or reference.ndim < 1 or len(reference) == 0:
        raise ValueError(f"parity needs two arrays of the same shape (N, ...), got {reference.shape} and "
                         f"{candidate.shape}")
    if metric not in ("abs", "scaled"):
        raise ValueError(f"unknown parity metric {metric!r}; use abs or scaled")
    diff = np.abs(candidate - reference)
    if not np.all(np.isfinite(diff)):
        diff = np.where(np.isfinite(diff), diff, np.inf)
    max_abs = float(diff.max())
    max_scaled = float((diff / np.maximum(1.0, np.abs(reference))).max())
    value = max_abs if metric == "abs" else max_scaled
    return ParityResult(name, int(len(reference)), max_abs, max_scaled, metric, float(tolerance),
                        bool(value <= tolerance))


def parity_images(model_dir: str | Path, images_dir: str | Path | None, size: tuple[int, int],
                  max_files: int = 64) -> np.ndarray:
    """Images for the parity check: the bundle's stored samples plus up to ``max_files`` from ``images_dir``.

    Returns:
        uint8 BGR (N, H, W, 3) with (H, W) = ``size``; possibly empty (N = 0).

    Raises:
        ValueError: ``images_dir`` is not a directory or holds no images.
    """
    from algan.bundle import load_samples
    from algan.contract import IMAGE_SUFFIXES
    from algan.runtime.preprocess import load_batch

    parts = []
    samples = load_samples(model_dir)
    if samples is not None and len(samples):
        if samples.shape[1:] != (*size, 3):
            raise ValueError(f"{model_dir} stores samples of shape {samples.shape[1:]}, the model takes "
                             f"{(*size, 3)}; re-train the bundle")
        parts.append(samples)
    if images_dir is not None:
        d = Path(images_dir)
        if not d.is_dir():
            raise ValueError(f"--images {d} is not a directory")
        files = sorted(p for p in d.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:max_files]
        if not files:
            raise ValueError(f"--images {d} holds no image files")
        parts.append(load_batch(files, size))
    return np.concatenate(parts) if parts else np.zeros((0, *size, 3), np.uint8)


def spread_indices(labels: np.ndarray, n: int) -> np.ndarray:
    """Up to ``n`` indices spread evenly over the normal and the anomalous items (deterministic, sorted)."""
    labels = np.asarray(labels)
    if n >= len(labels):
        return np.arange(len(labels))
    picks = []
    for lab in np.unique(labels):
        idx = np.flatnonzero(labels == lab)
        k = max(1, round(n * len(idx) / len(labels)))
        picks.append(idx[np.linspace(0, len(idx) - 1, min(k, len(idx))).round().astype(int)])
    return np.unique(np.concatenate(picks))[:n]
