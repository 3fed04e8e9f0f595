"""``algan-train``: train a model bundle on normal images."""

from __future__ import annotations

import argparse
import sys

from algan.cli._common import add_version, input_size, run_cli, setup_logging
from algan.contract import DEFAULT_HOLDOUT, DEFAULT_PIXEL_FPR


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="algan-train", description="Train an anomaly detector on normal images and "
                                "write a model bundle (weights.safetensors + algan.json).")
    p.add_argument("--data", required=True, help="data directory")
    p.add_argument("--out", required=True, help="model bundle directory to write: a new or empty directory, or an "
                   "earlier bundle with --force (a directory holding anything else is refused)")
    p.add_argument("--force", action="store_true", help="replace the earlier model bundle in --out")
    p.add_argument("--layout", default="auto", choices=["auto", "mvtec", "mtd", "folder"], help="data layout")
    p.add_argument("--head", default="algan", choices=[*HEAD_NAMES, "auto"],
                   help="scoring head (feature variant: algan, mahalanobis, knn; patch variant: algan, patchcore, "
                        "padim); auto: fit every head of the variant, score each on synthetic defects drawn on the "
                        "held-out normals and keep the one with the highest recall at --target-fpr (the table is "
                        "printed and stored as head.selection); on frames much larger than the input the patch heads "
                        "on tiles compete too")
    p.add_argument("--variant", default=None, choices=["feature", "image", "patch", "auto"],
                   help="feature: heads on pooled backbone features (default); patch: heads per location with "
                        "anomaly maps; image: ALGAN-image on pixels; auto (with --head auto, its default there): "
                        "the feature and the patch heads compete")
    p.add_argument("--preset", default="default", choices=["default", "paper"],
                   help="ALGAN hyper-parameters (both variants): the tuned default or the paper's settings")
    p.add_argument("--epochs", type=int, default=None,
                   help="ALGAN epochs, exactly (default: the preset's, raised to its min_steps on small data)")
    p.add_argument("--ensemble", type=int, default=None,
                   help="ALGAN-feature (G, D) pairs whose D logits are averaged (default: the preset's, 3 for default, "
                        "1 for paper); 1 trains 3x faster, with a seed-dependent AUROC")
    p.add_argument("--image-size", type=int, default=256, help="ALGAN-image input size (power of two >= 64)")
    p.add_argument("--channels", type=int, default=3, choices=[1, 3], help="ALGAN-image channels (1 = gray)")
    p.add_argument("--seed", type=int, default=0, help="seed of split, subset and training")
    p.add_argument("--input-size", type=int, nargs="+", metavar="H W", default=[224, 224],
                   help="model input size in pixels: H W, or one N for a square (default 224 224)")
    add_backbone_args(p)
    p.add_argument("--transform", default="standardize", choices=["standardize", "pca"], help="feature transform")
    p.add_argument("--pca-dim", type=int, default=None, help="PCA components (with --transform pca)")
    p.add_argument("--knn-k", type=int, default=1, help="neighbours for --head knn")
    p.add_argument("--knn-metric", default=None, choices=KNN_METRIC_NAMES,
                   help="--head knn distance: after a Ledoit-Wolf whitening (default: whitened) or on standardised "
                        "features (euclidean)")
    add_patch_args(p)
    p.add_argument("--holdout", type=float, default=None, help="fraction of normal images held out for calibration "
                   "(and for --head auto's synthetic defects); default 0.2, with --head auto raised to hold out 20 "
                   "images where 0.2 gives fewer and 40 or more are given")
    p.add_argument("--calibration", default="auto", choices=["auto", "holdout", "crossfit"],
                   help="where the threshold's normal scores come from: holdout (a head fitted on the rest scores the "
                        "held-out normals), crossfit (the head is fitted on every training normal; each is scored by "
                        "a head fitted on the other 9 of 10 folds; feature variant; needs no hold-out, so also with "
                        "--holdout 0) or auto (default: crossfit for the feature variant's Mahalanobis and kNN heads, "
                        "which fit in seconds, else holdout)")
    p.add_argument("--target-fpr", type=float, default=0.01, help="per-frame false-alarm rate of the threshold")
    p.add_argument("--max-bad-fraction", type=float, default=0.01,
                   help="largest share of unreadable training images (truncated, undecodable) skipped, each named in "
                        "one line, before the run fails with their list (default 0.01)")
    p.add_argument("--pixel-fpr", type=float, default=DEFAULT_PIXEL_FPR,
                   help="patch variant: per-pixel false-positive rate of the pixel threshold that draws the defect "
                   f"mask, on the held-out normals' maps (default {DEFAULT_PIXEL_FPR:g})")
    p.add_argument("--max-train", type=int, default=None, help="train on at most this many images (seeded subset)")
    p.add_argument("--checkpoint", default=None, metavar="DIR",
                   help="ALGAN training checkpoint directory (every variant): saved every epoch, resumed from "
                        "when it exists (bit-identical result); --head algan only")
    p.add_argument("--roi", default=None, metavar="x,y,w,h",
                   help="crop every image to this region (pixels) before resizing; recorded in the bundle, and the "
                   "edge daemon and algan-predict crop the same by default")
    add_tiling_args(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output (default: a bar on a terminal, one "
                   "line at least every 30 s with step, total and ETA in a log)")
    p.add_argument("--log-level", default="WARNING")
    return add_version(p)


#: the names of algan.features.backbone.BACKBONES (kept here so that --help imports no torch)
BACKBONE_NAMES = ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2", "wide_resnet50_2",
                  "wide_resnet101_2", "resnet18")
