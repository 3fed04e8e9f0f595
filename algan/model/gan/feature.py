"""ALGAN-feature: the fully connected variant on backbone feature vectors, and its presets.

Training runs in the one loop of :mod:`algan.model.gan.loop` (algorithm, buffer policy, EMA, checkpoints) with
:class:`FeatureStrategy`; this module adds what is particular to feature vectors: the shrunk whitening in front of
G and D, the ensemble head and the presets.

Presets (:meth:`AlganConfig.preset`): ``"paper"`` reproduces the paper's settings on whatever features it gets;
``"default"`` (what ``AlganConfig()`` gives) changes what made ALGAN-feature detect on backbone features:

- a shrunk ZCA whitening in front of G and D (the defect signal lives in the low-variance directions that
  standardisation hides and PCA truncation drops), so Euclidean geometry = Mahalanobis geometry;
- a *linear* G with a latent as wide as the features (``z_dim=None``, ``g_hidden=[]``): it can represent the
  (whitened, roughly Gaussian) normal data, and G(z_a) = the same Gaussian widened by sigma surrounds the data on
  every side, so D's optimum (a density ratio) decreases with the Mahalanobis distance; a 100-d non-linear G
  covers a thin manifold only, and D then learns "energy outside G's range = real", which inverts the score;
- ``alpha = 0``: D separates real data from the pseudo-anomalies (fresh and buffered) only; the fake-normal term
  made D fit the individual training points once G matched the data (toy data AUROC 0.86 -> 1.00);
- an exponential moving average of D's weights and a step-based schedule (``epochs=32``, ``min_steps=1200``);
- an ensemble of 3 (G, D) pairs (seeds ``seed .. seed + 2``) whose D logits are averaged: single members differ by
  seed (MTD 0.973 / 0.979 / 0.976), their mean is steady (0.980), at 3x the training time.

The paper preset keeps batch norm in G; in training mode it re-normalises the sigma-scaled latents, so G(z_a) has
nearly the same distribution as G(z_n). See benchmarks/ALGAN_EXPERIMENTS.md for the measurements.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from algan.model.gan.loop import GanConfig, Reservoir, Strategy, train_gan
from algan.model.nets.algan_head import AlganEnsembleHead, Whitening, shrunk_whitening
from algan.model.nets.networks import MLPDiscriminator, MLPGenerator

#: the paper's settings (Murase & Fukumizu 2022): FC G/D with batch norm in G, no whitening, 192 epochs
PAPER = {
    "z_dim": 100,
    "sigma": 4.0,
    "alpha": 0.5,
    "beta": 0.5,
    "epochs": 192,
    "batch_size": 16,
    "lr_g": 2e-4,
    "lr_d": 1e-4,
    "adam_betas": (0.0, 0.9),
    "buffer_epochs": 10,
    "buffer_size": 2048,
    "g_hidden": [256, 512],
    "d_hidden": [512, 256],
    "g_batch_norm": True,
    "d_dropout": 0.0,
    "spectral_norm": False,
    "d_quadratic": False,
    "d_weight_decay": 0.0,
    "r1_gamma": 0.0,
    "d_ema": 0.0,
    "whiten": "none",
    "whiten_shrinkage": None,
    "ensemble": 1,
    "min_steps": 0,
    "seed": 0,
}
#: the product default; every entry differing from PAPER is a measured improvement (ALGAN_EXPERIMENTS.md)
DEFAULT = {
    **PAPER,
    "z_dim": None,
    "g_hidden": [],
    "alpha": 0.0,
    "g_batch_norm": False,
    "whiten": "shrunk",
    "d_ema": 0.99,
    "epochs": 32,
    "min_steps": 1200,
    "ensemble": 3,
}
#: the training schedule of ALGAN-patch on sampled patch vectors, applied on top of either preset: patches are
#: many and cheap, so batches are larger and the schedule is step-based; the buffer is filled in the first epoch
PATCH_SCHEDULE = {"batch_size": 256, "epochs": 2, "min_steps": 1500, "buffer_epochs": 1}
#: the ALGAN-patch default: the default preset (linear G, EMA of D) with the patch schedule, one (G, D) pair, the
#: paper's alpha = 0.5 (with ~10^5 training patches the fake-normal term no longer fits individual points: D learns
#: where the patch density departs from G's Gaussian), one hidden layer of 512, and the whitening shrunk by a fixed
#: 0.7 instead of the Ledoit-Wolf estimate (which barely shrinks ~10^5 patch vectors, so the whitening blows up the
#: noisy low-variance directions of the patch features). Chosen on four data sets (MTD, synthetic metal and weave,
#: bottle-video frames with drawn defects) against Ledoit-Wolf / shrinkage 0.3, 0.5 and 0.9 / D [256] and [1024]:
#: benchmarks/RESULTS.md, "Patch variant".
PATCH = {**DEFAULT, **PATCH_SCHEDULE, "ensemble": 1, "alpha": 0.5, "d_hidden": [512], "whiten_shrinkage": 0.7}
log = logging.getLogger(__name__)
PRESETS = {"paper": PAPER, "default": DEFAULT, "patch": PATCH}
WHITENINGS = ("none", "shrunk")


def _field(name: str):
    v = DEFAULT[name]
    return field(default_factory=lambda: list(v)) if isinstance(v, list) else field(default=v)


@dataclass
class AlganConfig(GanConfig):
    """ALGAN-feature hyper-parameters. ``AlganConfig()`` is the ``default`` preset; ``preset("paper")`` the paper's.

    Attributes:
        z_dim: latent dimension of G; ``None`` = the feature dimension K (with a linear G, ``g_hidden=[]``, G can
            then represent any Gaussian, and G(z_a) is the normal data's Gaussian widened by sigma).
        sigma, alpha, beta, epochs, batch_size, lr_g, lr_d, adam_betas, buffer_epochs, buffer_size, d_dropout,
            d_weight_decay, r1_gamma, d_ema, min_steps, seed: shared by every variant, see
            :class:`algan.model.gan.loop.GanConfig` (paper: 4, 0.5, 0.5, 192 epochs, 16, 2e-4, 1e-4, (0, 0.9)).
        g_hidden, d_hidden: hidden widths of the MLPs.
        g_batch_norm: batch norm after G's hidden layers.
        spectral_norm: spectral norm on D's layers (Miyato et al. 2018).
        d_quadratic: add a learnable radial term ``w * mean(x^2)`` to D's logit (see MLPDiscriminator).
        whiten: ``none`` or ``shrunk`` (Ledoit-Wolf shrunk ZCA whitening fitted on the training features, applied
            in front of G's output space and D; part of the head).
        whiten_shrinkage: fixed shrinkage in [0, 1]; ``None`` = Ledoit-Wolf estimate.
        ensemble: number of independent (G, D) pairs trained with seeds ``seed, seed + 1, ...`` on the same
            whitened data; the head averages their D logits (training time grows linearly).
    """

    PRESETS = PRESETS
    KIND = "ALGAN"

    # shared fields whose default differs from GanConfig's; the others are declared there
    alpha: float = _field("alpha")
    epochs: int = _field("epochs")
    d_ema: float = _field("d_ema")
    min_steps: int = _field("min_steps")
    # feature-variant fields
    z_dim: int | None = _field("z_dim")
    g_hidden: list[int] = _field("g_hidden")
    d_hidden: list[int] = _field("d_hidden")
    g_batch_norm: bool = _field("g_batch_norm")
    spectral_norm: bool = _field("spectral_norm")
    d_quadratic: bool = _field("d_quadratic")
    whiten: str = _field("whiten")
    whiten_shrinkage: float | None = _field("whiten_shrinkage")
    ensemble: int = _field("ensemble")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.whiten not in WHITENINGS:
            raise ValueError(f"unknown whitening {self.whiten!r}; use one of {', '.join(WHITENINGS)}")
        if self.z_dim is not None and self.z_dim < 1:
            raise ValueError(f"z_dim must be >= 1 or None, got {self.z_dim}")
        if self.ensemble < 1:
            raise ValueError(f"ensemble must be >= 1, got {self.ensemble}")
        self.g_hidden = list(self.g_hidden)
        self.d_hidden = list(self.d_hidden)

    def latent_dim(self, feature_dim: int) -> int:
        """G's latent dimension for features of ``feature_dim`` dimensions."""
        return int(self.z_dim) if self.z_dim is not None else int(feature_dim)

    def build_generator(self, out_dim: int) -> MLPGenerator:
        """A fresh G for features of ``out_dim`` dimensions (not part of the inference head)."""
        return MLPGenerator(self.latent_dim(out_dim), out_dim, self.g_hidden, batch_norm=self.g_batch_norm)

    def build_discriminator(self, in_dim: int) -> MLPDiscriminator:
        """A fresh D for features of ``in_dim`` dimensions."""
        return MLPDiscriminator(in_dim, self.d_hidden, self.d_dropout, self.spectral_norm, self.d_quadratic)

    def build_head(self, in_dim: int) -> nn.Module:
        """The inference head (features float32 (N, K) -> raw scores (N,)) with untrained weights, for bundle
        loading; :attr:`TrainResult.head` has the same structure (state-dict keys and shapes). A trained
        spectral-norm D is stored with its normalised weights baked in, so plain layers are built here."""
        whitening = Whitening(in_dim) if self.whiten != "none" else None
        plain = dataclasses.replace(self, spectral_norm=False)
        return AlganEnsembleHead([plain.build_discriminator(in_dim) for _ in range(self.ensemble)], whitening)


class FeatureStrategy(Strategy):
    """The feature variant in the loop: samples are (whitened) vectors (K,), G and D the MLPs of the config."""

    name = "ALGAN"
    cfg: AlganConfig

    def latent_dim(self, sample_shape: tuple[int, ...]) -> int:
        return self.cfg.latent_dim(sample_shape[0])

    def build_generator(self, sample_shape: tuple[int, ...]) -> nn.Module:
        return self.cfg.build_generator(sample_shape[0])

    def build_discriminator(self, sample_shape: tuple[int, ...]) -> nn.Module:
        return self.cfg.build_discriminator(sample_shape[0])


@dataclass
class TrainResult:
    """Trained networks (eval mode), per-epoch mean losses and wall time (s); ``head`` is what inference runs.

    ``discriminators`` are the inference Ds, one per ensemble member (EMA copies when ``d_ema > 0``), and
    ``generators`` their Gs (working in the whitened space when there is a whitening); ``whitening`` is ``None``
    unless ``cfg.whiten != "none"``; ``history`` holds the first member's losses.
    """

    generators: list[MLPGenerator]
    discriminators: list[MLPDiscriminator]
    history: list[dict]
    train_s: float
    whitening: Whitening | None = None

    @property
    def generator(self) -> MLPGenerator:
        return self.generators[0]

    @property
    def discriminator(self) -> MLPDiscriminator:
        return self.discriminators[0]

    @property
    def head(self) -> nn.Module:
        """Features float32 (N, K) -> raw scores (N,); same structure as ``cfg.build_head(K)`` (the Ds' spectral
        norm is baked in at the end of training, see :func:`algan.model.nets.networks.bake_spectral_norm`)."""
        return AlganEnsembleHead(list(self.discriminators), self.whitening)


def train_algan(
    x: np.ndarray,
    cfg: AlganConfig | None = None,
    progress: bool = True,
    on_epoch: Callable[[int, nn.Module], None] | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 1,
) -> TrainResult:
    """Train ALGAN on normal feature vectors (the loop of :func:`algan.model.gan.loop.train_gan`).

    Args:
        x: float32 (N, K) transformed normal training features, N >= 2.
        cfg: hyper-parameters (``None`` = ``AlganConfig()``, the default preset).
        progress: show a tqdm bar with epoch and losses (on a terminal).
        on_epoch: optional ``f(epoch, head)`` called after every epoch with the current inference head (eval
            mode; do not keep it, it changes as training goes on; with ``ensemble > 1`` only once, at the end).
            For experiments.
        checkpoint: optional checkpoint directory (:mod:`algan.model.gan.checkpoint`). The complete training state is
            saved there after every ``checkpoint_every`` epochs and at the end of every ensemble member; when the
            directory holds a state, training resumes from it, and the result is bit-identical to an uninterrupted
            run (same machine, torch build and thread count). A completed checkpoint is kept: a rerun returns the
            trained model at once. Resuming with a different config or different data raises ``ValueError``.
        checkpoint_every: epochs between checkpoints (>= 1).

    Returns:
        trained G and inference D (eval mode), the whitening (or ``None``), per-epoch mean losses, wall time (s;
        with a checkpoint, summed over the runs that trained the model).

    Raises:
        ValueError: fewer than 2 samples, ``checkpoint_every < 1``, or a checkpoint of another config or data.

    Deterministic for a given ``cfg.seed`` on the same machine, torch build and thread count.
    """
    cfg = cfg or AlganConfig()
    if len(x) < 2:
        raise ValueError(f"ALGAN needs at least 2 training samples, got {len(x)}")
    t0 = time.perf_counter()
    x = np.asarray(x, dtype=np.float32)
    whitening = None
    data = torch.as_tensor(x)
    if cfg.whiten == "shrunk":  # deterministic in the data: a resumed run recomputes the same whitening
        whitening = Whitening(x.shape[1])
        mean, w, _ = shrunk_whitening(x, cfg.whiten_shrinkage)
        whitening.set(mean, w)
        with torch.no_grad():
            data = whitening(data)
    setup_s = time.perf_counter() - t0
    cb = None
    if on_epoch is not None and cfg.ensemble == 1:
        cb = lambda e, d: on_epoch(e, AlganEnsembleHead([d], whitening).eval())  # noqa: E731
    run = train_gan(data, cfg, FeatureStrategy(cfg), members=cfg.ensemble, progress=progress, on_epoch=cb,
                    checkpoint=checkpoint, checkpoint_every=checkpoint_every, fingerprint_data=x)
    ds = list(run.discriminators)
    if on_epoch is not None and cfg.ensemble > 1:
        on_epoch(len(run.history), AlganEnsembleHead(ds, whitening).eval())
    return TrainResult(list(run.generators), ds, run.history, run.train_s + setup_s, whitening)


__all__ = ["DEFAULT", "PAPER", "PATCH", "PATCH_SCHEDULE", "PRESETS", "AlganConfig", "FeatureStrategy", "Reservoir",
           "TrainResult", "train_algan"]
