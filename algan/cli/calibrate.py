"""``algan-calibrate``: set a bundle's alarm threshold at a target false-alarm rate, or check it for drift.

Calibrate::

    algan-calibrate MODEL_DIR --data DIR [--layout auto|mvtec|mtd|folder] [--target-fpr 0.001] [--fps 10]
                    [--method auto|quantile|gpd] [--anomalies DIR] [--calib-fraction F] [--seed 0]
                    [--int8-size 256] [--report PATH] [--dry-run] [--json]

Check for drift::

    algan-calibrate MODEL_DIR --check --data RECENT_NORMALS [--alpha 0.01] [--fps 10] [--json]

Data protocol: see :mod:`algan.calibration.pipeline` (a folder of normal line frames, or the seeded halves of an
mvtec/mtd test split; never the training images). Exit codes: 0 = calibrated / no drift, 3 = drift detected,
2 = bad input (one line ``algan-calibrate: error: ...``; nothing written), 1 = internal/backbone error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from algan.cli._common import add_quiet, add_version, run_cli, setup_logging
from algan.contract import DEFAULT_PIXEL_FPR
from algan.runtime.preprocess import using_roi

if TYPE_CHECKING:
    from algan.contract import Manifest

PROG = "algan-calibrate"
EXIT_DRIFT = 3


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, description="Set the alarm threshold of a model bundle at a target per-frame false-alarm rate "
        "from held-out normal images (and write the INT8 calibration set and a report), or with --check test "
        "recent normal frames for drift (exit 3 = drift).")
    p.add_argument("model_dir", help="model bundle directory")
    p.add_argument("--data", required=True, help="held-out normal images: a folder of frames recorded on the line, "
                   "or an mvtec/mtd data set (its test split is split into calibration/validation halves)")
    p.add_argument("--layout", default="auto", help="data layout: auto, mvtec, mtd or folder (default auto)")
    p.add_argument("--check", action="store_true", help="drift check of --data against the stored calibration")
    p.add_argument("--target-fpr", type=float, default=0.001, help="per-frame false-alarm rate (default 0.001)")
    p.add_argument("--pixel-fpr", type=float, default=DEFAULT_PIXEL_FPR,
                   help="models with anomaly maps: per-pixel false-positive rate of the pixel threshold that draws "
                   f"the defect mask (default {DEFAULT_PIXEL_FPR:g})")
    p.add_argument("--method", default="auto", choices=["auto", "quantile", "gpd"],
                   help="threshold estimator: empirical quantile, generalised Pareto tail, or auto (GPD when the "
                   "rate is below 1/n)")
    p.add_argument("--fps", type=float, default=10.0, help="frames per second per camera, for alarms per "
                   "camera-hour (default 10)")
    p.add_argument("--anomalies", default=None, help="folder of labelled anomalous images (F1/Youden, recall, ROC)")
    p.add_argument("--calib-fraction", type=float, default=None, help="share of the normals that sets the "
                   "threshold, the rest validates it (default 0.5 for mvtec/mtd, 1.0 for a folder)")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration/validation split and INT8 sample")
    p.add_argument("--int8-size", type=int, default=256, help="frames in the INT8 calibration set (default 256)")
    p.add_argument("--report", default=None, help="report PNG path (default MODEL_DIR/calibration_report.png)")
    p.add_argument("--alpha", type=float, default=0.01, help="significance level of the KS drift test (--check)")
    p.add_argument("--max-bad-fraction", type=float, default=0.01,
                   help="largest share of unreadable images (truncated, undecodable) skipped, each named in one line, "
                        "before the run fails with their list (default 0.01, as algan-train)")
    p.add_argument("--roi", default=None, metavar="x,y,w,h",
                   help="crop in image pixels before resizing (default: the ROI the bundle was trained with); a "
                   "different one is recorded in the bundle, with a warning")
    p.add_argument("--batch-size", type=int, default=32, help="frames per model run (default 32)")
    p.add_argument("--dry-run", action="store_true", help="compute and print, write nothing")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the text summary")
    p.add_argument("--log-level", default="WARNING")
    add_quiet(p, "print only the first line of the summary (what was calibrated), warnings and errors")
    return add_version(p)


def _warn(msg: str) -> None:
    print(f"{PROG}: warning: {msg}", file=sys.stderr)


def _per_hour(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def _exports_note(model_dir: Path, manifest: Manifest) -> str:
    present = sorted({*(f.name for f in model_dir.glob("model*.onnx")), *(f.name for f in model_dir.glob("*.engine"))})
    what = f"the existing exports ({', '.join(present)})" if present else "exports made later"
    return (f"no re-export needed: {what} carry the calibration they were exported with in the ONNX "
            "metadata_props algan.calibration_center / algan.calibration_scale, and the edge runner re-maps their "
            "scores to this calibration from algan.json when it loads the bundle (restart algan-edge)")


def _roi(args: argparse.Namespace, manifest: Manifest) -> tuple[int, int, int, int] | None:
    """``--roi``, else the bundle's; warns when ``--roi`` differs from the ROI the bundle was trained with."""
    from algan.runtime.maps import parse_roi

    bundle = parse_roi(manifest.roi) if manifest.roi is not None else None
    if args.roi is None:
        return bundle
    roi = None if args.roi.strip().lower() == "full" else parse_roi(args.roi)
    if roi != bundle:
        _warn(f"--roi {list(roi) if roi else 'full'} differs from the ROI the model was trained with "
              f"({list(bundle) if bundle else 'full frame'}); the bundle records the new one")
    return roi


