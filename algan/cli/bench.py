"""``algan-bench detection``: every head on the same features in one run -> AUROC and timings.

Rows: ``dataset, variant, head, auroc, recall_at_fpr, train_s, head_ms, backbone_ms, pixel_auroc, aupro, mask_f1,
model_mb`` (recall_at_fpr: the share of test defects flagged at the threshold algan-calibrate would set for
``--target-fpr`` on the test normals, :func:`algan.model.evaluation.threshold.recall_at_fpr`; head_ms and backbone_ms
are
per image, batch 32, this machine's CPU, measured in the same run so their ratio is meaningful; pixel_auroc, aupro
and mask_f1 are null for image-level heads and data sets without masks; mask_f1 is the pooled pixel F1 of the
predicted defect masks at thresholds calibrated on half the test normals,
:func:`algan.model.evaluation.patch_eval.calibrated_mask_f1`; model_mb is the head's stored tensors). ``--variants
patch``
adds a row per patch head (ALGAN-patch, PatchCore, PaDiM-style) on the same patch features; for those,
backbone_ms includes the patch aggregation and projection and head_ms the map postprocess, and the rows add the
localisation figures ``border_peak_fraction, peak_hit_rate, peak_hit_rate_flagged, region_iou``
(:mod:`algan.calibration.localisation`; null without masks; flagged = above the threshold at 1 % false alarms on the
test normals).
``--variants`` with both feature and patch adds a row ``"head": "auto"`` with ``"chosen": "<variant>:<head>"``: the
head ``algan-train --head auto`` picks (:mod:`algan.model.select`), with that head's test figures; on frames much
larger than the input the patch heads also compete on tiles, as in algan-train, and a tiled choice
(``"chosen": "patch:algan@3x3"``) is fitted and scored as its bundle (:func:`tiled_auto_row`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from algan.cli._common import add_version, input_size, run_cli, setup_logging

#: the localisation figures of the patch rows (:func:`localisation`)
LOCALISATION_KEYS = ("border_peak_fraction", "peak_hit_rate", "peak_hit_rate_flagged", "region_iou")


def _recall(y: np.ndarray, scores: np.ndarray, target_fpr: float) -> float | None:
    """``recall_at_fpr`` of a row: the share of the test split's defect images flagged at the threshold
    algan-calibrate would set for ``target_fpr`` on its normal test images
    (:func:`algan.model.evaluation.threshold.recall_at_fpr`); ``None`` with fewer than 20 normal test images."""
    from algan.model.evaluation.threshold import MIN_SCORES, recall_at_fpr

    y = np.asarray(y)
    if int((y == 0).sum()) < MIN_SCORES:
        return None
    r = recall_at_fpr(scores[y == 0], scores[y == 1], target_fpr)
    return None if r is None else round(r, 4)


def _time_per_image(fn, x, repeats: int = 3) -> float:
    """Best-of-``repeats`` wall time of ``fn(x)`` divided by len(x), in milliseconds."""
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn(x)
        best = min(best, time.perf_counter() - t)
    return best / len(x) * 1000.0


def bench_detection(args: argparse.Namespace) -> tuple[list[dict], list[np.ndarray], np.ndarray]:
    """Run the benchmark; returns the rows, each row's raw test scores float (M,) and the test labels int (M,)."""
    import torch

    from algan.cli.train import backbone_spec_from_args
    from algan.data.datasets import load_dataset
    from algan.features.backbone import Preprocess, build_backbone
    from algan.model.evaluation.image_eval import auroc
    from algan.model.fit import FitSettings, extract_features, fit_head
    from algan.model.gan.feature import AlganConfig
    from algan.model.heads.vector import FeatureTransform
    from algan.runtime.preprocess import load_batch

    torch.manual_seed(args.seed)
    variants = args.variants.split(",")
    # the backbone's package and weights are checked before any data is read
    spec = backbone_spec_from_args(args, args.input_size) if "feature" in variants else None
    ds = load_dataset(args.data, args.layout)
    if not ds.test:
        raise ValueError(f"{ds.root} has no labelled test split; use an mvtec or mtd layout")
    train = ds.train
    if args.max_train and len(train) > args.max_train:
        keep = np.random.default_rng(args.seed).choice(len(train), args.max_train, replace=False)
        train = [train[i] for i in sorted(keep.tolist())]
    y = np.array([s.label for s in ds.test])
    rows, all_scores = [], []
    if "image" in variants:
        row, scores = bench_image(args, ds, train, y)
        rows.append(row)
        all_scores.append(scores)
        if args.json:
            print(json.dumps(rows[-1]), flush=True)
    if "patch" in variants:
        for row, scores in bench_patch(args, ds, train, y):
            rows.append(row)
            all_scores.append(scores)
            if args.json:
                print(json.dumps(row), flush=True)
    if "feature" not in variants:
        if "patch" in variants and not args.json:
            print("# no auto row: --head auto lets the feature and the patch heads compete; use --variants "
                  "feature,patch for it", file=sys.stderr)
        return rows, all_scores, y
    backbone, pre = build_backbone(spec), Preprocess(spec.mean, spec.std)
    size = spec.input_size
    progress = not args.json
    f_train = extract_features(pre, backbone, train, size, 32, "features (train)" if progress else None)
    f_test = extract_features(pre, backbone, [s.path for s in ds.test], size, 32,
                              "features (test)" if progress else None)
    sample = torch.from_numpy(load_batch([s.path for s in ds.test[:32]], size))
    with torch.no_grad():
        backbone_ms = _time_per_image(lambda x: backbone(pre(x)), sample)
    transform = FeatureTransform.fit(f_train, "standardize")
    with torch.no_grad():
        x_train = transform(torch.from_numpy(f_train)).numpy()
        x_test = torch.from_numpy(transform(torch.from_numpy(f_test)).numpy())
    runs = [("algan", p) for p in args.presets.split(",") if "algan" in args.heads.split(",")]
    runs += [(h, None) for h in args.heads.split(",") if h != "algan"]
    for head_name, preset in runs:
        overrides = {"seed": args.seed}
        if args.epochs:
            overrides.update(epochs=args.epochs, min_steps=0)  # explicit epochs: no step floor
        settings = FitSettings(head=head_name, algan=AlganConfig.preset(preset, **overrides) if preset else
                               AlganConfig(), knn_k=args.knn_k, knn_metric=args.knn_metric,
                               seed=args.seed)
        t = time.perf_counter()
        head, *_ = fit_head(settings, x_train, progress)
        train_s = time.perf_counter() - t
        head.eval()
        with torch.no_grad():
            scores = head(x_test).numpy()
            head_ms = _time_per_image(head, x_test[:32])
        all_scores.append(scores)
        rows.append({
            "dataset": f"{ds.root.name}({ds.layout})",
            "variant": "feature" if spec.name == "efficientnet-lite0" else f"feature:{spec.name}",
            "head": head_name if preset is None else f"algan[{preset}]",
            "auroc": round(auroc(y, scores), 4),
            "recall_at_fpr": _recall(y, scores, args.target_fpr),
            "train_s": round(train_s, 2),
            "head_ms": round(head_ms, 4),
            "backbone_ms": round(backbone_ms, 2),
            "pixel_auroc": None,
            "aupro": None,
            "mask_f1": None,
            "model_mb": round(_state_mb(head), 3),
        })
        if args.json:
            print(json.dumps(rows[-1]), flush=True)
    if "patch" in variants:
        auto = bench_auto(args, ds, rows, all_scores)
        if auto is not None:
            rows.append(auto[0])
            all_scores.append(auto[1])
            if args.json:
                print(json.dumps(rows[-1]), flush=True)
    return rows, all_scores, y


