"""torchvision backbones: spec round trip, weights resolution and checks, CLI errors, and a trained bundle.

torchvision is optional. Without it the error path is tested for real; the loading code runs against a small
stand-in ``torchvision.models.resnet18`` (same attribute names and stage widths); the test with the real
torchvision runs only where it imports.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import types

import numpy as np
import pytest
import torch
from torch import nn

from algan.features.backbone import (
    BACKBONES,
    BackboneError,
    BackboneSpec,
    build_backbone,
    global_pool,
    make_spec,
)
from algan.features.torchvision_backbones import (
    HUB_WEIGHTS_FILES,
    IMAGENET_MEAN_RGB,
    IMAGENET_STD_RGB,
    TorchvisionUnavailable,
    check_weights_sha256,
    hub_weights_path,
    missing_weights_message,
    resolve_weights,
)

HAVE_TORCHVISION = importlib.util.find_spec("torchvision") is not None


# --- spec -----------------------------------------------------------------------------------------------------


def test_spec_json_round_trip_with_and_without_weights_path(tmp_path):
    lite = BackboneSpec()
    assert BackboneSpec.from_json(lite.to_json()) == lite
    old = lite.to_json()
    del old["weights_path"]  # a manifest written before torchvision backbones
    assert BackboneSpec.from_json(old).weights_path is None
    w = tmp_path / "w.pth"
    rn = make_spec("resnet18", weights_path=str(w), input_size=(64, 64))
    again = BackboneSpec.from_json(rn.to_json())
    assert again == rn and again.weights_path == str(w.resolve())
    assert again.mean == IMAGENET_MEAN_RGB and again.std == IMAGENET_STD_RGB and again.blocks == [2, 3]


def test_make_spec_defaults_per_backbone():
    assert make_spec() == BackboneSpec()  # Lite0: blocks 8-14, mean + std pooling, (x - 127) / 128
    assert BackboneSpec().blocks == list(range(8, 15)) and BackboneSpec().pooling == "avgstd"
    for name in ("wide_resnet50_2", "wide_resnet101_2", "resnet18"):
        s = make_spec(name)
        assert s.blocks == [2, 3] and s.mean == IMAGENET_MEAN_RGB and s.std == IMAGENET_STD_RGB
        assert s.pooling == "avg"
    with pytest.raises(BackboneError, match="unknown pooling 'median'"):
        make_spec(pooling="median")
    with pytest.raises(ValueError, match="torchvision backbones"):
        make_spec("efficientnet-lite0", weights_path="x.pth")


def test_global_pool_values_against_numpy():
    x = torch.randn(3, 5, 7, 6, generator=torch.Generator().manual_seed(0)) * 4 + 2
    a = x.numpy().reshape(3, 5, -1)
    np.testing.assert_allclose(global_pool(x, "avg").numpy(), a.mean(-1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(global_pool(x, "max").numpy(), a.max(-1))
    np.testing.assert_allclose(global_pool(x, "avgmax").numpy(), np.concatenate([a.mean(-1), a.max(-1)], 1),
                               rtol=1e-5, atol=1e-5)
    std = global_pool(x, "avgstd").numpy()
    assert std.shape == (3, 10) and std.dtype == np.float32
    np.testing.assert_allclose(std, np.concatenate([a.mean(-1), a.std(-1)], 1), rtol=1e-5, atol=1e-5)
    # constant maps: standard deviation exactly 0, no NaN
    assert np.all(global_pool(torch.full((1, 2, 3, 3), 7.0), "avgstd").numpy() == [[7, 7, 0, 0]])


def test_cli_choices_match_registry():
    from algan.cli.train import BACKBONE_NAMES

    assert tuple(BACKBONES) == BACKBONE_NAMES
    from algan.cli.train import build_parser
    from algan.features.backbone import POOLINGS

    pooling = next(a for a in build_parser()._actions if a.dest == "pooling")
    assert tuple(pooling.choices) == tuple(POOLINGS)


def test_unknown_backbone_lists_the_available_ones():
    with pytest.raises(BackboneError, match="available: efficientnet-lite0, efficientnet-lite1, efficientnet-lite2, "
                                            "wide_resnet50_2"):
        build_backbone(BackboneSpec(name="vgg16"))


# --- weights resolution and checks (pure) ----------------------------------------------------------------------


def test_hub_cache_path_and_resolution(tmp_path):
    assert hub_weights_path("wide_resnet50_2", tmp_path) == tmp_path / "checkpoints" / "wide_resnet50_2-95faca4d.pth"
    assert HUB_WEIGHTS_FILES["wide_resnet101_2"] == "wide_resnet101_2-32ee1156.pth"
    assert hub_weights_path("resnet18", tmp_path).name == "resnet18-f37072fd.pth"
    spec = make_spec("resnet18")
    with pytest.raises(TorchvisionUnavailable) as err:
        resolve_weights(spec, tmp_path)
    msg = str(err.value)
    assert "resnet18-f37072fd.pth" in msg and str(tmp_path / "checkpoints") in msg and "--backbone-weights" in msg
    assert "\n" not in msg
    hub = hub_weights_path("resnet18", tmp_path)
    hub.parent.mkdir(parents=True)
    hub.write_bytes(b"x")
    assert resolve_weights(spec, tmp_path) == hub
    given = tmp_path / "mine.pth"
    given.write_bytes(b"y")
    assert resolve_weights(make_spec("resnet18", weights_path=str(given)), tmp_path) == given.resolve()
    # a given path that is gone: an error for a new model, the hub file for a bundle that records the hash
    gone = make_spec("resnet18", weights_path=str(tmp_path / "gone.pth"))
    with pytest.raises(TorchvisionUnavailable, match="gone.pth does not exist"):
        resolve_weights(gone, tmp_path)
    gone.weights_sha256 = "ab" * 32
    assert resolve_weights(gone, tmp_path) == hub


def test_sha256_mismatch_is_refused(tmp_path):
    check_weights_sha256("resnet18", tmp_path / "w.pth", "", "a" * 64)  # nothing recorded: accepted
    check_weights_sha256("resnet18", tmp_path / "w.pth", "a" * 64, "a" * 64)
    with pytest.raises(BackboneError, match="differ from the ones this model was trained with"):
        check_weights_sha256("resnet18", tmp_path / "w.pth", "a" * 64, "b" * 64)


# --- the error path, for real -----------------------------------------------------------------------------------


@pytest.mark.skipif(HAVE_TORCHVISION, reason="torchvision is installed here")
def test_missing_torchvision_is_one_line_exit_2(tmp_path):
    for cmd in (["algan.cli.train", "--out", str(tmp_path / "m")], ["algan.cli.bench", "detection"]):
        res = subprocess.run([sys.executable, "-m", *cmd, "--data", str(tmp_path / "nodata"),
                              "--backbone", "wide_resnet50_2"], capture_output=True, text=True, timeout=120)
        assert res.returncode == 2, res.stderr
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in res.stderr
        assert "backbone wide_resnet50_2 needs torchvision: pip install torch==2.14.1 torchvision==0.29.1" in lines[0]


# --- loading code against a stand-in torchvision ------------------------------------------------------------------


class _FakeResNet18(nn.Module):
    """torchvision resnet18's attribute names and stage widths (64, 128, 256, 512), one conv per stage."""

    def __init__(self, weights=None) -> None:
        super().__init__()
        assert weights is None
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        widths = (64, 64, 128, 256, 512)
        for i in range(1, 5):
            stride = 1 if i == 1 else 2
            setattr(self, f"layer{i}", nn.Sequential(nn.Conv2d(widths[i - 1], widths[i], 3, stride, 1), nn.ReLU()))
        self.fc = nn.Linear(512, 1000)


