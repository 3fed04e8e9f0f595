"""Validate ``--head auto`` (not a test): do synthetic defects rank the heads as real defects do?

Per data set, with the product code (:mod:`algan.model.select`): the training split of ``algan-train`` (seed 0,
20 % held out), synthetic defects drawn on the held-out normals (:func:`algan.data.defects.synthesize_families`),
every candidate head fitted once on its training features and scored (a) on the held-out normals and synthetic
defects (the figures ``--head auto`` chooses by) and (b) on the data set's real labelled test split (image AUROC, and
``recall_at_fpr``: the share of real defects flagged at the threshold algan-calibrate would set for 1 % false alarms
on the test normals, :func:`algan.model.evaluation.threshold.recall_at_fpr`).

Printed per data set: a row per head, auto's choice, the best head in hindsight and the shortfall, and the Spearman
rank correlation (scipy.stats.spearmanr) between each synthetic figure and the real AUROC over the heads; at the end
the shortfall of every alternative rule and fixed head over all sets.

Data sets: ``mtd``, ``ballscrew``, ``pcb`` (from ``$ALGAN_DATA_DIR`` or ``../shared/data``), ``metal``, ``weave``
(algan-synth textures) and ``bottle`` (video frames), built as ``benchmarks/patch_defaults.py`` builds them; and
two stand-ins for held-out kinds, ``ballscrew-dark`` and ``bottle-rot`` (:mod:`benchmarks._stand_ins`).

Usage::

    python benchmarks/auto_select.py [--sets mtd,ballscrew,pcb,metal,weave,bottle] [--max-train N] [--max-test N]
        [--json]
    python benchmarks/auto_select.py --smoke     # seconds: a tiny synthetic set, short ALGAN schedules

Figures: benchmarks/RESULTS.md, "Session 11", "Session 13" and "Session 14".
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

from algan.model.select import CANDIDATES as CANDIDATES_ALL  # noqa: E402
from algan.model.select import DEFECTS_PER_IMAGE  # noqa: E402
from benchmarks._stand_ins import STAND_INS, build_stand_in  # noqa: E402
from benchmarks.patch_defaults import DATA, build_bottle, build_synthetic  # noqa: E402


def data_set(name: str, work: Path, smoke: bool) -> tuple[Path, str] | None:
    if smoke:  # enough normals for 24 held out (a threshold needs >= 20)
        from algan.data.synthetic import generate_dataset

        generate_dataset(work / name, texture=name, seed=1, overwrite=True, n_train=60, n_test_good=10,
                         n_test_defect=10, size=96)
        return work / name, "mvtec"
    if name in ("metal", "weave"):
        return build_synthetic(work / name, name, smoke), "mvtec"
    if name == "bottle":
        video = DATA / "video" / "bottle-detection.mp4"
        return (build_bottle(work / name, video), "mvtec") if video.is_file() else None
    if name == "mtd":
        return (DATA / "mtd", "mtd") if (DATA / "mtd" / "MT_Free").is_dir() else None
    if name in ("ballscrew", "pcb"):
        return (DATA / name, "mvtec") if (DATA / name / "train").is_dir() else None
    if name in STAND_INS:
        return build_stand_in(name, work, DATA)
    raise SystemExit(f"unknown data set {name!r}; use mtd, ballscrew, pcb, metal, weave, bottle, "
                     f"{', '.join(STAND_INS)}")


def candidate_settings(seed: int, smoke: bool, size: int, names, patch_blocks: str | None = None,
                       grid=None) -> dict:  # noqa: ANN001
    """``{"variant:head[@RxC]": FitSettings}`` that ``algan-train --head auto`` builds by default
    (:func:`algan.cli.train.auto_settings`, tiled candidates on ``grid``) for the candidates whose ``variant:head``
    is in ``names`` (each head with its default blocks; the patch candidates with ``--blocks patch_blocks`` when
    given)."""
    from algan.cli.train import auto_settings, build_parser

    argv = ["--data", ".", "--out", ".", "--head", "auto", "--seed", str(seed), "--input-size", str(size), str(size)]
    if smoke:
        argv += ["--epochs", "1"]
    args = build_parser().parse_args(argv)
    args.variant = "auto"
    patch_args = args
    if patch_blocks is not None:
        patch_args = build_parser().parse_args([*argv, "--blocks", patch_blocks])
        patch_args.variant = "auto"
    feature = auto_settings(args, grid)
    patch = auto_settings(patch_args, grid)
    return {n: (patch if n.startswith("patch:") else feature)[n] for n in feature if n.split("@")[0] in names}


def run_set(name: str, root: Path, layout: str, args) -> list[dict]:

    from algan.data.datasets import load_dataset
    from algan.data.defects import synthesize_families
    from algan.model.evaluation.image_eval import auroc
    from algan.model.evaluation.threshold import recall_at_fpr
    from algan.model.fit import training_split
    from algan.model.select import (
        CANDIDATES,
        build_candidate_data,
        choose,
        fitter,
        image_scores,
        score_candidate,
    )
    from algan.runtime.preprocess import load_batch
    from algan.runtime.tiling import auto_grid, frame_size

    t0 = time.perf_counter()
    ds = load_dataset(root, layout)
    test = list(ds.test)
    if args.max_test and len(test) > args.max_test:
        keep = np.random.default_rng(0).choice(len(test), args.max_test, replace=False)
        test = [test[i] for i in sorted(keep.tolist())]
    y = np.array([s.label for s in test])
    from dataclasses import replace

    names = [c for c in CANDIDATES if c in args.candidates.split(",")]
    frame_hw = frame_size(ds.train)
    grid = auto_grid(frame_hw, (args.size, args.size)) if args.tiles == "auto" else None
    settings = candidate_settings(args.seed, args.smoke, args.size, names, args.patch_blocks, grid)
    names = list(settings)
    if args.max_train:
        settings = {n: replace(s, max_train=args.max_train) for n, s in settings.items()}
    if args.smoke:
        settings = {n: replace(s, holdout=0.4) for n, s in settings.items()}
    first = settings[names[0]]
    fit_paths, hold_paths = training_split(ds, first)
    # as select_heads: with a tiled candidate every candidate sees frames (and defects drawn) at the frame size
    size = frame_size(hold_paths) if grid is not None else (args.size, args.size)
    hold_u8 = load_batch(hold_paths, size)
    defects = synthesize_families(hold_u8, args.per_image, args.seed)
    test_u8 = load_batch([s.path for s in test], size)
    m = len(defects.images)
    from benchmarks._defect_families import families

    extra = {f: d for f, d in families(args.families.split(","), hold_u8, defects, args.seed).items() if f != "base"}
    synth_u8 = np.concatenate([defects.images, *(d.images for d in extra.values())])
    cuts = np.cumsum([m, *(len(d.images) for d in extra.values())])
    # one extraction per distinct feature setting, as select_heads does; the real test images ride along as defects
    built = build_candidate_data(settings, fit_paths, hold_u8, np.concatenate([synth_u8, test_u8]))
    from dataclasses import replace as dc_replace

    data, real, fam_inputs = {}, {}, {}
    for n, (d, _) in built.items():
        t = d.tiling.n_tiles if d.tiling is not None else 1  # a tiled candidate's inputs are t tiles per frame
        data[n] = dc_replace(d, defect=d.defect[: m * t])
        real[n] = d.defect[cuts[-1] * t :]
        fam_inputs[n] = {f: d.defect[a * t : b * t] for f, a, b in zip(extra, cuts[:-1], cuts[1:], strict=True)}
    del test_u8
    print(f"# {name}: frames {frame_hw[1]} x {frame_hw[0]} px, tiles {grid or 'none'}; "
          f"{len(fit_paths)} train, {len(hold_paths)} held out, {m} synthetic defects, {len(test)} test "
          f"({int(y.sum())} defective); features in {time.perf_counter() - t0:.0f} s", flush=True)
    results, rows = [], []
    dump: dict[str, np.ndarray] = {"y": y, "kinds": np.asarray(defects.kinds), "per_image": np.int64(args.per_image),
                                   "n_normal": np.int64(len(hold_u8))}
    fam_scores: dict[str, dict[str, np.ndarray]] = {}  # candidate -> family -> defect scores
    for cand in names:
        r = score_candidate(cand, fitter(settings[cand]), data[cand], defects.kinds, first.target_fpr)
        head = r.fitted[0]
        s_test = image_scores(head, data[cand], real[cand], post=r.post)
        dump[f"{cand}/normal"], dump[f"{cand}/defect"], dump[f"{cand}/test"] = r.normal_scores, r.defect_scores, s_test
        fam_scores[cand] = {"base": r.defect_scores}
        for f, x in fam_inputs[cand].items():
            fam_scores[cand][f] = image_scores(head, data[cand], x, post=r.post)
        results.append(r)
        row = {"data": name, "head": cand, "synth_recall": round(r.recall_at_fpr, 4), "synth_auroc": round(r.auroc, 4),
               "synth_by_kind": {k: round(v, 3) for k, v in r.recall_by_kind.items()},
               "auroc": round(auroc(y, s_test), 4),
               "recall_at_fpr": round(recall_at_fpr(s_test[y == 0], s_test[y == 1], 0.01), 4)
               if (y == 0).sum() >= 20 else None,
               "blocks": list(settings[cand].backbone.blocks), "fit_s": round(r.fit_s, 1),
               "synth_by_family": {f: round(v, 3) for f, v in r.recall_by_family.items()}}
        for f, sc in fam_scores[cand].items():
            if f == "base":
                continue
            yf = np.r_[np.zeros(len(r.normal_scores)), np.ones(len(sc))]
            row[f"{f}_recall"] = round(float(recall_at_fpr(r.normal_scores, sc, first.target_fpr)), 4)
            row[f"{f}_auroc"] = round(auroc(yf, np.r_[r.normal_scores, sc]), 4)
        rows.append(row)
        print(f"{name:<9} {cand:<20} synth recall@1% {row['synth_recall']:.3f} synth AUROC {row['synth_auroc']:.4f}"
              f" | real AUROC {row['auroc']:.4f} recall@1% {row['recall_at_fpr']}  fit {row['fit_s']:.1f} s",
              flush=True)
        r.fitted = None
    chosen = choose(results)
    summary = summarize(name, rows, chosen.name)
    if extra:  # the product rule on each family, and on families pooled
        rules = [[f] for f in ["base", *extra]] + [["base", f] for f in extra] + \
            ([["base", *extra]] if len(extra) > 1 else [])
        best = max(rw["auroc"] for rw in rows)
        by_head = {rw["head"]: rw for rw in rows}
        summary["by_rule"] = {}
        for fams in rules:
            pooled = []
            for r in results:
                sc = np.concatenate([fam_scores[r.name][f] for f in fams])
                yf = np.r_[np.zeros(len(r.normal_scores)), np.ones(len(sc))]
                pooled.append(dc_replace(r, recall_at_fpr=float(recall_at_fpr(r.normal_scores, sc, first.target_fpr)),
                                         auroc=auroc(yf, np.r_[r.normal_scores, sc])))
            c = choose(pooled).name
            summary["by_rule"]["+".join(fams)] = {"chosen": c, "shortfall": round(by_head[c]["auroc"] - best, 4)}
    summary["wall_s"] = round(time.perf_counter() - t0, 1)
    if args.dump is not None:  # every candidate's scores, for rules studied offline
        args.dump.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(args.dump / f"{name}.npz", **dump)
    print(json.dumps(summary), flush=True)
    return rows + [summary]


def summarize(name: str, rows: list[dict], chosen: str) -> dict:
    from scipy.stats import spearmanr

    real = np.array([r["auroc"] for r in rows])
    best = rows[int(np.argmax(real))]
    by = {r["head"]: r for r in rows}
    rho_r = spearmanr([r["synth_recall"] for r in rows], real).statistic
    rho_a = spearmanr([r["synth_auroc"] for r in rows], real).statistic
    return {"data": name, "head": "auto", "chosen": chosen, "auroc": by[chosen]["auroc"],
            "recall_at_fpr": by[chosen]["recall_at_fpr"], "best": best["head"], "best_auroc": best["auroc"],
            "shortfall": round(by[chosen]["auroc"] - best["auroc"], 4),
            "spearman_synth_recall": None if np.isnan(rho_r) else round(float(rho_r), 3),
            "spearman_synth_auroc": None if np.isnan(rho_a) else round(float(rho_a), 3)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sets", default="mtd,ballscrew,pcb,metal,weave,bottle")
    p.add_argument("--work", type=Path, default=Path("/tmp/algan_patch_defaults"), help="where data sets are built")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--max-train", type=int, default=None, help="training images per set (seeded subset)")
    p.add_argument("--max-test", type=int, default=None, help="test images per set (seeded subset)")
    p.add_argument("--candidates", default=",".join(CANDIDATES_ALL), help="candidate heads (variant:head, default all)")
    p.add_argument("--patch-blocks", default=None, metavar="B",
                   help="backbone blocks of the patch candidates, e.g. 4,10 (default: the product's patch default)")
    p.add_argument("--families", default="base",
                   help="synthetic defect families, comma-separated: base (the product's local marks and texture "
                        "changes), weak (benchmarks/_defect_families.py); each extra one is scored and the product "
                        "rule applied to it")
    p.add_argument("--tiles", default="auto", choices=["auto", "none"],
                   help="auto (the product's): the patch heads also on the tile grid of algan.runtime.tiling.auto_grid "
                        "where the frames are much larger than the input; none: whole frames only")
    p.add_argument("--per-image", type=int, default=DEFECTS_PER_IMAGE,
                   help="synthetic defects of each family per held-out normal (default: the product's); defect j is "
                        "the same for any count, so the product's set is the first 2 N of each family")
    p.add_argument("--dump", type=Path, default=None, metavar="DIR",
                   help="write every candidate's held-out, synthetic and test scores to DIR/<set>.npz")
    p.add_argument("--json", action="store_true", help="also print every row as a JSON line at the end")
    p.add_argument("--smoke", action="store_true", help="seconds: a tiny synthetic metal set at 96 px")
    args = p.parse_args(argv)
    if args.smoke:
        args.sets, args.size = "metal", 96
        args.work = Path(tempfile.mkdtemp(prefix="algan_auto_smoke_"))
    rows: list[dict] = []
    try:
        for name in args.sets.split(","):
            found = data_set(name, args.work, args.smoke)
            if found is None:
                print(f"# {name}: skipped, not found (set ALGAN_DATA_DIR)", flush=True)
                continue
            rows += run_set(name, found[0], found[1], args)
    finally:
        if args.smoke:
            import shutil

            shutil.rmtree(args.work, ignore_errors=True)
    summaries = [r for r in rows if r.get("head") == "auto"]
    if summaries:
        print("\nauto vs best in hindsight:")
        for s in summaries:
            print(f"  {s['data']:<9} chose {s['chosen']:<20} AUROC {s['auroc']:.4f}  best {s['best']:<20} "
                  f"{s['best_auroc']:.4f}  shortfall {s['shortfall']:+.4f}  spearman(synth recall, AUROC) "
                  f"{s['spearman_synth_recall']}  spearman(synth AUROC, AUROC) {s['spearman_synth_auroc']}")
    ruled = [s for s in summaries if "by_rule" in s]
    if ruled:
        print("\nthe product rule on each family (shortfall per set; worst, mean):")
        for rule in ruled[0]["by_rule"]:
            falls = [s["by_rule"][rule]["shortfall"] for s in ruled]
            cells = "  ".join(f"{s['data']} {s['by_rule'][rule]['chosen'].split(':')[1][:6]} {f:+.3f}"
                              for s, f in zip(ruled, falls, strict=True))
            print(f"  {rule:<20} worst {min(falls):+.3f} mean {np.mean(falls):+.3f} | {cells}")
    if args.json:
        for r in rows:
            print(json.dumps(r))
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
