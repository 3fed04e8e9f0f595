"""Tiled inference benchmark (not a test): image AUROC of patch and feature heads at several tile grids.

For each tile grid (``none`` = the whole ROI resized to the input, as without tiling) and each head, the detector is
fitted exactly as ``algan-train --tiles GRID`` fits it (:func:`algan.model.fit.fit_detector`: trained on the tiles of
the normals, calibrated on stitched frame scores), and the test images are scored as every runner scores them
(:meth:`algan.model.detector.AnomalyDetector.frame_raw_scores`: tiles in one batch, maps stitched with overlaps
averaged, the head's reduction of the stitched map). Printed per row: grid, head, image AUROC, recall at the
calibrated threshold (the held-out normals' 1 % FPR level), fit seconds and scoring milliseconds per frame (torch,
CPU; the patch heads of one grid share one backbone pass, :func:`shared_feature_maps`, so only the first head's
times include the backbone).

Usage::

    python -m benchmarks.tiling --data ../shared/data/pcb --grids none,2x2,3x3 --heads padim,patchcore,algan \\
        [--max-train 100] [--max-test 100] [--overlap 0.25] [--json out.json]
    python -m benchmarks.tiling --smoke      # seconds: a synthetic texture set, figures not comparable
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np


def _subset(ds, max_train: int | None, max_test: int | None, seed: int):  # noqa: ANN001, ANN202
    """A seeded subset: at most ``max_train`` training images and ``max_test`` test images per label."""
    rng = np.random.default_rng(seed)
    train = list(ds.train)
    if max_train is not None and len(train) > max_train:
        train = [train[i] for i in sorted(rng.choice(len(train), max_train, replace=False).tolist())]
    test = list(ds.test)
    if max_test is not None:
        keep = []
        for label in (0, 1):
            idx = [i for i, s in enumerate(test) if s.label == label]
            if len(idx) > max_test:
                idx = sorted(rng.choice(idx, max_test, replace=False).tolist())
            keep += idx
        test = [test[i] for i in sorted(keep)]
    return replace(ds, train=train, test=test)


def shared_feature_maps():  # noqa: ANN201
    """A :class:`~algan.features.patch.PatchFeatureMaps` whose outputs are kept (float16) per input batch, keyed by
    the batch's bytes: the heads of one grid see the same tile batches in the same order, so the backbone runs once
    per grid instead of once per head (the heads' fits and scores are unchanged up to the float16 rounding of
    features shared by all heads). Benchmark-only; the memory is freed with the class."""
    import hashlib

    import torch

    from algan.features.patch import PatchFeatureMaps

    class SharedFeatureMaps(PatchFeatureMaps):
        cache: dict[tuple, torch.Tensor] = {}

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            key = (tuple(x.shape), hashlib.blake2b(x.detach().contiguous().numpy().tobytes(), digest_size=16).digest())
            hit = self.cache.get(key)
            if hit is None:
                hit = super().forward(x).half()
                self.cache[key] = hit
            return hit.float()

    return SharedFeatureMaps


def _other_reductions(det, paths, labels) -> dict:  # noqa: ANN001
    """Image AUROC of the same stitched maps under other reductions (no second backbone pass: the maps are the
    shared ones): ``max``; ``topk_mean`` over the head's k cells of ONE tile's map (``topk_tile``, the same area as
    the untiled head averages) instead of ``topk`` of the stitched map's cells."""
    import math

    from algan.model.evaluation.image_eval import auroc
    from algan.runtime.preprocess import prepare_roi, read_image
    from algan.runtime.tiling import TileSpec

    saved = det.tiling
    det.tiling = saved or TileSpec(1, 1)  # 1 x 1 = the whole ROI resized, as untiled
    maps = []
    for i in range(0, len(paths), 32):
        maps += det.frame_outputs([prepare_roi(read_image(p)) for p in paths[i : i + 32]], 32).maps
    det.tiling = saved
    k = max(1, math.ceil(det.postprocess.topk * det.map_size[0] * det.map_size[1]))
    top = np.array([np.sort(m.ravel())[-k:].mean() for m in maps])
    mx = np.array([m.max() for m in maps])
    return {"auroc_topk_tile": round(auroc(labels, top), 4), "auroc_max": round(auroc(labels, mx), 4)}