def auto_candidates(args: argparse.Namespace) -> dict:
    """``{"variant:head": FitSettings}`` of every candidate that ``algan-train --head auto`` would build from this
    benchmark's backbone, patch, seed, epochs, kNN, target-FPR and max-train flags."""
    from algan.cli.train import PATCH_FLAGS, build_parser, fit_settings

    targs = build_parser().parse_args(["--data", ".", "--out", ".", "--head", "auto"])
    shared = ("backbone", "backbone_weights", "blocks", "pooling", "seed", "epochs", "knn_k", "knn_metric",
              "target_fpr", "max_train", *PATCH_FLAGS)
    for name in shared:
        setattr(targs, name, getattr(args, name))
    targs.input_size, targs.variant = tuple(args.input_size), "auto"  # (H, W), normalised by _main
    from algan.model.select import candidates_for

    return {n: fit_settings(targs, *n.split(":")) for n in candidates_for("auto")}


def bench_auto(args: argparse.Namespace, ds, rows: list[dict], scores: list[np.ndarray]):
    """The ``"head": "auto"`` row: the head ``algan-train --head auto`` picks on this training set
    (:func:`algan.model.select.select_heads`, with the tiled candidates ``algan-train`` adds where the frames are much
    larger than the input, :func:`algan.runtime.tiling.auto_grid`), with ``"chosen": "<variant>:<head>[@RxC]"`` and
    ``train_s`` = the selection's time. A whole-frame choice takes the test figures of that head's row of this run
    (``None`` and a note when it has none: not among --heads / --patch-heads); a tiled choice, which has no row, is
    fitted and scored as the product does it (:func:`tiled_auto_row`)."""
    from algan.cli.train import auto_candidates_for
    from algan.model.select import (
        MIN_FIT_IMAGES,
        MIN_HELD_OUT,
        TooFewHeldOut,
        format_table,
        select_heads,
        split_candidate,
    )

    def say(line: str) -> None:
        print(f"# auto: {line}", file=sys.stderr, flush=True)

    candidates = auto_candidates_for(auto_candidates(args), ds.train, tuple(args.input_size), args.blocks is not None,
                                     False, None if args.json else say)
    t = time.perf_counter()
    try:
        sel = select_heads(ds, candidates, progress=not args.json)
    except ValueError as e:  # e.g. too few held-out normals for a threshold: the other rows still stand
        need = MIN_HELD_OUT + MIN_FIT_IMAGES
        advice = "" if not isinstance(e, TooFewHeldOut) else \
            f": raise --max-train to {need} or more" if len(ds.train) >= need else \
            f": the data set needs {need} or more normal training images"
        print(f"# no auto row: {e}{advice}", file=sys.stderr)
        return None
    train_s = time.perf_counter() - t
    variant, head, tiles = split_candidate(sel.chosen.name)
    if not args.json:
        print(format_table(sel.chosen.name, sel.results, args.target_fpr), flush=True)
    if tiles is not None:
        return tiled_auto_row(args, ds, candidates[sel.chosen.name], sel, train_s)
    want = f"{head}-patch" if variant == "patch" else ("algan[default]" if head == "algan" else head)
    for row, sc in zip(rows, scores, strict=True):
        if row["head"] == want and row["variant"].split(":")[0] == variant:
            return {**row, "head": "auto", "chosen": sel.chosen.name, "train_s": round(train_s, 2)}, sc
    print(f"# auto chose {sel.chosen.name}, which has no row in this run (add it to --heads / --patch-heads)",
          file=sys.stderr)
    return None


