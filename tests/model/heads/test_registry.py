"""The head-kind registry (algan.model.heads.registry): every kind's fit -> settings -> load round trip scores like
the fitted head, lookups and their errors, and the CLI's torch-free head names agree with it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from algan.model.fit import FitSettings
from algan.model.gan.feature import AlganConfig
from algan.model.gan.image import ImageConfig
from algan.model.heads.registry import (
    FittedHead,
    HeadKind,
    MissingSetting,
    head_kind,
    head_kinds,
    head_names,
    register,
    variants,
)

torch.set_num_threads(1)

TINY_ALGAN = {"epochs": 1, "min_steps": 0, "batch_size": 16, "d_hidden": [8], "ensemble": 1}


def _settings(kind: HeadKind) -> FitSettings:
    algan = AlganConfig.preset("patch" if kind.variant == "patch" else "default", **TINY_ALGAN)
    image = ImageConfig.preset("default", size=64, channels=1, ngf=8, ndf=8, epochs=1, batch_size=4,
                               buffer_epochs=1, buffer_size=8)
    return FitSettings(head=kind.name, variant=kind.variant, algan=algan, image=image, knn_k=2, coreset_ratio=0.5)


def _data(variant: str) -> tuple[np.ndarray, torch.Tensor]:
    """Training inputs and query inputs of a variant's heads (feature (N, K); patch (M, K) and maps (N, K, 3, 3);
    image (N, 1, 64, 64))."""
    rng = np.random.default_rng(0)
    if variant == "image":
        x = (rng.random((8, 1, 64, 64)) * 2 - 1).astype(np.float32)
        return x, torch.from_numpy(x[:3])
    x = rng.normal(size=(48, 6)).astype(np.float32)
    if variant == "patch":
        return x, torch.from_numpy(rng.normal(size=(2, 6, 3, 3)).astype(np.float32))
    return x, torch.from_numpy(rng.normal(size=(5, 6)).astype(np.float32))


def test_the_registered_kinds() -> None:
    assert variants() == ("feature", "patch", "image")
    assert head_names("feature") == ("algan", "mahalanobis", "knn")
    assert head_names("patch") == ("algan", "patchcore", "padim")
    assert head_names("image") == ("algan",)
    assert {k.name for k in head_kinds() if k.trains} == {"algan"}


def test_the_cli_head_names_are_the_registry_s() -> None:
    """algan-train keeps its --head choices torch-free (--help imports no torch); they are the registered names."""
    from algan.cli.train import HEAD_NAMES

    assert set(HEAD_NAMES) == {k.name for k in head_kinds()}


@pytest.mark.parametrize("kind", head_kinds(), ids=lambda k: f"{k.variant}:{k.name}")
def test_fit_then_load_scores_like_the_fitted_head(kind: HeadKind) -> None:
    """What a bundle stores of a head (its state dict and its settings) rebuilds it: ``load`` gives a module with the
    same tensors' names and shapes, and with the fitted tensors loaded it scores the queries identically."""
    x, queries = _data(kind.variant)
    fitted = kind.fit(_settings(kind), x, n_cells=len(x) * 2)
    assert isinstance(fitted, FittedHead) and isinstance(fitted.settings, dict)
    head = fitted.head.eval()
    dim = 0 if kind.variant == "image" else x.shape[1]
    loaded = kind.load(fitted.settings, dim).eval()
    shapes = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in loaded.state_dict().items()} == shapes
    loaded.load_state_dict(head.state_dict())
    with torch.no_grad():
        want, got = head(queries), loaded(queries)
    assert want.shape == ((2, 3, 3) if kind.variant == "patch" else (len(queries),))
    assert torch.isfinite(want).all()
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    if kind.trains:
        assert any(k.startswith("generator.") for k in fitted.extras) and fitted.info["train_s"] >= 0


def test_knn_and_patchcore_settings() -> None:
    x, _ = _data("feature")
    knn = head_kind("feature", "knn").fit(_settings(head_kind("feature", "knn")), x)
    assert knn.settings == {"k": 2, "n_bank": 48, "metric": "whitened"}
    core = head_kind("patch", "patchcore")
    assert core.fit(_settings(core), x, n_cells=20).settings == {"n_bank": 10, "coreset_ratio": 0.5, "k": 1,
                                                                   "centered": True}
    with pytest.raises(MissingSetting) as err:
        core.load({"k": 1}, 6)
    assert err.value.args[0] == "n_bank"
    # a bank written before the metric and the centring: euclidean, uncentred
    old = head_kind("feature", "knn").load({"k": 1, "n_bank": 4}, 6)
    assert old.metric == "euclidean" and old.center is None


@pytest.mark.parametrize(("variant", "name", "message"), [
    ("image", "knn", "the image variant has only the algan head; --head knn needs --variant feature"),
    ("patch", "knn", "the patch variant has the heads algan, patchcore, padim; --head knn needs --variant feature"),
    ("feature", "padim", "the feature variant has the heads algan, mahalanobis, knn; --head padim needs --variant "
                         "patch"),
    ("feature", "svm", "the feature variant has the heads algan, mahalanobis, knn; unknown head 'svm'"),
    ("video", "algan", "unknown variant 'video'; use one of feature, patch, image"),
])
def test_unknown_kinds_say_where_the_head_is(variant: str, name: str, message: str) -> None:
    with pytest.raises(ValueError) as err:
        head_kind(variant, name)
    assert str(err.value) == message


def test_a_kind_registers_once() -> None:
    with pytest.raises(ValueError, match="feature:knn is registered twice"):
        register(type("OtherKnn", (HeadKind,), {"variant": "feature", "name": "knn", "label": "knn"}))
    assert type(head_kind("feature", "knn")).__name__ == "KnnFeatureHead"
