"""The head kinds: one class per ``variant:head``, registered by that pair.

A head kind knows three things about its head: how to **fit** it on training vectors (:meth:`HeadKind.fit`, what
``algan-train`` and ``--head auto`` call), how to **load** it from a bundle (:meth:`HeadKind.load`: the shape-only
module the bundle's ``weights.safetensors`` is loaded into, built from the manifest's ``head.settings``), and which
**settings** it reads (:attr:`HeadKind.options`, fields of :class:`algan.model.fit.FitSettings`) and writes
(the ``settings`` of the :class:`FittedHead` it returns, stored as the manifest's ``head.settings``).

The registered kinds (variant: heads, in registration order)::

    feature: algan (ALGAN-feature), mahalanobis, knn
    patch:   algan (ALGAN-patch), patchcore, padim
    image:   algan (ALGAN-image)

Adding a head means adding one class here (or anywhere imported before use) with the :func:`register` decorator;
the training pipeline (:mod:`algan.model.fit`), head selection (:mod:`algan.model.select`) and the bundle loader
(:func:`algan.bundle.load_bundle`) look kinds up by ``(variant, head)`` with :func:`head_kind`.

Every head module maps float32 inputs to float32 raw anomaly scores, higher = more anomalous: feature and image
heads (N, K) -> (N,) (images: (N, C, H, W) -> (N,)), patch heads (N, K, gh, gw) -> (N, gh, gw).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch
from torch import nn

from algan.model.gan.feature import PATCH_SCHEDULE, AlganConfig, train_algan
from algan.model.gan.image import ImageConfig, train_algan_image
from algan.model.heads.patch import GlobalBranch, PatchwiseHead, padim_head, patchcore_head
from algan.model.heads.vector import KnnHead, MahalanobisHead
from algan.model.nets.algan_head import fold_whitening

log = logging.getLogger(__name__)

#: fewest ALGAN-patch training steps without a warning: below ~500 the maps of a synthetic set came out inverted
#: (pixel AUROC 0.30 after 32 steps, 0.55 after 96, 0.78 with the default 1500; tests/pipeline/test_bench_cli.py)
MIN_PATCH_STEPS = 500
#: fewest training steps of ALGAN-patch's image-level discriminator when ``--epochs`` is given (a few images at a few
#: epochs are a handful of steps: the branch then scored below chance in a user's trial)
BRANCH_MIN_STEPS = 200


class FittedHead(NamedTuple):
    """A fitted head and what the bundle stores about it (a tuple: ``head, settings, extras, info = fitted``).

    Attributes:
        head: the head module (eval mode is set by the caller).
        settings: the manifest's ``head.settings`` (JSON-serialisable); :meth:`HeadKind.load` reads it back.
        extras: more named tensors for ``weights.safetensors`` (the ALGAN generator, ``generator.*``); not loaded
            for inference.
        info: training figures for the manifest's ``training`` section (``train_s``, final losses, epochs run).
    """

    head: nn.Module
    settings: dict
    extras: dict
    info: dict


class MissingSetting(KeyError):
    """A key :meth:`HeadKind.load` needs is absent from the manifest's ``head.settings`` (the key is ``args[0]``)."""


def require(settings: Mapping[str, Any], key: str) -> Any:
    """``settings[key]``, or :class:`MissingSetting` naming the key (the bundle loader turns it into a
    ``head.settings.<key>`` manifest error)."""
    if key not in settings:
        raise MissingSetting(key)
    return settings[key]


