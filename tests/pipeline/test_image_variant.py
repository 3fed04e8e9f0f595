"""ALGAN-image (DCGAN on pixels): shapes, presets, the loss wiring, determinism, export through the common path,
and (realdata) that the default preset's discriminator does not collapse on MTD."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from algan.bundle import load_bundle, save_bundle
from algan.data.datasets import load_dataset
from algan.export.onnx_export import export_onnx, ort_scores, torch_scores
from algan.model.fit import FitSettings, fit_detector
from algan.model.gan.image import PAPER, ImageConfig, train_algan_image
from algan.model.nets.networks import DCGANDiscriminator, DCGANGenerator, check_size

_REPO = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())


@pytest.mark.parametrize("size", [64, 128])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("norm", ["batch", "spectral", "instance", "none"])
def test_generator_and_discriminator_shapes(size, channels, norm):
    g = DCGANGenerator(16, size, channels, ngf=8)
    d = DCGANDiscriminator(size, channels, ndf=8, norm=norm, dropout=0.1 if norm == "none" else 0.0)
    x = g(torch.randn(5, 16))
    assert x.shape == (5, channels, size, size) and x.dtype == torch.float32
    assert float(x.abs().max()) <= 1.0  # tanh output range
    assert d(x).shape == (5,)


@pytest.mark.parametrize("bad", [32, 96, 100, 0])
def test_sizes_must_be_powers_of_two_from_64(bad):
    with pytest.raises(ValueError, match="power of two"):
        check_size(bad)


def test_presets_and_json_round_trip():
    assert ImageConfig() == ImageConfig.preset("default") == ImageConfig.preset()
    paper = ImageConfig.preset("paper")
    assert paper.to_json() == {**PAPER, "adam_betas": list(PAPER["adam_betas"])}
    assert (paper.d_norm, paper.size, paper.epochs, paper.sigma) == ("batch", 256, 512, 4.0)
    for cfg in (ImageConfig(), paper, ImageConfig.preset("paper", size=64, channels=1, d_ema=0.9)):
        assert ImageConfig.from_json(cfg.to_json()) == cfg
        head = cfg.build_head()
        assert head(torch.zeros(2, cfg.channels, cfg.size, cfg.size)).shape == (2,)
    # bundles written before an option existed were trained with the paper's value of it
    old = {k: v for k, v in paper.to_json().items() if k not in ("d_mixed", "g_anomaly_eval", "d_ema", "translate")}
    assert ImageConfig.from_json(old) == paper
    with pytest.raises(ValueError, match="unknown ALGAN-image preset"):
        ImageConfig.preset("nope")
    with pytest.raises(ValueError, match="d_norm"):
        ImageConfig(d_norm="group")
    with pytest.raises(ValueError, match="d_ema"):
        ImageConfig(d_ema=1.0)


@pytest.mark.parametrize("preset", ["paper", "default"])
def test_both_presets_train_deterministically(preset):
    x = torch.rand(20, 1, 64, 64) * 2 - 1
    cfg = ImageConfig.preset(preset, size=64, channels=1, epochs=2, ngf=8, ndf=8, buffer_epochs=1, buffer_size=32)
    seen = []
    a = train_algan_image(x, cfg, progress=False, on_epoch=lambda ep, head: seen.append((ep, head.training)))
    b = train_algan_image(x, cfg, progress=False)
    assert seen == [(1, False), (2, False)] and len(a.history) == 2
    probe = torch.rand(3, 1, 64, 64) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(a.head(probe), b.head(probe), rtol=0, atol=0)
    assert not a.discriminator.training and torch.isfinite(a.head(probe)).all()
    # the returned D loads into the head that bundles rebuild (spectral norm baked in)
    head = cfg.build_head()
    head.discriminator.load_state_dict(a.discriminator.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(head.eval()(probe), a.head(probe), rtol=0, atol=0)


def test_training_is_deterministic_and_reduces_d_loss():
    x = torch.rand(24, 1, 64, 64) * 2 - 1
    cfg = ImageConfig.preset("paper", size=64, channels=1, epochs=3, ngf=8, ndf=8, buffer_epochs=1, buffer_size=32,
                             seed=5)
    a = train_algan_image(x, cfg, progress=False)
    b = train_algan_image(x, cfg, progress=False)
    probe = torch.rand(4, 1, 64, 64) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(a.head(probe), b.head(probe), rtol=0, atol=0)
    assert a.history[-1]["loss_d"] < a.history[0]["loss_d"]
    with pytest.raises(ValueError, match="expected images"):
        train_algan_image(torch.zeros(4, 3, 64, 64), cfg, progress=False)


def test_image_variant_bundle_and_onnx_parity(synth_root, tmp_path):
    cfg = ImageConfig(size=64, channels=3, epochs=2, ngf=8, ndf=8, seed=1)
    ck = tmp_path / "ck"
    fitted = fit_detector(load_dataset(synth_root), FitSettings(variant="image", image=cfg, checkpoint=str(ck)),
                          progress=False)
    from algan.model.gan.checkpoint import state_name

    assert [p.name for p in ck.iterdir()] == [state_name(0, 2)]  # a complete, resumable training state
    assert fitted.manifest.variant == "image" and fitted.manifest.features.transform == "none"
    save_bundle(tmp_path / "b", fitted.detector, fitted.manifest, fitted.extra_tensors, fitted.samples)
    det, manifest = load_bundle(tmp_path / "b")
    t = torch_scores(det, fitted.samples)
    np.testing.assert_allclose(t, torch_scores(fitted.detector, fitted.samples), atol=1e-5)
    path = export_onnx(det, manifest, tmp_path / "m.onnx")
    assert np.max(np.abs(ort_scores(path, fitted.samples) - t)) <= 1e-4
    with pytest.raises(ValueError, match="only the algan head"):
        fit_detector(load_dataset(synth_root), FitSettings(variant="image", head="knn", image=cfg), progress=False)


# ---------------------------------------------------------------------------------------------------------------
# real data: the paper preset's discriminator collapses on MTD (D loss -> 0, and in eval mode its batch-norm
# running statistics, accumulated mostly on generated batches, turn every real image's logit strongly negative).
# The default preset must keep D's loss away from 0 and score images the same way in training and in eval mode.


def mtd_root() -> Path:
    base = Path(os.environ.get("ALGAN_DATA_DIR", _REPO.parent / "shared" / "data"))
    return base / "mtd"


@pytest.mark.realdata
@pytest.mark.slow
def test_default_preset_does_not_collapse_on_mtd_subset():
    root = mtd_root()
    if not (root / "MT_Free").is_dir():
        pytest.skip(f"MTD not found at {root} (set ALGAN_DATA_DIR to the folder holding mtd/)")
    from algan.features.backbone import Preprocess
    from algan.model.gan.image import PIXEL_MEAN, PIXEL_STD, PixelBackbone, pixels
    from algan.runtime.preprocess import load_batch

    ds = load_dataset(root)
    rng = np.random.default_rng(0)
    train = [ds.train[i] for i in rng.choice(len(ds.train), 256, replace=False)]
    good = [s.path for s in ds.test if s.label == 0][:64]
    pre, bb = Preprocess(PIXEL_MEAN, PIXEL_STD), PixelBackbone(1)
    xtr, xgood = (pixels(pre, bb, load_batch(p, (64, 64))) for p in (train, good))
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    cfg = ImageConfig(size=64, channels=1, epochs=6, ngf=16, ndf=16)
    r = train_algan_image(xtr, cfg, progress=False)
    assert min(h["loss_d"] for h in r.history[2:]) > 0.2, f"D collapsed: {[round(h['loss_d'], 3) for h in r.history]}"
    with torch.no_grad():
        s_train, s_good = r.head(xtr[:64]).numpy(), r.head(xgood).numpy()
    # eval-mode logits of training images agree with the training-mode ones (no train/eval shift of D)
    assert abs(-np.median(s_train) - r.history[-1]["real_logit"]) < 3.0
    # unseen normal images are scored like the training images (D does not memorise the training set)
    assert abs(np.median(s_good) - np.median(s_train)) < 1.5 * (np.std(s_train) + 0.5)
