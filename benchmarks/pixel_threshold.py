"""The pixel threshold's default (not a test): mask F1 and achieved pixel FPR of every patch head at several per-pixel
false-positive rates, on every dev set.

How ``algan.contract.DEFAULT_PIXEL_FPR`` (the defect mask's level, ``algan-train`` / ``algan-calibrate
--pixel-fpr``) was chosen, reproducibly: each data set's patch features (the shipped default, EfficientNet-Lite0
blocks 10 + 14 at 224 px) are extracted once (:func:`algan.model.evaluation.patch_eval.build_eval_set`), every head is
fitted
with the product code, and for every rate the thresholds are set with algan-calibrate's protocol on an mvtec/mtd test
split (:func:`algan.model.evaluation.patch_eval.calibrated_mask_f1`: the image threshold at 1 % and the pixel
threshold at the
rate, on a seeded half of the test normals). Printed per data set, head and rate: the mask F1 (pooled pixels, masks
only on images at or above the image threshold, as an operator sees them), the per-pixel FPR achieved on the other
half of the normals (all their pixels, flagged or not: what the stated rate promises) and the median mask area of the
flagged defect images relative to their ground-truth area.

Data sets (built once under ``--work``; real ones read from ``$ALGAN_DATA_DIR`` or ``../shared/data``, skipped when
absent): ``mtd``, ``ballscrew``, ``pcb`` (bounding-box masks: pessimistic), ``metal``, ``weave`` (algan-synth),
``bottle`` (bottle-video frames with drawn defects); see ``benchmarks/patch_defaults.py`` for the last three.

Usage::

    python benchmarks/pixel_threshold.py [--sets mtd,ballscrew,pcb,metal,weave,bottle] [--heads padim,patchcore]
        [--rates 0.001,0.002,0.005,0.01,0.02] [--max-train 200] [--max-test 400] [--json]
    python benchmarks/pixel_threshold.py --smoke     # seconds: a tiny synthetic set, one head

Figures: benchmarks/RESULTS.md, "Session 11".
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks._kit import finish, sweep_sets  # noqa: E402
from benchmarks.patch_defaults import DATA, build_bottle, build_synthetic  # noqa: E402

DEFAULT_RATES = "0.001,0.002,0.005,0.01,0.02"


def data_sets(names: list[str], work: Path, smoke: bool) -> dict[str, tuple[Path, str]]:
    out = {}
    for name in names:
        if name in ("metal", "weave"):
            out[name] = (build_synthetic(work / name, name, smoke), "mvtec")
        elif name == "bottle":
            video = DATA / "video" / "bottle-detection.mp4"
            if video.is_file():
                out[name] = (build_bottle(work / name, video), "mvtec")
            else:
                print(f"# bottle: skipped, {video} not found (set ALGAN_DATA_DIR)", flush=True)
        elif name in ("mtd", "ballscrew", "pcb"):
            root = DATA / name
            if root.is_dir():
                out[name] = (root, "mtd" if name == "mtd" else "mvtec")
            else:
                print(f"# {name}: skipped, {root} not found (set ALGAN_DATA_DIR)", flush=True)
        else:
            raise SystemExit(f"unknown data set {name!r}; use mtd, ballscrew, pcb, metal, weave, bottle")
    return out


def subset(items: list, n: int | None, seed: int) -> list:
    """A seeded subset of at most ``n`` items, in their order (all when ``n`` is None or larger)."""
    if n is None or len(items) <= n:
        return list(items)
    keep = np.random.default_rng(seed).choice(len(items), n, replace=False)
    return [items[i] for i in sorted(keep.tolist())]


def mask_area_ratio(maps: np.ndarray, scores: np.ndarray, masks: np.ndarray, labels: np.ndarray, rest: np.ndarray,
                    level: float, thr: float) -> float | None:
    """Median over the flagged defect images of ``rest`` of (predicted mask pixels / ground-truth pixels)."""
    from algan.model.evaluation.pixel_metrics import upsample_maps

    idx = [i for i in rest if labels[i] == 1 and scores[i] >= thr and masks[i].any()]
    if not idx:
        return None
    up = upsample_maps(maps[idx], masks.shape[1:])
    return float(np.median([(u >= level).sum() / masks[i].sum() for u, i in zip(up, idx, strict=True)]))


def run_set(name: str, root: Path, layout: str, heads: list[str], rates: list[float], size: tuple[int, int],
            max_train: int | None, max_test: int | None, seed: int, smoke: bool) -> list[dict]:
    from algan.contract import empirical_threshold, pixel_threshold
    from algan.data.datasets import load_dataset
    from algan.features.backbone import Preprocess, make_spec
    from algan.features.patch import MapPostprocess, PatchFeatureMaps, PatchSpec, default_patch_blocks
    from algan.model.evaluation.image_eval import auroc
    from algan.model.evaluation.patch_eval import BENCH_TARGET_FPR, build_eval_set, calibrated_mask_f1, head_maps
    from algan.model.fit import FitSettings, fit_patch_head
    from algan.model.gan.feature import AlganConfig

    ds = load_dataset(root, layout)
    train = subset(ds.train, max_train, seed)
    test = subset(ds.test, max_test, seed)
    spec = make_spec("efficientnet-lite0", default_patch_blocks("efficientnet-lite0"), "avg", size)
    pspec = PatchSpec()
    fm, pre = PatchFeatureMaps(spec, pspec).eval(), Preprocess(spec.mean, spec.std)
    post = MapPostprocess(pspec, size)
    t = time.perf_counter()
    ev = build_eval_set(pre, fm, pspec, train, test, size, seed=seed, with_masks=True)
    y = np.array([s.label for s in test])
    print(f"# {name}: {len(train)} train, {len(test)} test ({int(y.sum())} defective), features in "
          f"{time.perf_counter() - t:.0f} s", flush=True)
    normal = np.flatnonzero(y == 0)
    perm = np.random.default_rng(seed).permutation(normal)
    calib, valid = np.sort(perm[: len(perm) // 2]), np.sort(perm[len(perm) // 2 :])
    rest = np.setdiff1d(np.arange(len(y)), calib)
    rows = []
    for head_name in heads:
        over = {"seed": seed, **({"epochs": 1, "min_steps": 20} if smoke else {})}
        settings = FitSettings(head=head_name, variant="patch", patch=pspec, seed=seed,
                               algan=AlganConfig.preset("patch", **over))
        head, *_ = fit_patch_head(settings, ev.train, ev.n_cells, False)
        maps_t = head_maps(head, post, ev.test)
        scores = post.reduce(maps_t).numpy().astype(np.float64)
        maps = maps_t.numpy()
        thr = empirical_threshold(scores[calib], BENCH_TARGET_FPR, clip=True).threshold
        image_auroc = round(auroc(y, scores), 4)
        for rate in rates:
            level = pixel_threshold(maps[calib], rate).threshold
            f1 = calibrated_mask_f1(maps_t, scores, ev.masks, y, seed, pixel_fpr=rate)
            achieved = float((maps[valid] >= level).mean()) if len(valid) else None
            ratio = mask_area_ratio(maps, scores, ev.masks, y, rest, level, thr)
            row = {"data": name, "head": f"{head_name}-patch", "pixel_fpr": rate, "mask_f1": f1,
                   "achieved_pixel_fpr": None if achieved is None else round(achieved, 5),
                   "mask_area_ratio": None if ratio is None else round(ratio, 3),
                   "flagged_defects": int(sum(1 for i in rest if y[i] == 1 and scores[i] >= thr)),
                   "n_defects": int(sum(1 for i in rest if y[i] == 1)), "image_auroc": image_auroc}
            rows.append(row)
            print(f"{name:<9} {row['head']:<15} pixel FPR {rate:<6g} mask F1 {f1 if f1 is not None else '-':<7} "
                  f"achieved FPR {row['achieved_pixel_fpr']}  mask/GT area {row['mask_area_ratio']}  flagged "
                  f"{row['flagged_defects']}/{row['n_defects']}  image AUROC {image_auroc}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sets", default="mtd,ballscrew,pcb,metal,weave,bottle", help="comma-separated data sets")
    p.add_argument("--heads", default="padim,patchcore", help="patch heads (padim, patchcore, algan)")
    p.add_argument("--rates", default=DEFAULT_RATES, help="per-pixel false-positive rates to compare")
    p.add_argument("--max-train", type=int, default=200, help="training images per set (seeded subset)")
    p.add_argument("--max-test", type=int, default=None, help="test images per set (seeded subset; default all)")
    p.add_argument("--work", type=Path, default=Path("/tmp/algan_patch_defaults"), help="where data sets are built")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="also print the rows as JSON lines")
    p.add_argument("--smoke", action="store_true", help="seconds: tiny synthetic metal at 96 px, PaDiM only")
    args = p.parse_args(argv)
    rates = [float(r) for r in args.rates.split(",") if r]
    heads = [h for h in args.heads.split(",") if h]
    size = (224, 224)
    if args.smoke:
        import tempfile

        args.sets, heads, size, rates = "metal", ["padim"], (96, 96), [0.005, 0.02]
        args.work = Path(tempfile.mkdtemp(prefix="algan_pixel_smoke_"))
    rows = sweep_sets(args.sets, args.work, args.smoke, data_sets,
                      lambda name, root, layout: run_set(name, root, layout, heads, rates, size, args.max_train,
                                                         args.max_test, args.seed, args.smoke))
    return finish(rows, args.json)


if __name__ == "__main__":
    sys.exit(main())
