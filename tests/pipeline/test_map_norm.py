"""Per-location map normalisation (the border bias of the patch maps): constructed maps, the bundle, the graph."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from algan.features.patch import MapNormalization, MapPostprocess, PatchSpec

SIZE = (112, 112)  # grid 14 x 14 at stride 8, map 28 x 28 at map stride 4


def _raised_border(n: int, seed: int, defect: bool = False) -> torch.Tensor:
    """Raw patch grids (n, 14, 14): noise, the outer two cells raised by 3 (the padded backbone's border), and with
    ``defect`` a central 3 x 3 blob raised by 2 (below the border's level)."""
    g = torch.Generator().manual_seed(seed)
    x = 0.1 * torch.randn(n, 14, 14, generator=g)
    ring = torch.ones(14, 14)
    ring[2:-2, 2:-2] = 0
    x = x + 3.0 * ring
    if defect:
        x[:, 6:9, 6:9] += 2.0
    return x


@pytest.mark.parametrize("kind", ["mean", "standardize"])
def test_corrected_map_peaks_on_the_defect_not_the_raised_border(kind):
    post = MapPostprocess(PatchSpec(map_norm=kind), SIZE)
    post.fit_norm(post.smooth(_raised_border(40, 0)))
    defect = _raised_border(1, 1, defect=True)
    h, w = post.map_size
    raw_peak = np.unravel_index(int(post.smooth(defect)[0].argmax()), (h, w))
    peak = np.unravel_index(int(post(defect)[0].argmax()), (h, w))
    assert min(raw_peak[0], raw_peak[1], h - 1 - raw_peak[0], w - 1 - raw_peak[1]) < 4  # uncorrected: the border
    # the defect covers grid cells 6-8 = map cells 12-17
    assert 11 <= peak[0] <= 18 and 11 <= peak[1] <= 18, peak
    # a normal image's corrected map is flat: no location stands out any more
    normal = post(_raised_border(1, 2))[0]
    assert float(normal.abs().max()) < (1.0 if kind == "mean" else 6.0)
    # and the image score follows the defect: defect above every normal
    assert float(post.reduce(post(defect))[0]) > float(post.reduce(post(_raised_border(20, 3))).max())


def test_map_normalization_statistics_and_errors():
    maps = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[3.0, 2.0], [5.0, 8.0]]])
    m = MapNormalization("standardize", (2, 2)).fit(maps)
    torch.testing.assert_close(m.mean, torch.tensor([[2.0, 2.0], [4.0, 6.0]]))
    # std per location: sqrt(2), 0, sqrt(2), 2 sqrt(2); the zero is floored at a quarter of the median (sqrt(2))
    expect = 1.0 / torch.tensor([[2**0.5, 2**0.5 / 4], [2**0.5, 2 * 2**0.5]])
    torch.testing.assert_close(m.scale, expect)
    assert torch.equal(MapNormalization("mean", (2, 2)).fit(maps).scale, torch.ones(2, 2))
    with pytest.raises(ValueError, match="map statistics need >= 2 maps of size"):
        MapNormalization("mean", (3, 3)).fit(maps)
    with pytest.raises(ValueError, match="map normalisation must be mean or standardize"):
        MapNormalization("none", (2, 2))
    with pytest.raises(ValueError, match="unknown map normalisation 'median'"):
        PatchSpec(map_norm="median")
    assert MapPostprocess(PatchSpec(map_norm="none"), SIZE).norm is None


def _tiny_patch_detector(map_norm: str):
    """A PaDiM-style patch detector on EfficientNet-Lite0 at 64 px with fitted map statistics (a strong per-location
    mean and scale), and its manifest."""
    from algan.contract import parse_manifest
    from algan.features.backbone import Preprocess, make_spec
    from algan.features.patch import PatchFeatureMaps, PatchProjection, default_patch_blocks
    from algan.model.detector import AnomalyDetector, Calibration
    from algan.model.heads.patch import padim_head

    size = (64, 64)
    spec = make_spec("efficientnet-lite0", default_patch_blocks("efficientnet-lite0"), "avg", size)
    pspec = PatchSpec(map_norm=map_norm)
    fm = PatchFeatureMaps(spec, pspec).eval()
    rng = np.random.default_rng(0)
    head = padim_head(rng.standard_normal((400, fm.out_dim)).astype(np.float32))
    post = MapPostprocess(pspec, size)
    det = AnomalyDetector(Preprocess(spec.mean, spec.std), fm, PatchProjection("none", fm.out_dim), head,
                          Calibration(0.0, 50.0), input_size=size, postprocess=post).eval()
    frames = torch.from_numpy(rng.integers(0, 256, (6, *size, 3), dtype=np.uint8))
    with torch.no_grad():
        post.fit_norm(post.smooth(head(fm(det.preprocess(frames)))))
    manifest = parse_manifest({"format_version": 1, "model_id": "tiny-patch", "variant": "patch",
                               "calibration": {"center": 0.0, "threshold": 50.0}, "backbone": spec.to_json(),
                               "features": {"transform": "none", "in_dim": fm.out_dim, "dim": fm.out_dim},
                               "head": {"kind": "padim", "settings": {}}, "patch": pspec.to_json(),
                               "outputs": ["scores", "anomaly_maps"]})
    return det, manifest, frames.numpy()


