"""The one GAN training loop (algan.model.gan.loop): the properties every variant gets from it, tested once per
variant (feature vectors and images): determinism, resumable checkpoints, the buffer switch, the EMA of D, the
schedule, the per-epoch callback, and a baked spectral norm."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from algan.model.gan import checkpoint as ckpt
from algan.model.gan.feature import AlganConfig, train_algan
from algan.model.gan.image import ImageConfig, train_algan_image
from algan.model.gan.loop import GanConfig, Reservoir, ema_update, train_gan

torch.set_num_threads(1)


@dataclass
class Variant:
    """How a test drives one variant: a small config, its data, and its trainer returning (G, inference D,
    history)."""

    config: Callable[..., GanConfig]
    data: Any
    train: Callable[..., tuple[nn.Module, nn.Module, list[dict]]]


def _feature_train(x, cfg, **kw):
    r = train_algan(x, cfg, progress=False, **kw)
    return r.generators[0], r.discriminators[0], r.history


def _image_train(x, cfg, **kw):
    r = train_algan_image(x, cfg, progress=False, device="cpu", **kw)
    return r.generator, r.discriminator, r.history


VARIANTS = {
    # 8 steps per epoch; the 32-sample reservoirs overflow during the 2 buffer epochs
    "feature": Variant(
        lambda **kw: AlganConfig.preset("default", **{"epochs": 4, "min_steps": 0, "batch_size": 8,
                                                      "d_hidden": [16, 8], "buffer_epochs": 2, "buffer_size": 32,
                                                      "ensemble": 1, **kw}),
        np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32),
        _feature_train),
    # 3 steps per epoch of 64 px gray images, the spectral-norm D of the default preset, flips and translations
    "image": Variant(
        lambda **kw: ImageConfig.preset("default", **{"size": 64, "channels": 1, "ngf": 8, "ndf": 8, "epochs": 3,
                                                      "batch_size": 4, "buffer_epochs": 1, "buffer_size": 8,
                                                      "translate": 2, **kw}),
        torch.rand(12, 1, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1,
        _image_train),
}


def digest(*modules: nn.Module) -> str:
    h = hashlib.sha256()
    for m in modules:
        for k, v in sorted(m.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().numpy().tobytes())
    return h.hexdigest()


class Killed(Exception):
    pass


@pytest.fixture(params=sorted(VARIANTS))
def variant(request) -> Variant:
    return VARIANTS[request.param]


def test_training_is_deterministic_for_a_seed(variant) -> None:
    a = variant.train(variant.data, variant.config())
    b = variant.train(variant.data, variant.config())
    c = variant.train(variant.data, variant.config(seed=1))
    assert digest(*a[:2]) == digest(*b[:2]) and a[2] == b[2]
    assert digest(*a[:2]) != digest(*c[:2])


def test_resumed_training_is_bit_identical(variant, tmp_path, monkeypatch) -> None:
    cfg = variant.config()
    full = variant.train(variant.data, cfg)
    orig, count = ckpt.save_state, [0]

    def save(*a, **kw):  # the 2nd committed checkpoint is the last one: a kill right after it
        out = orig(*a, **kw)
        count[0] += 1
        if count[0] == 2:
            raise Killed
        return out

    with monkeypatch.context() as m:
        m.setattr(ckpt, "save_state", save)
        with pytest.raises(Killed):
            variant.train(variant.data, cfg, checkpoint=tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [ckpt.state_name(0, 2)]
    resumed = variant.train(variant.data, cfg, checkpoint=tmp_path)
    assert digest(*resumed[:2]) == digest(*full[:2])
    assert resumed[2] == full[2] and len(full[2]) == cfg.epochs
    with pytest.raises(ValueError, match=r"different ALGAN config \(differs in: lr_d\)"):
        variant.train(variant.data, variant.config(lr_d=3e-4), checkpoint=tmp_path)


def test_buffer_off_is_beta_one(variant) -> None:
    """beta = 1, buffer_epochs = 0 and buffer_size = 0 all switch the buffer off: identical networks; the buffer on
    changes them."""
    on = variant.train(variant.data, variant.config())
    beta1 = variant.train(variant.data, variant.config(beta=1.0))
    empty = variant.train(variant.data, variant.config(buffer_epochs=0))
    assert digest(*beta1[:2]) != digest(*on[:2])
    none = variant.train(variant.data, variant.config(buffer_size=0))
    assert digest(*beta1[:2]) == digest(*empty[:2]) == digest(*none[:2]) and beta1[2] == empty[2] == none[2]


def test_ema_of_d_leaves_training_unchanged(variant) -> None:
    """The EMA copy of D is read only at inference: G is bit-identical with and without it, the inference D differs
    for a real decay and equals the last D for a vanishing one."""
    plain = variant.train(variant.data, variant.config(d_ema=0.0))
    ema = variant.train(variant.data, variant.config(d_ema=0.9))
    tiny = variant.train(variant.data, variant.config(d_ema=1e-12))
    assert digest(plain[0]) == digest(ema[0])
    assert digest(plain[1]) != digest(ema[1])
    for (k, a), b in zip(plain[1].state_dict().items(), tiny[1].state_dict().values(), strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6), k


def test_on_epoch_sees_every_epoch_and_the_schedule_holds(variant) -> None:
    seen: list[int] = []
    cfg = variant.config(min_steps=40)
    _, _, history = variant.train(variant.data, cfg, on_epoch=lambda e, d: seen.append(e))
    n = len(variant.data)
    steps = n // min(cfg.batch_size, n)
    assert cfg.epochs_for(n) == max(cfg.epochs, -(-40 // steps))
    assert seen == list(range(1, cfg.epochs_for(n) + 1)) == [h["epoch"] for h in history]


def test_spectral_norm_is_baked_into_the_returned_d() -> None:
    v = VARIANTS["image"]
    _, d, _ = v.train(v.data, v.config(d_norm="spectral", d_ema=0.5))
    assert not any("parametrizations" in k for k in d.state_dict())
    head = v.config(d_norm="spectral").build_head()
    head.discriminator.load_state_dict(d.state_dict())  # the bundle loader's layers
    with torch.no_grad():
        assert torch.equal(head(v.data), -d(v.data))


def test_train_gan_refuses_bad_arguments() -> None:
    v = VARIANTS["feature"]
    from algan.model.gan.feature import FeatureStrategy

    cfg = v.config()
    data = torch.from_numpy(v.data)
    with pytest.raises(ValueError, match="at least 2 training samples"):
        train_gan(data[:1], cfg, FeatureStrategy(cfg))
    with pytest.raises(ValueError, match="checkpoint_every must be >= 1"):
        train_gan(data, cfg, FeatureStrategy(cfg), checkpoint_every=0)
    with pytest.raises(ValueError, match="at least 1 member"):
        train_gan(data, cfg, FeatureStrategy(cfg), members=0)


def test_ema_update_and_reservoir_are_exact() -> None:
    a, b = nn.Linear(2, 1), nn.Linear(2, 1)
    before = {k: v.clone() for k, v in a.state_dict().items()}
    ema_update(a, b, 0.75)
    for k, v in a.state_dict().items():
        assert torch.allclose(v, 0.75 * before[k] + 0.25 * b.state_dict()[k])
    r = Reservoir(4, 6, torch.Generator().manual_seed(0))
    r.offer(torch.arange(2 * 6, dtype=torch.float32).view(2, 2, 3))  # images are stored flat
    assert r.size == 2 and r.seen == 2 and torch.equal(r.data[1], torch.arange(6, 12, dtype=torch.float32))


def test_the_patch_head_plumbs_the_checkpoint(tmp_path) -> None:
    """ALGAN-patch trains through the same loop, so fit_patch_head checkpoints too (the image variant's plumbing
    through fit_detector is tested in tests/pipeline/test_image_variant.py)."""
    from algan.model.fit import FitSettings, fit_patch_head

    v = VARIANTS["feature"]
    settings = FitSettings(variant="patch", algan=v.config(), checkpoint=str(tmp_path / "ck"))
    head, _, _, info = fit_patch_head(settings, v.data, n_cells=64, progress=False)
    (state,) = list((tmp_path / "ck").iterdir())
    assert state.name == ckpt.state_name(0, v.config().epochs)
    again, _, _, _ = fit_patch_head(settings, v.data, n_cells=64, progress=False)  # complete: returned at once
    assert digest(head) == digest(again)


def test_the_patch_head_keeps_the_whitening_for_a_quadratic_discriminator() -> None:
    """D's radial term ``w * mean(x^2)`` needs the whitened input, so the whitening cannot be folded into D's first
    layer: fit_patch_head keeps it in front of D (it used to raise from fold_whitening), records
    ``folded_whitening: False`` for the bundle loader, and the head scores like the trained one."""
    from algan.model.fit import FitSettings, fit_patch_head
    from algan.model.heads.patch import PatchwiseHead

    v = VARIANTS["feature"]
    x = v.data
    for quad in (False, True):
        settings = FitSettings(variant="patch", algan=v.config(d_quadratic=quad, whiten="shrunk"))
        head, head_json, _, _ = fit_patch_head(settings, x, n_cells=64, progress=False)
        assert isinstance(head, PatchwiseHead)
        assert head_json["folded_whitening"] is (not quad)
        assert (head.inner.whitening is None) is (not quad)
        assert (getattr(head.inner.discriminators[0], "quad", None) is not None) is quad
        r = train_algan(x, settings.algan, progress=False)  # same seed: the same trained head, unfolded
        with torch.no_grad():
            maps = head(torch.from_numpy(x).T.reshape(1, 8, 8, 8))
            ref = r.head(torch.from_numpy(x))
        np.testing.assert_allclose(maps.reshape(-1).numpy(), ref.numpy(), rtol=1e-4, atol=1e-4)
