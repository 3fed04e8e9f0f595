"""ALGAN training loop, presets, buffer and heads (algan.model.gan.feature, algan.model.nets.algan_head)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from algan.model.gan.feature import PAPER, AlganConfig, Reservoir, train_algan
from algan.model.nets.algan_head import AlganEnsembleHead, Whitening, shrunk_whitening

_REPO = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())

torch.set_num_threads(1)


def blobs(n: int = 64, dim: int = 12, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(dim, dim)) / np.sqrt(dim)
    return (rng.normal(size=(n, dim)) @ a).astype(np.float32)


def small(preset: str = "default", **kw) -> AlganConfig:
    return AlganConfig.preset(preset, **{"epochs": 3, "min_steps": 0, "batch_size": 8, "d_hidden": [32, 16],
                                             "ensemble": 1, **kw})


def test_default_is_the_default_preset_and_paper_is_the_paper() -> None:
    assert AlganConfig() == AlganConfig.preset("default")
    p = AlganConfig.preset("paper")
    assert (p.z_dim, p.sigma, p.alpha, p.beta, p.epochs, p.batch_size) == (100, 4.0, 0.5, 0.5, 192, 16)
    assert (p.lr_g, p.lr_d, p.adam_betas) == (2e-4, 1e-4, (0.0, 0.9))
    assert p.whiten == "none" and p.d_ema == 0.0
    assert AlganConfig.preset("paper", epochs=5).epochs == 5
    with pytest.raises(ValueError, match="unknown ALGAN preset"):
        AlganConfig.preset("nope")
    with pytest.raises(ValueError, match="whitening"):
        AlganConfig(whiten="zca")


@pytest.mark.parametrize("preset", ["default", "paper"])
def test_json_round_trip(preset: str) -> None:
    cfg = AlganConfig.preset(preset, seed=3)
    d = json.loads(json.dumps(cfg.to_json()))
    assert AlganConfig.from_json(d) == cfg


def test_from_json_of_an_old_manifest_rebuilds_the_paper_structure() -> None:
    old = {k: v for k, v in PAPER.items() if k in ("z_dim", "sigma", "epochs", "d_hidden", "seed")}
    old["adam_betas"] = [0.0, 0.9]
    cfg = AlganConfig.from_json(old)
    assert cfg.whiten == "none" and cfg.g_batch_norm and cfg.d_ema == 0.0
    keys = set(cfg.build_head(10).state_dict())
    assert not any(k.startswith("whitening") for k in keys)


@pytest.mark.parametrize("preset", ["default", "paper"])
def test_train_shapes_and_head_matches_build_head(preset: str) -> None:
    x = blobs()
    cfg = small(preset)
    r = train_algan(x, cfg, progress=False)
    assert len(r.history) == cfg.epochs and {"loss_d", "loss_g"} <= set(r.history[0])
    assert all(np.isfinite(h["loss_d"]) and np.isfinite(h["loss_g"]) for h in r.history)
    head = r.head
    with torch.no_grad():
        s = head(torch.from_numpy(x))
    assert s.shape == (len(x),) and s.dtype == torch.float32 and torch.isfinite(s).all()
    # the bundle loader rebuilds the head from the config alone and loads the saved weights into it
    fresh = cfg.build_head(x.shape[1])
    state = head.state_dict()
    assert {k: v.shape for k, v in fresh.state_dict().items()} == {k: v.shape for k, v in state.items()}
    fresh.load_state_dict(state)
    fresh.eval()
    with torch.no_grad():
        assert torch.equal(fresh(torch.from_numpy(x)), s)


def head_digest(r) -> str:
    h = hashlib.sha256()
    for k, v in sorted(r.head.state_dict().items()):
        h.update(k.encode())
        h.update(v.numpy().tobytes())
    return h.hexdigest()


@pytest.mark.parametrize("preset", ["default", "paper"])
def test_deterministic_for_a_seed(preset: str) -> None:
    x = blobs()
    a = train_algan(x, small(preset, seed=5, d_dropout=0.1), progress=False)
    b = train_algan(x, small(preset, seed=5, d_dropout=0.1), progress=False)
    c = train_algan(x, small(preset, seed=6, d_dropout=0.1), progress=False)
    assert head_digest(a) == head_digest(b)
    assert a.history == b.history
    assert head_digest(a) != head_digest(c)


def test_regularisers_and_options_run() -> None:
    x = blobs(40, 8)
    cfg = small("default", r1_gamma=1.0, d_weight_decay=1e-4, spectral_norm=True, d_dropout=0.2, d_ema=0.9,
                whiten_shrinkage=0.2, z_dim=4, g_hidden=[16], g_batch_norm=True)
    r = train_algan(x, cfg, progress=False)
    with torch.no_grad():
        assert torch.isfinite(r.head(torch.from_numpy(x))).all()
    seen = []
    train_algan(x, small("paper", z_dim=4, g_hidden=[8]), progress=False, on_epoch=lambda e, h: seen.append(e))
    assert seen == [1, 2, 3]


def test_min_steps_raises_the_epoch_count_for_small_data() -> None:
    cfg = AlganConfig(epochs=32, batch_size=16, min_steps=1200)
    assert cfg.epochs_for(619) == 32  # 38 steps per epoch
    assert cfg.epochs_for(150) == 134  # 9 steps per epoch
    assert cfg.epochs_for(5) == 1200  # one (short) batch per epoch
    assert AlganConfig.preset("paper").epochs_for(150) == 192
    r = train_algan(blobs(16, 4), small(min_steps=10), progress=False)
    assert len(r.history) == 5  # 2 steps per epoch


def test_ensemble_head_structure_and_members() -> None:
    x = blobs(32, 6)
    cfg = small(ensemble=3)
    r = train_algan(x, cfg, progress=False)
    assert len(r.discriminators) == len(r.generators) == 3
    fresh = cfg.build_head(6)
    fresh.load_state_dict(r.head.state_dict())
    with torch.no_grad():
        one = [AlganEnsembleHead([d], r.whitening)(torch.from_numpy(x)) for d in r.discriminators]
        torch.testing.assert_close(fresh.eval()(torch.from_numpy(x)), sum(one) / 3)
    assert head_digest(train_algan(x, small(), progress=False)) != head_digest(r)


def test_too_few_samples() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        train_algan(np.zeros((1, 4), np.float32), small(), progress=False)


def test_reservoir_is_a_bounded_uniform_sample() -> None:
    gen = torch.Generator().manual_seed(0)
    r = Reservoir(50, 1, gen)
    for i in range(0, 1000, 10):
        r.offer(torch.arange(i, i + 10, dtype=torch.float32).unsqueeze(1))
    assert r.size == 50 and r.seen == 1000
    kept = r.data[:, 0].numpy()
    assert len(np.unique(kept)) == 50 and kept.max() > 500 and kept.min() < 500  # not just the first or last
    s = r.sample(7)
    assert s.shape == (7, 1) and set(s[:, 0].tolist()) <= set(kept.tolist())


def test_buffer_switch_changes_training_only_when_enabled() -> None:
    x = blobs()
    on = train_algan(x, small("paper", z_dim=4, g_hidden=[8], buffer_epochs=2), progress=False)
    off = train_algan(x, small("paper", z_dim=4, g_hidden=[8], beta=1.0), progress=False)
    none = train_algan(x, small("paper", z_dim=4, g_hidden=[8], buffer_epochs=0), progress=False)
    assert head_digest(on) != head_digest(off)
    # beta = 1 and an empty buffer are the same objective; the buffer's RNG draws are skipped in both
    assert head_digest(off) == head_digest(none)


def test_shrunk_whitening_gives_mahalanobis_geometry() -> None:
    x = blobs(400, 6).astype(np.float64)
    mean, w, d = shrunk_whitening(x, 0.0)
    assert d == 0.0 and w.shape == (6, 6) and w.dtype == np.float32
    z = (x - mean) @ w
    np.testing.assert_allclose(np.cov(z.T, bias=True), np.eye(6), atol=1e-4)
    _, _, auto = shrunk_whitening(x)
    assert 0.0 <= auto <= 1.0
    # more dimensions than samples: still finite, full rank through the shrinkage floor
    mean, w, d = shrunk_whitening(blobs(10, 30), None)
    assert np.isfinite(w).all() and np.linalg.matrix_rank(w) == 30
    with pytest.raises(ValueError, match="shrinkage"):
        shrunk_whitening(x, 1.5)


def test_default_detects_outliers_on_toy_vectors() -> None:
    rng = np.random.default_rng(1)
    x = blobs(300, 16, seed=1)
    cov_root = np.linalg.cholesky(np.cov(x.T) + 1e-6 * np.eye(16))
    normal = rng.normal(size=(100, 16)) @ cov_root.T
    outl = rng.normal(size=(100, 16)) @ cov_root.T
    outl[:, :4] += rng.choice([-1, 1], size=(100, 4)) * 3.0 * np.sqrt(np.diag(np.cov(x.T)))[:4]
    r = train_algan(x, AlganConfig(epochs=16), progress=False)
    with torch.no_grad():
        s = r.head(torch.from_numpy(np.concatenate([normal, outl]).astype(np.float32))).numpy()
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(np.r_[np.zeros(100), np.ones(100)], s) > 0.9


def test_ensemble_head_averages_and_exports_to_onnx(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    d1 = AlganConfig().build_discriminator(5)
    d2 = AlganConfig().build_discriminator(5)
    head = AlganEnsembleHead([d1, d2], Whitening(5)).eval()
    x = torch.randn(7, 5)
    with torch.no_grad():
        want = -(d1(x) + d2(x)) / 2
        assert torch.allclose(head(x), want, atol=1e-6)
    path = tmp_path / "head.onnx"
    torch.onnx.export(head, (x,), str(path), dynamo=False, opset_version=17, input_names=["x"],
                      output_names=["score"], dynamic_axes={"x": {0: "n"}, "score": {0: "n"}})
    import onnxruntime as ort  # a core dependency of the package: no skip

    out = ort.InferenceSession(str(path)).run(None, {"x": x.numpy()})[0]
    np.testing.assert_allclose(out, want.numpy(), rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# real data: an MTD subset through the backbone and a short default training (~80 s on two CPU threads).
# On this subset with the default features (blocks 8-14, avgstd): Mahalanobis 0.946, default ALGAN (ensemble of 3)
# 0.940 (1200 steps) / 0.942 (600 steps); with the earlier features (8-15 avg): 0.917 / 0.910 / 0.908.


def mtd_root() -> Path:
    base = Path(os.environ.get("ALGAN_DATA_DIR", _REPO.parent / "shared" / "data"))
    return base / "mtd"


@pytest.mark.realdata
@pytest.mark.slow
def test_default_preset_detects_mtd_defects_on_a_subset() -> None:
    root = mtd_root()
    if not (root / "MT_Free").is_dir():
        pytest.skip(f"MTD not found at {root} (set ALGAN_DATA_DIR to the folder holding mtd/)")
    from sklearn.metrics import roc_auc_score

    from algan.data.datasets import load_dataset
    from algan.features.backbone import BackboneSpec, Preprocess, build_backbone
    from algan.model.heads.vector import FeatureTransform
    from algan.runtime.preprocess import load_batch

    ds = load_dataset(root)
    rng = np.random.default_rng(0)
    train = [ds.train[i] for i in rng.choice(len(ds.train), 300, replace=False)]
    good = [s.path for s in ds.test if s.label == 0]
    bad = [s.path for s in ds.test if s.label == 1]
    good = [good[i] for i in rng.choice(len(good), 60, replace=False)]
    bad = [bad[i] for i in rng.choice(len(bad), 60, replace=False)]
    spec = BackboneSpec()
    backbone, pre = build_backbone(spec), Preprocess(spec.mean, spec.std)

    def feats(paths: list[Path]) -> np.ndarray:
        out = []
        for i in range(0, len(paths), 32):
            with torch.no_grad():
                out.append(backbone(pre(torch.from_numpy(load_batch(paths[i : i + 32], (224, 224))))).numpy())
        return np.concatenate(out)

    xtr, xte = feats(train), feats(good + bad)
    t = FeatureTransform.fit(xtr, "standardize")
    with torch.no_grad():
        ztr, zte = t(torch.from_numpy(xtr)).numpy(), t(torch.from_numpy(xte))
    r = train_algan(ztr, AlganConfig(epochs=1, min_steps=600), progress=False)  # the default preset, half the steps
    with torch.no_grad():
        auc = roc_auc_score(np.r_[np.zeros(60), np.ones(60)], r.head(zte).numpy())
    assert auc > 0.90, f"default ALGAN on an MTD subset: AUROC {auc:.3f}"


@pytest.mark.parametrize("ema", [0.0, 0.99])
def test_spectral_norm_head_reloads_and_exports(ema, tmp_path):
    """A spectral-norm D is baked into plain weights: the bundle-loading head matches it and ONNX can trace it."""
    import onnxruntime as ort

    x = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
    cfg = AlganConfig(spectral_norm=True, epochs=2, min_steps=0, d_ema=ema)
    head = train_algan(x, cfg, progress=False).head.eval()
    again = cfg.build_head(8)
    again.load_state_dict(head.state_dict())
    t = torch.from_numpy(x[:5])
    with torch.no_grad():
        want = head(t).numpy()
        np.testing.assert_allclose(again.eval()(t).numpy(), want, rtol=0, atol=1e-6)
    path = tmp_path / "h.onnx"
    torch.onnx.export(head, (t,), str(path), dynamo=False, opset_version=17, input_names=["x"])
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x[:5]})[0]
    np.testing.assert_allclose(got, want, atol=1e-5)