def tiled_auto_row(args: argparse.Namespace, ds, settings, sel, select_s: float) -> tuple[dict, np.ndarray]:
    """The auto row of a tiled choice: the bundle ``algan-train --head auto`` writes for it
    (:func:`algan.model.fit.fit_detector` on the selection's cached features and fitted head, as
    :func:`algan.model.select.fit_auto`), scored on the whole test split as ``algan-eval`` scores a bundle (tiles cut,
    scored and stitched by the detector). ``auroc`` and ``recall_at_fpr`` as every row; the pixel and localisation
    figures as the patch rows' (maps recalibrated on the test normals); ``head_ms``/``backbone_ms`` are ``None`` (one
    frame is several graph runs); ``train_s`` = selection + bundle fit. Returns ``(row, test image scores (M,))``."""
    import torch

    from algan.model.evaluation.image_eval import auroc, evaluate
    from algan.model.evaluation.patch_eval import calibrated_mask_f1
    from algan.model.evaluation.pixel_eval import evaluate_maps, pixel_metrics_unavailable
    from algan.model.fit import FitCache, fit_detector

    t = time.perf_counter()
    fitted = fit_detector(ds, settings, False, cache=FitCache(sel.raw[sel.chosen.name], sel.chosen.fitted))
    det = fitted.detector.eval()
    train_s = select_s + time.perf_counter() - t
    y = np.array([s.label for s in ds.test])
    keys = ("pixel_auroc", "aupro", "mask_f1")
    if pixel_metrics_unavailable(det, ds.test) is None:
        pix = evaluate_maps(det, ds, pixel_level=fitted.manifest.calibration.pixel_level)
        scores = np.asarray(pix["scores"], dtype=np.float64)
        figures = {"pixel_auroc": pix["pixel_auroc"], "aupro": pix["aupro"],
                   "mask_f1": calibrated_mask_f1(torch.from_numpy(pix["maps"]), scores, pix["masks"], y, args.seed)}
        figures = {k: None if v is None else round(float(v), 4) for k, v in figures.items()}
        loc = localisation(pix["maps"], scores, y, pix["masks"], pix["frame_sizes"])
    else:
        scores = np.asarray(evaluate(det, ds, progress=False)["scores"], dtype=np.float64)
        figures, loc = dict.fromkeys(keys), dict.fromkeys(LOCALISATION_KEYS)
    return {
        "dataset": f"{ds.root.name}({ds.layout})",
        "variant": "patch",
        "head": "auto",
        "chosen": sel.chosen.name,
        "blocks": list(settings.backbone.blocks),
        "auroc": round(auroc(y, scores), 4),
        "recall_at_fpr": _recall(y, scores, args.target_fpr),
        "train_s": round(train_s, 2),
        "head_ms": None,
        "backbone_ms": None,
        **figures,
        **loc,
        "model_mb": round(_state_mb(det.head), 3),
    }, scores