def run(args: argparse.Namespace) -> list[dict]:
    import torch

    from algan.data.datasets import load_dataset
    from algan.features.backbone import make_spec
    from algan.features.patch import PatchSpec, default_patch_blocks
    from algan.model.evaluation.image_eval import auroc
    from algan.model.fit import FitSettings, fit_detector, frame_raw_scores
    from algan.model.gan.feature import AlganConfig
    from algan.runtime.tiling import parse_tiles

    torch.set_num_threads(max(1, args.threads))
    ds = _subset(load_dataset(args.data, args.layout), args.max_train, args.max_test, args.seed)
    labels = np.array([s.label for s in ds.test])
    paths = [s.path for s in ds.test]
    rows = []
    from unittest import mock

    import algan.model.fit as fit_module

    for grid in args.grids.split(","):
        tiling = None if grid == "none" else parse_tiles(grid, args.overlap)
        shared = shared_feature_maps()
        for head in args.heads.split(","):
            variant = "feature" if head in ("mahalanobis", "knn") else "patch"
            blocks = default_patch_blocks(args.backbone) if variant == "patch" else None
            spec = make_spec(args.backbone, blocks, None, (args.input_size, args.input_size), None)
            algan_cfg = AlganConfig.preset("patch", seed=args.seed) if variant == "patch" else AlganConfig(
                seed=args.seed)
            if args.smoke and head == "algan":
                algan_cfg = replace(algan_cfg, epochs=2, min_steps=0)
            settings = FitSettings(head=head, variant=variant, backbone=spec, algan=algan_cfg, seed=args.seed,
                                   patch=PatchSpec(), tiling=tiling)
            t0 = time.perf_counter()
            with mock.patch.object(fit_module, "PatchFeatureMaps", shared):
                res = fit_detector(ds, settings, progress=False)
                fit_s = time.perf_counter() - t0
                det = res.detector
                t0 = time.perf_counter()
                raw = frame_raw_scores(det, paths, 32)
                ms = (time.perf_counter() - t0) * 1000.0 / max(len(paths), 1)
                alt = _other_reductions(det, paths, labels) if det.has_maps else {}
            thr = res.manifest.calibration.threshold
            row = {"data": Path(args.data).name, "grid": grid, "overlap": args.overlap if tiling else None,
                   "head": f"{variant}:{head}", "auroc": round(auroc(labels, raw), 4),
                   "recall_at_cal": round(float((raw[labels == 1] >= thr).mean()), 4),
                   "fpr_at_cal": round(float((raw[labels == 0] >= thr).mean()), 4),
                   "n_train": len(ds.train), "n_test": len(paths), "fit_s": round(fit_s, 1),
                   "ms_per_frame": round(ms, 1), **alt}
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def _smoke_data(root: Path) -> Path:
    """A tiny MVTec-layout set: 384 px noise textures, defects = 6 px bright spots (lost at 64 px whole-frame)."""
    import cv2

    rng = np.random.default_rng(0)

    def texture() -> np.ndarray:
        return cv2.GaussianBlur(rng.integers(90, 160, (384, 384, 3), dtype=np.uint8), (5, 5), 0)

    for sub, n in (("train/good", 12), ("test/good", 6), ("test/spot", 6)):
        d = root / sub
        d.mkdir(parents=True)
        for i in range(n):
            img = texture()
            if sub == "test/spot":
                y, x = rng.integers(20, 360, 2)
                img[y : y + 6, x : x + 6] = 255
            cv2.imwrite(str(d / f"{i:03d}.png"), img)
    return root


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None)
    p.add_argument("--layout", default="auto")
    p.add_argument("--grids", default="none,2x2,3x3")
    p.add_argument("--heads", default="padim,patchcore,algan")
    p.add_argument("--overlap", type=float, default=0.25)
    p.add_argument("--backbone", default="efficientnet-lite0")
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--max-train", type=int, default=None)
    p.add_argument("--max-test", type=int, default=None, help="test images per label (normal, anomalous)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None, help="write the rows to this file")
    p.add_argument("--smoke", action="store_true", help="a synthetic set at 64 px, seconds; figures not comparable")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        if args.smoke:
            args.data = str(_smoke_data(Path(tmp) / "smoke"))
            args.input_size, args.grids, args.heads = 64, "none,2x2", "padim"
        elif args.data is None:
            p.error("--data is required (or --smoke)")
        rows = run(args)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