@pytest.fixture
def fake_torchvision(monkeypatch, tmp_path):
    """A stand-in ``torchvision.models`` (only if the real one is absent) and an empty torch hub cache."""
    if not HAVE_TORCHVISION:
        tv = types.ModuleType("torchvision")
        models = types.ModuleType("torchvision.models")
        models.resnet18 = _FakeResNet18
        tv.models = models
        monkeypatch.setitem(sys.modules, "torchvision", tv)
        monkeypatch.setitem(sys.modules, "torchvision.models", models)
        net_cls = _FakeResNet18
    else:
        import torchvision

        net_cls = torchvision.models.resnet18
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    return net_cls


def test_missing_weights_cli_names_both_ways(fake_torchvision, tmp_path, capsys):
    from algan.cli.train import main

    rc = main(["--data", str(tmp_path / "nodata"), "--out", str(tmp_path / "m"), "--backbone", "resnet18"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    hub = tmp_path / "torch_home" / "hub" / "checkpoints"
    assert err[0] == f"algan-train: error: {missing_weights_message('resnet18')}"
    assert f"ImageNet weights file resnet18-f37072fd.pth in the torch hub cache {hub}/" in err[0]
    assert "or pass --backbone-weights PATH" in err[0]


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_weights_file_loads_and_hash_is_checked(fake_torchvision, tmp_path, suffix):
    net = fake_torchvision(weights=None)
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    path = tmp_path / f"rn18{suffix}"
    if suffix == ".pth":
        torch.save(state, path)
    else:
        from safetensors.torch import save_file

        save_file(state, str(path))
    spec = make_spec("resnet18", weights_path=str(path), input_size=(64, 64))
    bb = build_backbone(spec)
    assert len(spec.weights_sha256) == 64 and bb.out_dim == 384
    with torch.no_grad():
        out = bb(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 384) and out.dtype == torch.float32
    torch.testing.assert_close(bb.stages[1][0].weight, state["layer2.0.weight"])
    spec.weights_sha256 = "0" * 64
    with pytest.raises(BackboneError, match="differ from the ones this model was trained with"):
        build_backbone(spec)


def test_wrong_state_dict_is_a_clear_error(fake_torchvision, tmp_path):
    state = fake_torchvision(weights=None).state_dict()
    partial = tmp_path / "partial.pth"
    torch.save({k: v for k, v in state.items() if not k.startswith("layer2.")}, partial)
    with pytest.raises(BackboneError, match=r"do not fit resnet18: missing \d+ tensors"):
        build_backbone(make_spec("resnet18", weights_path=str(partial)))
    wrong = tmp_path / "wrong.pth"
    torch.save({**state, "conv1.weight": torch.zeros(8, 3, 3, 3)}, wrong)
    with pytest.raises(BackboneError, match="do not fit resnet18"):
        build_backbone(make_spec("resnet18", weights_path=str(wrong)))
    bad = tmp_path / "bad.pth"
    torch.save([1, 2, 3], bad)
    with pytest.raises(BackboneError, match="not a state dict"):
        build_backbone(make_spec("resnet18", weights_path=str(bad)))
    with pytest.raises(BackboneError, match="stages 1-4"):
        build_backbone(make_spec("resnet18", blocks=[5], weights_path=str(partial)))


def _train_bundle_and_check_onnx(synth_root, tmp_path, weights) -> None:
    from algan.bundle import load_bundle, load_samples
    from algan.cli.train import main
    from algan.export.onnx_export import export_onnx, ort_scores, torch_scores
    from algan.export.parity import FP32_TOLERANCE

    out = tmp_path / "bundle"
    rc = main(["--data", str(synth_root), "--out", str(out), "--head", "mahalanobis", "--backbone", "resnet18",
               "--backbone-weights", str(weights), "--input-size", "64", "64", "--quiet"])
    assert rc == 0
    det, manifest = load_bundle(out)
    assert manifest.backbone.name == "resnet18" and manifest.backbone.blocks == [2, 3]
    assert manifest.backbone.weights_path == str(weights.resolve())
    assert manifest.features.in_dim == 384  # layer2 + layer3 of resnet18 = 128 + 256
    samples = load_samples(out)
    imgs = np.concatenate([samples, np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), np.uint8)])
    path = export_onnx(det, manifest, tmp_path / "m.onnx")
    t, o = torch_scores(det, imgs), ort_scores(path, imgs, batch_size=len(imgs))
    n = len(samples)
    # the export's promise on its parity images (calibrated scale, scores around the threshold 1.0): 3e-6 measured
    err = float(np.max(np.abs(t[:n] - o[:n])))
    assert err <= FP32_TOLERANCE, f"max |onnx - torch| {err:.2e} on the calibrated scale > {FP32_TOLERANCE}"
    # noise images score ~700x the threshold, where one float32 ulp is 6e-5: hold them to a few ulps (relative)
    rel = float(np.max(np.abs(t[n:] - o[n:]) / np.abs(t[n:])))
    assert np.all(np.abs(t[n:]) > 10) and rel <= 1e-6, f"relative diff {rel:.2e} on noise images > 1e-6 (~8 ulps)"