def _state_mb(module) -> float:
    """Size of a module's stored tensors (parameters and buffers) in MB (10^6 bytes), as the bundle stores them."""
    return sum(t.numel() * t.element_size() for t in module.state_dict().values()) / 1e6


def bench_patch(args: argparse.Namespace, ds, train, y: np.ndarray) -> list[tuple[dict, np.ndarray]]:
    """Every patch head (``--patch-heads``) on its patch features (one extraction per block set; without
    ``--blocks`` each head takes its default, :func:`algan.features.patch.default_patch_blocks`): rows with image
    AUROC, pixel AUROC and AUPRO (when the data set has masks), the blocks, train time, head and backbone ms per image
    (batch 32, same run) and the stored head size; returns ``(row, raw test image scores)`` per head.

    ALGAN-patch with its global branch (``--global-weight`` > 0, the default) is fitted as ``algan-train`` fits it:
    on the training images outside a seeded fifth (:func:`algan.model.evaluation.patch_eval.scale_indices`), whose
    scores set the branch's scales as the held-out normals do in the product; the other heads see every image."""
    import torch

    from algan.cli.train import backbone_spec_from_args, patch_spec_from_args
    from algan.features.backbone import Preprocess
    from algan.features.patch import MapPostprocess, PatchFeatureMaps
    from algan.model.evaluation.image_eval import auroc
    from algan.model.evaluation.patch_eval import (
        build_eval_set,
        calibrated_mask_f1,
        fit_map_norm,
        pixel_metrics,
        scale_indices,
    )
    from algan.model.fit import FitSettings, fit_patch_head
    from algan.model.gan.feature import PATCH_SCHEDULE, AlganConfig
    from algan.model.heads.patch import GLOBAL_WEIGHT, MIN_BRANCH_NORMALS, scale_global_branch, scores_and_maps
    from algan.runtime.preprocess import load_batch

    size = args.input_size
    pspec = patch_spec_from_args(args)
    post = MapPostprocess(pspec, size)
    global_weight = args.global_weight if args.global_weight is not None else GLOBAL_WEIGHT
    progress = not args.json
    features: dict[str, tuple] = {}  # one extraction per distinct block set (PatchCore's default blocks differ)
    out = []
    for head_name in args.patch_heads.split(","):
        spec = backbone_spec_from_args(argparse.Namespace(**{**vars(args), "variant": "patch"}), size, head_name)
        if (key := repr(spec)) not in features:
            fm, pre = PatchFeatureMaps(spec, pspec), Preprocess(spec.mean, spec.std)
            ev = build_eval_set(pre, fm, pspec, train, ds.test, size, args.seed, getattr(ds, "has_masks", False),
                                desc=f"patches (train, blocks {spec.blocks})" if progress else None,
                                global_branch=global_weight > 0 and "algan" in args.patch_heads.split(","))
            with torch.no_grad():
                sample = torch.from_numpy(load_batch([s.path for s in ds.test[:32]], size))
                ms = _time_per_image(lambda u, fm=fm, pre=pre, proj=ev.projection: proj(fm(pre(u))), sample)
            features[key] = (ev, ms)
        ev, backbone_ms = features[key]
        proj = ev.projection
        overrides = {"seed": args.seed, **({"epochs": args.epochs, "min_steps": 0} if args.epochs else {})}
        settings = FitSettings(head=head_name, variant="patch", patch=pspec, seed=args.seed,
                               algan=AlganConfig.preset("patch", **{**PATCH_SCHEDULE, **overrides}),
                               coreset_ratio=args.coreset_ratio if args.coreset_ratio is not None else 0.01,
                               global_weight=global_weight)
        t = time.perf_counter()
        pooled, x_train, n_cells = None, ev.train, ev.n_cells
        if ev.pooled is not None and head_name == "algan" and len(scale_indices(len(ev.pooled), args.seed)) < \
                MIN_BRANCH_NORMALS:  # too few images to scale the branch on: algan-train ships without it too
            settings.global_weight = 0.0
        if ev.pooled is not None and head_name == "algan" and settings.global_weight > 0:
            # as algan-train: the head and its global branch on the training images outside a seeded fifth, whose
            # scores (unseen by both) set the branch's scales, as algan-train's held-out normals do
            n = len(ev.pooled)
            held = scale_indices(n, args.seed)
            pooled = np.delete(ev.pooled, held, axis=0)
            per = len(ev.train) // n  # extract_patches keeps each image's cells together, image by image
            x_train = np.delete(ev.train.reshape(n, per, -1), held, axis=0).reshape(-1, ev.train.shape[1])
            n_cells = ev.n_cells * (n - len(held)) // n
        head, *_ = fit_patch_head(settings, x_train, n_cells, progress, pooled)
        fit_map_norm(head, post, ev.stats)  # the per-location map statistics, as algan-train fits them
        if ev.scale is not None:  # scaled on the training fifth it was not trained on (algan-train: the hold-out)
            scale_global_branch(head, post, ev.scale, args.target_fpr)
        train_s = time.perf_counter() - t
        head.eval()
        with torch.no_grad():
            outs = [scores_and_maps(head, post, ev.test[i : i + 32].float()) for i in range(0, len(ev.test), 32)]
            head_ms = _time_per_image(lambda f, h=head: scores_and_maps(h, post, f)[0], ev.test[:32].float())
        scores = torch.cat([s for s, _ in outs]).numpy()
        maps = torch.cat([m for _, m in outs])
        loc = localisation(maps.numpy(), scores, y, ev.masks, ev.sizes)
        pixel = pixel_metrics(maps, ev.masks)
        pixel["mask_f1"] = calibrated_mask_f1(maps, scores, ev.masks, y, args.seed)
        out.append(({
            "dataset": f"{ds.root.name}({ds.layout})",
            "variant": "patch" if spec.name == "efficientnet-lite0" else f"patch:{spec.name}",
            "head": f"{head_name}-patch",
            "blocks": list(spec.blocks),
            **({"global_weight": settings.global_weight} if head_name == "algan" else {}),
            "auroc": round(auroc(y, scores), 4),
            "recall_at_fpr": _recall(y, scores, args.target_fpr),
            "train_s": round(train_s, 2),
            "head_ms": round(head_ms, 4),
            "backbone_ms": round(backbone_ms, 2),
            **pixel,
            **loc,
            "model_mb": round(_state_mb(head) + _state_mb(proj), 3),
        }, scores))
    return out