#: the head names of algan.model.heads.registry (every variant), torch-free for the same reason
HEAD_NAMES = ("algan", "mahalanobis", "knn", "patchcore", "padim")
#: algan.features.backbone.POOLINGS and algan.model.heads.vector.KNN_METRICS, torch-free for the same reason
POOLING_NAMES = ("avg", "max", "avgmax", "avgstd")
KNN_METRIC_NAMES = ("whitened", "euclidean")


def add_backbone_args(p: argparse.ArgumentParser) -> None:
    """``--backbone``, ``--backbone-weights``, ``--blocks`` and ``--pooling`` (shared with algan-bench)."""
    p.add_argument("--backbone", default="efficientnet-lite0", choices=BACKBONE_NAMES,
                   help="feature backbone (default efficientnet-lite0; Lite1/Lite2 ship offline too; the ResNets need "
                        "torchvision and their ImageNet weights in the torch hub cache or --backbone-weights)")
    p.add_argument("--backbone-weights", default=None, metavar="PATH",
                   help="ImageNet weights of a torchvision backbone (.pth state dict or .safetensors)")
    p.add_argument("--blocks", default=None,
                   help="backbone blocks to pool, e.g. 8-15 or 5,8,11,15 (default: 8-14 for efficientnet-lite0, "
                        "11-19 for Lite1/Lite2, 2-3 = layer2+layer3 for the ResNets; patch variant: 10,14 / 14,19 "
                        "/ 2,3, and 4,10 / 6,14 / 2,3 for --head patchcore)")
    p.add_argument("--pooling", default=None, choices=POOLING_NAMES,
                   help="spatial pooling of each block (default: avgstd = spatial mean + standard deviation for "
                        "the EfficientNet-Lite models, avg for the ResNets)")


def add_tiling_args(p: argparse.ArgumentParser) -> None:
    """``--tiles`` and ``--tile-overlap`` of algan-train."""
    p.add_argument("--tiles", default=None, metavar="ROWSxCOLS",
                   help="tiled inference: cut the region of interest into this grid of overlapping tiles, each resized "
                        "to the model input (e.g. 2x2, 3x3); train on the tiles, stitch their maps into one frame map "
                        "(patch heads; feature heads: max over tiles). Recorded in the bundle: algan-predict, the edge "
                        "daemon and the export tile the same. For small defects on frames much larger than the input")
    p.add_argument("--tile-overlap", type=float, default=None, metavar="FRACTION",
                   help="overlap of neighbouring tiles, a fraction of a tile in [0, 0.5] (default 0.25; with --tiles)")


def tiling_from_args(args: argparse.Namespace):
    """The :class:`algan.runtime.tiling.TileSpec` of ``--tiles``/``--tile-overlap``, or ``None``; ValueError (one line)
    for a malformed grid or overlap, or an overlap without a grid."""
    from algan.runtime.tiling import parse_tiles

    if getattr(args, "tiles", None) is None:
        if getattr(args, "tile_overlap", None) is not None:
            raise ValueError("--tile-overlap applies with --tiles only; add e.g. --tiles 3x3")
        return None
    return parse_tiles(args.tiles, args.tile_overlap)


