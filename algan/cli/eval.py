"""``algan-eval``: image-level AUROC and ``recall_at_fpr`` of a model bundle on a labelled test split, and pixel
AUROC / AUPRO / mask F1 and the localisation figures (border-peak fraction, peak hit rate, region IoU;
:mod:`algan.calibration.localisation`) when the model outputs anomaly maps and the data set has ground-truth masks
(:mod:`algan.model.evaluation.pixel_eval`).

``mask_f1`` is the pooled pixel F1 of the defect masks the model predicts at its calibrated thresholds (map at or
above the bundle's pixel threshold, on images at or above the image threshold;
:class:`algan.model.evaluation.pixel_metrics.MaskF1`); a bundle without a pixel threshold uses the fallback level 1.0
and says
so in ``pixel_threshold_source``.

``fpr_at_threshold`` and ``recall_at_threshold`` are the shares of normal and of defective test images at or above the
bundle's own calibrated threshold: whether the threshold keeps the false-alarm rate it was calibrated for
(``threshold_target_fpr``) on these normals, and what it catches there (``recall_at_fpr`` sets its own threshold on
the test normals instead)."""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from algan.cli._common import add_version, run_cli, setup_logging


def _recall(scores: np.ndarray, labels: np.ndarray, target_fpr: float) -> float | None:
    """``recall_at_fpr``: the share of defective test images flagged at the threshold algan-calibrate would set for
    ``target_fpr`` on the normal test images (:func:`algan.model.evaluation.threshold.recall_at_fpr`); ``None`` with
    fewer than 20 normal test images."""
    from algan.model.evaluation.threshold import MIN_SCORES, recall_at_fpr

    if int((labels == 0).sum()) < MIN_SCORES:
        return None
    return recall_at_fpr(scores[labels == 0], scores[labels == 1], target_fpr)


def _at_threshold(scores: np.ndarray, labels: np.ndarray) -> tuple[float | None, float | None]:
    """``(fpr_at_threshold, recall_at_threshold)``: the shares of normal and of defective test images at or above
    the bundle's own threshold (calibrated score 1.0), what the line gets from the threshold it runs with;
    ``None`` where the split has no image of that label."""
    flagged = np.asarray(scores, dtype=np.float64) >= 1.0
    normal, defect = flagged[labels == 0], flagged[labels == 1]
    return (float(normal.mean()) if normal.size else None, float(defect.mean()) if defect.size else None)


def _image_results(dataset, scores: np.ndarray) -> dict:
    """Image AUROC overall and per anomaly class (against all normal test images), from scores in test order;
    the same figures as :func:`algan.model.evaluation.image_eval.evaluate`, from the pixel pass's scores (no second
    pass)."""
    from algan.model.evaluation.image_eval import auroc

    labels = np.array([s.label for s in dataset.test])
    classes = np.array([s.cls for s in dataset.test])
    normal = labels == 0
    per_class = {c: auroc(labels[normal | (classes == c)], scores[normal | (classes == c)])
                 for c in sorted(set(classes[~normal].tolist()))}
    return {"auroc": auroc(labels, scores), "n_normal": int(normal.sum()), "n_anomalous": int((~normal).sum()),
            "per_class": per_class}


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 6)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1%}"


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def _localisation(dataset, pix: dict) -> dict:
    """The localisation figures (:func:`algan.calibration.localisation.localisation_metrics`) of the calibrated maps
    of the pixel pass: flagged = scored at or above the bundle's threshold (1.0), the region box at level 1.0.
    All None (``n_flagged_defects`` too: ``recall_at_threshold`` counts the flagged defects of any model) when there
    are no pixel metrics (no maps or no masks)."""
    from algan.calibration.localisation import localisation_metrics

    if pix.get("maps") is None:
        return {"border_peak_fraction": None, "peak_hit_rate": None, "peak_hit_rate_flagged": None,
                "region_iou": None, "n_flagged_defects": None}
    labels = np.array([s.label for s in dataset.test])
    return localisation_metrics(pix["maps"], labels, pix["masks"], pix["scores"] >= 1.0, pix["frame_sizes"])


