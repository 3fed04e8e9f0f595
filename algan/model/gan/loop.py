"""The one ALGAN training loop (the only place with optimisers), shared by every variant.

Algorithm (Murase & Fukumizu 2022, IEEE Access; arXiv:2202.10281, Sec. III), per mini-batch of real normal data x:

1. D step on :func:`algan.model.nets.losses.discriminator_loss` with fresh G(z_n), z_n ~ N(0, I), fresh G(z_a),
   z_a ~ N(0, sigma^2 I), and samples of both kinds drawn from the buffer of early-training samples (plus, when
   ``r1_gamma > 0``, the R1 penalty of Mescheder et al. 2018 on the real batch);
2. G step on the non-saturating :func:`algan.model.nets.losses.generator_loss` of fresh G(z_n) only.

Buffer policy (explicit, configurable): during epochs ``[0, buffer_epochs)`` every generated batch of both kinds
is offered to a per-kind reservoir of at most ``buffer_size`` samples (reservoir sampling, Vitter's algorithm R: a
uniform sample of everything generated in that window); from the step at which both reservoirs hold one batch the
buffer terms are used, with ``batch_size`` samples drawn uniformly with replacement per step. ``beta = 1``,
``buffer_epochs = 0`` or ``buffer_size = 0`` switches the buffer off: it is then never filled, and the three give
identical training.

What differs between variants is small and lives in a :class:`Strategy`: how G and D are built, how a real batch
is drawn (augmentation), how the two latent kinds are generated (G's batch-norm mode), how D runs over the batch
parts (one pass or one per part) and whether inputs are perturbed (instance noise). Everything else holds for
every variant and is tested once (tests/model/gan/test_gan_loop.py): the schedule (:meth:`GanConfig.epochs_for`), the
buffer, the EMA of D, the ensemble of independently seeded (G, D) pairs, determinism for a seed, and resumable
checkpoints (:mod:`algan.model.gan.checkpoint`) that give bit-identical results to an uninterrupted run.

Random numbers: batches, latents, augmentation, buffer and noise are drawn from one CPU ``torch.Generator`` seeded
per member (``seed + member``); initialisation and dropout use the global torch RNG, seeded the same way.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from algan.model.gan import checkpoint as ckpt
from algan.model.gan.presets import PresetConfig
from algan.model.nets.losses import discriminator_loss, generator_loss, r1_penalty
from algan.model.nets.networks import bake_spectral_norm

log = logging.getLogger(__name__)


@dataclass
class GanConfig(PresetConfig):
    """The hyper-parameters every ALGAN variant shares (the loop reads only these).

    Variant configs (:class:`algan.model.gan.feature.AlganConfig`, :class:`algan.model.gan.image.ImageConfig`)
    subclass it,
    add their own fields and re-declare a field only where their default differs.

    Attributes:
        sigma: std of the pseudo-anomalous latents z_a ~ N(0, sigma^2 I) (paper: 4).
        alpha: share of the fake-normal terms vs the pseudo-anomalous terms in L_D (paper: 0.5).
        beta: share of fresh vs buffered generated samples in L_D (paper: 0.5).
        epochs, batch_size, lr_g, lr_d, adam_betas: optimisation (paper: 16 per batch, 2e-4, 1e-4, (0, 0.9)).
        buffer_epochs: generated samples of epochs ``[0, buffer_epochs)`` fill the buffer (paper: 10).
        buffer_size: reservoir capacity per latent kind.
        d_dropout: dropout probability after each hidden activation of D (0 = off).
        d_weight_decay: Adam L2 weight decay of D (0 = off).
        r1_gamma: weight of the R1 penalty ``gamma/2 * E||grad_x logit D(x)||^2`` on real data (0 = off).
        d_ema: decay of an exponential moving average of D's weights used at inference (0 = the last D).
        min_steps: train at least this many D/G steps: with few samples an epoch has few steps, so the epoch count
            is raised to ``ceil(min_steps / steps_per_epoch)`` (0 = exactly ``epochs``; see :meth:`epochs_for`).
        seed: seed of initialisation, latents, batches and buffer; training is deterministic for a seed.

    Raises:
        ValueError: from ``__post_init__`` for a value outside its range (the message names the field).
    """

    sigma: float = 4.0
    alpha: float = 0.5
    beta: float = 0.5
    epochs: int = 192
    batch_size: int = 16
    lr_g: float = 2e-4
    lr_d: float = 1e-4
    adam_betas: tuple[float, float] = (0.0, 0.9)
    buffer_epochs: int = 10
    buffer_size: int = 2048
    d_dropout: float = 0.0
    d_weight_decay: float = 0.0
    r1_gamma: float = 0.0
    d_ema: float = 0.0
    min_steps: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.d_ema < 1.0:
            raise ValueError(f"d_ema must lie in [0, 1), got {self.d_ema}")
        if not 0.0 <= self.d_dropout < 1.0:
            raise ValueError(f"d_dropout must lie in [0, 1), got {self.d_dropout}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {self.epochs}, {self.batch_size}")
        if not (0.0 <= self.alpha <= 1.0 and 0.0 <= self.beta <= 1.0):
            raise ValueError(f"alpha and beta must lie in [0, 1], got {self.alpha}, {self.beta}")
        if self.sigma <= 0:
            raise ValueError(f"sigma must be > 0, got {self.sigma}")
        if min(self.r1_gamma, self.d_weight_decay, self.min_steps, self.buffer_epochs, self.buffer_size) < 0:
            raise ValueError("r1_gamma, d_weight_decay, min_steps, buffer_epochs and buffer_size must be >= 0")
        self.adam_betas = tuple(self.adam_betas)  # type: ignore[assignment]

    def epochs_for(self, n: int) -> int:
        """Epochs actually run on ``n`` training samples: ``max(epochs, ceil(min_steps / (n // batch)))``."""
        steps = max(n // min(self.batch_size, n), 1)
        return max(self.epochs, -(-self.min_steps // steps))

    def steps_for(self, n: int) -> int:
        """Optimiser steps per (G, D) pair on ``n`` training samples: :meth:`epochs_for` x batches per epoch."""
        return self.epochs_for(n) * max(n // min(self.batch_size, n), 1)


class Strategy:
    """What a variant changes in the loop; this base class is the feature variant's behaviour.

    Subclasses override the hooks they need; each hook gets the batch tensors on the training device.
    """

    #: progress-bar label
    name = "ALGAN"

    def __init__(self, cfg: GanConfig) -> None:
        self.cfg = cfg

    def latent_dim(self, sample_shape: tuple[int, ...]) -> int:
        """G's latent dimension for samples of ``sample_shape`` (one sample's shape, no batch dimension)."""
        raise NotImplementedError

    def build_generator(self, sample_shape: tuple[int, ...]) -> nn.Module:
        """A fresh G: latents float32 (N, latent_dim) -> samples (N, *sample_shape)."""
        raise NotImplementedError

    def build_discriminator(self, sample_shape: tuple[int, ...]) -> nn.Module:
        """A fresh D: samples (N, *sample_shape) -> logits (N,)."""
        raise NotImplementedError

    def real_batch(self, batch: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """The real batch D sees (augmentation goes here); identity by default."""
        return batch

    def generate(self, G: nn.Module, z_n: torch.Tensor, z_a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Fresh fake-normal G(z_n) and pseudo-anomalous G(z_a), without gradients; G stays in train mode."""
        with torch.no_grad():
            return G(z_n), G(z_a)

    def discriminate(self, D: nn.Module, parts: list[torch.Tensor]) -> list[torch.Tensor]:
        """Logits of every batch part (real, fresh fakes, buffered fakes); one D pass per part by default."""
        return [D(p) for p in parts]

    def perturb(self, parts: list[torch.Tensor], step: int, total_steps: int,
                gen: torch.Generator) -> list[torch.Tensor]:
        """D's inputs at a step (instance noise goes here); unchanged by default."""
        return parts


@dataclass
class GanRun:
    """Trained networks, one (G, D) per ensemble member, in eval mode on the CPU; D is the inference D (the EMA
    copy when ``d_ema > 0``) with its spectral norm baked in; ``history`` holds the first member's per-epoch mean
    losses (``loss_d``, ``loss_g``, ``real_logit``); ``train_s`` the wall time (summed over resumed runs)."""

    generators: list[nn.Module]
    discriminators: list[nn.Module]
    history: list[dict] = field(default_factory=list)
    train_s: float = 0.0


class Reservoir:
    """Fixed-size uniform sample (reservoir sampling, Vitter's algorithm R) of generated samples, stored flat on
    the CPU: float32 (capacity, dim)."""

    def __init__(self, capacity: int, dim: int, gen: torch.Generator) -> None:
        self.data = torch.empty(capacity, dim)
        self.capacity = capacity
        self.size = 0
        self.seen = 0
        self.gen = gen

    def offer(self, batch: torch.Tensor) -> None:
        for row in batch.reshape(len(batch), -1).detach().cpu():
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


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """``ema <- decay * ema + (1 - decay) * model`` on floating-point state; other state (counters) is copied."""
    for pe, pm in zip(ema.state_dict().values(), model.state_dict().values(), strict=True):
        if pe.dtype.is_floating_point:
            pe.mul_(decay).add_(pm, alpha=1.0 - decay)
        else:
            pe.copy_(pm)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` = ``cuda`` when available, else ``cpu``."""
    return torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))


def train_gan(
    data: torch.Tensor,
    cfg: GanConfig,
    strategy: Strategy,
    *,
    members: int = 1,
    progress: bool = True,
    on_epoch: Callable[[int, nn.Module], None] | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 1,
    device: str | torch.device = "cpu",
    fingerprint_data: np.ndarray | None = None,
) -> GanRun:
    """Train ``members`` independent (G, D) pairs (seeds ``cfg.seed + i``) on the same data.

    Args:
        data: float32 (N, *sample_shape) real normal training samples, N >= 2.
        cfg: the shared hyper-parameters (a variant config).
        strategy: the variant's hooks (:class:`Strategy`).
        members: ensemble size (>= 1).
        progress: a tqdm bar per member (epoch and losses), on a terminal only.
        on_epoch: optional ``f(epoch, D)`` after every epoch of member 0 with its current inference D (eval mode;
            do not keep it, training goes on changing it); not called for the epochs a resumed run skips.
        checkpoint: optional checkpoint directory: the complete training state is saved after every
            ``checkpoint_every`` epochs and at the end of every member; when it holds a state, training resumes
            from it, bit-identical to an uninterrupted run (same machine, torch build and thread count). A complete
            checkpoint returns the trained networks at once.
        checkpoint_every: epochs between checkpoints (>= 1).
        device: where G and D train (random numbers are drawn on the CPU either way).
        fingerprint_data: the array whose digest identifies the training data in a checkpoint (default ``data``).

    Returns:
        :class:`GanRun`.

    Raises:
        ValueError: fewer than 2 samples, ``checkpoint_every < 1``, ``members < 1``, or a checkpoint written for a
            different config or different data (the message says which and what to do).
    """
    if len(data) < 2:
        raise ValueError(f"ALGAN needs at least 2 training samples, got {len(data)}")
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
    if members < 1:
        raise ValueError(f"the ensemble needs at least 1 member, got {members}")
    t0 = time.perf_counter()
    dev = torch.device(device)
    cfg_json = cfg.to_json()
    digest_of = fingerprint_data if fingerprint_data is not None else data.detach().cpu().numpy()
    fingerprint = {"config_sha256": ckpt.config_digest(cfg_json), "data_sha256": ckpt.data_digest(digest_of)}
    resume = ckpt.load_state(checkpoint) if checkpoint is not None else None
    tensors, meta = resume if resume is not None else ({}, {})
    if resume is not None:
        check_fingerprint(checkpoint, meta, fingerprint, cfg_json)
    shape = tuple(data.shape[1:])
    gs: list[nn.Module] = []
    ds: list[nn.Module] = []
    history: list[dict] = []
    start_member, prior_s = 0, 0.0
    if resume is not None:
        start_member, prior_s = int(meta["member"]), float(meta["train_s"])
        history = meta["history"] if start_member > 0 else []  # member 0 replays its own from its state
        for i in range(start_member):
            G = strategy.build_generator(shape)
            G.load_state_dict(ckpt.sub(tensors, f"done.{i}.g"))
            D = strategy.build_discriminator(shape)
            D.load_state_dict(ckpt.sub(tensors, f"done.{i}.d"))
            gs.append(G.eval())
            ds.append(D.eval())
        msg = (f"checkpoint {checkpoint} is complete: returning the trained model" if meta.get("complete") else
               f"resuming from epoch {meta['epoch']} of ensemble member {start_member + 1}/{members} "
               f"({checkpoint})")
        log.info(msg)
        if progress:
            print(msg, file=sys.stderr)

    def save(member: int, epoch: int, member_tensors: dict, member_meta: dict, complete: bool) -> None:
        done: dict[str, torch.Tensor] = {}
        for i, (G, D) in enumerate(zip(gs, ds, strict=True)):
            done.update(ckpt.prefixed(G.state_dict(), f"done.{i}.g"))
            done.update(ckpt.prefixed(D.state_dict(), f"done.{i}.d"))
        state_meta = {**fingerprint, "config": cfg_json, "member": member, "epoch": epoch, "complete": complete,
                      "history": history or member_meta["history"], "train_s": prior_s + time.perf_counter() - t0,
                      "torch": torch.__version__, "member_state": member_meta}
        ckpt.save_state(checkpoint, member, epoch, {**done, **member_tensors}, state_meta)

    data = data.to(dev)
    for member in range(start_member, members):
        member_save = None
        if checkpoint is not None:
            member_save = lambda e, t, m, done, _k=member: save(_k, e, t, m, done and _k == members - 1)  # noqa: E731
        state = (tensors, meta["member_state"]) if resume is not None and member == start_member else None
        label = strategy.name if members == 1 else f"{strategy.name} member {member + 1}/{members}"
        G, D, hist = _train_member(data, cfg, strategy, cfg.seed + member, dev, label, progress,
                                   on_epoch if member == 0 else None, state, member_save, checkpoint_every)
        gs.append(G)
        ds.append(D)
        history = history or hist
    for d in ds:
        bake_spectral_norm(d)  # plain weights: exportable, and the layers a config builds for bundle loading
    return GanRun(gs, ds, history, prior_s + time.perf_counter() - t0)


def check_fingerprint(path: Any, meta: dict, fingerprint: dict, cfg_json: dict) -> None:
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


def _train_member(data: torch.Tensor, cfg: GanConfig, strategy: Strategy, seed: int, dev: torch.device,
                  label: str, progress: bool, on_epoch, state: tuple[dict, dict] | None = None, save=None,
                  every: int = 1) -> tuple[nn.Module, nn.Module, list[dict]]:
    """One (G, D) pair on data (N, *shape) on ``dev``; returns (G, inference D, history) in eval mode on the CPU.

    ``state``: (tensors, member meta) of a checkpoint to resume from; ``save(epoch, tensors, meta, done)``: called
    after every ``every`` epochs and after the last one with the complete member state.
    """
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    n = len(data)
    shape = tuple(data.shape[1:])
    flat = int(np.prod(shape))
    bs = min(cfg.batch_size, n)
    z_dim = strategy.latent_dim(shape)
    G = strategy.build_generator(shape).to(dev)
    D = strategy.build_discriminator(shape).to(dev)
    # a fresh D with D's weights, not copy.deepcopy: deep copies of parametrised (spectral-norm) modules are broken
    D_ema = None
    if cfg.d_ema > 0:
        D_ema = strategy.build_discriminator(shape).to(dev).eval()
        D_ema.load_state_dict(D.state_dict())
        for p in D_ema.parameters():
            p.requires_grad_(False)
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=cfg.adam_betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=cfg.adam_betas, weight_decay=cfg.d_weight_decay)
    buf_n = Reservoir(cfg.buffer_size, flat, gen)
    buf_a = Reservoir(cfg.buffer_size, flat, gen)
    history: list[dict] = []
    total = cfg.epochs_for(n)
    total_steps = total * max(n // bs, 1)
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

    epochs: Any = range(start, total)
    if progress and sys.stderr.isatty():
        from tqdm import tqdm

        epochs = tqdm(epochs, desc=label, unit="epoch", dynamic_ncols=True, initial=start, total=total)
    elif progress:  # a log: a line at least every 30 s (epoch, total, ETA), also within a long epoch
        from algan.progress import track

        epochs = track(epochs, label, total=total, unit="epoch", initial=start)
    step = start * max(n // bs, 1)
    buffer_on = cfg.beta < 1.0 and cfg.buffer_size > 0  # off = never filled (no work, no random draws)
    for epoch in epochs:
        G.train()
        D.train()
        perm = torch.randperm(n, generator=gen)
        sums = {"loss_d": 0.0, "loss_g": 0.0, "real_logit": 0.0}
        steps = 0
        for i in range(0, n - bs + 1, bs):
            real = strategy.real_batch(data[perm[i : i + bs].to(dev)], gen)
            z_n = torch.randn(bs, z_dim, generator=gen).to(dev)
            z_a = (torch.randn(bs, z_dim, generator=gen) * cfg.sigma).to(dev)
            fake_n, fake_a = strategy.generate(G, z_n, z_a)
            if buffer_on and epoch < cfg.buffer_epochs:
                buf_n.offer(fake_n)
                buf_a.offer(fake_a)
            use_buf = cfg.beta < 1.0 and min(buf_n.size, buf_a.size) >= bs
            parts = [real, fake_n, fake_a]
            if use_buf:
                parts += [b.sample(bs).view(bs, *shape).to(dev) for b in (buf_n, buf_a)]
            parts = strategy.perturb(parts, step, total_steps, gen)
            if cfg.r1_gamma > 0:
                parts[0] = parts[0].detach().clone().requires_grad_(True)
            logits = strategy.discriminate(D, parts)
            loss_d = discriminator_loss(*logits[:3], *(logits[3:] if use_buf else (None, None)),
                                        alpha=cfg.alpha, beta=cfg.beta)
            if cfg.r1_gamma > 0:
                loss_d = loss_d + r1_penalty(logits[0], parts[0], cfg.r1_gamma)
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            if D_ema is not None:
                ema_update(D_ema, D, cfg.d_ema)

            fake_g = G(torch.randn(bs, z_dim, generator=gen).to(dev))
            loss_g = generator_loss(D(strategy.perturb([fake_g], step, total_steps, gen)[0]))
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            sums["loss_d"] += float(loss_d.detach())
            sums["loss_g"] += float(loss_g.detach())
            sums["real_logit"] += float(logits[0].detach().mean())
            steps += 1
            step += 1
        rec = {"epoch": epoch + 1, **{k: v / max(steps, 1) for k, v in sums.items()}}
        history.append(rec)
        if hasattr(epochs, "set_postfix"):
            epochs.set_postfix(loss_d=f"{rec['loss_d']:.3f}", loss_g=f"{rec['loss_g']:.3f}")
        if save is not None and ((epoch + 1) % every == 0 or epoch + 1 == total):
            save(epoch + 1, *snapshot(epoch + 1), epoch + 1 == total)
        if on_epoch is not None:
            D.eval()
            on_epoch(epoch + 1, D_ema if D_ema is not None else D)
    G.eval()
    D.eval()
    final = D_ema if D_ema is not None else D
    return G.cpu(), final.cpu().eval(), history
