"""Cross-fitted calibration against a held-out split (not a test): what each costs in detection and in threshold trust.

Per data set and feature head (Mahalanobis, kNN: the heads ``--calibration auto`` cross-fits), with the product code
(:mod:`algan.model.fit`): the backbone features of every training normal and every test image are extracted once;
then, for each seed (the split of ``algan-train --seed``),

- ``holdout``: transform and head fitted on the training split (80 %), the threshold at 1 % FPR
  (:func:`algan.model.fit.quantile_threshold`) from the held-out 20 %;
- ``crossfit``: transform and head fitted on every training normal, the threshold from the out-of-fold scores of all
  of them (:func:`algan.model.fit.crossfit_scores`, :data:`algan.model.fit.CROSSFIT_FOLDS` folds).

Printed per data set, head and mode (mean over the seeds): the images the head is fitted on, image AUROC on the test
split, ``recall_at_fpr`` (the share of test defects flagged at the threshold for 1 % false alarms on the test
normals, :func:`algan.model.evaluation.threshold.recall_at_fpr`), and at the bundle's own threshold the false-alarm
rate on the test normals (the rate it promised: 0.01) and the share of test defects it flags (what the line gets).

Data sets: ``mtd``, ``ballscrew``, ``pcb`` (``$ALGAN_DATA_DIR`` or ``../shared/data``), ``metal``, ``weave``
(algan-synth textures) and ``bottle`` (video frames), built as ``benchmarks/patch_defaults.py`` builds them.

Usage::

    python benchmarks/crossfit.py [--sets mtd,ballscrew,pcb,metal,weave,bottle] [--seeds 0,1,2] [--json]
    python benchmarks/crossfit.py --smoke     # seconds: a tiny synthetic set at 96 px

Figures: benchmarks/RESULTS.md, "Session 16".
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

HEADS = ("mahalanobis", "knn")


def data_set(name: str, work: Path, smoke: bool) -> tuple[Path, str] | None:
    if smoke:  # 20 test normals: the fewest recall_at_fpr takes
        from algan.data.synthetic import generate_dataset

        generate_dataset(work / name, texture=name, seed=1, overwrite=True, n_train=60, n_test_good=20,
                         n_test_defect=10, size=96)
        return work / name, "mvtec"
    from benchmarks.auto_select import data_set as build

    return build(name, work, smoke)


def features(paths: list[Path], settings) -> np.ndarray:  # noqa: ANN001
    """Backbone features float32 (N, D) of ``paths`` with the feature variant's default backbone."""
    from algan.features.backbone import Preprocess, build_backbone
    from algan.model.fit import extract_features

    spec = settings.backbone
    return extract_features(Preprocess(spec.mean, spec.std), build_backbone(spec).eval(), paths,
                            tuple(spec.input_size), settings.batch_size, None)


def fit_score(settings, train: np.ndarray, test: np.ndarray) -> np.ndarray:  # noqa: ANN001
    """Raw scores float64 of ``test`` rows by the transform and head fitted on ``train`` rows."""
    import torch

    from algan.model.fit import fit_feature_head

    transform, head = fit_feature_head(settings, train)
    with torch.no_grad():
        return head(transform(torch.from_numpy(test))).numpy().astype(np.float64)


def run_head(head: str, seeds: list[int], f_train: np.ndarray, f_test: np.ndarray, y: np.ndarray,
             size: tuple[int, int]) -> list[dict]:
    from algan.features.backbone import BackboneSpec
    from algan.model.evaluation.image_eval import auroc
    from algan.model.evaluation.threshold import recall_at_fpr
    from algan.model.fit import CROSSFIT_FOLDS, FitSettings, crossfit_scores, quantile_threshold, split_holdout

    rows = []
    for mode in ("holdout", "crossfit"):
        figs = []
        for seed in seeds:
            s = FitSettings(head=head, variant="feature", seed=seed, backbone=BackboneSpec(input_size=size))
            if mode == "holdout":
                fit_i, hold_i = split_holdout(list(range(len(f_train))), s.holdout, seed)
                normal = fit_score(s, f_train[fit_i], f_train[hold_i])
                scores = fit_score(s, f_train[fit_i], f_test)
                n_fit = len(fit_i)
            else:
                normal = crossfit_scores(s, f_train, CROSSFIT_FOLDS)
                scores = fit_score(s, f_train, f_test)
                n_fit = len(f_train)
            _, thr = quantile_threshold(normal, s.target_fpr)
            figs.append({"n_fit": n_fit, "auroc": auroc(y, scores),
                         "recall_at_fpr": recall_at_fpr(scores[y == 0], scores[y == 1], s.target_fpr),
                         "fpr_at_threshold": float((scores[y == 0] >= thr).mean()),
                         "recall_at_threshold": float((scores[y == 1] >= thr).mean())})
        rows.append({"head": head, "mode": mode, "seeds": len(seeds),
                     **{k: float(np.mean([f[k] for f in figs])) for k in figs[0]}})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sets", default="mtd,ballscrew,pcb,metal,weave,bottle")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated split seeds")
    p.add_argument("--work", type=Path, default=Path("/tmp/algan_patch_defaults"), help="where data sets are built")
    p.add_argument("--json", action="store_true", help="one JSON object per row")
    p.add_argument("--smoke", action="store_true", help="seconds: a tiny synthetic metal set at 96 px, one seed")
    args = p.parse_args(argv)
    size = (224, 224)
    tmp = None
    if args.smoke:
        tmp = tempfile.TemporaryDirectory()
        args.sets, args.seeds, args.work, size = "metal", "0", Path(tmp.name), (96, 96)
    from algan.data.datasets import load_dataset
    from algan.features.backbone import BackboneSpec
    from algan.model.fit import FitSettings

    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"{'set':<10} {'head':<12} {'mode':<9} {'fit on':>6} {'AUROC':>7} {'recall@1%':>9} {'FPR@thr':>8} "
          f"{'recall@thr':>10}", flush=True)
    try:
        for name in args.sets.split(","):
            found = data_set(name, args.work, args.smoke)
            if found is None:
                print(f"# {name}: skipped (data not found; set ALGAN_DATA_DIR)", flush=True)
                continue
            t0 = time.perf_counter()
            ds = load_dataset(found[0], found[1])
            settings = FitSettings(variant="feature", backbone=BackboneSpec(input_size=size))
            f_train = features(list(ds.train), settings)
            f_test = features([s.path for s in ds.test], settings)
            y = np.array([s.label for s in ds.test])
            for head in HEADS:
                for r in run_head(head, seeds, f_train, f_test, y, size):
                    r = {"set": name, **r}
                    if args.json:
                        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}))
                    else:
                        print(f"{name:<10} {head:<12} {r['mode']:<9} {r['n_fit']:>6.0f} {r['auroc']:>7.4f} "
                              f"{r['recall_at_fpr']:>9.3f} {r['fpr_at_threshold']:>8.4f} "
                              f"{r['recall_at_threshold']:>10.3f}", flush=True)
            print(f"# {name}: {len(ds.train)} training normals, {len(y)} test images, "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)
    finally:
        if tmp is not None:
            tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
