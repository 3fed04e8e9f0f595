"""algan-calibrate's work without the CLI: pick the data, score it, fit thresholds, write the bundle.

Data protocol (never the images the model was trained on):

* ``folder`` layout: every image in ``--data`` is a normal frame recorded on the line and goes into calibration
  (``calib_fraction`` 1.0 by default; with a smaller fraction the rest is held out for validation). Labelled
  anomalies come only from ``--anomalies DIR``. Pointing ``--data`` at the training folder is refused.
* ``mvtec`` / ``mtd`` layouts: only the *test* split is used. Its normal images are split by a seeded permutation
  (``seed``, ``calib_fraction`` default 0.5) into a calibration half, which sets the threshold, and a validation
  half, on which the achieved false-alarm rate is measured; the test anomalies (plus ``--anomalies``) give recall,
  ROC, F1 and Youden thresholds, evaluated against the validation normals. The training images are never read.
* ``--check`` scores all images of a ``folder``, or the validation half of an mvtec/mtd test split.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from algan.calibration.drift import DriftCheck, DriftReport, clopper_pearson, reference_scores
from algan.calibration.int8 import int8_set_bytes, select_indices
from algan.calibration.scoring import MAX_BAD_FRACTION, score_images
from algan.calibration.store import commit, load_reference, reference_bytes
from algan.contract import (
    CALIBRATION_SCORES_FILE,
    DEFAULT_PIXEL_FPR,
    INT8_SET_FILE,
    Manifest,
    order_statistic_rank,
    pixel_threshold,
    utc_now_iso,
)
from algan.data.datasets import DatasetError, load_dataset, load_folder
from algan.model.evaluation.threshold import (
    MIN_SCORES,
    F1Threshold,
    TargetFprThreshold,
    YoudenThreshold,
    check_scores,
    expected_alarms_interval,
    images_needed,
    recall_above,
)

log = logging.getLogger(__name__)

SECONDS_PER_HOUR = 3600.0
METHOD_NAMES = {"quantile": "empirical quantile", "gpd": "generalised Pareto tail fit"}


@dataclass
class CalibrationSplit:
    """Which images play which part (see the module docstring)."""

    root: Path
    layout: str
    calib: list[Path]
    valid: list[Path] = field(default_factory=list)
    anomalies: list[Path] = field(default_factory=list)
    seed: int = 0
    calib_fraction: float = 1.0

    @property
    def source(self) -> str:
        if self.layout == "folder":
            return f"normal frames in {self.root}"
        return (f"{self.calib_fraction:.0%} of the {self.layout} test normals of {self.root} "
                f"(seeded split, seed {self.seed})")

    def to_json(self) -> dict:
        return {"root": str(self.root), "layout": self.layout, "seed": self.seed,
                "calib_fraction": self.calib_fraction, "n_calib": len(self.calib), "n_valid": len(self.valid),
                "n_anomalous": len(self.anomalies)}


def _guard_training_images(root: Path, manifest: Manifest) -> None:
    train = manifest.training.data if manifest.training is not None else None
    if train is None or not train.root:
        return
    troot = Path(train.root).resolve()
    forbidden = {troot / "train" / "good", troot / "MT_Free" / "Imgs"}
    if train.layout == "folder":
        forbidden.add(troot)
    if root.resolve() in forbidden:
        msg = (f"{root} holds the images the model was trained on (training data {troot}, {train.layout}); "
               "calibrate on held-out normal frames: a folder recorded on the line, or the test split of an "
               "mvtec/mtd data set")
        raise ValueError(msg)


def select_data(data: str | Path, layout: str, manifest: Manifest, calib_fraction: float | None = None, seed: int = 0,
                anomalies: str | Path | None = None, for_check: bool = False) -> CalibrationSplit:
    """Resolve ``--data`` (and ``--anomalies``) into calibration / validation / anomalous image lists.

    Raises:
        ValueError (DatasetError): missing directory, unknown layout, no usable images, training images.
    """
    root = Path(data)
    if layout not in ("auto", "mvtec", "mtd", "folder"):
        raise DatasetError(f"unknown layout {layout!r}; use one of auto, mvtec, mtd, folder")
    _guard_training_images(root, manifest)
    ds = load_dataset(root, layout)
    if (line := ds.skipped_line()) is not None:
        log.warning("%s", line)
    if ds.layout == "folder":
        frac = 1.0 if calib_fraction is None else calib_fraction
        normals = list(ds.train)
        extra_anom: list[Path] = []
    else:
        frac = 0.5 if calib_fraction is None else calib_fraction
        normals = [s.path for s in ds.test if s.label == 0]
        extra_anom = [s.path for s in ds.test if s.label == 1]
        if not normals:
            raise DatasetError(f"{root} ({ds.layout}) has no normal test images to calibrate on")
    if not 0.0 < frac <= 1.0:
        raise ValueError(f"--calib-fraction must lie in (0, 1], got {frac}")
    perm = np.random.default_rng(seed).permutation(len(normals))
    n_cal = len(normals) if frac >= 1.0 else int(round(frac * len(normals)))
    calib = [normals[i] for i in sorted(perm[:n_cal].tolist())]
    valid = [normals[i] for i in sorted(perm[n_cal:].tolist())]
    if anomalies is not None:
        adir = Path(anomalies)
        if not adir.is_dir():
            raise DatasetError(f"--anomalies {adir} is not a directory")
        extra_anom += load_folder(adir).train
    split = CalibrationSplit(root, ds.layout, calib, valid, extra_anom, seed, frac)
    if for_check and ds.layout != "folder":
        if not valid:
            raise ValueError("--check on an mvtec/mtd split uses its validation half; --calib-fraction leaves none")
        split = CalibrationSplit(root, ds.layout, valid, [], [], seed, frac)
    return split


@dataclass
class ThresholdRow:
    """One threshold of the printed table / report (rates per frame, measured on ``eval_set``)."""

    name: str
    raw: float
    calibrated: float
    n_alarms: int
    n_normal: int
    fpr: float
    fpr_low: float
    fpr_high: float
    recall: float | None = None
    f1: float | None = None

    def alarms_per_hour(self, fps: float) -> float:
        return self.fpr * fps * SECONDS_PER_HOUR


@dataclass
class CalibrationResult:
    """Everything computed by :func:`calibrate`, before anything is written."""

    split: CalibrationSplit
    estimator: TargetFprThreshold
    target_fpr: float
    fps: float
    calib_scores: np.ndarray
    valid_scores: np.ndarray
    anomaly_scores: np.ndarray
    rows: list[ThresholdRow]
    eval_set: str
    n_bad: int
    int8_images: np.ndarray
    info: dict
    warnings: list[str] = field(default_factory=list)

    @property
    def center(self) -> float:
        return self.estimator.center_

    @property
    def threshold(self) -> float:
        return self.estimator.threshold_

    def calibrated(self, raw: np.ndarray) -> np.ndarray:
        """``(raw - center) / (threshold - center)``: 0 = median normal, 1.0 = alarm threshold."""
        return (np.asarray(raw, dtype=np.float64) - self.center) / (self.threshold - self.center)


def _row(name: str, thr: float, normals: np.ndarray, anomalies: np.ndarray, center: float, threshold: float,
         f1: float | None = None) -> ThresholdRow:
    k = int((normals >= thr).sum())
    n = len(normals)
    low, high = clopper_pearson(k, n)
    recall = recall_above(anomalies, thr)
    return ThresholdRow(name, float(thr), (thr - center) / (threshold - center), k, n, k / n, low, high, recall, f1)


def calibrate(detector, manifest: Manifest, split: CalibrationSplit, target_fpr: float = 0.001, method: str = "auto",
              fps: float = 10.0, int8_size: int = 256, batch_size: int = 32,
              max_bad_fraction: float = MAX_BAD_FRACTION, pixel_fpr: float = DEFAULT_PIXEL_FPR) -> CalibrationResult:
    """Score the split and fit the thresholds (writes nothing).

    For a detector with anomaly maps the pixel threshold is fitted too: :func:`algan.contract.pixel_threshold` at
    ``pixel_fpr`` over the calibration normals' raw map cells (``info["pixel_threshold"]``, ``pixel_target_fpr``,
    ``n_pixels``), and its achieved per-pixel rate is measured on the validation normals'
    (``info["pixel_validation"]``).

    Raises:
        ValueError: too few images, constant scores, too many unreadable images, bad settings.
    """
    if not 0.0 < target_fpr < 0.5:
        raise ValueError(f"--target-fpr must lie in (0, 0.5) (per-frame false-alarm rate), got {target_fpr}")
    if not fps > 0:
        raise ValueError(f"--fps must be > 0 (frames per second per camera), got {fps}")
    if not 0.0 < pixel_fpr < 1.0:
        raise ValueError(f"--pixel-fpr must lie in (0, 1) (per-pixel false-positive rate), got {pixel_fpr}")
    keep = select_indices(len(split.calib), int8_size, split.seed) if split.calib else []
    cal = score_images(detector, split.calib, batch_size, keep, "calibration images", max_bad_fraction,
                       with_maps=True)
    val = score_images(detector, split.valid, batch_size, (), "validation images", max_bad_fraction,
                       with_maps=True)
    anom = score_images(detector, split.anomalies, batch_size, (), "anomalous images", max_bad_fraction)
    if len(cal.scores) < MIN_SCORES:
        msg = (f"only {len(cal.scores)} readable calibration normals in {split.root} (of {len(split.calib)}); need "
               f">= {MIN_SCORES} at all and >= {images_needed(target_fpr)} for a stable threshold at per-frame FPR "
               f"{target_fpr:g}; record more normal frames")
        raise ValueError(msg)
    calib_scores = check_scores(cal.scores, "normal calibration scores")
    est = TargetFprThreshold(target_fpr, method).fit(calib_scores)
    center, threshold = est.center_, est.threshold_
    if not threshold > center:
        raise ValueError(f"the threshold ({threshold:.6g}) does not exceed the median normal score; the scores are "
                         "too coarse (many ties), record more varied normal frames")
    warnings = [w for w in [est.warning_] if w]
    eval_normals, eval_set = (val.scores, "validation normals (held out)") if len(val.scores) else (
        calib_scores, "calibration normals (in-sample)")
    a = anom.scores
    rows = [_row(f"target FPR {target_fpr:g}", threshold, eval_normals, a, center, threshold)]
    if len(a):
        y = np.r_[np.zeros(len(eval_normals)), np.ones(len(a))]
        s = np.r_[eval_normals, a]
        f1 = F1Threshold().fit(s, y)
        yj = YoudenThreshold().fit(s, y)
        rows.append(_row("F1-max", f1.threshold_, eval_normals, a, center, threshold, f1.f1_))
        rows.append(_row("Youden J", yj.threshold_, eval_normals, a, center, threshold))
    else:
        warnings.append("no labelled anomalies: F1/Youden thresholds and recall not reported (pass --anomalies DIR "
                        "or an mvtec/mtd data set)")
    n_bad = len(cal.bad) + len(val.bad) + len(anom.bad)
    if n_bad:
        warnings.append(f"skipped {n_bad} unreadable images, e.g. {(cal.bad + val.bad + anom.bad)[0][0]}")
    int8 = np.stack([cal.kept[i] for i in sorted(cal.kept)]) if cal.kept else np.zeros((0, 1, 1, 3), np.uint8)
    r0 = rows[0]
    rank = est.estimator_.rank_ if est.method_ == "quantile" else None
    exp_lo, exp_hi = expected_alarms_interval(len(calib_scores), rank, r0.n_normal, target_fpr)
    validation = {"eval_set": eval_set, "n_normal": r0.n_normal, "n_alarms": r0.n_alarms, "fpr": r0.fpr,
                  "fpr_ci95": [r0.fpr_low, r0.fpr_high], "expected_alarms_95": [exp_lo, exp_hi],
                  "as_expected": bool(exp_lo <= r0.n_alarms <= exp_hi), "recall": r0.recall}
    info = {
        "target_fpr": target_fpr,
        "method": METHOD_NAMES[est.method_],
        "n_images": len(calib_scores),
        "source": split.source,
        "data": split.to_json(),
        "fps": fps,
        "false_alarms_per_camera_hour": target_fpr * fps * SECONDS_PER_HOUR,
        "date": utc_now_iso(),
        "tool": "algan-calibrate",
        "validation": validation,
        "scores_file": CALIBRATION_SCORES_FILE,
        "int8_file": INT8_SET_FILE,
        "unreadable_images": n_bad,
    }
    if cal.maps is not None and cal.maps.size:
        rule = pixel_threshold(cal.maps, pixel_fpr)
        info.update({"pixel_threshold": rule.threshold, "pixel_target_fpr": pixel_fpr, "n_pixels": int(cal.maps.size)})
        if val.maps is not None and val.maps.size:
            info["pixel_validation"] = {"n_pixels": int(val.maps.size),
                                        "fpr": float((val.maps >= rule.threshold).mean())}
    if est.method_ == "gpd":
        g = est.estimator_
        info["gpd"] = {"shape": g.shape_, "scale": g.scale_, "tail_threshold": g.tail_threshold_,
                       "n_exceedances": g.n_exceedances_}
    return CalibrationResult(split, est, target_fpr, fps, calib_scores, val.scores, a, rows, eval_set, n_bad, int8,
                             info, warnings)


def write_calibration(model_dir: str | Path, manifest: Manifest, result: CalibrationResult,
                      report: tuple[Path, bytes] | None = None) -> Manifest:
    """Store the calibration (weights + manifest), the drift reference, the INT8 set and the report, all or none.

    ``manifest.roi`` is recorded in the bundle with the calibration: set it to the crop the scores were computed on
    (:func:`algan.runtime.preprocess.using_roi`; ``algan-calibrate --roi``).

    Returns:
        the updated manifest.
    """
    model_dir = Path(model_dir)
    ref = reference_scores(result.calib_scores)
    files = {model_dir / CALIBRATION_SCORES_FILE: reference_bytes(ref, result.center, result.threshold,
                                                                  len(result.calib_scores), manifest.model_id)}
    if len(result.int8_images):
        meta = {"n": len(result.int8_images), "seed": result.split.seed, "source": result.split.source,
                "model_id": manifest.model_id, "created": utc_now_iso()}
        files[model_dir / INT8_SET_FILE] = int8_set_bytes(result.int8_images, meta)
    if report is not None:
        files[Path(report[0])] = report[1]
    return commit(model_dir, result.center, result.threshold, result.info, files, manifest.roi)


def check(detector, model_dir: str | Path, manifest: Manifest, split: CalibrationSplit, alpha: float = 0.01,
          batch_size: int = 32, max_bad_fraction: float = MAX_BAD_FRACTION) -> tuple[DriftReport, int]:
    """Drift check of recent normal frames against the stored calibration (writes nothing).

    Returns:
        ``(report, n_unreadable)``.
    """
    reference = load_reference(model_dir, manifest)
    cal = manifest.calibration
    if cal.target_fpr is None:
        raise manifest.field_error("calibration.target_fpr")
    recent = score_images(detector, split.calib, batch_size, (), "recent images", max_bad_fraction)
    target = float(cal.target_fpr)
    n_cal = int(cal.n_images or 0)
    empirical = cal.method == METHOD_NAMES["quantile"] and n_cal >= MIN_SCORES
    rank = order_statistic_rank(n_cal, target) if empirical else None
    rep = DriftCheck(alpha).fit(reference).check(recent.scores, cal.threshold, target,
                                                 n_cal if rank else None, rank)
    return rep, len(recent.bad)