def add_patch_args(p: argparse.ArgumentParser) -> None:
    """The patch variant's flags (shared with algan-bench); defaults are :class:`algan.features.patch.PatchSpec`'s."""
    g = p.add_argument_group("patch variant (--variant patch)")
    g.add_argument("--patch-stride", type=int, default=None, help="input pixels per patch cell (default 8)")
    g.add_argument("--patch-aggregate", type=int, default=None, help="local neighbourhood averaged per cell (odd, "
                   "default 3; 1 = none)")
    g.add_argument("--patch-projection", default=None, choices=PATCH_PROJECTION_NAMES,
                   help="dimension reduction of patch vectors (default none)")
    g.add_argument("--patch-dim", type=int, default=None, help="dimension after --patch-projection random|pca")
    g.add_argument("--patches-per-image", type=int, default=None,
                   help="training patches sampled per image (default 128; 0 = every cell)")
    g.add_argument("--map-stride", type=int, default=None, help="input pixels per anomaly-map cell (default 4)")
    g.add_argument("--smooth-sigma", type=float, default=None, help="Gaussian smoothing of the map in input pixels "
                   "(default 4)")
    g.add_argument("--reduction", default=None, choices=REDUCTION_NAMES,
                   help="image score from the map: topk_mean (default: mean of the top --topk fraction of "
                   "cells) or max")
    g.add_argument("--topk", type=float, default=None,
                   help="fraction of map cells averaged by --reduction topk_mean (default 0.01)")
    g.add_argument("--map-norm", default=None, choices=MAP_NORM_NAMES,
                   help="per-location normalisation of the map by its statistics on training normals, inside the "
                   "exported graph: standardize (default: minus the per-location mean, over the per-location standard "
                   "deviation; removes the border bias), mean (minus the mean only) or none")
    g.add_argument("--patch-context", default=None, choices=PATCH_CONTEXT_NAMES,
                   help="mean: every patch vector also carries its image's mean patch vector, so a change of the "
                        "whole image raises every cell (default none)")
    g.add_argument("--coreset-ratio", type=float, default=None,
                   help="--head patchcore: memory bank size as a fraction of all training cells (default 0.01)")
    g.add_argument("--global-weight", type=float, default=None,
                   help="--head algan: weight in [0, 1] of ALGAN-patch's image-level discriminator on the pooled "
                        "cells; the image score is the larger of the map's and this weight times the discriminator's "
                        "calibrated score (default 0.5; 0 = the map alone; whole frames only)")


#: algan.features.patch.PROJECTIONS / REDUCTIONS, torch-free for --help
PATCH_PROJECTION_NAMES = ("none", "random", "pca")
REDUCTION_NAMES = ("max", "topk_mean")
#: algan.features.patch.MAP_NORMS, torch-free for --help
MAP_NORM_NAMES = ("none", "mean", "standardize")
#: algan.contract.patch.CONTEXTS, torch-free for --help
PATCH_CONTEXT_NAMES = ("none", "mean")
PATCH_FLAGS = ("patch_stride", "patch_aggregate", "patch_projection", "patch_dim", "patches_per_image", "map_stride",
               "smooth_sigma", "reduction", "topk", "map_norm", "patch_context", "coreset_ratio", "global_weight")


def patch_spec_from_args(args: argparse.Namespace):
    """The :class:`PatchSpec` of the patch flags (unset flags keep its defaults)."""
    from algan.features.patch import PatchSpec

    names = {"patch_stride": "stride", "patch_aggregate": "aggregate", "patch_projection": "projection",
             "patch_dim": "dim", "patches_per_image": "patches_per_image", "map_stride": "map_stride",
             "smooth_sigma": "smooth_sigma", "reduction": "reduction", "topk": "topk", "map_norm": "map_norm",
             "patch_context": "context"}
    return PatchSpec(**{field: getattr(args, flag) for flag, field in names.items() if getattr(args, flag) is not None})