class HeadKind:
    """One ``variant:head``: its fit, its load and its settings. Subclasses set the class attributes and implement
    :meth:`fit` and :meth:`load`; they hold no state (one instance per kind is registered).

    Attributes:
        variant: ``feature``, ``patch`` or ``image``.
        name: the head's name on the command line (``--head``) and in the manifest (``head.kind``).
        label: the kind in model ids (``knn``, ``padim-patch``, ``algan-image``).
        trains: ``True`` for heads with a training loop (ALGAN): they take ``--checkpoint`` and ``--ensemble``.
        options: the :class:`~algan.model.fit.FitSettings` fields the kind reads besides the variant's own
            (``knn_k``, ``coreset_ratio``, ...).
        auto_cost: the kind's place in ``--head auto``'s cost order (:func:`auto_candidates`; lower = cheaper: per
            frame first, then to train); ``None`` = not a candidate.
        auto_tiled: ``--head auto`` also tries the kind on tiles of large frames.
    """

    variant: ClassVar[str]
    name: ClassVar[str]
    label: ClassVar[str]
    trains: ClassVar[bool] = False
    options: ClassVar[tuple[str, ...]] = ()
    auto_cost: ClassVar[int | None] = None
    auto_tiled: ClassVar[bool] = False

    def fit(self, settings: Any, x: np.ndarray, n_cells: int = 0, progress: bool = False,
            pooled: np.ndarray | None = None) -> FittedHead:
        """Fit the head on training vectors.

        Args:
            settings: the run's :class:`~algan.model.fit.FitSettings` (the kind reads :attr:`options`; ALGAN:
                ``algan`` / ``image`` and ``checkpoint``).
            x: float32 training inputs: feature (N, K) transformed features; patch (M, K) projected patch vectors;
                image (N, C, H, W) pixels in [-1, 1].
            n_cells: patch variant: the number of all training cells (images x grid), the reference of PatchCore's
                bank size; 0 elsewhere.
            progress: show training progress.
            pooled: patch variant, whole frames: every training image's pooled cells float32 (N, 2K)
                (:func:`~algan.model.heads.patch.pool_cells`), for ALGAN-patch's image-level discriminator
                (:class:`~algan.model.heads.patch.GlobalBranch`); ``None`` = none (tiles, other heads).

        Raises:
            ValueError: settings the head cannot use.
        """
        raise NotImplementedError

    def load(self, settings: Mapping[str, Any], dim: int) -> nn.Module:
        """The shape-only head a bundle's weights are loaded into.

        Args:
            settings: the manifest's ``head.settings``.
            dim: the head's input width (``features.dim``; 0 for the image variant).

        Raises:
            MissingSetting: a key the head needs is absent.
        """
        raise NotImplementedError


_REGISTRY: dict[tuple[str, str], HeadKind] = {}


def register(cls: type[HeadKind]) -> type[HeadKind]:
    """Class decorator: register one instance of ``cls`` under ``(cls.variant, cls.name)``.

    Raises:
        ValueError: that pair is registered already.
    """
    key = (cls.variant, cls.name)
    if key in _REGISTRY:
        raise ValueError(f"head kind {cls.variant}:{cls.name} is registered twice ({type(_REGISTRY[key]).__name__}, "
                         f"{cls.__name__})")
    _REGISTRY[key] = cls()
    return cls


def variants() -> tuple[str, ...]:
    """The variants with at least one head, in registration order."""
    return tuple(dict.fromkeys(v for v, _ in _REGISTRY))


def head_names(variant: str) -> tuple[str, ...]:
    """The heads of ``variant``, in registration order (empty for an unknown variant)."""
    return tuple(n for v, n in _REGISTRY if v == variant)


def head_kinds() -> tuple[HeadKind, ...]:
    """Every registered kind, in registration order."""
    return tuple(_REGISTRY.values())


def auto_candidates(tiled: bool = False) -> tuple[str, ...]:
    """``variant:head`` of the kinds ``--head auto`` chooses among (:attr:`HeadKind.auto_cost` set), cheapest first;
    ``tiled=True``: those it also tries on tiles (:attr:`HeadKind.auto_tiled`)."""
    kinds = sorted((k for k in _REGISTRY.values() if k.auto_cost is not None and (k.auto_tiled or not tiled)),
                   key=lambda k: k.auto_cost)  # type: ignore[arg-type, return-value]
    return tuple(f"{k.variant}:{k.name}" for k in kinds)


