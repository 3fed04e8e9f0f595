"""ALGAN-image (DCGAN on pixels): shapes, the loss wiring, determinism, and export through the common path."""

import numpy as np
import pytest
import torch

from algan.bundle import load_bundle, save_bundle
from algan.data.datasets import load_dataset
from algan.export.onnx_export import export_onnx, ort_scores, torch_scores
from algan.model.fit import FitSettings, fit_detector
from algan.model.image import DCGANDiscriminator, DCGANGenerator, ImageConfig, check_size, train_algan_image


@pytest.mark.parametrize("size", [64, 128])
@pytest.mark.parametrize("channels", [1, 3])
def test_generator_and_discriminator_shapes(size, channels):
    g = DCGANGenerator(16, size, channels, ngf=8)
    d = DCGANDiscriminator(size, channels, ndf=8)
    x = g(torch.randn(5, 16))
    assert x.shape == (5, channels, size, size) and x.dtype == torch.float32
    assert float(x.abs().max()) <= 1.0  # tanh output range
    assert d(x).shape == (5,)


@pytest.mark.parametrize("bad", [32, 96, 100, 0])
def test_sizes_must_be_powers_of_two_from_64(bad):
    with pytest.raises(ValueError, match="power of two"):
        check_size(bad)


def test_training_is_deterministic_and_reduces_d_loss():
    x = torch.rand(24, 1, 64, 64) * 2 - 1
    cfg = ImageConfig(size=64, channels=1, epochs=3, ngf=8, ndf=8, buffer_epochs=1, buffer_size=32, seed=5)
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
    fitted = fit_detector(load_dataset(synth_root), FitSettings(variant="image", image=cfg), progress=False)
    assert fitted.manifest["variant"] == "image" and fitted.manifest["features"]["transform"] == "none"
    save_bundle(tmp_path / "b", fitted.detector, fitted.manifest, fitted.extra_tensors, fitted.samples)
    det, manifest = load_bundle(tmp_path / "b")
    t = torch_scores(det, fitted.samples)
    np.testing.assert_allclose(t, torch_scores(fitted.detector, fitted.samples), atol=1e-5)
    path = export_onnx(det, manifest, tmp_path / "m.onnx")
    assert np.max(np.abs(ort_scores(path, fitted.samples) - t)) <= 1e-4
    with pytest.raises(ValueError, match="only the algan head"):
        fit_detector(load_dataset(synth_root), FitSettings(variant="image", head="knn", image=cfg), progress=False)