def backbone_spec_from_args(args: argparse.Namespace, input_size: tuple[int, int], head: str = "algan"):
    """The :class:`BackboneSpec` of the backbone flags; checks the backbone's package and weights first. Without
    ``--blocks`` the patch variant takes ``head``'s default blocks
    (:func:`algan.features.patch.default_patch_blocks`)."""
    from algan.features.backbone import check_backbone, make_spec
    from algan.features.patch import default_patch_blocks

    blocks = parse_blocks(args.blocks) if args.blocks is not None else None
    if blocks is None and getattr(args, "variant", "feature") == "patch":
        blocks = default_patch_blocks(args.backbone, head)
    spec = make_spec(args.backbone, blocks, args.pooling, input_size, args.backbone_weights)
    check_backbone(spec)
    return spec


def parse_blocks(text: str) -> list[int]:
    """``"8-15"`` or ``"5,8,11-15"`` -> sorted block indices."""
    out: set[int] = set()
    try:
        for part in text.split(","):
            if "-" in part:
                a, b = part.split("-")
                out.update(range(int(a), int(b) + 1))
            elif part.strip():
                out.add(int(part))
    except ValueError:
        raise ValueError(f"--blocks {text!r} is not a list of block indices like 8-15 or 5,8,11-15") from None
    return sorted(out)


def check_args(args: argparse.Namespace) -> None:
    """Raise ValueError (one line: what is wrong and how to fix it) for flags that do not fit together; runs before
    any data is read, so a bad command line never costs a dataset listing or a backbone load."""
    from algan.contract import check_output_dir

    check_output_dir(args.out, force=args.force, inputs={"--data": args.data, "--checkpoint": args.checkpoint})
    if not 0 < args.target_fpr < 1:
        raise ValueError(f"--target-fpr must lie in (0, 1), got {args.target_fpr}")
    if not 0 <= args.max_bad_fraction < 1:
        raise ValueError(f"--max-bad-fraction must lie in [0, 1), got {args.max_bad_fraction}")
    if not 0 < args.pixel_fpr < 1:
        raise ValueError(f"--pixel-fpr must lie in (0, 1), got {args.pixel_fpr}")
    if args.variant is None:
        args.variant = "auto" if args.head == "auto" else "feature"
    if args.variant == "auto" and args.head != "auto":
        raise ValueError(f"--variant auto lets the heads of both variants compete: use it with --head auto, not "
                         f"--head {args.head}")
    if args.calibration == "crossfit" and (args.variant != "feature" or getattr(args, "tiles", None) is not None):
        raise ValueError("--calibration crossfit works with --variant feature on whole images (the patch heads' maps "
                         "and tiled models calibrate on held-out normals): drop it or use --calibration holdout")
    if args.epochs is not None and args.epochs < 1:
        raise ValueError(f"--epochs must be >= 1, got {args.epochs}")
    if args.ensemble is not None and args.ensemble < 1:
        raise ValueError(f"--ensemble must be >= 1, got {args.ensemble}")
    if getattr(args, "global_weight", None) is not None and not 0.0 <= args.global_weight <= 1.0:
        raise ValueError(f"--global-weight must lie in [0, 1], got {args.global_weight}")
    if args.head == "auto":
        if args.variant == "image":
            raise ValueError("--variant image has one head (algan): drop --head auto or use --variant feature, patch "
                             "or auto")
        if args.checkpoint is not None:
            raise ValueError("--checkpoint resumes one ALGAN training; --head auto fits several heads: drop it")
        if getattr(args, "tiles", None) is not None:
            raise ValueError("--head auto compares heads on whole frames; with --tiles choose the head yourself "
                             "(e.g. --variant patch --head padim --tiles 3x3) or drop --tiles")
        if args.knn_metric is not None and args.variant == "patch":
            raise ValueError("--knn-metric applies to the feature variant's knn head (--variant feature or auto)")
        given = [f"--{f.replace('_', '-')}" for f in PATCH_FLAGS if getattr(args, f, None) is not None]
        if given and args.variant == "feature":
            raise ValueError(f"{', '.join(given)} apply to the patch heads: use --variant patch or auto")
        if args.pooling is not None and args.variant == "patch":
            raise ValueError("--pooling applies to the feature variant; the patch variant keeps the feature maps")
        return
    from algan.model.fit import check_checkpoint_head
    from algan.model.heads.registry import head_kinds, head_names

    check_checkpoint_head(args.checkpoint, args.head)
    if args.ensemble is not None:
        if args.ensemble < 1:
            raise ValueError(f"--ensemble must be >= 1, got {args.ensemble}")
        if args.head != "algan" or args.variant == "image":
            raise ValueError("--ensemble applies to the ALGAN-feature and ALGAN-patch heads (--head algan) only")
    patch_heads, feature_heads = head_names("patch"), head_names("feature")
    if args.variant == "patch" and args.head not in patch_heads:
        raise ValueError(f"--variant patch has the heads {', '.join(patch_heads)}, not --head {args.head}")
    if args.variant != "patch":
        if args.head not in feature_heads:
            raise ValueError(f"--head {args.head} scores patches: add --variant patch")
        given = [f"--{f.replace('_', '-')}" for f in PATCH_FLAGS if getattr(args, f, None) is not None]
        if given:
            raise ValueError(f"{', '.join(given)} {'apply' if len(given) > 1 else 'applies'} to --variant patch only "
                             f"(this run is --variant {args.variant})")
    if getattr(args, "global_weight", None) and getattr(args, "tiles", None) is not None:
        raise ValueError("--global-weight applies to whole frames: a tiled bundle has no global branch; drop it or "
                         "drop --tiles")
    for option in ("coreset_ratio", "knn_metric", "global_weight"):  # a head's own settings (HeadKind.options)
        readers = sorted({k.name for k in head_kinds() if option in k.options})
        if getattr(args, option) is not None and args.head not in readers:
            flag, heads = f"--{option.replace('_', '-')}", " or ".join(readers)
            raise ValueError(f"{flag} applies to --head {heads} only (this run trains --head {args.head}); drop it "
                             f"or add --head {heads}")
    if args.variant == "patch" and args.pooling is not None:
        raise ValueError("--pooling applies to the feature variant; the patch variant keeps the feature maps")