def _main(args: argparse.Namespace) -> int:
    from algan.bundle import load_bundle
    from algan.data.datasets import load_dataset
    from algan.model.evaluation.image_eval import evaluate
    from algan.model.evaluation.pixel_eval import evaluate_maps, pixel_metrics_unavailable

    if not 0.0 < args.fpr_limit <= 1.0:
        raise ValueError(f"--fpr-limit must lie in (0, 1], got {args.fpr_limit}")
    if not 0.0 < args.target_fpr < 0.5:
        raise ValueError(f"--target-fpr must lie in (0, 0.5), got {args.target_fpr}")
    det, manifest = load_bundle(args.model_dir)
    ds = load_dataset(args.data, args.layout)
    if not ds.test:
        raise ValueError(f"{ds.root} has no labelled test images (layout {ds.layout}); use mvtec or mtd")
    progress = not (args.json or args.quiet)
    note = pixel_metrics_unavailable(det, ds.test)
    if note is None:
        pix = evaluate_maps(det, ds, fpr_limit=args.fpr_limit, progress="scoring" if progress else None,
                            pixel_level=manifest.calibration.pixel_level)
        res = _image_results(ds, pix["scores"])
    else:
        pix = {"pixel_auroc": None, "aupro": None, "mask_f1": None, "n_regions": 0, "pixel_note": note}
        res = evaluate(det, ds, progress=progress)
        pix["scores"] = res["scores"]
    labels = np.array([s.label for s in ds.test])
    recall = _recall(np.asarray(pix["scores"], dtype=np.float64), labels, args.target_fpr)
    fpr_own, recall_own = _at_threshold(np.asarray(pix["scores"]), labels)
    cal = manifest.calibration
    level_source = ("bundle" if cal.pixel_threshold is not None else
                    "fallback: the bundle has no pixel threshold, level 1.0 (the image threshold's); re-calibrate it")
    loc = _localisation(ds, pix)
    if args.json:
        print(json.dumps({
            "model_id": manifest.model_id,
            "head": manifest.head_kind,
            "auroc": round(res["auroc"], 6),
            "recall_at_fpr": _r(recall),
            "target_fpr": args.target_fpr,
            "threshold_target_fpr": cal.target_fpr,
            "fpr_at_threshold": _r(fpr_own),
            "recall_at_threshold": _r(recall_own),
            "n_normal": res["n_normal"],
            "n_anomalous": res["n_anomalous"],
            "per_class": {k: round(v, 6) for k, v in res["per_class"].items()},
            "pixel_auroc": _r(pix["pixel_auroc"]),
            "aupro": _r(pix["aupro"]),
            "aupro_fpr_limit": args.fpr_limit,
            "mask_f1": _r(pix["mask_f1"]),
            "pixel_threshold": round(cal.pixel_level, 6) if note is None else None,
            "pixel_threshold_source": level_source if note is None else None,
            "n_regions": pix["n_regions"],
            "pixel_note": pix["pixel_note"],
            **{k: _r(v) if isinstance(v, float) else v for k, v in loc.items()},
        }))
    else:
        print(f"model {manifest.model_id} ({manifest.head_kind}) on {ds.root}: image AUROC "
              f"{res['auroc']:.4f} ({res['n_normal']} normal, {res['n_anomalous']} anomalous test images)")
        if recall is not None:
            print(f"recall at {args.target_fpr:g} FPR: {recall:.4f} (defects flagged at the threshold algan-calibrate "
                  f"would set on the {res['n_normal']} normal test images)")
        else:
            print(f"recall at {args.target_fpr:g} FPR: not available (fewer than 20 normal test images)")
        promised = f" (calibrated for {cal.target_fpr:g} FPR)" if cal.target_fpr is not None else ""
        print(f"at the bundle's own threshold{promised}: {_pct(fpr_own)} false alarms on the {res['n_normal']} normal "
              f"test images, {_pct(recall_own)} of the {res['n_anomalous']} defective ones flagged")
        for cls, v in res["per_class"].items():
            print(f"  {cls:<12} AUROC {v:.4f}")
        if pix["pixel_auroc"] is not None:
            print(f"pixel AUROC {pix['pixel_auroc']:.4f}, AUPRO (FPR <= {args.fpr_limit:g}) {pix['aupro']:.4f} "
                  f"over {pix['n_regions']} ground-truth defect regions")
            f1 = pix["mask_f1"]
            print(f"mask F1 {f1:.4f}" if f1 is not None else "mask F1 undefined (no defect pixel, none predicted)",
                  f"at the calibrated thresholds (pixel threshold {cal.pixel_level:.4g} on the map, {level_source})")
            hit = loc["peak_hit_rate_flagged"]
            print(f"localisation: map peak within 8 px of the edge on {_pct(loc['border_peak_fraction'])} of the "
                  f"normal images; peak on the defect for {_pct(loc['peak_hit_rate'])} of the defect images "
                  f"({_pct(hit)} of the {loc['n_flagged_defects']} flagged); median region-box IoU with the "
                  f"defect {_f(loc['region_iou'])} (flagged)")
        else:
            print(f"pixel AUROC / AUPRO: not available ({pix['pixel_note']})")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="algan-eval", description="Score the test split and print image-level AUROC, "
                                "and pixel AUROC / AUPRO for models with anomaly maps on data with masks.")
    p.add_argument("model_dir", help="model bundle directory")
    p.add_argument("--data", required=True, help="data directory with a labelled test split (mvtec or mtd layout)")
    p.add_argument("--layout", default="auto", choices=["auto", "mvtec", "mtd", "folder"])
    p.add_argument("--fpr-limit", type=float, default=0.3, metavar="F",
                   help="AUPRO's false-positive-rate integration limit (default: 0.3, the MVTec AD protocol)")
    p.add_argument("--target-fpr", type=float, default=0.01,
                   help="false-alarm rate of recall_at_fpr: the share of defective images flagged at the threshold "
                        "algan-calibrate would set for this rate on the normal test images (default 0.01)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.add_argument("--log-level", default="WARNING")
    args = add_version(p).parse_args(argv)
    setup_logging(args.log_level)
    return run_cli("algan-eval", lambda: _main(args))


if __name__ == "__main__":
    sys.exit(main())