def head_kind(variant: str, name: str) -> HeadKind:
    """The kind registered as ``variant:name``.

    Raises:
        ValueError: no such kind; the message lists the variant's heads and the variants that have ``name``
            (``the image variant has only the algan head; --head knn needs --variant feature``).
    """
    kind = _REGISTRY.get((variant, name))
    if kind is not None:
        return kind
    if variant not in variants():
        raise ValueError(f"unknown variant {variant!r}; use one of {', '.join(variants())}")
    names = head_names(variant)
    has = f"only the {names[0]} head" if len(names) == 1 else f"the heads {', '.join(names)}"
    others = [v for v in variants() if name in head_names(v)]
    fix = f"--head {name} needs --variant {' or '.join(others)}" if others else f"unknown head {name!r}"
    raise ValueError(f"the {variant} variant has {has}; {fix}")


def _generator_extras(generator: nn.Module) -> dict:
    return {f"generator.{k}": v for k, v in generator.state_dict().items()}


@register
class AlganFeatureHead(HeadKind):
    """ALGAN-feature: the discriminator ensemble trained by :func:`algan.model.gan.feature.train_algan` on the
    transformed features (settings: the :class:`~algan.model.gan.feature.AlganConfig`)."""

    variant, name, label, trains, options = "feature", "algan", "algan", True, ("algan", "checkpoint")
    auto_cost = 2

    def fit(self, settings: Any, x: np.ndarray, n_cells: int = 0, progress: bool = False,
            pooled: np.ndarray | None = None) -> FittedHead:
        cfg = settings.algan
        result = train_algan(x, cfg, progress=progress, checkpoint=settings.checkpoint)
        return FittedHead(result.head, cfg.to_json(), _generator_extras(result.generator),
                          {"train_s": result.train_s, "final": result.history[-1], "epochs_run": len(result.history)})

    def load(self, settings: Mapping[str, Any], dim: int) -> nn.Module:
        return AlganConfig.from_json(dict(settings)).build_head(dim)


@register
class MahalanobisFeatureHead(HeadKind):
    """Mahalanobis distance to a Ledoit-Wolf Gaussian of the normal features (:class:`MahalanobisHead`)."""

    variant, name, label = "feature", "mahalanobis", "mahalanobis"
    auto_cost = 0

    def fit(self, settings: Any, x: np.ndarray, n_cells: int = 0, progress: bool = False,
            pooled: np.ndarray | None = None) -> FittedHead:
        return FittedHead(MahalanobisHead.fit(x), {"estimator": "ledoit-wolf"}, {}, {})

    def load(self, settings: Mapping[str, Any], dim: int) -> nn.Module:
        return MahalanobisHead.empty(dim)


@register
class KnnFeatureHead(HeadKind):
    """Mean distance to the ``knn_k`` nearest normal features, ``knn_metric`` whitened or euclidean
    (:class:`KnnHead`); settings ``k``, ``n_bank``, ``metric`` (absent in bundles written before the metric existed:
    euclidean)."""

    variant, name, label, options = "feature", "knn", "knn", ("knn_k", "knn_metric")
    auto_cost = 1

    def fit(self, settings: Any, x: np.ndarray, n_cells: int = 0, progress: bool = False,
            pooled: np.ndarray | None = None) -> FittedHead:
        head = KnnHead.fit(x, settings.knn_k, settings.knn_metric)
        return FittedHead(head, {"k": settings.knn_k, "n_bank": len(x), "metric": head.metric}, {}, {})

    def load(self, settings: Mapping[str, Any], dim: int) -> nn.Module:
        return KnnHead.empty(require(settings, "n_bank"), dim, require(settings, "k"),
                             settings.get("metric", "euclidean"))