def localisation(maps: np.ndarray, scores: np.ndarray, y: np.ndarray, masks: np.ndarray | None,
                 frame_sizes: np.ndarray | None) -> dict:
    """The localisation figures (:func:`algan.calibration.localisation.localisation_metrics`) of raw maps (N, h, w),
    calibrated as a bundle is but on the test normals: 0 = their median image score, 1 = the threshold at 1 %
    false alarms among them (the flagged images are those above it). All ``None`` without masks."""
    from algan.calibration.localisation import localisation_metrics

    if masks is None or not (y == 0).any():
        return dict.fromkeys(LOCALISATION_KEYS)
    normal = scores[y == 0]
    thr = float(np.quantile(normal, 0.99, method="higher"))
    center = float(np.median(normal))
    cal = (maps - center) / max(thr - center, 1e-12)
    loc = localisation_metrics(cal, y, masks, scores > thr, frame_sizes)
    return {k: None if loc[k] is None else round(loc[k], 4) for k in LOCALISATION_KEYS}


def bench_image(args: argparse.Namespace, ds, train, y: np.ndarray) -> tuple[dict, np.ndarray]:
    """ALGAN-image on pixels at ``--image-size``: one row (``backbone_ms`` = the in-graph preprocessing) and the
    final head's raw test scores."""
    import torch

    from algan.features.backbone import Preprocess
    from algan.model.evaluation.image_eval import auroc
    from algan.model.gan.image import PIXEL_MEAN, PIXEL_STD, ImageConfig, PixelBackbone, pixels, train_algan_image
    from algan.runtime.preprocess import load_batch

    size = (args.image_size, args.image_size)
    overrides = {"seed": args.seed, **({"epochs": args.epochs} if args.epochs else {})}
    preset = args.presets.split(",")[0]
    cfg = ImageConfig.preset(preset, size=args.image_size, channels=args.channels, **overrides)
    pre, bb = Preprocess(PIXEL_MEAN, PIXEL_STD), PixelBackbone(cfg.channels)
    x_train = pixels(pre, bb, load_batch(train, size))
    test_u8 = load_batch([s.path for s in ds.test], size)
    x_test = pixels(pre, bb, test_u8)
    with torch.no_grad():
        pre_ms = _time_per_image(lambda u: bb(pre(u)), torch.from_numpy(test_u8[:32]))
    eval_s = 0.0  # time spent on --eval-every evaluations, not counted as training time

    def row(head, epochs: int, train_s: float, head_ms: float | None, scores: np.ndarray | None = None) -> dict:
        s_row = _image_scores(head, x_test) if scores is None else scores
        return {
            "dataset": f"{ds.root.name}({ds.layout})",
            "variant": f"image{args.image_size}",
            "head": f"algan-image[{preset},{epochs}ep]",
            "auroc": round(auroc(y, s_row), 4),
            "recall_at_fpr": _recall(y, s_row, args.target_fpr),
            "train_s": round(train_s, 2),
            "head_ms": None if head_ms is None else round(head_ms, 4),
            "backbone_ms": round(pre_ms, 4),
            "pixel_auroc": None,
            "aupro": None,
            "mask_f1": None,
            "model_mb": round(_state_mb(head), 3),
        }

    def on_epoch(epoch: int, head) -> None:
        # AUROC along the run, so that a long (GPU) run cut short still leaves its figures behind; head_ms is
        # null here (the head may sit on the GPU): the final row times the trained head on the CPU
        nonlocal eval_s
        if epoch % args.eval_every or epoch == cfg.epochs:
            return
        t_eval = time.perf_counter()
        r = row(head, epoch, t_eval - t - eval_s, None)
        print(json.dumps(r) if args.json else f"epoch {epoch}: AUROC {r['auroc']:.4f}", flush=True)
        eval_s += time.perf_counter() - t_eval

    t = time.perf_counter()
    result = train_algan_image(x_train, cfg, progress=not args.json, on_epoch=on_epoch if args.eval_every else None)
    train_s = time.perf_counter() - t - eval_s
    head = result.head.eval()
    with torch.no_grad():
        head_ms = _time_per_image(head, x_test[:32])
    scores = _image_scores(head, x_test)
    return row(head, cfg.epochs, train_s, head_ms, scores), scores