@pytest.mark.parametrize("kind", ["mean", "standardize"])
def test_exported_graph_and_torch_agree_on_corrected_maps(kind, tmp_path):
    from algan.export.onnx_export import export_onnx, ort_outputs, torch_outputs
    from algan.runtime.runners.calibration import read_graph_metadata

    det, manifest, frames = _tiny_patch_detector(kind)
    assert float(det.postprocess.norm.mean.std()) > 0  # a real per-location correction, not a constant
    path = export_onnx(det, manifest, tmp_path / "model.onnx")
    assert read_graph_metadata(path)["algan.map_norm"] == kind
    s_t, m_t = torch_outputs(det, frames)
    s_o, m_o = ort_outputs(path, frames)
    np.testing.assert_allclose(m_o, m_t, atol=1e-4)
    np.testing.assert_allclose(s_o, s_t, atol=1e-4)
    # the correction is inside the graph: its maps differ from the uncorrected ones by the per-location mean
    with torch.no_grad():
        raw = det.postprocess.smooth(det.head(det.transform(det.features(torch.from_numpy(frames)))))
    uncorrected = det.calibration(raw).numpy()
    assert np.abs(m_o - uncorrected).max() > 1e-2


def test_bundle_round_trip_keeps_the_statistics_and_reads_bundles_without_them(tmp_path):
    from safetensors.torch import load_file, save_file

    from algan.bundle import BundleError, load_bundle, save_bundle

    det, manifest, frames = _tiny_patch_detector("mean")
    out = save_bundle(tmp_path / "m", det, manifest)
    det2, man2 = load_bundle(out)
    assert man2.patch.map_norm == "mean"
    torch.testing.assert_close(det2.postprocess.norm.mean, det.postprocess.norm.mean)
    with torch.no_grad():
        torch.testing.assert_close(det2.score_and_maps(torch.from_numpy(frames))[1],
                                   det.score_and_maps(torch.from_numpy(frames))[1])
    weights = load_file(str(out / "weights.safetensors"))
    assert {"postprocess.norm.mean", "postprocess.norm.scale"} <= set(weights)
    # a bundle written before the normalisation: no patch.map_norm, no statistics -> loads with maps as they were
    old = {k: v for k, v in weights.items() if not k.startswith("postprocess.norm.")}
    save_file(old, str(out / "weights.safetensors"))
    data = json.loads((out / "algan.json").read_text())
    del data["patch"]["map_norm"]
    (out / "algan.json").write_text(json.dumps(data))
    det3, man3 = load_bundle(out)
    assert man3.patch.map_norm == "none" and det3.postprocess.norm is None
    # a manifest that says mean over weights without the statistics is refused in one line
    data["patch"]["map_norm"] = "mean"
    (out / "algan.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match="does not match its manifest"):
        load_bundle(out)


def test_fp16_export_of_a_corrected_patch_bundle_passes_its_ladder(tmp_path, monkeypatch):
    """algan-export --fp16 on a patch bundle with map statistics: both graphs written, parity checked on the maps."""
    monkeypatch.setattr("algan.export.pipeline.tensorrt_status", lambda: (False, "disabled in this test"))
    from algan.bundle import save_bundle
    from algan.cli.export import main
    from algan.contract import load_manifest

    det, manifest, frames = _tiny_patch_detector(PatchSpec().map_norm)  # the default
    out = save_bundle(tmp_path / "m", det, manifest, samples=frames)
    assert main([str(out), "--fp16"]) == 0
    assert (out / "model.onnx").is_file() and (out / "model.fp16.onnx").is_file()
    exports = load_manifest(out).exports
    assert exports.onnx_fp16 is not None
    assert any("map" in json.dumps(p) for p in exports.parity or [])


def test_torch_free_names_match():
    from algan.cli.train import MAP_NORM_NAMES
    from algan.features.patch import MAP_NORMS

    assert MAP_NORM_NAMES == MAP_NORMS