@register
class AlganPatchHead(HeadKind):
    """ALGAN-patch: the ALGAN discriminator ensemble applied per cell, trained on sampled patch vectors; its
    whitening is folded into D's first layer when it can be (settings ``folded_whitening``)."""

    variant, name, label, trains, options = ("patch", "algan", "algan-patch", True,
                                             ("algan", "checkpoint", "global_weight"))
    auto_cost, auto_tiled = 4, True

    def fit(self, settings: Any, x: np.ndarray, n_cells: int = 0, progress: bool = False,
            pooled: np.ndarray | None = None) -> FittedHead:
        cfg = settings.algan
        steps = cfg.steps_for(len(x))
        if steps < MIN_PATCH_STEPS:
            log.warning("ALGAN-patch trains only %d steps here (at least %d recommended): early in training D scores "
                        "the data's centre as fake and the maps come out inverted; drop --epochs to use the default "
                        "schedule (>= %d steps) or raise it", steps, MIN_PATCH_STEPS, PATCH_SCHEDULE["min_steps"])
        result = train_algan(x, cfg, progress=progress, checkpoint=settings.checkpoint)
        # the whitening is folded into D's first layer: one K x K product less per cell at inference (not with
        # d_quadratic, whose radial term needs the whitened input)
        fold = result.whitening is not None and not cfg.d_quadratic
        head = PatchwiseHead(fold_whitening(result.head) if fold else result.head)
        head_settings = {**cfg.to_json(), "folded_whitening": fold}
        info = {"train_s": result.train_s, "final": result.history[-1], "epochs_run": len(result.history)}
        weight = settings.global_weight
        if pooled is not None and weight > 0 and settings.tiling is None:
            t = time.perf_counter()
            gcfg = global_branch_config(cfg)
            branch = GlobalBranch(nn.Identity(), pooled.shape[1], weight)
            xg = branch.fit_standardization(pooled)
            branch.head = train_algan(xg, gcfg, progress=False).head
            head.global_branch = branch
            head_settings["global_branch"] = {"weight": weight, "dim": int(pooled.shape[1]), **gcfg.to_json()}
            info["global_train_s"] = round(time.perf_counter() - t, 2)
        return FittedHead(head, head_settings, _generator_extras(result.generator), info)

    def load(self, settings: Mapping[str, Any], dim: int) -> nn.Module:
        cfg = AlganConfig.from_json(dict(settings))
        if settings.get("folded_whitening"):  # the whitening lives in D's first layer
            cfg = dataclasses.replace(cfg, whiten="none")
        head = PatchwiseHead(cfg.build_head(dim))
        if (g := settings.get("global_branch")) is not None:
            gdim = int(require(g, "dim"))
            head.global_branch = GlobalBranch(AlganConfig.from_json(dict(g)).build_head(gdim), gdim,
                                              float(require(g, "weight")))
        return head


def check_global_branch(head: nn.Module, settings: Mapping[str, Any]) -> str | None:
    """``None`` when a loaded ALGAN-patch head's global branch agrees with ``head.settings.global_branch``, else what
    differs (the weight is part of the trained weights and the exported graph: an edited manifest cannot change it)."""
    g = settings.get("global_branch")
    branch = getattr(head, "global_branch", None)
    if g is None or branch is None:
        return None
    stored = float(branch.weight)
    if abs(float(g["weight"]) - stored) > 1e-6:
        return f"is {g['weight']} but the trained weights hold {stored:g} (re-train with --global-weight to change it)"
    return None


def global_branch_config(patch_cfg: AlganConfig) -> AlganConfig:
    """The ALGAN config of ALGAN-patch's image-level discriminator: the feature variant's default preset (an
    ensemble of 3) with the patch head's seed; an explicit epoch count of the patch head (``min_steps`` 0, as
    ``--epochs`` sets it) is kept, with a floor of :data:`BRANCH_MIN_STEPS` steps, so short runs stay short without
    an untrained branch."""
    over: dict[str, Any] = {"seed": patch_cfg.seed}
    if patch_cfg.min_steps == 0:
        over.update(epochs=patch_cfg.epochs, min_steps=BRANCH_MIN_STEPS)
    return AlganConfig.preset("default", **over)