def _image_scores(head, x) -> np.ndarray:
    """Raw scores of images float32 (N, C, S, S) by an image head on whatever device it sits on."""
    import torch

    dev = next(head.parameters()).device
    with torch.no_grad():
        return torch.cat([head(x[i : i + 64].to(dev)).cpu() for i in range(0, len(x), 64)]).numpy()


def _main(args: argparse.Namespace) -> int:
    if args.what != "detection":
        raise ValueError(f"unknown benchmark {args.what!r}; use detection (the edge benchmark is benchmarks/edge.py)")
    args.input_size = input_size(args.input_size)
    if not 0.0 < args.target_fpr < 0.5:
        raise ValueError(f"--target-fpr must lie in (0, 0.5), got {args.target_fpr}")
    if args.global_weight is not None:
        if not 0.0 <= args.global_weight <= 1.0:
            raise ValueError(f"--global-weight must lie in [0, 1], got {args.global_weight}")
        if "patch" not in args.variants.split(",") or "algan" not in args.patch_heads.split(","):
            raise ValueError("--global-weight applies to ALGAN-patch: add --variants patch and --patch-heads algan, "
                             "or drop it")
    rows, scores, y = bench_detection(args)
    if not args.json:
        def opt(v) -> str:
            return f"{v:>7.4f}" if v is not None else f"{'-':>7}"

        # column widths follow the longest entry (e.g. the variant "patch:efficientnet-lite2")
        wd, wv, wh = (max([len(h)] + [len(str(r[k])) for r in rows])
                      for k, h in (("dataset", "dataset"), ("variant", "variant"), ("head", "head")))
        rec = f"rec@{args.target_fpr:g}"
        print(f"{'dataset':<{wd}} {'variant':<{wv}} {'head':<{wh}} {'AUROC':>7} {rec:>8} {'pixAUC':>7} {'AUPRO':>7} "
              f"{'maskF1':>7} {'train_s':>8} {'head_ms':>9} {'backbone_ms':>11} {'head/backbone':>13} {'MB':>8}")
        for r in rows:
            print(f"{r['dataset']:<{wd}} {r['variant']:<{wv}} {r['head']:<{wh}} {r['auroc']:>7.4f} "
                  f"{opt(r['recall_at_fpr']):>8} {opt(r['pixel_auroc'])} {opt(r['aupro'])} {opt(r.get('mask_f1'))} "
                  f"{r['train_s']:>8.1f} {_ms(r['head_ms'], 9, 4)} {_ms(r['backbone_ms'], 11, 2)} "
                  f"{_ratio(r['head_ms'], r['backbone_ms'])} {r['model_mb']:>8.2f}"
                  + (f"  chosen {r['chosen']}" if "chosen" in r else ""))
        loc = [r for r in rows if "border_peak_fraction" in r]
        if loc:
            print(f"\nlocalisation (patch heads; flagged = above the threshold at 1 % false alarms on the test "
                  f"normals; - = no masks):\n{'head':<{wh}} {'border peaks':>12} {'peak hit':>8} "
                  f"{'hit flagged':>11} {'region IoU':>10}")
            for r in loc:
                print(f"{r['head']:<{wh}} {opt(r['border_peak_fraction']):>12} {opt(r['peak_hit_rate']):>8} "
                      f"{opt(r['peak_hit_rate_flagged']):>11} {opt(r['region_iou']):>10}")
        print_comparisons(rows, scores, y)
    return 0


