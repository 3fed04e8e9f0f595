"""Image-level evaluation of a detector on a labelled test split (scikit-learn metrics)."""

from __future__ import annotations

import numpy as np
import torch

from algan.data.datasets import Dataset
from algan.model.fit import extract_features


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (sklearn.metrics.roc_auc_score); labels 1 = anomalous, higher score = anomalous.

    Raises:
        ValueError: when only one class is present.
    """
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels)
    if labels.min() == labels.max():
        raise ValueError("AUROC needs both normal and anomalous test images; this test split has only one class")
    return float(roc_auc_score(labels, scores))


def paired_auroc_difference(labels: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray, n_boot: int = 2000,
                            level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """AUROC(a) - AUROC(b) on the same test images, with a paired, stratified bootstrap confidence interval.

    Each bootstrap replicate resamples the normal and the anomalous images separately (with replacement, class sizes
    kept) and scores both heads on the *same* replicate, so the interval reflects only the difference between the
    heads, not the luck of the test set that both share (Efron & Tibshirani 1993, "An Introduction to the
    Bootstrap", percentile interval, ch. 13).

    Args:
        labels: int (N,), 1 = anomalous; both classes present.
        scores_a, scores_b: float (N,) scores of two heads on the same images, higher = more anomalous.
        n_boot: bootstrap replicates (>= 100).
        level: two-sided confidence level in (0, 1).
        seed: seed of the resampling.

    Returns:
        ``(difference, low, high)``: the observed difference and the percentile interval's bounds.

    Raises:
        ValueError: one class only, mismatched lengths, ``n_boot < 100`` or ``level`` outside (0, 1).
    """
    labels, a, b = np.asarray(labels), np.asarray(scores_a), np.asarray(scores_b)
    if not (len(labels) == len(a) == len(b)):
        raise ValueError(f"labels and scores differ in length: {len(labels)}, {len(a)}, {len(b)}")
    if n_boot < 100 or not 0.0 < level < 1.0:
        raise ValueError(f"need n_boot >= 100 and level in (0, 1), got {n_boot}, {level}")
    diff = auroc(labels, a) - auroc(labels, b)
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels != 1)
    reps = np.empty(n_boot)
    for i in range(n_boot):
        idx = np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])
        reps[i] = auroc(labels[idx], a[idx]) - auroc(labels[idx], b[idx])
    low, high = np.quantile(reps, [(1 - level) / 2, (1 + level) / 2])
    return float(diff), float(low), float(high)


def per_class_auroc(labels: np.ndarray, classes, scores: np.ndarray) -> dict[str, float]:
    """Image AUROC of every anomaly class against all normal images (a class's hard cases show here).

    Args:
        labels: int (N,), 1 = anomalous; classes: (N,) class names; scores: float (N,), higher = more anomalous.

    Returns:
        ``{class: AUROC}`` for each class that has an anomalous image, in sorted class order.

    Raises:
        ValueError: no normal image (:func:`auroc`).
    """
    labels, classes, scores = np.asarray(labels), np.asarray(classes), np.asarray(scores)
    normal = labels == 0
    return {str(cls): auroc(labels[normal | (classes == cls)], scores[normal | (classes == cls)])
            for cls in sorted(set(classes[labels == 1].tolist()))}


@torch.no_grad()
def score_dataset(detector, dataset: Dataset, batch_size: int = 32, progress: bool = True) -> np.ndarray:
    """Calibrated scores float32 (N,) of the test split, in ``dataset.test`` order."""
    paths = [s.path for s in dataset.test]
    if getattr(detector, "tiling", None) is not None:  # a tiled bundle: frames tiled, maps stitched
        from algan.model.fit import frame_raw_scores

        raw = frame_raw_scores(detector, paths, batch_size)
        return detector.calibration(torch.from_numpy(raw.astype(np.float32))).numpy()
    if detector.has_maps:  # patch heads: the image score is a reduction of the map
        from algan.model.detector import run_batched
        from algan.runtime.preprocess import load_batch

        out = [run_batched(detector, load_batch(paths[i : i + batch_size], detector.input_size), batch_size)
               for i in range(0, len(paths), batch_size)]
        return np.concatenate(out) if out else np.zeros((0,), np.float32)
    feats = extract_features(detector.preprocess, detector.backbone, paths, detector.input_size, batch_size,
                             "scoring" if progress else None)
    return detector.calibration(detector.head(detector.transform(torch.from_numpy(feats)))).numpy()


def evaluate(detector, dataset: Dataset, batch_size: int = 32, progress: bool = True) -> dict:
    """AUROC over the test split, overall and per anomaly class against all normal test images.

    Returns:
        ``{"auroc", "n_normal", "n_anomalous", "per_class": {cls: auroc}, "scores", "labels", "classes"}``.
    """
    if not dataset.test:
        raise ValueError(f"{dataset.root} has no labelled test images (layout {dataset.layout}); use mvtec or mtd")
    scores = score_dataset(detector, dataset, batch_size, progress)
    labels = np.array([s.label for s in dataset.test])
    classes = [s.cls for s in dataset.test]
    normal = labels == 0
    per_class = per_class_auroc(labels, classes, scores)
    return {
        "auroc": auroc(labels, scores),
        "n_normal": int(normal.sum()),
        "n_anomalous": int((~normal).sum()),
        "per_class": per_class,
        "scores": scores,
        "labels": labels,
        "classes": classes,
    }
