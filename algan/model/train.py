"""ALGAN training loop (the only place with optimisers).

Algorithm (Murase & Fukumizu 2022, arXiv:2202.10281), per mini-batch of real normal features x:

1. D step on :func:`algan.model.losses.discriminator_loss` with fresh G(z_n), z_n ~ N(0, I), fresh G(z_a),
   z_a ~ N(0, sigma^2 I), and samples of both kinds drawn from the buffer of early-training samples (plus, when
   ``r1_gamma > 0``, the R1 penalty of Mescheder et al. 2018 on the real batch);
2. G step on the non-saturating :func:`algan.model.losses.generator_loss` of fresh G(z_n) only.

Buffer policy (explicit, configurable): during epochs ``[0, buffer_epochs)`` every generated batch of both kinds
is offered to a per-kind reservoir of at most ``buffer_size`` samples (reservoir sampling, Vitter's algorithm R: a
uniform sample of everything generated in that window); from the step at which a reservoir holds one batch the
buffer terms are used, with ``batch_size`` samples drawn uniformly with replacement per step. ``beta = 1`` or
``buffer_epochs = 0`` switches the buffer off.

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
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from algan.model import checkpoint as ckpt
from algan.model.algan_heads import AlganEnsembleHead, Whitening, shrunk_whitening
from algan.model.losses import discriminator_loss, generator_loss, r1_penalty
from algan.model.networks import MLPDiscriminator, MLPGenerator, bake_spectral_norm
from algan.model.presets import PresetConfig

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
#: the ALGAN-patch default: the default preset (whitening, linear G, alpha 0, EMA of D) with the patch schedule
#: and one (G, D) pair (per-cell scores average over many cells already)
PATCH = {**DEFAULT, **PATCH_SCHEDULE, "ensemble": 1}
log = logging.getLogger(__name__)
PRESETS = {"paper": PAPER, "default": DEFAULT, "patch": PATCH}
WHITENINGS = ("none", "shrunk")


def _field(name: str):
    v = DEFAULT[name]
    return field(default_factory=lambda: list(v)) if isinstance(v, list) else field(default=v)


@dataclass
class AlganConfig(PresetConfig):
    """ALGAN-feature hyper-parameters. ``AlganConfig()`` is the ``default`` preset; ``preset("paper")`` the paper's.

    Attributes:
        z_dim: latent dimension of G; ``None`` = the feature dimension K (with a linear G, ``g_hidden=[]``, G can
            then represent any Gaussian, and G(z_a) is the normal data's Gaussian widened by sigma).
        sigma: std of the pseudo-anomalous latents z_a ~ N(0, sigma^2 I) (paper: 4).
        alpha: share of the fake-normal terms vs the pseudo-anomalous terms in L_D (paper: 0.5).
        beta: share of fresh vs buffered generated samples in L_D (paper: 0.5).
        epochs, batch_size, lr_g, lr_d, adam_betas: optimisation (paper: 192, 16, 2e-4, 1e-4, (0, 0.9)).
        buffer_epochs: generated samples of epochs ``[0, buffer_epochs)`` fill the buffer.
        buffer_size: reservoir capacity per latent kind.
        g_hidden, d_hidden: hidden widths of the MLPs.
        g_batch_norm: batch norm after G's hidden layers.
        d_dropout, spectral_norm, d_weight_decay: D regularisation (dropout rate, spectral norm, Adam L2).
        d_quadratic: add a learnable radial term ``w * mean(x^2)`` to D's logit (see MLPDiscriminator).
        r1_gamma: weight of the R1 penalty ``gamma/2 * E||grad_x logit D(x)||^2`` on real data (0 = off).
        d_ema: decay of an exponential moving average of D's weights used at inference (0 = the last D).
        whiten: ``none`` or ``shrunk`` (Ledoit-Wolf shrunk ZCA whitening fitted on the training features, applied
            in front of G's output space and D; part of the head).
        whiten_shrinkage: fixed shrinkage in [0, 1]; ``None`` = Ledoit-Wolf estimate.
        min_steps: train at least this many D/G steps: with few samples an epoch has few steps, so the epoch count
            is raised to ``ceil(min_steps / steps_per_epoch)`` (0 = exactly ``epochs``; see :meth:`epochs_for`).
        ensemble: number of independent (G, D) pairs trained with seeds ``seed, seed + 1, ...`` on the same
            whitened data; the head averages their D logits (training time grows linearly).
        seed: seed of initialisation, latents, batches and buffer; training is deterministic for a seed.
    """

    PRESETS = PRESETS
    KIND = "ALGAN"

    z_dim: int | None = _field("z_dim")
    sigma: float = _field("sigma")
    alpha: float = _field("alpha")
    beta: float = _field("beta")
    epochs: int = _field("epochs")
    batch_size: int = _field("batch_size")
    lr_g: float = _field("lr_g")
    lr_d: float = _field("lr_d")
    adam_betas: tuple[float, float] = _field("adam_betas")
    buffer_epochs: int = _field("buffer_epochs")
    buffer_size: int = _field("buffer_size")
    g_hidden: list[int] = _field("g_hidden")
    d_hidden: list[int] = _field("d_hidden")
    g_batch_norm: bool = _field("g_batch_norm")
    d_dropout: float = _field("d_dropout")
    spectral_norm: bool = _field("spectral_norm")
    d_quadratic: bool = _field("d_quadratic")
    d_weight_decay: float = _field("d_weight_decay")
    r1_gamma: float = _field("r1_gamma")
    d_ema: float = _field("d_ema")
    whiten: str = _field("whiten")
    whiten_shrinkage: float | None = _field("whiten_shrinkage")
    ensemble: int = _field("ensemble")
    min_steps: int = _field("min_steps")
    seed: int = _field("seed")

    def __post_init__(self) -> None:
        if self.whiten not in WHITENINGS:
            raise ValueError(f"unknown whitening {self.whiten!r}; use one of {', '.join(WHITENINGS)}")
        if not 0.0 <= self.d_ema < 1.0:
            raise ValueError(f"d_ema must lie in [0, 1), got {self.d_ema}")
        if self.z_dim is not None and self.z_dim < 1:
            raise ValueError(f"z_dim must be >= 1 or None, got {self.z_dim}")
        if self.epochs < 1 or self.batch_size < 1 or self.ensemble < 1:
            raise ValueError(f"epochs, batch_size and ensemble must be >= 1, got {self.epochs}, {self.batch_size}, "
                             f"{self.ensemble}")
        self.adam_betas = tuple(self.adam_betas)
        self.g_hidden = list(self.g_hidden)
        self.d_hidden = list(self.d_hidden)

    def epochs_for(self, n: int) -> int:
        """Epochs actually run on ``n`` training samples: ``max(epochs, ceil(min_steps / (n // batch)))``."""
        steps = max(n // min(self.batch_size, n), 1)
        return max(self.epochs, -(-self.min_steps // steps))

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


class Reservoir:
    """Fixed-size uniform sample (reservoir sampling, Vitter's algorithm R) of generated feature vectors."""

    def __init__(self, capacity: int, dim: int, gen: torch.Generator) -> None:
        self.data = torch.empty(capacity, dim)
        self.capacity = capacity
        self.size = 0
        self.seen = 0
        self.gen = gen

    def offer(self, batch: torch.Tensor) -> None:
        for row in batch:
            if self.size < self.capacity:
                self.data[self.size] = row
                self.size += 1
            else:
                j = int(torch.randint(0, self.seen + 1, (1,), generator=self.gen))
                if j < self.capacity:
                    self.data[j] = row
            self.seen += 1

    def sample(self, n: int) -> torch.Tensor:
        idx = torch.randint(0, self.size, (n,), generator=self.gen)
        return self.data[idx]


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
        norm is baked in at the end of training, see :func:`algan.model.networks.bake_spectral_norm`)."""
        return AlganEnsembleHead(list(self.discriminators), self.whitening)


@torch.no_grad()
def _ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for pe, pm in zip(ema.state_dict().values(), model.state_dict().values(), strict=True):
        if pe.dtype.is_floating_point:
            pe.mul_(decay).add_(pm, alpha=1.0 - decay)
        else:
            pe.copy_(pm)


def train_algan(
    x: np.ndarray,
    cfg: AlganConfig | None = None,
    progress: bool = True,
    on_epoch: Callable[[int, nn.Module], None] | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 1,
) -> TrainResult:
    """Train ALGAN on normal feature vectors.

    Args:
        x: float32 (N, K) transformed normal training features, N >= 2.
        cfg: hyper-parameters (``None`` = ``AlganConfig()``, the default preset).
        progress: show a tqdm bar with epoch and losses.
        on_epoch: optional ``f(epoch, head)`` called after every epoch with the current inference head (eval
            mode; do not keep it, it changes as training goes on; with ``ensemble > 1`` only once, at the end).
            For experiments.
        checkpoint: optional checkpoint directory (:mod:`algan.model.checkpoint`). The complete training state is
            saved there after every ``checkpoint_every`` epochs and at the end of every ensemble member; when the
            directory holds a state, training resumes from it, and the result is bit-identical to an uninterrupted
            run (same machine, torch build and thread count). A completed checkpoint is kept: a rerun returns the
            trained model at once. Resuming with a different config or different data raises ``ValueError``.
        checkpoint_every: epochs between checkpoints (>= 1).

    Returns:
        trained G and inference D (eval mode), the whitening (or ``None``), per-epoch mean losses, wall time (s;
        with a checkpoint, summed over the runs that trained the model).

    Deterministic for a given ``cfg.seed`` on the same machine, torch build and thread count.
    """
    cfg = cfg or AlganConfig()
    if len(x) < 2:
        raise ValueError(f"ALGAN needs at least 2 training samples, got {len(x)}")
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
    t0 = time.perf_counter()
    x = np.asarray(x, dtype=np.float32)
    cfg_json = cfg.to_json()
    fingerprint = {"config_sha256": ckpt.config_digest(cfg_json), "data_sha256": ckpt.data_digest(x)}
    resume = ckpt.load_state(checkpoint) if checkpoint is not None else None
    tensors, meta = resume if resume is not None else ({}, {})
    if resume is not None:
        _check_fingerprint(checkpoint, meta, fingerprint, cfg_json)
    whitening = None
    if cfg.whiten == "shrunk":
        whitening = Whitening(x.shape[1])
        if resume is not None:
            whitening.load_state_dict(ckpt.sub(tensors, "whitening"))
        else:
            mean, w, _ = shrunk_whitening(x, cfg.whiten_shrinkage)
            whitening.set(mean, w)
    data = torch.as_tensor(x)
    if whitening is not None:
        with torch.no_grad():
            data = whitening(data)
    gs, ds, history = [], [], []
    start_member, prior_s = 0, 0.0
    if resume is not None:
        start_member, prior_s = int(meta["member"]), float(meta["train_s"])
        history = meta["history"] if start_member > 0 else []  # member 0 replays its own from its state
        dim = data.shape[1]
        for i in range(start_member):
            G = cfg.build_generator(dim)
            G.load_state_dict(ckpt.sub(tensors, f"done.{i}.g"))
            D = cfg.build_discriminator(dim)
            D.load_state_dict(ckpt.sub(tensors, f"done.{i}.d"))
            gs.append(G.eval())
            ds.append(D.eval())
        msg = (f"checkpoint {checkpoint} is complete: returning the trained model" if meta.get("complete") else
               f"resuming from epoch {meta['epoch']} of ensemble member {start_member + 1}/{cfg.ensemble} "
               f"({checkpoint})")
        log.info(msg)
        if progress:
            print(msg, file=sys.stderr)

    def save(member: int, epoch: int, member_tensors: dict, member_meta: dict, complete: bool) -> None:
        done = {}
        for i, (G, D) in enumerate(zip(gs, ds, strict=True)):
            done.update(ckpt.prefixed(G.state_dict(), f"done.{i}.g"))
            done.update(ckpt.prefixed(D.state_dict(), f"done.{i}.d"))
        if whitening is not None:
            done.update(ckpt.prefixed(whitening.state_dict(), "whitening"))
        meta = {**fingerprint, "config": cfg_json, "member": member, "epoch": epoch, "complete": complete,
                "history": history or member_meta["history"], "train_s": prior_s + time.perf_counter() - t0,
                "torch": torch.__version__, "member_state": member_meta}
        ckpt.save_state(checkpoint, member, epoch, {**done, **member_tensors}, meta)

    for member in range(start_member, cfg.ensemble):
        cb = None
        if on_epoch is not None and cfg.ensemble == 1:
            cb = lambda e, d: on_epoch(e, AlganEnsembleHead([d], whitening).eval())  # noqa: E731
        member_save = None
        if checkpoint is not None:
            member_save = lambda e, t, m, done, _k=member: save(_k, e, t, m, done and _k == cfg.ensemble - 1)  # noqa: E731
        state = (tensors, meta["member_state"]) if resume is not None and member == start_member else None
        G, D, hist = _train_member(data, cfg, cfg.seed + member, progress, cb, state, member_save, checkpoint_every)
        gs.append(G)
        ds.append(D)
        history = history or hist
    if on_epoch is not None and cfg.ensemble > 1:
        on_epoch(len(history), AlganEnsembleHead(ds, whitening).eval())
    for d in ds:
        bake_spectral_norm(d)  # plain weights: exportable, and the layers build_head makes for loading
    return TrainResult(gs, ds, history, prior_s + time.perf_counter() - t0, whitening)


def _check_fingerprint(path, meta: dict, fingerprint: dict, cfg_json: dict) -> None:
    """Raise ValueError when a checkpoint was written for another config or other training data."""
    if meta.get("config_sha256") != fingerprint["config_sha256"]:
        old = meta.get("config", {})
        diff = sorted(k for k in set(old) | set(cfg_json) if old.get(k) != cfg_json.get(k))
        raise ValueError(f"checkpoint {path} was written for a different ALGAN config (differs in: "
                         f"{', '.join(diff) or 'unknown fields'}); use the same settings or another checkpoint "
                         "directory")
    if meta.get("data_sha256") != fingerprint["data_sha256"]:
        raise ValueError(f"checkpoint {path} was written for different training data (sha256 mismatch); use the "
                         "same data or another checkpoint directory")


def _train_member(data: torch.Tensor, cfg: AlganConfig, seed: int, progress: bool, on_epoch,
                  state: tuple[dict, dict] | None = None, save=None, every: int = 1):
    """One (G, D) pair on (whitened) data float32 (N, K); returns (G, inference D, history), both in eval mode.

    ``state``: (tensors, member meta) of a checkpoint to resume from; ``save(epoch, tensors, meta, done)``: called
    after every ``every`` epochs and after the last one with the complete member state.
    """
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    n, dim = data.shape
    bs = min(cfg.batch_size, n)
    z_dim = cfg.latent_dim(dim)
    G = cfg.build_generator(dim)
    D = cfg.build_discriminator(dim)
    # a fresh D with D's weights, not copy.deepcopy: deep copies of parametrised (spectral-norm) modules are broken
    D_ema = None
    if cfg.d_ema > 0:
        D_ema = cfg.build_discriminator(dim).eval()
        D_ema.load_state_dict(D.state_dict())
    for p in D_ema.parameters() if D_ema is not None else ():
        p.requires_grad_(False)
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=cfg.adam_betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=cfg.adam_betas, weight_decay=cfg.d_weight_decay)
    buf_n = Reservoir(cfg.buffer_size, dim, gen)
    buf_a = Reservoir(cfg.buffer_size, dim, gen)
    history: list[dict] = []
    total = cfg.epochs_for(n)
    start = 0
    if state is not None:
        t, m = state
        G.load_state_dict(ckpt.sub(t, "cur.g"))
        D.load_state_dict(ckpt.sub(t, "cur.d"))
        if D_ema is not None:
            D_ema.load_state_dict(ckpt.sub(t, "cur.d_ema"))
        ckpt.restore_optimizer(opt_g, "cur.opt_g", t, m["opt_g"])
        ckpt.restore_optimizer(opt_d, "cur.opt_d", t, m["opt_d"])
        for name, buf in (("buf_n", buf_n), ("buf_a", buf_a)):
            buf.data = t[f"cur.{name}.data"].clone()
            buf.size, buf.seen = int(m[name]["size"]), int(m[name]["seen"])
        gen.set_state(t["cur.rng.gen"])
        torch.set_rng_state(t["cur.rng.torch"])
        history, start = list(m["history"]), int(m["epoch"])

    def snapshot(epoch: int) -> tuple[dict, dict]:
        t = {**ckpt.prefixed(G.state_dict(), "cur.g"), **ckpt.prefixed(D.state_dict(), "cur.d")}
        if D_ema is not None:
            t.update(ckpt.prefixed(D_ema.state_dict(), "cur.d_ema"))
        tg, og = ckpt.optimizer_tensors(opt_g, "cur.opt_g")
        td, od = ckpt.optimizer_tensors(opt_d, "cur.opt_d")
        t.update({**tg, **td, "cur.buf_n.data": buf_n.data, "cur.buf_a.data": buf_a.data,
                  "cur.rng.gen": gen.get_state(), "cur.rng.torch": torch.get_rng_state()})
        m = {"epoch": epoch, "history": history, "opt_g": og, "opt_d": od,
             "buf_n": {"size": buf_n.size, "seen": buf_n.seen}, "buf_a": {"size": buf_a.size, "seen": buf_a.seen}}
        return t, m

    bar = range(start, total)
    if progress:
        from tqdm import tqdm

        desc = "ALGAN" if cfg.ensemble == 1 else f"ALGAN member {seed - cfg.seed + 1}/{cfg.ensemble}"
        bar = tqdm(bar, desc=desc, unit="epoch", dynamic_ncols=True, initial=start, total=total)
    for epoch in bar:
        G.train()
        D.train()
        perm = torch.randperm(n, generator=gen)
        sums = {"loss_d": 0.0, "loss_g": 0.0}
        steps = 0
        for i in range(0, n - bs + 1, bs):
            real = data[perm[i : i + bs]]
            z_n = torch.randn(bs, z_dim, generator=gen)
            z_a = torch.randn(bs, z_dim, generator=gen) * cfg.sigma
            with torch.no_grad():
                fake_n = G(z_n)
                fake_a = G(z_a)
            if epoch < cfg.buffer_epochs and cfg.buffer_size > 0:
                buf_n.offer(fake_n)
                buf_a.offer(fake_a)
            use_buf = cfg.beta < 1.0 and min(buf_n.size, buf_a.size) >= bs
            if cfg.r1_gamma > 0:
                real = real.clone().requires_grad_(True)
            real_logit = D(real)
            loss_d = discriminator_loss(
                real_logit,
                D(fake_n),
                D(fake_a),
                D(buf_n.sample(bs)) if use_buf else None,
                D(buf_a.sample(bs)) if use_buf else None,
                alpha=cfg.alpha,
                beta=cfg.beta,
            )
            if cfg.r1_gamma > 0:
                loss_d = loss_d + r1_penalty(real_logit, real, cfg.r1_gamma)
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            if D_ema is not None:
                _ema_update(D_ema, D, cfg.d_ema)

            z_n = torch.randn(bs, z_dim, generator=gen)
            loss_g = generator_loss(D(G(z_n)))
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            sums["loss_d"] += float(loss_d.detach())
            sums["loss_g"] += float(loss_g.detach())
            steps += 1
        rec = {"epoch": epoch + 1, **{k: v / max(steps, 1) for k, v in sums.items()}}
        history.append(rec)
        if progress:
            bar.set_postfix(loss_d=f"{rec['loss_d']:.3f}", loss_g=f"{rec['loss_g']:.3f}")
        if save is not None and ((epoch + 1) % every == 0 or epoch + 1 == total):
            save(epoch + 1, *snapshot(epoch + 1), epoch + 1 == total)
        if on_epoch is not None:
            D.eval()
            on_epoch(epoch + 1, D_ema if D_ema is not None else D)
    G.eval()
    D.eval()
    return G, (D_ema if D_ema is not None else D), history