def _ms(v: float | None, width: int, digits: int) -> str:
    return f"{v:>{width}.{digits}f}" if v is not None else f"{'-':>{width}}"


def _ratio(head_ms: float | None, backbone_ms: float | None) -> str:
    return f"{head_ms / backbone_ms:>13.2%}" if head_ms is not None and backbone_ms else f"{'-':>13}"


def print_comparisons(rows: list[dict], scores: list[np.ndarray], y: np.ndarray) -> None:
    """Each head's AUROC difference to the best head, with a paired bootstrap 95 % interval: a difference whose
    interval contains 0 is not one that this test set can resolve."""
    from algan.model.evaluation.image_eval import paired_auroc_difference

    if len(rows) < 2:
        return
    best = max(range(len(rows)), key=lambda i: rows[i]["auroc"])
    print(f"\nAUROC difference to the best head ({rows[best]['head']}), paired stratified bootstrap, 95 % interval:")
    for i, r in enumerate(rows):
        if i != best:
            d, lo, hi = paired_auroc_difference(y, scores[i], scores[best])
            verdict = "not resolved by this test set" if lo <= 0.0 <= hi else "significant"
            print(f"  {r['head']:<26} {d:+.4f}  [{lo:+.4f}, {hi:+.4f}]  {verdict}")


