"""``--head auto``: choose the head for a line from its normal images alone, by synthetic defects.

Every candidate head (:data:`CANDIDATES`) is fitted on the training split's features, extracted once per distinct
feature setting (:func:`data_key`: the variant, its backbone blocks and spec; PatchCore's default blocks differ from
the other patch heads', :func:`algan.features.patch.default_patch_blocks`); each is scored on the held-out normals
and on synthetic defects drawn on those held-out normals (:func:`algan.data.defects.synthesize_families`: as many
local marks as changes of a large region's texture). Its figures: ``recall_at_fpr`` (the share of synthetic defects
flagged at the threshold algan-calibrate would set for ``target_fpr`` on the held-out normals,
:func:`algan.model.evaluation.threshold.recall_at_fpr`), the synthetic-defect ``auroc`` (held-out normals against
synthetic defects) and the recall per defect kind. A patch candidate is judged on the maps its bundle would ship:
the per-location map normalisation (``PatchSpec.map_norm``) is fitted, per candidate, on the smoothed maps of the
same training images ``algan-train`` uses for it (:func:`algan.model.fit.map_stats_paths`), before any score.

Frames much larger than the model input (:func:`algan.runtime.tiling.auto_grid`) add the patch heads of
:data:`TILED_CANDIDATES` on tiles (``patch:padim@3x3``, ``patch:algan@3x3``: trained on the tiles of the normals,
maps stitched into the frame map, as ``algan-train --tiles`` does; on the earlier, finer blocks
:func:`algan.features.patch.default_patch_blocks` gives PatchCore, since tiles are for small defects). Then every
candidate sees the same synthetic defects drawn on the held-out normals at the frames' own size
(:func:`algan.runtime.tiling.frame_size`): a whole-frame candidate gets them resized to its input, a tiled one cut
into its tiles.

The rule (:data:`RULE`, :func:`choose`): the highest ``recall_at_fpr`` over both families, a tiled candidate's less
:data:`TILED_MARGIN` (it costs its tiles' graph runs per frame); candidates within :data:`RECALL_TIE` of it are tied
and the cheapest of them wins (the order of :data:`CANDIDATES`, cheapest first: inference cost, then training cost;
the tiled candidates after all whole-frame ones, in the same order). Chosen on six data sets (benchmarks/RESULTS.md,
"Session 14"): the local marks alone, or a tie broken by the synthetic AUROC, chose heads up to 0.05 AUROC below the
best on real defects; the tiled margin on the two dev sets with large frames ("Session 15").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from algan.data.defects import DEFECT_FAMILIES
from algan.model.evaluation.image_eval import auroc
from algan.model.evaluation.threshold import recall_above, recall_at_fpr
from algan.model.heads.registry import auto_candidates
from algan.runtime.tiling import TileSpec

log = logging.getLogger(__name__)

#: ``variant:head`` candidates, cheapest first (the tie-break order: the heads registry's ``auto_cost``)
CANDIDATES = auto_candidates()
#: the candidates that also run on tiles of large frames (``variant:head@ROWSxCOLS``, :func:`candidate_name`;
#: the registry's ``auto_tiled``): PaDiM and ALGAN-patch
TILED_CANDIDATES = auto_candidates(tiled=True)
#: recall differences up to this are ties (about one synthetic defect in 50)
RECALL_TIE = 0.02
#: a tiled candidate's recall counts this much less in the choice: it costs ``rows * cols`` graph runs per frame, so it
#: must beat every whole-frame head clearly (pcb: ALGAN-patch on 3x3 tiles +0.45 over the best whole-frame head and
#: +0.32 real AUROC; ballscrew: PatchCore on 2x4 tiles +0.05, yet 0.02 lower real AUROC)
TILED_MARGIN = 0.10
#: the rule, as recorded in the bundle
RULE = (f"max recall at the target FPR on synthetic defects, local marks and texture changes (threshold from the "
        f"held-out normals), a tiled head's recall counted {TILED_MARGIN} less; within {RECALL_TIE} of the best: "
        f"the cheapest head (order {', '.join(CANDIDATES)}, then the tiled ones)")
#: held-out normals --head auto needs to measure recall at a false-alarm rate (and ALGAN-patch's global branch to be
#: scaled), and training images it leaves to fit the heads on when it raises the hold-out (:func:`auto_holdout`)
MIN_HELD_OUT = 20
MIN_FIT_IMAGES = 20
#: synthetic defects of each family (local, texture) drawn per held-out normal image. Six: with two, a second or third
#: independent draw flipped bottle's choice to a head 0.05 AUROC worse; all three draws pooled chose as the first did
#: on every dev set (benchmarks/RESULTS.md, "Session 15": the rule's variance over draws)
DEFECTS_PER_IMAGE = 6


def candidates_for(variant: str, grid: TileSpec | None = None) -> tuple[str, ...]:
    """The candidates of ``--variant`` ``feature``, ``patch`` or ``auto`` (all), cheapest first; with a tile
    ``grid`` (:func:`algan.runtime.tiling.auto_grid`) the patch ones of :data:`TILED_CANDIDATES` on that grid after
    them.

    Raises:
        ValueError: another variant.
    """
    if variant == "auto":
        names = CANDIDATES
    elif variant in ("feature", "patch"):
        names = tuple(c for c in CANDIDATES if c.startswith(variant + ":"))
    else:
        raise ValueError(f"--head auto chooses among the feature and patch heads; --variant {variant} has one head "
                         f"only")
    if grid is None:
        return names
    return names + tuple(candidate_name(c, grid) for c in TILED_CANDIDATES if c in names)


class TooFewHeldOut(ValueError):
    """Fewer than :data:`MIN_HELD_OUT` held-out normals for ``--head auto`` (:func:`select_heads`); ``held`` of ``n``
    training images (after ``--max-train``). The command that catches it adds what its user can change
    (:func:`held_out_advice`)."""

    def __init__(self, held: int, n: int) -> None:
        self.held, self.n = held, n
        super().__init__(f"--head auto needs >= {MIN_HELD_OUT} held-out normal images to measure recall at a "
                         f"false-alarm rate, got {held} of {n} training images")


def held_out_advice(n: int, n_data: int, holdout_given: bool) -> str:
    """What a user can change when ``--head auto`` holds out too few of ``n`` training images (``n_data`` in the data
    set, more when ``--max-train`` cut them; ``holdout_given``: ``--holdout`` was set): one clause for the error
    line."""
    need = MIN_HELD_OUT + MIN_FIT_IMAGES
    if n < need <= n_data:
        return f"raise --max-train to {need} or more (the data holds {n_data})"
    if n >= need and holdout_given:
        return f"drop --holdout (with {need} or more images --head auto holds out {MIN_HELD_OUT} itself) or raise it"
    return (f"add normal images ({need} or more), raise --holdout, or choose the head yourself (e.g. --head algan)"
            if n < need else "raise --holdout")


def auto_holdout(n_images: int, fraction: float) -> float:
    """The hold-out fraction ``--head auto`` uses on ``n_images`` normal training images (after ``--max-train``)
    when the user set none: ``fraction`` (the default, 0.2), raised so that :data:`MIN_HELD_OUT` normals are held out
    where it gives fewer and at least :data:`MIN_FIT_IMAGES` stay to fit on (60 images: 20 held out, 40 fitted);
    else ``fraction`` unchanged (:func:`select_heads` then refuses with its message).

    Example:
        >>> auto_holdout(60, 0.2), auto_holdout(500, 0.2), auto_holdout(30, 0.2)
        (0.3333333333333333, 0.2, 0.2)
    """
    if round(n_images * fraction) >= MIN_HELD_OUT or n_images - MIN_HELD_OUT < MIN_FIT_IMAGES:
        return fraction
    return MIN_HELD_OUT / n_images


def candidate_name(base: str, grid: TileSpec | None) -> str:
    """``variant:head`` on tiles: ``variant:head@ROWSxCOLS`` (``base`` itself for ``grid=None``)."""
    return base if grid is None else f"{base}@{grid.rows}x{grid.cols}"


def split_candidate(name: str) -> tuple[str, str, str | None]:
    """``(variant, head, tiles)`` of a candidate name (``tiles`` = ``"ROWSxCOLS"`` or ``None``).

    Raises:
        ValueError: a name that is not ``variant:head[@ROWSxCOLS]``.
    """
    base, _, tiles = name.partition("@")
    variant, sep, head = base.partition(":")
    if not sep or not variant or not head:
        raise ValueError(f"candidate {name!r} is not variant:head[@ROWSxCOLS]")
    return variant, head, tiles or None


def cost_rank(name: str) -> int:
    """Position of a candidate in the tie-break order (cheapest first): :data:`CANDIDATES`' order, tiled candidates
    after every whole-frame one; unknown names last."""
    variant, head, tiles = split_candidate(name)
    base = f"{variant}:{head}"
    if base not in CANDIDATES:
        return 2 * len(CANDIDATES)
    return CANDIDATES.index(base) + (len(CANDIDATES) if tiles else 0)


@dataclass
class VariantData:
    """One variant's cached inputs, extracted once for all of its heads.

    Attributes:
        variant: ``feature`` or ``patch``.
        train: training vectors the heads are fitted on, float32: feature (N, K) transformed features; patch (M, K)
            projected sampled patch vectors.
        normal, defect: held-out normals and synthetic defects as the heads take them: feature float32 (N, K)
            tensors; patch float16 (N, K, gh, gw) maps.
        n_cells: patch: all training cells (the PatchCore bank's reference size); feature: 0.
        post: patch: the :class:`algan.features.patch.MapPostprocess` (map and image score; its normalisation
            unfitted: :func:`fitted_post` fits a copy per head); feature: ``None``.
        stats: patch with a map normalisation: float16 (S, K, gh, gw) maps of the training images whose smoothed
            head maps give the per-location statistics (:func:`algan.model.fit.map_stats_paths`); else ``None``.
        tiling: the tile grid of a tiled candidate (``normal``, ``defect`` and ``stats`` then hold the maps of every
            image's ``rows * cols`` tiles, image by image); ``None`` = whole frames.
        frame_hw: ``(height, width)`` of the frames the tiles were cut from (tiled only; the stitched map's frame).
        pooled: patch, whole frames: the training images' pooled head inputs float32 (N, 2K)
            (:func:`algan.model.fit.pooled_training_cells`), for ALGAN-patch's image-level discriminator; else
            ``None``.
    """

    variant: str
    train: np.ndarray
    normal: torch.Tensor
    defect: torch.Tensor
    n_cells: int = 0
    post: object | None = None
    stats: torch.Tensor | None = None
    tiling: TileSpec | None = None
    frame_hw: tuple[int, int] | None = None
    pooled: np.ndarray | None = None


@dataclass
class CandidateResult:
    """One candidate's synthetic-defect figures (and the fitted head, for reuse)."""

    name: str
    recall_at_fpr: float
    auroc: float
    recall_by_kind: dict[str, float]
    fit_s: float
    normal_scores: np.ndarray = field(repr=False)
    defect_scores: np.ndarray = field(repr=False)
    fitted: tuple | None = field(default=None, repr=False)
    #: patch: the map postprocess with this head's fitted normalisation (:func:`fitted_post`); feature: ``None``
    post: object | None = field(default=None, repr=False)
    #: recall at the same threshold per defect family (:data:`algan.data.defects.DEFECT_FAMILIES`; those drawn)
    recall_by_family: dict[str, float] = field(default_factory=dict)

    @property
    def variant(self) -> str:
        return split_candidate(self.name)[0]

    @property
    def head(self) -> str:
        return split_candidate(self.name)[1]

    def to_json(self) -> dict:
        return {"name": self.name, "recall_at_fpr": round(self.recall_at_fpr, 4), "auroc": round(self.auroc, 4),
                "recall_by_kind": {k: round(v, 4) for k, v in self.recall_by_kind.items()},
                "fit_s": round(self.fit_s, 2)}


def fitted_post(head: torch.nn.Module, data: VariantData, batch_size: int = 32):  # noqa: ANN201
    """The patch variant's map postprocess for one fitted head: a copy of ``data.post`` whose per-location
    normalisation is fitted on the head's smoothed maps of ``data.stats`` (what ``algan-train`` ships,
    :func:`algan.model.fit.fit_map_statistics`); ``data.post`` itself for the feature variant or without statistics."""
    import copy

    post = data.post
    if data.variant != "patch" or data.stats is None or getattr(post, "norm", None) is None:
        return post
    post = copy.deepcopy(post)
    head.eval()
    with torch.no_grad():
        smoothed = torch.cat([post.smooth(head(data.stats[i : i + batch_size].float()))  # type: ignore[attr-defined]
                              for i in range(0, len(data.stats), batch_size)])
    post.fit_norm(smoothed)  # type: ignore[attr-defined]
    return post


def image_scores(head: torch.nn.Module, data: VariantData, x: torch.Tensor, batch_size: int = 32,
                 post: object | None = None) -> np.ndarray:
    """Raw image scores float32 (N,) of a fitted head on cached inputs ``x`` of ``data``'s variant (patch: maps
    through ``post``, default ``data.post``; pass the candidate's :attr:`CandidateResult.post` to score as its bundle
    does; whole frames: :func:`algan.model.heads.patch.scores_and_maps`, with ALGAN-patch's global branch)."""
    from algan.model.heads.patch import scores_and_maps

    head.eval()
    with torch.no_grad():
        if data.variant == "patch":
            post = post if post is not None else data.post
            if data.tiling is not None:  # every frame's tile maps stitched and reduced, as the runners do
                from algan.runtime.tiling import untile

                maps = torch.cat([post(head(x[i : i + batch_size].float()))  # type: ignore[operator]
                                  for i in range(0, len(x), batch_size)]).numpy()
                n = len(maps) // data.tiling.n_tiles
                return untile(np.zeros(len(maps)), maps, [data.frame_hw] * n, data.tiling,  # type: ignore[list-item]
                              post.reduction, post.topk).scores  # type: ignore[attr-defined]
            return torch.cat([scores_and_maps(head, post, x[i : i + batch_size].float())[0]  # type: ignore[arg-type]
                              for i in range(0, len(x), batch_size)]).numpy()
        return torch.cat([head(x[i : i + 1024]) for i in range(0, len(x), 1024)]).numpy()


def set_branch_scales(head: torch.nn.Module, data: VariantData, post: object, target_fpr: float,
                      batch_size: int = 32) -> None:
    """Scale a fitted ALGAN-patch head's global branch on the held-out normals ``data.normal``
    (:func:`algan.model.heads.patch.scale_global_branch`), as :func:`algan.model.fit.fit_detector` does on the same
    images; nothing for other heads or tiles."""
    from algan.model.heads.patch import scale_global_branch

    if data.variant == "patch" and data.tiling is None:
        scale_global_branch(head, post, data.normal, target_fpr, batch_size)  # type: ignore[arg-type]


def score_candidate(name: str, fit: Callable[[VariantData], tuple], data: VariantData, kinds: Sequence[str],
                    target_fpr: float) -> CandidateResult:
    """Fit one candidate with ``fit(data) -> (head, settings json, extras, train info)`` and measure it."""
    t = time.perf_counter()
    fitted = fit(data)
    fit_s = time.perf_counter() - t
    head = fitted[0]
    post = fitted_post(head, data)
    set_branch_scales(head, data, post, target_fpr)
    s_norm, s_def = image_scores(head, data, data.normal, post=post), image_scores(head, data, data.defect, post=post)
    kinds_a = np.asarray(kinds)
    from algan.model.evaluation.threshold import TargetFprThreshold

    thr = TargetFprThreshold(target_fpr).fit(s_norm).threshold_
    by_kind = {str(k): float(recall_above(s_def[kinds_a == k], thr)) for k in sorted(set(kinds_a.tolist()))}
    by_family = {}
    for family, (members, _) in DEFECT_FAMILIES.items():
        if (sel := np.isin(kinds_a, members)).any():
            by_family[family] = float(recall_above(s_def[sel], thr))
    y = np.r_[np.zeros(len(s_norm)), np.ones(len(s_def))]
    return CandidateResult(name, float(recall_at_fpr(s_norm, s_def, target_fpr)), auroc(y, np.r_[s_norm, s_def]),
                           by_kind, fit_s, s_norm, s_def, fitted, post if data.variant == "patch" else None,
                           by_family)


def choose(results: Sequence[CandidateResult]) -> CandidateResult:
    """The rule :data:`RULE` over candidates given cheapest first (the order of :data:`CANDIDATES`).

    Raises:
        ValueError: no candidates.
    """
    if not results:
        raise ValueError("no candidate heads to choose from")

    def merit(r: CandidateResult) -> float:
        return r.recall_at_fpr - (TILED_MARGIN if split_candidate(r.name)[2] is not None else 0.0)

    best = max(merit(r) for r in results)
    tied = [r for r in results if merit(r) >= best - RECALL_TIE]
    return min(tied, key=lambda r: cost_rank(r.name))


def data_key(settings) -> str:
    """What decides a candidate's extracted inputs (:func:`build_variant_data`), as a key: the variant, backbone
    (without the weights' hash, which a build records), patch spec, feature transform, tile grid, training batch size
    and seed of its :class:`algan.model.fit.FitSettings`. Candidates with equal keys share one extraction
    (PatchCore's default blocks differ from the other patch heads'; the tiled candidates share one)."""
    from dataclasses import replace

    patch = settings.patch if settings.variant == "patch" else None
    transform = (settings.transform, settings.pca_dim) if settings.variant == "feature" else None
    backbone = replace(settings.backbone, weights_sha256="")
    return repr((settings.variant, backbone, patch, transform, settings.tiling, settings.batch_size, settings.seed))


def build_candidate_data(settings: Mapping[str, object], fit_paths: Sequence, normal_u8: np.ndarray,
                         defect_u8: np.ndarray, progress: bool = False) -> dict[str, tuple[VariantData, np.ndarray]]:
    """``{name: (VariantData, raw training features)}`` for every candidate of ``settings``
    (``{"variant:head": FitSettings}``): one :func:`build_variant_data` per :func:`data_key`, shared by the
    candidates with that key."""
    by_key: dict[str, tuple[VariantData, np.ndarray]] = {}
    for s in settings.values():
        if (key := data_key(s)) not in by_key:
            by_key[key] = build_variant_data(s, fit_paths, normal_u8, defect_u8, progress)
    return {n: by_key[data_key(s)] for n, s in settings.items()}


def select(names: Sequence[str], fitters: dict[str, Callable[[VariantData], tuple]], data: dict[str, VariantData],
           kinds: Sequence[str], target_fpr: float,
           on_result: Callable[[CandidateResult], None] | None = None) -> tuple[CandidateResult, list[CandidateResult]]:
    """Score every candidate of ``names`` (``variant:head``) and choose one by :data:`RULE`.

    Args:
        fitters: ``{name: fit(data) -> (head, settings json, extras, train info)}``.
        data: ``{name: VariantData}`` for every candidate in ``names`` (candidates of one :func:`data_key` share one).
        kinds: the defect kind of each synthetic defect (length = ``len(data[v].defect)``).
        target_fpr: the per-frame false-alarm rate the recall is measured at.
        on_result: called with each candidate's result as it is done (a progress line).

    Returns:
        ``(chosen, all results in the order of names)``.
    """
    results = []
    for name in names:
        r = score_candidate(name, fitters[name], data[name], kinds, target_fpr)
        results.append(r)
        if on_result is not None:
            on_result(r)
    return choose(results), results


def selection_json(chosen: CandidateResult, results: Sequence[CandidateResult], *, seed: int, target_fpr: float,
                   n_normal: int, kinds: Sequence[str], wall_s: float) -> dict:
    """The ``head.selection`` record of the manifest (:class:`algan.contract.HeadSelection`)."""
    return {"chosen": chosen.name, "rule": RULE, "seed": seed, "target_fpr": target_fpr, "n_normal": n_normal,
            "n_defects": len(kinds), "defect_kinds": sorted(set(kinds)), "defects_per_image": DEFECTS_PER_IMAGE,
            "wall_s": round(wall_s, 2), "candidates": [r.to_json() for r in results]}


def format_table(chosen: str, results: Sequence[CandidateResult], target_fpr: float) -> str:
    """The printed table: one line per candidate, the chosen one marked, and a closing line saying what the chosen
    head catches at the target false-alarm rate (overall and per defect family)."""
    kinds = sorted({k for r in results for k in r.recall_by_kind})
    head = f"  {'candidate':<20} {'recall@' + format(target_fpr, 'g'):>11} {'AUROC':>7} {'fit s':>7}  " + \
        " ".join(f"{k[:8]:>8}" for k in kinds)
    lines = [f"head selection on synthetic defects ({RULE.split(';')[0]}):", head]
    for r in results:
        mark = "*" if r.name == chosen else " "
        lines.append(f"{mark} {r.name:<20} {r.recall_at_fpr:>11.3f} {r.auroc:>7.4f} {r.fit_s:>7.1f}  " +
                     " ".join(f"{r.recall_by_kind.get(k, float('nan')):>8.3f}" for k in kinds))
    lines.append(f"chosen: {chosen}")
    pick = next((r for r in results if r.name == chosen), None)
    if pick is not None:
        families = ", ".join(f"{f} {v:.0%}" for f, v in pick.recall_by_family.items())
        lines.append(f"  at the threshold for {target_fpr:g} false alarms per frame on the held-out normals it flags "
                     f"{pick.recall_at_fpr:.0%} of the synthetic defects" + (f" ({families})" if families else "") +
                     "; real defects differ: measure them with algan-eval once you have labelled ones")
    return "\n".join(lines)


def _batched(fn: Callable[[torch.Tensor], torch.Tensor], u8: np.ndarray, batch_size: int) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([fn(torch.from_numpy(u8[i : i + batch_size])) for i in range(0, len(u8), batch_size)])


def model_inputs(frames: np.ndarray, size: tuple[int, int], tiling: TileSpec | None) -> np.ndarray:
    """What a candidate's model takes of frames uint8 BGR ``(N, H, W, 3)``: with ``tiling`` every frame's tiles,
    frame by frame, ``(N * rows * cols, h, w, 3)`` (:func:`algan.runtime.tiling.tile_frame`); else the frames
    resized to ``size = (h, w)`` (:func:`algan.runtime.preprocess.prepare_frame`; no copy when they are that size)."""
    from algan.runtime.preprocess import prepare_frame
    from algan.runtime.tiling import tile_frame

    h, w = int(size[0]), int(size[1])
    if tiling is not None:
        tiles = [tile_frame(f, tiling, (h, w)) for f in frames]
        return np.concatenate(tiles) if tiles else np.empty((0, h, w, 3), np.uint8)
    if frames.shape[1:3] == (h, w):
        return frames
    return np.stack([prepare_frame(f, (h, w)) for f in frames]) if len(frames) else np.empty((0, h, w, 3), np.uint8)


def build_variant_data(settings, fit_paths: Sequence, normal_u8: np.ndarray, defect_u8: np.ndarray,
                       progress: bool = False) -> tuple[VariantData, np.ndarray]:
    """Extract one variant's inputs once: training features of ``fit_paths`` (of their tiles with
    ``settings.tiling``), and the held-out normals and synthetic defects (frames uint8 BGR (N, H, W, 3), resized to
    the input or cut into tiles by :func:`model_inputs`).

    Args:
        settings: the variant's :class:`algan.model.fit.FitSettings` (backbone, patch spec, transform, tiling).

    Returns:
        ``(VariantData, raw training features)`` (the raw features go to :class:`algan.model.fit.FitCache`).

    Raises:
        ValueError: a tiled feature-variant candidate (tiles are for the patch heads' maps).
    """
    from algan.features.backbone import Preprocess, build_backbone
    from algan.features.patch import MapPostprocess, PatchFeatureMaps, PatchProjection
    from algan.model.fit import (
        MAP_STATS_IMAGES,
        extract_features,
        extract_patches,
        map_stats_paths,
        pooled_training_cells,
    )
    from algan.model.heads.vector import FeatureTransform
    from algan.runtime.tiling import load_tiles

    spec = settings.backbone
    size = tuple(spec.input_size)
    pre = Preprocess(spec.mean, spec.std)
    bs = settings.batch_size
    tiling = settings.tiling
    if settings.variant == "patch":
        pspec = settings.patch
        fm = PatchFeatureMaps(spec, pspec).eval()
        raw_pooled: list[np.ndarray] | None = [] if tiling is None and settings.global_weight > 0 else None
        raw = extract_patches(pre, fm, fit_paths, size, pspec.patches_per_image, settings.seed, bs,
                              "patches (train)" if progress else None, tiling, raw_pooled)
        proj = PatchProjection.fit(pspec.projection, raw, pspec.dim, settings.seed)
        with torch.no_grad():
            x = proj.vectors(torch.from_numpy(raw)).numpy()
        pooled = (pooled_training_cells(pre, fm, proj, raw_pooled or None, fit_paths, size, bs)
                  if raw_pooled is not None else None)

        def maps(u: torch.Tensor) -> torch.Tensor:
            return proj(fm(pre(u))).half()

        stats = None
        if pspec.map_norm != "none":  # the training images (their tiles) algan-train fits the map statistics on
            stats = _batched(maps, load_tiles(map_stats_paths(fit_paths, MAP_STATS_IMAGES, settings.seed), size,
                                              tiling), bs)
        n_tiles = tiling.n_tiles if tiling is not None else 1
        data = VariantData("patch", x, _batched(maps, model_inputs(normal_u8, size, tiling), bs),
                           _batched(maps, model_inputs(defect_u8, size, tiling), bs),
                           len(fit_paths) * n_tiles * fm.grid[0] * fm.grid[1], MapPostprocess(pspec, size), stats,
                           tiling, (int(normal_u8.shape[1]), int(normal_u8.shape[2])) if tiling is not None else None,
                           pooled)
        return data, raw
    if tiling is not None:
        raise ValueError("--head auto tiles the patch candidates only; a feature candidate takes whole frames")
    backbone = build_backbone(spec).eval()
    raw = extract_features(pre, backbone, fit_paths, size, bs, "features (train)" if progress else None)
    transform = FeatureTransform.fit(raw, settings.transform, settings.pca_dim)
    with torch.no_grad():
        x = transform(torch.from_numpy(raw)).numpy()

    def feats(u: torch.Tensor) -> torch.Tensor:
        return transform(backbone(pre(u)))

    return VariantData("feature", x, _batched(feats, model_inputs(normal_u8, size, None), bs),
                       _batched(feats, model_inputs(defect_u8, size, None), bs)), raw


def fitter(settings) -> Callable[[VariantData], tuple]:
    """``fit(data) -> (head, settings json, extras, train info)`` of one candidate's settings."""
    from algan.model.heads.registry import head_kind

    kind = head_kind(settings.variant, settings.head)
    return lambda d: kind.fit(settings, d.train, n_cells=d.n_cells, progress=False, pooled=d.pooled)


@dataclass
class AutoResult:
    """:func:`fit_auto`'s result: the bundle's :class:`algan.model.fit.FitResult` (its manifest holds
    ``head.selection``), the chosen candidate and every candidate's figures (in the order scored)."""

    fit: object
    chosen: CandidateResult
    results: list[CandidateResult]


@dataclass
class Selection:
    """:func:`select_heads`' result: the chosen candidate, every candidate's result (scored order), the training
    split's raw features per candidate name (for :class:`algan.model.fit.FitCache`; candidates of one
    :func:`data_key` share the array), the synthetic defects' kinds and the number of held-out normals."""

    chosen: CandidateResult
    results: list[CandidateResult]
    raw: dict[str, np.ndarray]
    kinds: list[str]
    n_normal: int

    def to_json(self, seed: int, target_fpr: float, wall_s: float) -> dict:
        return selection_json(self.chosen, self.results, seed=seed, target_fpr=target_fpr, n_normal=self.n_normal,
                              kinds=self.kinds, wall_s=wall_s)


def select_heads(dataset, settings: Mapping[str, object], progress: bool = False,
                 on_result: Callable[[CandidateResult], None] | None = None) -> Selection:
    """Score every candidate of ``settings`` on synthetic defects of ``dataset``'s held-out normals and choose one.

    One extraction per :func:`data_key` (training features, held-out normals, synthetic defects); every candidate is
    fitted on the training features of the split :func:`algan.model.fit.training_split` gives. With a tiled
    candidate the synthetic defects are drawn on the held-out normals at the frames' median size
    (:func:`algan.runtime.tiling.frame_size`), else at the input size.

    Args:
        dataset: the training data (:func:`algan.data.datasets.load_dataset`).
        settings: ``{"variant:head": FitSettings}`` of the candidates (:func:`candidates_for` names them; each
            :class:`algan.model.fit.FitSettings` carries its head's backbone blocks); their seed, holdout, max_train
            and target_fpr must agree.

    Raises:
        TooFewHeldOut (a ValueError): fewer than :data:`MIN_HELD_OUT` held-out normals.
        ValueError: no candidates, settings that disagree, bad settings.
    """
    from algan.data.defects import synthesize_families
    from algan.model.fit import training_split
    from algan.runtime.preprocess import load_batch
    from algan.runtime.tiling import frame_size

    if not settings:
        raise ValueError("no candidate heads to choose from")
    base = next(iter(settings.values()))
    for name, s in settings.items():
        for f in ("seed", "holdout", "max_train", "target_fpr"):
            if getattr(s, f) != getattr(base, f):
                raise ValueError(f"candidate {name} has {f}={getattr(s, f)!r}, the others {getattr(base, f)!r}")
    fit_paths, hold_paths = training_split(dataset, base)
    if len(hold_paths) < MIN_HELD_OUT:
        raise TooFewHeldOut(len(hold_paths), len(fit_paths) + len(hold_paths))
    size = tuple(base.backbone.input_size)
    tiled = any(s.tiling is not None for s in settings.values())
    hold_u8 = load_batch(hold_paths, frame_size(hold_paths) if tiled else size)
    defects = synthesize_families(hold_u8, DEFECTS_PER_IMAGE, base.seed)
    built = build_candidate_data(settings, fit_paths, hold_u8, defects.images, progress)
    data = {n: d for n, (d, _) in built.items()}
    raw = {n: r for n, (_, r) in built.items()}
    fitters = {n: fitter(s) for n, s in settings.items()}
    chosen, results = select(list(settings), fitters, data, defects.kinds, base.target_fpr, on_result)
    return Selection(chosen, results, raw, list(defects.kinds), len(hold_u8))


def fit_auto(dataset, settings: Mapping[str, object], progress: bool = False,
             on_result: Callable[[CandidateResult], None] | None = None) -> AutoResult:
    """Train the bundle of the candidate that :data:`RULE` picks on synthetic defects (:func:`select_heads`).

    The chosen candidate's training features and fitted head are reused for the bundle
    (:class:`algan.model.fit.FitCache`); the bundle's threshold comes from the held-out normals as for any head (a
    head that :func:`algan.model.fit.calibration_mode` cross-fits is fitted again on every training normal, its
    threshold from out-of-fold scores), and its manifest records ``head.selection``.

    Args:
        settings: ``{"variant:head": FitSettings}`` of the candidates, as for :func:`select_heads`.

    Raises:
        ValueError: as :func:`select_heads`.
    """
    from algan.contract import HeadSelection
    from algan.model.fit import FitCache, fit_detector

    t0 = time.perf_counter()
    sel = select_heads(dataset, settings, progress, on_result)
    chosen = settings[sel.chosen.name]
    result = fit_detector(dataset, chosen, progress, cache=FitCache(sel.raw[sel.chosen.name], sel.chosen.fitted))
    wall = time.perf_counter() - t0
    head = result.manifest.require("head")
    head.selection = HeadSelection.model_validate(sel.to_json(chosen.seed, chosen.target_fpr, wall))
    result.manifest.require("training").wall_s = round(wall, 2)
    return AutoResult(result, sel.chosen, sel.results)