def _calibrate(args: argparse.Namespace) -> int:
    from algan.bundle import load_bundle
    from algan.calibration.pipeline import calibrate, select_data, write_calibration
    from algan.calibration.report import format_table, render_png

    model_dir = Path(args.model_dir)
    # every flag is checked before the bundle and its backbone are loaded (seconds)
    if args.int8_size < 1:
        raise ValueError(f"--int8-size must be >= 1, got {args.int8_size}")
    if not 0 < args.target_fpr < 1:
        raise ValueError(f"--target-fpr is a per-frame false-alarm rate in (0, 1), e.g. 0.001; got {args.target_fpr}")
    if not 0 <= args.max_bad_fraction < 1:
        raise ValueError(f"--max-bad-fraction must lie in [0, 1), got {args.max_bad_fraction}")
    if args.fps <= 0:
        raise ValueError(f"--fps must be > 0, got {args.fps}")
    det, manifest = load_bundle(model_dir)
    roi = _roi(args, manifest)
    split = select_data(args.data, args.layout, manifest, args.calib_fraction, args.seed, args.anomalies)
    with using_roi(roi):
        res = calibrate(det, manifest, split, args.target_fpr, args.method, args.fps, args.int8_size,
                        args.batch_size, args.max_bad_fraction, args.pixel_fpr)
    manifest.roi = list(roi) if roi is not None else None
    report_path = Path(args.report) if args.report else model_dir / "calibration_report.png"
    png = render_png(res, title=f"{manifest.model_id or model_dir.name}: calibration at per-frame FPR "
                     f"{args.target_fpr:g} on {split.source}")
    if not args.dry_run:
        write_calibration(model_dir, manifest, res, (report_path, png))
    for w in res.warnings:  # after the write, so that a failure shows one error line only
        _warn(w)
    if args.json:
        print(json.dumps({"model_dir": str(model_dir), "written": not args.dry_run, "center": res.center,
                          "threshold": res.threshold, **res.info, "report": str(report_path),
                          "int8_images": len(res.int8_images), "warnings": res.warnings,
                          "thresholds": [vars(r) for r in res.rows]}))
        return 0
    r0 = res.rows[0]
    est = res.estimator
    how = (f"order statistic {est.estimator_.rank_} of {est.n_samples_seen_}" if est.method_ == "quantile" else
           f"GPD shape {est.estimator_.shape_:.3f}, scale {est.estimator_.scale_:.4g} over the top "
           f"{est.estimator_.n_exceedances_} scores")
    print(f"{'would calibrate (dry run)' if args.dry_run else 'calibrated'} {model_dir} "
          f"(model {manifest.model_id}, head {manifest.head_kind})")
    if args.quiet:
        return 0
    print(f"  data: {split.source}: {len(res.calib_scores)} calibration normals, {len(res.valid_scores)} validation "
          f"normals, {len(res.anomaly_scores)} anomalies; {res.n_bad} unreadable skipped")
    print(f"  threshold: raw {res.threshold:.6g} (median normal {res.center:.6g}) = calibrated 1.0, by "
          f"{res.info['method']} ({how})")
    if "pixel_threshold" in res.info:
        pv = res.info.get("pixel_validation")
        level = (res.info["pixel_threshold"] - res.center) / (res.threshold - res.center)
        print(f"  pixel threshold (defect mask): raw {res.info['pixel_threshold']:.6g} = map level {level:.3g} at "
              f"per-pixel FPR {args.pixel_fpr:g} over {res.info['n_pixels']} map cells"
              + (f"; achieved {pv['fpr']:.4f} on {pv['n_pixels']} validation cells" if pv else ""))
    per_h = _per_hour(res.info["false_alarms_per_camera_hour"])
    print(f"  target: {args.target_fpr:g} false alarms per frame = {per_h} per camera-hour at {args.fps:g} fps "
          "(frames >= threshold, before the daemon's debounce)")
    v = res.info["validation"]
    lo, hi = v["expected_alarms_95"]
    inside = r0.fpr_low <= args.target_fpr <= r0.fpr_high
    print(f"  achieved on {res.eval_set}: {r0.n_alarms}/{r0.n_normal} = {r0.fpr:.4f} false alarms per frame "
          f"(Clopper-Pearson 95% CI {r0.fpr_low:.4f}-{r0.fpr_high:.4f}: target {'inside' if inside else 'OUTSIDE'})"
          + (f", recall {r0.recall:.3f}" if r0.recall is not None else ""))
    print(f"  expected {lo}-{hi} false alarms on {r0.n_normal} new normal frames (95%, "
          f"{'beta-binomial incl. the threshold estimate' if est.method_ == 'quantile' else 'binomial at target'}):"
          f" {'as expected' if v['as_expected'] else 'NOT as expected: check that the data are representative'}")
    print(format_table(res))
    if args.dry_run:
        print("dry run: nothing written")
        return 0
    print(f"wrote: {model_dir}/weights.safetensors + algan.json (calibration), calibration_scores.safetensors "
          f"(drift reference), int8_calibration.safetensors ({len(res.int8_images)} frames, uint8 "
          f"[N,{det.input_size[0]},{det.input_size[1]},3] BGR), report {report_path}")
    print(f"  {_exports_note(model_dir, manifest)}")
    print("  per camera at run time: set alarm.threshold (all cameras) or cameras[].threshold in the algan-edge "
          "config, on the calibrated scale (1.0 = this threshold, 0 = median normal; 1.2 moves the threshold 20 % of "
          "(threshold - median) higher)")
    print(f"  later: algan-calibrate {model_dir} --check --data RECENT_NORMALS tests for drift (exit 3 = drift)")
    return 0