def fit_settings(args: argparse.Namespace, variant: str, head: str):
    """The :class:`algan.model.fit.FitSettings` of the command line for one ``variant`` and ``head`` (checks the
    backbone and the patch sizes before any data is read)."""
    from algan.features.backbone import BackboneSpec
    from algan.model.fit import FitSettings
    from algan.model.gan.feature import AlganConfig
    from algan.model.gan.image import ImageConfig

    vargs = argparse.Namespace(**{**vars(args), "variant": variant})
    # the backbone is checked before any data is read; the image variant has none
    spec = backbone_spec_from_args(vargs, tuple(args.input_size), head) if variant != "image" else BackboneSpec()
    patch = patch_spec_from_args(args) if variant == "patch" else None
    if patch is not None:
        patch.grid(tuple(args.input_size))  # sizes that do not fit the strides fail before any data is read
        patch.map_size(tuple(args.input_size))
    overrides = {"seed": args.seed, **({"epochs": args.epochs} if args.epochs is not None else {})}
    # an explicit --epochs is exactly that many epochs (no step floor from the preset's min_steps)
    feature_overrides = {**overrides, **({"min_steps": 0} if "epochs" in overrides else {})}
    if args.ensemble is not None:
        feature_overrides["ensemble"] = args.ensemble
    elif args.head == "auto" and variant == "feature":
        # --head auto ranks and ships ALGAN-feature with one (G, D) pair: 3x cheaper, within the time budget
        feature_overrides["ensemble"] = 1
    if variant == "patch":
        from algan.model.gan.feature import PATCH_SCHEDULE

        # ALGAN-patch: the patch schedule on either preset; "default" is the patch default (one (G, D) pair)
        preset = "patch" if args.preset == "default" else args.preset
        base = {} if preset == "patch" else dict(PATCH_SCHEDULE)
        algan_cfg = AlganConfig.preset(preset, **{**base, **feature_overrides})
    else:
        algan_cfg = AlganConfig.preset(args.preset, **feature_overrides)
    image_cfg = None
    if variant == "image":
        image_cfg = ImageConfig.preset(args.preset, size=args.image_size, channels=args.channels, **overrides)
    return FitSettings(
        head=head,
        variant=variant,
        image=image_cfg,
        backbone=spec,
        transform=args.transform,
        pca_dim=args.pca_dim,
        algan=algan_cfg,
        knn_k=args.knn_k,
        knn_metric=args.knn_metric or "whitened",
        holdout=args.holdout if args.holdout is not None else DEFAULT_HOLDOUT,
        calibration=args.calibration,
        target_fpr=args.target_fpr,
        pixel_fpr=args.pixel_fpr,
        max_train=args.max_train,
        seed=args.seed,
        checkpoint=args.checkpoint,
        tiling=tiling_from_args(args),
        **({"patch": patch} if patch is not None else {}),
        **({"coreset_ratio": args.coreset_ratio} if args.coreset_ratio is not None else {}),
        **({"global_weight": args.global_weight} if getattr(args, "global_weight", None) is not None else {}),
    )


