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


@torch.no_grad()
def score_dataset(detector, dataset: Dataset, batch_size: int = 32, progress: bool = True) -> np.ndarray:
    """Calibrated scores float32 (N,) of the test split, in ``dataset.test`` order."""
    paths = [s.path for s in dataset.test]
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
    per_class = {}
    normal = labels == 0
    for cls in sorted({c for c, lab in zip(classes, labels, strict=True) if lab == 1}):
        sel = normal | np.array([c == cls for c in classes])
        per_class[cls] = auroc(labels[sel], scores[sel])
    return {
        "auroc": auroc(labels, scores),
        "n_normal": int(normal.sum()),
        "n_anomalous": int((~normal).sum()),
        "per_class": per_class,
        "scores": scores,
        "labels": labels,
        "classes": classes,
    }
