"""Border bias of the anomaly maps (not a test): per-location map normalisations against none, every patch head.

How ``PatchSpec.map_norm`` (the default per-location normalisation of the patch variant's maps) was chosen,
reproducibly. Per data set the patch features are extracted once
(:func:`algan.model.evaluation.patch_eval.build_eval_set`,
with the full maps of up to 200 training images for the statistics) and cached under ``--cache``; every patch head
(ALGAN-patch, PatchCore, PaDiM-style) is fitted once with the product code, its smoothed maps are computed once,
and every normalisation (``none``, ``mean``, ``standardize``; :class:`algan.features.patch.MapNormalization`,
fitted on the training images' maps as ``algan-train`` does) is applied to the same maps. ``--pad P`` measures the
other candidate, reflect padding of the input by P pixels before the backbone and cropping the feature maps back to
the input's grid (features extracted again).

Per data set, head and normalisation it prints image AUROC (top-1 % mean) with the paired bootstrap interval of its
difference to ``none``, pixel AUROC, AUPRO, recall at 1 % FPR (threshold on the test normals) and the localisation
figures of :mod:`algan.calibration.localisation` (border-peak fraction on normals, peak hit rate on all / flagged
defects, median region IoU on flagged defects; the maps calibrated as the product does, median normal score = 0,
threshold = 1).

Data sets: ``mtd`` (``$ALGAN_DATA_DIR/mtd``), ``ballscrew`` and ``pcb`` (``$ALGAN_DATA_DIR``, MVTec layout),
``metal``, ``weave`` (algan-synth) and ``bottle`` (video frames), built as benchmarks/patch_defaults.py builds them.

Usage::

    python benchmarks/map_border.py [--sets mtd,ballscrew,pcb,metal,weave,bottle] [--heads algan,patchcore,padim]
        [--norms none,mean,standardize] [--max-train N] [--max-test N] [--pad 32] [--cache DIR] [--json]
    python benchmarks/map_border.py --smoke     # seconds: a tiny synthetic set

Figures: benchmarks/RESULTS.md, "Session 11: border bias of the maps".
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._kit import finish, sweep_sets  # noqa: E402
from benchmarks.patch_defaults import build_bottle, build_synthetic  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ALGAN_DATA_DIR", REPO.parent / "shared" / "data"))
HEADS = ("algan", "patchcore", "padim")


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


class PaddedFeatureMaps:
    """Reflect-pad the normalised input by ``pad`` pixels, run the patch feature maps on the larger input and crop
    the grid back to the unpadded input's cells (``pad`` a multiple of the stride)."""

    def __init__(self, fm, pad: int, stride: int) -> None:
        self.fm, self.pad, self.cells = fm, pad, pad // stride
        self.grid = (fm.grid[0] - 2 * self.cells, fm.grid[1] - 2 * self.cells)
        self.out_dim = fm.out_dim

    def __call__(self, x):
        import torch.nn.functional as F

        m = self.fm(F.pad(x, (self.pad,) * 4, mode="reflect"))
        c = self.cells
        return m[:, :, c : m.shape[2] - c, c : m.shape[3] - c]


def eval_set(name: str, root: Path, layout: str, size: int, pad: int, cache: Path | None, max_test: int,
             max_train: int, smoke: bool, head: str = "algan"):
    """The patch features of one data set on ``head``'s default blocks (:func:`default_patch_blocks`), cached."""

    from algan.data.datasets import load_dataset
    from algan.features.backbone import Preprocess, make_spec
    from algan.features.patch import PatchFeatureMaps, PatchSpec, default_patch_blocks
    from algan.model.evaluation.patch_eval import build_eval_set

    ds = load_dataset(root, layout)
    test, train = list(ds.test), list(ds.train)
    if max_test and len(test) > max_test:
        keep = np.random.default_rng(0).choice(len(test), max_test, replace=False)
        test = [test[i] for i in sorted(keep.tolist())]
    if max_train and len(train) > max_train:
        keep = np.random.default_rng(0).choice(len(train), max_train, replace=False)
        train = [train[i] for i in sorted(keep.tolist())]
    blocks = default_patch_blocks("efficientnet-lite0", head)
    tag = "" if blocks == default_patch_blocks("efficientnet-lite0") else "-blocks" + "_".join(map(str, blocks))
    key = cache / f"{name}-{size}-pad{pad}-train{len(train)}-test{len(test)}{tag}.safetensors" if cache else None
    if key is not None and key.is_file():
        return ds, test, load_cached_set(key)
    pspec = PatchSpec()
    spec = make_spec("efficientnet-lite0", blocks, "avg", (size + 2 * pad, size + 2 * pad))
    fm = PatchFeatureMaps(spec, pspec).eval()
    if pad:
        fm = PaddedFeatureMaps(fm, pad, pspec.stride)
    pre = Preprocess(spec.mean, spec.std)
    t = time.perf_counter()
    ev = build_eval_set(pre, fm, pspec, train, test, (size, size), seed=0, with_masks=True,
                        n_stats=16 if smoke else 200)
    print(f"# {name}: {len(train)} train, {len(test)} test, features in {time.perf_counter() - t:.0f} s",
          flush=True)
    if key is not None:
        save_cached_set(ev, key)
    return ds, test, ev


