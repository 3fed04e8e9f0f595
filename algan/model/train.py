"""ALGAN training loop (the only place with optimisers).

Algorithm (Murase & Fukumizu 2022; DESIGN.md): per mini-batch of real normal features x,
1. D step on ``discriminator_loss`` with fresh G(z_n), z_n ~ N(0, I), fresh G(z_a), z_a ~ N(0, sigma^2 I), and
   samples of both kinds drawn from the buffer of early-training samples;
2. G step on the non-saturating ``generator_loss`` of fresh G(z_n) only.

Buffer policy (explicit, configurable): during epochs ``[0, buffer_epochs)`` every generated batch of both kinds
is offered to a per-kind reservoir of at most ``buffer_size`` samples (reservoir sampling: a uniform sample of
everything generated in that window); the buffer terms are used as soon as the buffer holds one batch, sampled
uniformly with replacement.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from algan.model.heads import AlganHead
from algan.model.losses import discriminator_loss, generator_loss
from algan.model.networks import MLPDiscriminator, MLPGenerator


@dataclass
class AlganConfig:
    """ALGAN-feature hyper-parameters; defaults are the paper's settings (DESIGN.md)."""

    z_dim: int = 100
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
    g_hidden: list[int] = field(default_factory=lambda: [256, 512])
    d_hidden: list[int] = field(default_factory=lambda: [512, 256])
    d_dropout: float = 0.0
    spectral_norm: bool = False
    seed: int = 0

    def to_json(self) -> dict:
        d = asdict(self)
        d["adam_betas"] = list(self.adam_betas)
        return d

    def build_discriminator(self, in_dim: int) -> MLPDiscriminator:
        """A fresh D for features of ``in_dim`` dimensions (used by training and by bundle loading)."""
        return MLPDiscriminator(in_dim, self.d_hidden, self.d_dropout, self.spectral_norm)

    def build_head(self, in_dim: int) -> nn.Module:
        """The inference head (features (N, K) -> raw scores (N,)) with untrained weights, for bundle loading."""
        return AlganHead(self.build_discriminator(in_dim))

    @classmethod
    def from_json(cls, d: dict) -> AlganConfig:
        d = dict(d)
        d["adam_betas"] = tuple(d.get("adam_betas", (0.0, 0.9)))
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


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
    """Trained networks, per-epoch mean losses and wall time (s); ``head`` is what inference runs."""

    generator: MLPGenerator
    discriminator: MLPDiscriminator
    history: list[dict]
    train_s: float

    @property
    def head(self) -> nn.Module:
        return AlganHead(self.discriminator)


def train_algan(x: np.ndarray, cfg: AlganConfig, progress: bool = True) -> TrainResult:
    """Train ALGAN on normal feature vectors.

    Args:
        x: float32 (N, K) transformed normal training features.
        cfg: hyper-parameters.
        progress: show a tqdm bar with epoch and losses.

    Returns:
        trained G and D (eval mode), per-epoch mean losses, wall time in seconds.

    Deterministic for a given ``cfg.seed`` on the same machine and torch build.
    """
    if len(x) < 2:
        raise ValueError(f"ALGAN needs at least 2 training samples, got {len(x)}")
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    data = torch.as_tensor(np.asarray(x, dtype=np.float32))
    n, dim = data.shape
    bs = min(cfg.batch_size, n)
    G = MLPGenerator(cfg.z_dim, dim, cfg.g_hidden)
    D = cfg.build_discriminator(dim)
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=cfg.adam_betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=cfg.adam_betas)
    buf_n = Reservoir(cfg.buffer_size, dim, gen)
    buf_a = Reservoir(cfg.buffer_size, dim, gen)
    history: list[dict] = []
    t0 = time.perf_counter()
    bar = range(cfg.epochs)
    if progress:
        from tqdm import tqdm

        bar = tqdm(bar, desc="ALGAN", unit="epoch", dynamic_ncols=True)
    for epoch in bar:
        G.train()
        D.train()
        perm = torch.randperm(n, generator=gen)
        sums = {"loss_d": 0.0, "loss_g": 0.0}
        steps = 0
        for i in range(0, n - bs + 1, bs):
            real = data[perm[i : i + bs]]
            z_n = torch.randn(bs, cfg.z_dim, generator=gen)
            z_a = torch.randn(bs, cfg.z_dim, generator=gen) * cfg.sigma
            with torch.no_grad():
                fake_n = G(z_n)
                fake_a = G(z_a)
            if epoch < cfg.buffer_epochs:
                buf_n.offer(fake_n)
                buf_a.offer(fake_a)
            use_buf = buf_n.size >= bs and cfg.beta < 1.0
            loss_d = discriminator_loss(
                D(real),
                D(fake_n),
                D(fake_a),
                D(buf_n.sample(bs)) if use_buf else None,
                D(buf_a.sample(bs)) if use_buf else None,
                alpha=cfg.alpha,
                beta=cfg.beta,
            )
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()

            z_n = torch.randn(bs, cfg.z_dim, generator=gen)
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
    G.eval()
    D.eval()
    return TrainResult(G, D, history, time.perf_counter() - t0)