def _check(args: argparse.Namespace) -> int:
    from algan.bundle import load_bundle
    from algan.calibration.pipeline import check, select_data

    model_dir = Path(args.model_dir)
    if args.anomalies or args.dry_run:
        raise ValueError("--check takes recent normal frames only (no --anomalies, nothing is written anyway)")
    if not 0 < args.alpha < 1:
        raise ValueError(f"--alpha must lie in (0, 1), got {args.alpha}")
    det, manifest = load_bundle(model_dir)
    split = select_data(args.data, args.layout, manifest, args.calib_fraction, args.seed, for_check=True)
    with using_roi(_roi(args, manifest)):
        rep, n_bad = check(det, model_dir, manifest, split, args.alpha, args.batch_size, args.max_bad_fraction)
    code = EXIT_DRIFT if rep.drifted else 0
    if n_bad:
        _warn(f"skipped {n_bad} unreadable images")
    if args.json:
        print(json.dumps({"model_dir": str(model_dir), "exit_code": code, "n_unreadable": n_bad, "fps": args.fps,
                          **rep.to_json()}))
        return code
    cal = manifest.calibration
    per_h = 3600.0 * args.fps
    print(f"drift check of {model_dir} on {rep.n_recent} recent normal frames ({split.source}); reference: "
          f"{rep.n_reference} calibration scores from {cal.date or '?'}")
    print(f"  KS test: D = {rep.ks_statistic:.3f}, p = {rep.ks_pvalue:.3g} (alpha {args.alpha:g}); median raw score "
          f"moved by {rep.median_shift:+.4g}")
    print(f"  current threshold (raw {rep.threshold:.6g}): {rep.n_alarms}/{rep.n_recent} = {rep.fpr:.4f} false "
          f"alarms per frame (95% CI {rep.fpr_low:.4f}-{rep.fpr_high:.4f}; target {rep.target_fpr:g}, at most "
          f"{rep.max_expected_alarms} alarms expected) = {_per_hour(rep.fpr * per_h)} per camera-hour at "
          f"{args.fps:g} fps")
    if rep.drifted:
        print("  DRIFT (exit 3): " + "; ".join(rep.reasons))
        print(f"  re-calibrate on recent normal frames: algan-calibrate {model_dir} --data RECENT_NORMALS")
    else:
        print("  no drift detected (exit 0)")
    return code


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    return run_cli(PROG, lambda: _check(args) if args.check else _calibrate(args))


if __name__ == "__main__":
    sys.exit(main())