def save_cached_set(ev, path: Path) -> None:
    """The tensors of a :class:`algan.model.evaluation.patch_eval.PatchEvalSet` the benchmarks read, as safetensors
    (no pickle; the fitted projection is not stored: the benchmarks use the projected vectors only)."""
    import torch
    from safetensors.torch import save_file

    arrays = {"train": torch.from_numpy(np.ascontiguousarray(ev.train)), "test": ev.test.contiguous(),
              "n_cells": torch.tensor([int(ev.n_cells)])}
    if ev.masks is not None:
        arrays["masks"] = torch.from_numpy(np.ascontiguousarray(ev.masks))
    if ev.stats is not None:
        arrays["stats"] = ev.stats.contiguous()
    if ev.sizes is not None:
        arrays["sizes"] = torch.from_numpy(np.ascontiguousarray(ev.sizes))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(arrays, str(path))


def load_cached_set(path: Path):
    """:func:`save_cached_set`'s file back as a ``PatchEvalSet`` (``projection`` None)."""
    from safetensors.torch import load_file

    from algan.model.evaluation.patch_eval import PatchEvalSet

    t = load_file(str(path))
    return PatchEvalSet(train=t["train"].numpy(), n_cells=int(t["n_cells"][0]), test=t["test"],
                        masks=t["masks"].numpy() if "masks" in t else None, projection=None,  # type: ignore[arg-type]
                        stats=t.get("stats"), sizes=t["sizes"].numpy() if "sizes" in t else None)


def smoothed_maps(head, post, feats, batch_size: int = 32):
    import torch

    head.eval()
    with torch.no_grad():
        return torch.cat([post.smooth(head(feats[i : i + batch_size].float())) for i in range(0, len(feats),
                                                                                               batch_size)])