def build_parser() -> argparse.ArgumentParser:
    """algan-bench's argument parser."""
    from algan.cli.train import KNN_METRIC_NAMES, add_backbone_args, add_patch_args

    p = argparse.ArgumentParser(prog="algan-bench", description="Detection quality and speed of every head.")
    p.add_argument("what", choices=["detection"], help="which benchmark")
    p.add_argument("--data", required=True, help="data directory with a labelled test split")
    p.add_argument("--layout", default="auto", choices=["auto", "mvtec", "mtd"])
    p.add_argument("--variants", default="feature", help="comma-separated: feature, patch, image")
    p.add_argument("--patch-heads", default="algan,patchcore,padim", help="patch heads to run (--variants patch)")
    p.add_argument("--image-size", type=int, default=64, help="ALGAN-image input size (power of two >= 64)")
    p.add_argument("--channels", type=int, default=3, choices=[1, 3], help="ALGAN-image channels")
    p.add_argument("--eval-every", type=int, default=0, metavar="N",
                   help="ALGAN-image: also print the test AUROC every N epochs (0 = only at the end)")
    p.add_argument("--heads", default="algan,mahalanobis,knn", help="comma-separated heads")
    p.add_argument("--presets", default="default,paper", help="ALGAN presets to run (comma-separated)")
    p.add_argument("--epochs", type=int, default=None, help="override the presets' ALGAN epochs")
    add_backbone_args(p)
    add_patch_args(p)
    p.add_argument("--input-size", type=int, nargs="+", metavar="H W", default=[224, 224],
                   help="model input size in pixels: H W, or one N for a square (default 224 224)")
    p.add_argument("--knn-k", type=int, default=1)
    p.add_argument("--knn-metric", default="whitened", choices=KNN_METRIC_NAMES,
                   help="kNN distance after a Ledoit-Wolf whitening (default) or on standardised features")
    p.add_argument("--max-train", type=int, default=None, help="subset of training images")
    p.add_argument("--target-fpr", type=float, default=0.01,
                   help="false-alarm rate of recall_at_fpr: the share of test defects flagged at the threshold "
                        "algan-calibrate would set for this rate on the test normals (default 0.01)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="one JSON object per row")
    p.add_argument("--log-level", default="WARNING")
    return add_version(p)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    return run_cli("algan-bench", lambda: _main(args))


if __name__ == "__main__":
    sys.exit(main())