def auto_settings(args: argparse.Namespace, grid=None) -> dict:  # noqa: ANN001
    """``{candidate: FitSettings}`` of ``--head auto`` (:func:`algan.model.select.candidates_for` of ``--variant``
    and the tile ``grid``): each head on its own default blocks; the tiled candidates by :func:`with_tiled`."""
    from algan.model.select import candidates_for

    whole = {n: fit_settings(args, *n.split(":")) for n in candidates_for(args.variant)}
    return with_tiled(whole, grid, args.blocks is not None) if grid is not None else whole


def with_tiled(candidates: dict, grid, keep_blocks: bool) -> dict:  # noqa: ANN001
    """``candidates`` (whole-frame ``{name: FitSettings}`` of ``--head auto``) and their tiled ones on ``grid``
    (:func:`algan.model.select.candidates_for`), each a copy of its whole-frame settings with the tiling and, unless
    ``keep_blocks`` (``--blocks`` given), PatchCore's finer default blocks (tiles are there for small defects; the
    patch candidates always include PatchCore)."""
    from dataclasses import replace

    from algan.model.select import TILED_CANDIDATES, candidate_name

    out = dict(candidates)
    for name in TILED_CANDIDATES:
        if name in candidates:
            base = candidates[name]
            backbone = base.backbone if keep_blocks else candidates["patch:patchcore"].backbone
            out[candidate_name(name, grid)] = replace(base, backbone=backbone, tiling=grid)
    return out


def with_auto_holdout(candidates: dict, n_images: int, say=None) -> dict:  # noqa: ANN001
    """``candidates`` (``{name: FitSettings}`` of ``--head auto`` on the default hold-out) with the hold-out of
    :func:`algan.model.select.auto_holdout` for ``n_images`` training images (``--max-train`` applied here);
    ``say(line)`` (when given) gets one line when it differs from the default."""
    from dataclasses import replace

    from algan.model.select import auto_holdout

    base = next(iter(candidates.values()))
    n = min(n_images, base.max_train) if base.max_train is not None else n_images
    fraction = auto_holdout(n, base.holdout)
    if fraction == base.holdout:
        return candidates
    if say is not None:
        say(f"{n} normal training images: --head auto holds out {round(n * fraction)} ({fraction:.0%}, not "
            f"{base.holdout:.0%}) to measure recall on synthetic defects; the heads fit on the other "
            f"{n - round(n * fraction)}")
    return {name: replace(s, holdout=fraction) for name, s in candidates.items()}


def auto_candidates_for(candidates: dict, train_paths, input_hw: tuple[int, int], keep_blocks: bool,  # noqa: ANN001
                        holdout_given: bool, say=None) -> dict:  # noqa: ANN001
    """Every candidate ``--head auto`` fits on this training set: ``candidates`` (:func:`auto_settings` without a
    grid), plus the tiled patch heads where the frames (median ROI of ``train_paths``, crop
    :func:`algan.runtime.preprocess.current_roi`) are much larger than ``input_hw`` (:func:`with_tiled` on
    :func:`algan.runtime.tiling.auto_grid`), on the hold-out of :func:`with_auto_holdout` unless ``holdout_given``.
    ``say(line)`` (when given) gets a line for each of the two. algan-train and algan-bench's auto row both use it."""
    from algan.runtime.tiling import auto_grid, frame_size

    if train_paths and any(s.variant == "patch" for s in candidates.values()):
        median_hw = frame_size(train_paths)
        if (grid := auto_grid(median_hw, input_hw)) is not None:
            candidates = with_tiled(candidates, grid, keep_blocks)
            if say is not None:
                say(f"the frames ({median_hw[1]} x {median_hw[0]} px) are much larger than the model input: "
                    f"--head auto also tries the patch heads on {grid} tiles")
    return candidates if holdout_given else with_auto_holdout(candidates, len(train_paths), say)