def run_set(name: str, root: Path, layout: str, heads: list[str], norms: list[str], size: int, pad: int,
            cache: Path | None, max_test: int, max_train: int, smoke: bool) -> list[dict]:
    from algan.calibration.localisation import localisation_metrics
    from algan.features.patch import MapNormalization, MapPostprocess, PatchSpec
    from algan.model.evaluation.image_eval import auroc, paired_auroc_difference
    from algan.model.evaluation.patch_eval import pixel_metrics
    from algan.model.fit import FitSettings, fit_patch_head
    from algan.model.gan.feature import AlganConfig

    ds, test, ev = eval_set(name, root, layout, size, pad, cache, max_test, max_train, smoke)
    y = np.array([s.label for s in test])
    post = MapPostprocess(PatchSpec(map_norm="none"), (size, size))
    post_top = MapPostprocess(PatchSpec(map_norm="none"), (size, size))
    rows = []
    for head_name in heads:
        over = {"seed": 0, **({"epochs": 1, "min_steps": 20} if smoke else {})}
        settings = FitSettings(head=head_name, variant="patch", patch=PatchSpec(),
                               algan=AlganConfig.preset("patch", **over))
        t = time.perf_counter()
        head, *_ = fit_patch_head(settings, ev.train, ev.n_cells, False)
        fit_s = time.perf_counter() - t
        base = smoothed_maps(head, post, ev.test)
        stats = smoothed_maps(head, post, ev.stats)
        base_scores = None
        for norm in norms:
            maps = base if norm == "none" else MapNormalization(norm, post.map_size).fit(stats)(base)
            scores = post_top.reduce(maps).numpy()
            if base_scores is None:
                base_scores = scores
            normal = scores[y == 0]
            thr = float(np.quantile(normal, 0.99, method="higher"))
            center = float(np.median(normal))
            flagged = scores > thr
            cal = ((maps - center) / max(thr - center, 1e-12)).numpy()
            loc = localisation_metrics(cal, y, ev.masks, flagged, ev.sizes)
            d, lo, hi = paired_auroc_difference(y, scores, base_scores)
            row = {"data": name, "head": head_name, "norm": norm, "pad": pad, "n_test": len(test),
                   "image_auroc": round(auroc(y, scores), 4), "auroc_diff": [round(d, 4), round(lo, 4), round(hi, 4)],
                   **pixel_metrics(maps, ev.masks), "recall_1pct": round(float(flagged[y == 1].mean()), 4),
                   **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in loc.items()},
                   "fit_s": round(fit_s, 1)}
            rows.append(row)

            def f(v) -> str:
                return f"{v:.3f}" if v is not None else "  -  "

            print(f"{name:<9} {head_name:<9} {norm:<11} pad{pad:<2} AUROC {row['image_auroc']:.4f} "
                  f"({d:+.4f} [{lo:+.4f},{hi:+.4f}])  pixAUC {f(row['pixel_auroc'])}  AUPRO {f(row['aupro'])}  "
                  f"rec@1% {row['recall_1pct']:.3f}  border {f(row['border_peak_fraction'])}  "
                  f"hit {f(row['peak_hit_rate'])}/{f(row['peak_hit_rate_flagged'])}  "
                  f"IoU {f(row['region_iou'])} (n={row['n_flagged_defects']})", flush=True)
        del base, stats
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sets", default="mtd,ballscrew,pcb,metal,weave,bottle", help="comma-separated data sets")
    p.add_argument("--heads", default="algan,patchcore,padim", help="comma-separated patch heads")
    p.add_argument("--norms", default="none,mean,standardize", help="comma-separated map normalisations")
    p.add_argument("--std-floor", type=float, default=None,
                   help="standardize: floor of the per-location standard deviation, a fraction of its median over "
                   "the map (default: algan.features.patch.STD_FLOOR)")
    p.add_argument("--pad", type=int, default=0, help="reflect-pad the input by this many pixels (multiple of 8)")
    p.add_argument("--size", type=int, default=224, help="square input size in pixels (default 224)")
    p.add_argument("--max-test", type=int, default=0, help="score a seeded subset of this many test images (0 = all)")
    p.add_argument("--max-train", type=int, default=0, help="train on a seeded subset of this many images (0 = all)")
    p.add_argument("--work", type=Path, default=Path("/tmp/algan_patch_defaults"), help="where data sets are built")
    p.add_argument("--cache", type=Path, default=None, help="cache the extracted features here")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--json", action="store_true", help="also print the rows as JSON lines")
    p.add_argument("--smoke", action="store_true", help="seconds: tiny synthetic metal at 96 px")
    args = p.parse_args(argv)
    if args.std_floor is not None:
        import algan.features.patch as patch_module

        patch_module.STD_FLOOR = args.std_floor
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    heads = [h for h in args.heads.split(",") if h]
    if any(h not in HEADS for h in heads):
        raise SystemExit(f"unknown head in {heads}; use {', '.join(HEADS)}")
    norms = [n for n in args.norms.split(",") if n]
    if norms and norms[0] != "none":
        norms = ["none", *[n for n in norms if n != "none"]]  # the bootstrap differences are to none
    if args.pad % 8:
        raise SystemExit(f"--pad must be a multiple of the patch stride 8, got {args.pad}")
    size = args.size
    if args.smoke:
        import tempfile

        args.sets, size, args.cache = "metal", 96, None
        args.work = Path(tempfile.mkdtemp(prefix="algan_border_smoke_"))
    rows = sweep_sets(args.sets, args.work, args.smoke, data_sets,
                      lambda name, root, layout: run_set(name, root, layout, heads, norms, size, args.pad, args.cache,
                                                         args.max_test, args.max_train, args.smoke))
    return finish(rows, args.json)


if __name__ == "__main__":
    sys.exit(main())
