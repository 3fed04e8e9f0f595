"""Patch-variant defaults (not a test): ALGAN-patch settings against PatchCore and PaDiM on several data sets.

How the ALGAN-patch default (``AlganConfig.preset("patch")``) and the map reduction (``PatchSpec.reduction``) were
chosen, reproducibly: every data set's patch features (the shipped default, EfficientNet-Lite0 blocks 10 + 14 at
224 px, 3x3 aggregation, 28 x 28 grid) are extracted once, then every configuration is fitted with the product code
(:func:`algan.model.fit.fit_patch_head`) on the same sampled training patches and scored on the same test maps.
Per data set and configuration it prints image AUROC with the map's max and with the top-1 % mean, pixel AUROC and
AUPRO (:mod:`algan.model.evaluation.pixel_eval`) and the fit time.

Data sets (built once under ``--work``):

- ``mtd``: MTD from ``$ALGAN_DATA_DIR/mtd`` or ``../shared/data/mtd`` (619 train, 725 test; skipped if absent);
- ``metal``, ``weave``: ``algan.data.synthetic.generate_dataset(texture, n_train=300, n_test_good=120,
  n_test_defect=40, seed=1)`` (300 train, 240 test);
- ``bottle``: frames of the real bottle video (``video/bottle-detection.mp4``, centre square crop, 256 px): every
  2nd frame of the first 60 % to train (357), every 3rd of the rest to test (157), every other test frame with a
  drawn scratch, spot or crack (:func:`algan.data.synthetic.render_defect`) and its mask.

Usage::

    python benchmarks/patch_defaults.py [--sets mtd,metal,weave,bottle] [--configs default,lw-d256,...] [--json]
        [--backbone efficientnet-lite0|efficientnet-lite1|efficientnet-lite2] [--size 224] [--stride 8]
        [--patches-per-image 128] [--seed 0]
    python benchmarks/patch_defaults.py --smoke     # seconds: a tiny synthetic set, three heads, a few steps

Figures: benchmarks/RESULTS.md, "Patch variant".
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks._kit import finish, sweep_sets  # noqa: E402

DATA = Path(os.environ.get("ALGAN_DATA_DIR", REPO.parent / "shared" / "data"))
SIZE = (224, 224)

#: configuration name -> (patch head, AlganConfig.preset("patch") overrides)
CONFIGS: dict[str, tuple[str, dict]] = {
    "patchcore": ("patchcore", {}),
    "padim": ("padim", {}),
    "default": ("algan", {}),  # the shipped preset: D [512], whitening shrinkage 0.7
    "lw-d256": ("algan", {"whiten_shrinkage": None, "d_hidden": [256]}),  # the previous default (Ledoit-Wolf)
    "s0.5": ("algan", {"whiten_shrinkage": 0.5}),
    "s0.9": ("algan", {"whiten_shrinkage": 0.9}),
    "d256": ("algan", {"d_hidden": [256]}),
    "d1024": ("algan", {"d_hidden": [1024]}),
    "ensemble2": ("algan", {"ensemble": 2}),
    "quad": ("algan", {"d_quadratic": True}),
    "r1": ("algan", {"r1_gamma": 1.0}),
    "sn": ("algan", {"spectral_norm": True}),
    "lrd2": ("algan", {"lr_d": 2e-4}),
    "d512x2": ("algan", {"d_hidden": [512, 512]}),
    "sigma3": ("algan", {"sigma": 3.0}),
    "g512": ("algan", {"g_hidden": [512]}),  # a non-linear G: one hidden layer (the default G is linear)
    "g512x2": ("algan", {"g_hidden": [512, 512]}),
}
DEFAULT_CONFIGS = "patchcore,padim,default,lw-d256,s0.5,s0.9,d256"


def build_synthetic(root: Path, texture: str, smoke: bool) -> Path:
    from algan.data.synthetic import generate_dataset

    if not (root / "test").is_dir():
        sizes = dict(n_train=16, n_test_good=6, n_test_defect=2, size=96) if smoke else \
            dict(n_train=300, n_test_good=120, n_test_defect=40, size=256)
        generate_dataset(root, texture=texture, seed=1, overwrite=True, **sizes)
    return root


def build_bottle(root: Path, video: Path, size: int = 256) -> Path:
    """Bottle-video frames in the MVTec layout, with drawn defects on every other test frame (module docstring)."""
    import cv2

    from algan.data.synthetic import DEFECT_TYPES, render_defect

    if (root / "test").is_dir():
        return root
    cap = cv2.VideoCapture(str(video))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        h, w = f.shape[:2]
        x0 = (w - h) // 2
        frames.append(cv2.resize(f[:, x0 : x0 + h], (size, size), interpolation=cv2.INTER_AREA))
    if not frames:
        raise SystemExit(f"cannot read frames from {video}")
    rng = np.random.default_rng(0)
    n = len(frames)
    for d in ("train/good", "test/good"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for i in range(0, int(n * 0.6), 2):
        cv2.imwrite(str(root / "train/good" / f"{i:04d}.png"), frames[i])
    for j, i in enumerate(range(int(n * 0.6) + 5, n, 3)):
        if j % 2 == 0:
            cv2.imwrite(str(root / "test/good" / f"{i:04d}.png"), frames[i])
            continue
        defect = DEFECT_TYPES[(j // 2) % len(DEFECT_TYPES)]
        out, mask = render_defect(defect, frames[i].astype(np.float32) / 255.0, rng)
        for d in (f"test/{defect}", f"ground_truth/{defect}"):
            (root / d).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "test" / defect / f"{i:04d}.png"), np.clip(out * 255.0, 0, 255).astype(np.uint8))
        cv2.imwrite(str(root / "ground_truth" / defect / f"{i:04d}_mask.png"), mask)
    return root


def data_sets(names: list[str], work: Path, smoke: bool) -> dict[str, tuple[Path, str]]:
    out = {}
    for name in names:
        if name in ("metal", "weave"):
            out[name] = (build_synthetic(work / name, name, smoke), "mvtec")
        elif name == "bottle":
            video = DATA / "video" / "bottle-detection.mp4"
            if not video.is_file():
                print(f"# bottle: skipped, {video} not found (set ALGAN_DATA_DIR)", flush=True)
                continue
            out[name] = (build_bottle(work / name, video), "mvtec")
        elif name == "mtd":
            if not (DATA / "mtd" / "MT_Free").is_dir():
                print(f"# mtd: skipped, {DATA / 'mtd'} not found (set ALGAN_DATA_DIR)", flush=True)
                continue
            out[name] = (DATA / "mtd", "mtd")
        else:
            raise SystemExit(f"unknown data set {name!r}; use mtd, metal, weave, bottle")
    return out


def run_set(name: str, root: Path, layout: str, configs: list[str], size: tuple[int, int], smoke: bool,
            seed: int = 0, stride: int = 8, patches_per_image: int = 128,
            backbone: str = "efficientnet-lite0") -> list[dict]:
    from algan.data.datasets import load_dataset
    from algan.features.backbone import Preprocess, make_spec
    from algan.features.patch import MapPostprocess, PatchFeatureMaps, PatchSpec, default_patch_blocks
    from algan.model.evaluation.image_eval import auroc, per_class_auroc
    from algan.model.evaluation.patch_eval import build_eval_set, fit_map_norm, head_maps, pixel_metrics
    from algan.model.fit import FitSettings, fit_patch_head
    from algan.model.gan.feature import AlganConfig

    ds = load_dataset(root, layout)
    spec = make_spec(backbone, default_patch_blocks(backbone), "avg", size)
    pspec = PatchSpec(stride=stride, patches_per_image=patches_per_image)
    fm, pre = PatchFeatureMaps(spec, pspec).eval(), Preprocess(spec.mean, spec.std)
    post_max = MapPostprocess(PatchSpec(stride=stride, reduction="max"), size)
    post_top = MapPostprocess(PatchSpec(stride=stride, reduction="topk_mean"), size)
    t = time.perf_counter()
    ev = build_eval_set(pre, fm, pspec, ds.train, ds.test, size, seed=0, with_masks=True)
    y = np.array([s.label for s in ds.test])
    classes = np.array([s.cls for s in ds.test])
    print(f"# {name}: {len(ds.train)} train, {len(ds.test)} test ({int(y.sum())} defective), {ev.train.shape[0]} "
          f"training patches of {ev.train.shape[1]} dims, features in {time.perf_counter() - t:.0f} s", flush=True)
    rows = []
    for cname in configs:
        head_name, over = CONFIGS[cname]
        over = {**over, "seed": seed}
        if smoke:
            over = {**over, "epochs": 1, "min_steps": 20}
        settings = FitSettings(head=head_name, variant="patch", patch=pspec, algan=AlganConfig.preset("patch", **over))
        t = time.perf_counter()
        head, *_ = fit_patch_head(settings, ev.train, ev.n_cells, False)
        fit_map_norm(head, post_max, ev.stats)  # the per-location map statistics (PatchSpec.map_norm), as in training
        fit_s = time.perf_counter() - t
        maps = head_maps(head, post_max, ev.test)  # the reductions differ, the smoothed maps do not
        m = pixel_metrics(maps, ev.masks)
        row = {"data": name, "config": cname, "backbone": backbone, "seed": seed, "size": size[0], "grid": fm.grid[0],
               "patches_per_image": patches_per_image,
               "image_auroc_max": round(auroc(y, post_max.reduce(maps).numpy()), 4),
               "image_auroc_top1": round(auroc(y, post_top.reduce(maps).numpy()), 4),
               **m, "fit_s": round(fit_s, 1),
               "per_class_top1": {c: round(v, 4) for c, v in
                                  per_class_auroc(y, classes, post_top.reduce(maps).numpy()).items()}}
        rows.append(row)
        print(f"{name:<7} {backbone[-5:]} {cname:<10} {size[0]}px/{fm.grid[0]}"
              f" image AUROC max {row['image_auroc_max']:.4f}"
              f"  top-1% {row['image_auroc_top1']:.4f}  pixel AUROC {row['pixel_auroc']:.4f}"
              f"  AUPRO {row['aupro']:.4f}  fit {row['fit_s']:.1f} s", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sets", default="mtd,metal,weave,bottle", help="comma-separated data sets")
    p.add_argument("--configs", default=DEFAULT_CONFIGS, help=f"comma-separated configurations of {list(CONFIGS)}")
    p.add_argument("--work", type=Path, default=Path("/tmp/algan_patch_defaults"), help="where data sets are built")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the ALGAN-patch training (the patch sample is fixed)")
    p.add_argument("--size", type=int, default=SIZE[0], help="square input size in pixels (default 224)")
    p.add_argument("--stride", type=int, default=8, help="input pixels per patch cell (default 8: 28 x 28 at 224)")
    p.add_argument("--patches-per-image", type=int, default=128, help="training cells sampled per image (default 128)")
    p.add_argument("--backbone", default="efficientnet-lite0",
                   help="patch backbone (efficientnet-lite0/1/2 ship offline; default efficientnet-lite0)")
    p.add_argument("--json", action="store_true", help="also print the rows as JSON lines")
    p.add_argument("--smoke", action="store_true", help="seconds: tiny synthetic metal at 96 px, three heads")
    args = p.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    configs = [c for c in args.configs.split(",") if c]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        raise SystemExit(f"unknown configuration(s) {unknown}; use {', '.join(CONFIGS)}")
    size = (args.size, args.size)
    if args.smoke:
        import tempfile

        args.sets, configs, size = "metal", ["patchcore", "padim", "default"], (96, 96)
        args.work = Path(tempfile.mkdtemp(prefix="algan_patch_smoke_"))
    rows = sweep_sets(args.sets, args.work, args.smoke, data_sets,
                      lambda name, root, layout: run_set(name, root, layout, configs, size, args.smoke, args.seed,
                                                         args.stride, args.patches_per_image, args.backbone))
    return finish(rows, args.json)


if __name__ == "__main__":
    sys.exit(main())