@register
class PatchCorePatchHead(HeadKind):
    """PatchCore: nearest-neighbour distance to a greedy coreset of ``coreset_ratio`` of the training cells
    (:func:`~algan.model.heads.patch.patchcore_head`); settings ``n_bank``, ``coreset_ratio``, ``k``, ``centered``
    (absent in bundles written before the centring: uncentred)."""

    variant, name, label, options = "patch", "patchcore", "patchcore-patch", ("coreset_ratio",)
    # not tiled: on tiles its nearest-neighbour search made it the slowest candidate by far (pcb 3x3: 170 s to fit,
    # minutes to score) and it was the best tiled head on no dev set (benchmarks/RESULTS.md, "Session 15")
    auto_cost = 5

    def fit(self, settings: Any, x: np.ndarray, n_cells: int = 0, progress: bool = False,
            pooled: np.ndarray | None = None) -> FittedHead:
        if not 0.0 < settings.coreset_ratio <= 1.0:
            raise ValueError(f"coreset ratio must lie in (0, 1], got {settings.coreset_ratio}")
        n_bank = min(max(int(round(settings.coreset_ratio * n_cells)), 1), len(x))
        t = time.perf_counter()
        head = patchcore_head(x, n_bank, settings.seed)
        return FittedHead(head, {"n_bank": n_bank, "coreset_ratio": settings.coreset_ratio, "k": 1, "centered": True},
                          {}, {"train_s": round(time.perf_counter() - t, 2)})

    def load(self, settings: Mapping[str, Any], dim: int) -> nn.Module:
        centered = settings.get("centered") is True
        return PatchwiseHead(KnnHead.empty(require(settings, "n_bank"), dim, 1, "euclidean", centered))


@register
class PadimPatchHead(HeadKind):
    """PaDiM-style: Mahalanobis distance of each cell to one Ledoit-Wolf Gaussian of all training patch vectors
    (:func:`~algan.model.heads.patch.padim_head`)."""

    variant, name, label = "patch", "padim", "padim-patch"
    auto_cost, auto_tiled = 3, True

    def fit(self, settings: Any, x: np.ndarray, n_cells: int = 0, progress: bool = False,
            pooled: np.ndarray | None = None) -> FittedHead:
        return FittedHead(padim_head(x), {"estimator": "ledoit-wolf", "covariance": "shared"}, {}, {})

    def load(self, settings: Mapping[str, Any], dim: int) -> nn.Module:
        return PatchwiseHead(MahalanobisHead.empty(dim))


@register
class AlganImageHead(HeadKind):
    """ALGAN-image: the DCGAN-like discriminator on pixels, trained by
    :func:`algan.model.gan.image.train_algan_image` (settings: the :class:`~algan.model.gan.image.ImageConfig`,
    ``settings.image``, default ``ImageConfig(seed=settings.seed)``)."""

    variant, name, label, trains, options = "image", "algan", "algan-image", True, ("image", "checkpoint")

    def fit(self, settings: Any, x: np.ndarray, n_cells: int = 0, progress: bool = False,
            pooled: np.ndarray | None = None) -> FittedHead:
        icfg = settings.image or ImageConfig(seed=settings.seed)
        result = train_algan_image(torch.from_numpy(x), icfg, progress=progress, checkpoint=settings.checkpoint)
        return FittedHead(result.head, icfg.to_json(), _generator_extras(result.generator),
                          {"train_s": result.train_s, "final": result.history[-1]})

    def load(self, settings: Mapping[str, Any], dim: int) -> nn.Module:
        return ImageConfig.from_json(dict(settings)).build_head()