def test_trained_bundle_with_stand_in_resnet18(fake_torchvision, synth_root, tmp_path):
    weights = tmp_path / "rn18.pth"
    torch.manual_seed(0)
    torch.save(fake_torchvision(weights=None).state_dict(), weights)
    _train_bundle_and_check_onnx(synth_root, tmp_path, weights)


def test_trained_bundle_with_torchvision_resnet18(synth_root, tmp_path):
    tv = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    weights = tmp_path / "rn18_random.pth"
    torch.save(tv.models.resnet18(weights=None).state_dict(), weights)
    _train_bundle_and_check_onnx(synth_root, tmp_path, weights)


def test_patch_bundle_with_stand_in_resnet18_has_maps_with_parity(fake_torchvision, synth_root, tmp_path):
    """The patch variant on a torchvision backbone (layer2 + layer3, PatchCore's choice): what a user with
    WideResNet weights runs (``--variant patch --backbone wide_resnet50_2 --backbone-weights PATH``)."""
    from algan.bundle import load_bundle, load_samples
    from algan.cli.train import main
    from algan.export.onnx_export import export_onnx, ort_outputs, torch_outputs

    weights = tmp_path / "rn18.pth"
    torch.manual_seed(0)
    torch.save(fake_torchvision(weights=None).state_dict(), weights)
    out = tmp_path / "bundle"
    rc = main(["--data", str(synth_root), "--out", str(out), "--variant", "patch", "--head", "patchcore",
               "--backbone", "resnet18", "--backbone-weights", str(weights), "--input-size", "64", "64", "--quiet"])
    assert rc == 0
    det, manifest = load_bundle(out)
    assert manifest.backbone.name == "resnet18" and manifest.backbone.blocks == [2, 3]
    assert manifest.outputs == ["scores", "anomaly_maps"] and manifest.features.in_dim == 128 + 256
    images = load_samples(out)
    path = export_onnx(det, manifest, tmp_path / "m.onnx")
    (s_t, m_t), (s_o, m_o) = torch_outputs(det, images), ort_outputs(path, images)
    assert m_o.shape == (len(images), 16, 16) and m_o.dtype == np.float32  # map stride 4 at 64 px
    np.testing.assert_allclose(s_o, s_t, atol=1e-4)
    np.testing.assert_allclose(m_o, m_t, atol=1e-4)