def _main(args: argparse.Namespace) -> int:
    from algan.bundle import save_bundle
    from algan.data.datasets import load_dataset
    from algan.model.fit import fit_detector
    from algan.runtime.maps import parse_roi
    from algan.runtime.preprocess import using_roi

    args.input_size = input_size(args.input_size)
    check_args(args)
    roi = parse_roi(args.roi)
    tiling = tiling_from_args(args)
    auto = args.head == "auto"
    if auto:  # every candidate's settings, checked before any data is read
        candidates = auto_settings(args)
    else:
        settings = fit_settings(args, args.variant, args.head)
    ds = load_dataset(args.data, args.layout)
    from algan.runtime.preprocess import screen_images

    # the daemon's checked decoder: a truncated or unreadable image is skipped with one line, not trained on
    ds.train = screen_images(ds.train, "training images", args.max_bad_fraction,
                             say=(lambda line: None) if args.quiet else None)
    if not args.quiet:
        print(f"data: {ds.root} ({ds.layout}), {len(ds.train)} normal training images", file=sys.stderr)
        if (line := ds.skipped_line()) is not None:
            print(f"data: {line}", file=sys.stderr)
    def say(line: str) -> None:
        print(f"note: {line}", file=sys.stderr)

    with using_roi(roi):  # frame sizes are the median ROI size of up to 16 training images
        if auto:
            candidates = auto_candidates_for(candidates, ds.train, tuple(args.input_size), args.blocks is not None,
                                             args.holdout is not None, None if args.quiet else say)
        elif tiling is None and args.variant == "patch" and ds.train and not args.quiet:
            from algan.runtime.tiling import frame_size, large_frame_note

            if (note := large_frame_note(frame_size(ds.train), tuple(args.input_size))) is not None:
                say(note)
    # a bar on a terminal; in a log or the journal one line at least every 30 s (algan.progress)
    progress = not args.quiet
    with using_roi(roi):
        if auto:
            from algan.model.select import TooFewHeldOut, fit_auto, format_table, held_out_advice

            def report(r) -> None:
                if not args.quiet:
                    print(f"  {r.name:<20} recall@{args.target_fpr:g} {r.recall_at_fpr:.3f}  AUROC {r.auroc:.4f}  "
                          f"fit {r.fit_s:.1f} s", file=sys.stderr, flush=True)

            try:
                auto_result = fit_auto(ds, candidates, progress, report)
            except TooFewHeldOut as e:
                raise ValueError(f"{e}: {held_out_advice(e.n, len(ds.train), args.holdout is not None)}") from None
            result = auto_result.fit
            print(format_table(auto_result.chosen.name, auto_result.results, args.target_fpr))
        else:
            result = fit_detector(ds, settings, progress=progress)
    result.manifest.roi = list(roi) if roi is not None else None
    out = save_bundle(args.out, result.detector, result.manifest, result.extra_tensors, result.samples)
    m = result.manifest
    cal, training = m.calibration, m.require("training")
    tiling = result.detector.tiling  # --tiles, or the grid --head auto chose
    tiled = f", {tiling} tiles per frame" if tiling is not None else ""
    if (gb := m.require("head").settings.get("global_branch")) is not None:
        tiled += f" + image-level discriminator (weight {gb['weight']:g})"
    print(f"wrote {out} (model id {m.model_id}, {m.variant} variant, head {m.head_kind}{tiled}, "
          f"{training.n_train} training "
          f"images, threshold at {cal.target_fpr:g} FPR from {cal.n_images} "
          + ("out-of-fold scores of the training normals" if "crossfit_folds" in (training.model_extra or {}) else
             "held-out normals" if training.n_holdout else "training images (in-sample, optimistic: re-calibrate "
             "with algan-calibrate on other normals)")
          + (f", pixel threshold at {cal.pixel_target_fpr:g} pixel FPR (map level {cal.pixel_level:.3g})"
             if cal.pixel_threshold is not None else "")
          + f", {training.wall_s:.1f} s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    return run_cli("algan-train", lambda: _main(args))


if __name__ == "__main__":
    sys.exit(main())
