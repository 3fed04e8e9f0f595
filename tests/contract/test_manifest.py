"""The typed bundle manifest (:class:`algan.contract.Manifest`): it reads what algan-train / -export / -calibrate
wrote, writes back the same JSON, tolerates keys it does not know, and refuses a damaged manifest or an unknown
format version with one line that names the file, the field and the fix."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from algan.contract import (
    FORMAT_VERSION,
    MANIFEST_FILE,
    BundleError,
    CalibrationSection,
    Exports,
    GraphExport,
    Manifest,
    load_manifest,
    manifest_bytes,
    parse_manifest,
)

#: ``algan.json`` of a patch (PaDiM) bundle as the manifest code before the typed Manifest wrote it: algan-train,
#: then algan-export (exports.onnx, parity), then algan-calibrate (the calibration section with its extra keys)
PATCH_BUNDLE: dict[str, Any] = {
    "format_version": 1, "model_id": "metal-padim-patch-20261203T053555", "created": "2026-12-03T05:35:55.013Z",
    "algan_edge_version": "0.1.0", "variant": "patch",
    "backbone": {"name": "efficientnet-lite0", "blocks": [10, 14], "pooling": "avgstd", "input_size": [64, 64],
                 "mean": [0.4980392156862745] * 3, "std": [0.5019607843137255] * 3,
                 "weights_sha256": "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
                 "weights_path": None},
    "input": {"height": 64, "width": 64, "layout": "NHWC", "dtype": "uint8", "colour_order": "BGR"},
    "features": {"transform": "none", "in_dim": 304, "dim": 304, "n_patches": 1216},
    "head": {"kind": "padim", "settings": {"estimator": "ledoit-wolf", "covariance": "shared"}},
    "calibration": {
        "target_fpr": 0.001, "method": "generalised Pareto tail fit", "n_images": 30,
        "source": "50% of the mvtec test normals of /data/metal (seeded split, seed 0)",
        "data": {"root": "/data/metal", "layout": "mvtec", "seed": 0, "calib_fraction": 0.5, "n_calib": 30,
                 "n_valid": 30, "n_anomalous": 9},
        "fps": 10.0, "false_alarms_per_camera_hour": 36.0, "date": "2026-12-03T05:36:59.912Z",
        "tool": "algan-calibrate",
        "validation": {"eval_set": "validation normals (held out)", "n_normal": 30, "n_alarms": 0, "fpr": 0.0,
                       "fpr_ci95": [0.0, 0.11570330822202778], "expected_alarms_95": [0, 1], "as_expected": True,
                       "recall": 0.7777777777777778},
        "scores_file": "calibration_scores.safetensors", "int8_file": "int8_calibration.safetensors",
        "unreadable_images": 0,
        "gpd": {"shape": -0.20967056799701805, "scale": 10.307589992865907, "tail_threshold": 86.01167297363281,
                "n_exceedances": 10},
        "center": 82.87295532226562, "threshold": 120.62981454788641,
    },
    "training": {"data": {"root": "/data/metal", "layout": "mvtec", "n_train": 24, "n_test_normal": 60,
                          "n_test_anomalous": 9, "has_masks": True},
                 "n_train": 19, "n_holdout": 5, "seed": 0, "max_train": None, "wall_s": 6.26},
    "exports": {
        "onnx": {"file": "model.onnx", "sha256": "8df6c66a9673bf95bf4d71dbfd940aa0e3cd5eaa6691bcbf967cf73f4a7db36b",
                 "opset": 17, "simplified_with": "onnxslim 0.1.98", "created": "2026-12-03T05:36:37.080Z",
                 "parity_max_abs_diff": 4.112720489501953e-06, "parity_images": 5, "parity_tolerance": 0.0001,
                 "outputs": ["scores", "anomaly_maps"], "maps_parity_max_abs_diff": 5.237758159637451e-06},
        "parity": [{"name": "onnx-fp32 simplified", "n_images": 5, "max_abs_diff": 4.112720489501953e-06,
                    "max_scaled_diff": 4.112720489501953e-06, "metric": "abs", "tolerance": 0.0001, "ok": True}],
        "triton": {"repository": "/srv/triton", "models": ["algan"]},
    },
    "outputs": ["scores", "anomaly_maps"],
    "patch": {"stride": 8, "aggregate": 3, "projection": "none", "dim": None, "map_stride": 4, "smooth_sigma": 4.0,
              "reduction": "max", "topk": 0.01, "patches_per_image": 128},
    "anomaly_map": {"height": 16, "width": 16, "reduction": "max", "grid": [8, 8]},
    "roi": None,
}

#: a feature (kNN) bundle straight from algan-train before the typed Manifest: the keys a fresh bundle must have
FEATURE_BUNDLE: dict[str, Any] = {
    "format_version": 1, "model_id": "metal-knn-20261203T053442", "created": "2026-12-03T05:34:42.665Z",
    "algan_edge_version": "0.1.0", "variant": "feature",
    "backbone": {"name": "efficientnet-lite0", "blocks": [8, 9, 10, 11, 12, 13, 14], "pooling": "avgstd",
                 "input_size": [64, 64], "mean": [0.4980392156862745] * 3, "std": [0.5019607843137255] * 3,
                 "weights_sha256": "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
                 "weights_path": None},
    "input": {"height": 64, "width": 64, "layout": "NHWC", "dtype": "uint8", "colour_order": "BGR"},
    "features": {"transform": "standardize", "in_dim": 2208, "dim": 2208},
    "head": {"kind": "knn", "settings": {"k": 1, "n_bank": 19, "metric": "whitened"}},
    "calibration": {"center": 55.7160530090332, "threshold": 64.46446228027344, "target_fpr": 0.01, "n_images": 5,
                    "source": "held-out training normals", "method": "empirical quantile"},
    "training": {"data": {"root": "/data/metal", "layout": "mvtec", "n_train": 24, "n_test_normal": 60,
                          "n_test_anomalous": 9, "has_masks": True},
                 "n_train": 19, "n_holdout": 5, "seed": 0, "max_train": None, "wall_s": 5.81},
    "exports": {},
    "outputs": ["scores"],
    "roi": None,
}


def old_writer(manifest: dict) -> bytes:
    """What ``algan.bundle.write_manifest`` wrote before the typed Manifest."""
    return (json.dumps(manifest, indent=2) + "\n").encode()


def shape(value: Any) -> Any:
    """The key structure of a JSON value (dict keys in order, recursively; other values dropped)."""
    if isinstance(value, dict):
        return [(k, shape(v)) for k, v in value.items()]
    return None


def write(tmp_path: Path, manifest: Any, name: str = "bundle") -> Path:
    d = tmp_path / name
    d.mkdir()
    (d / MANIFEST_FILE).write_text(manifest if isinstance(manifest, str) else json.dumps(manifest, indent=2))
    return d


# -- round trip --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("golden", [PATCH_BUNDLE, FEATURE_BUNDLE], ids=["patch-exported-calibrated", "feature"])
def test_written_json_is_identical_to_before(golden, tmp_path):
    from algan.contract import load_manifest, write_manifest

    m = load_manifest(write(tmp_path, golden))
    assert m.to_json() == golden and list(m.to_json()) == list(golden)  # same keys, same order, same values
    assert manifest_bytes(m) == old_writer(golden)
    write_manifest(tmp_path / "bundle", load_manifest(tmp_path / "bundle"))
    assert (tmp_path / "bundle" / MANIFEST_FILE).read_bytes() == old_writer(golden)


def test_typed_access():
    m = parse_manifest(copy.deepcopy(PATCH_BUNDLE))
    assert (m.model_id, m.variant, m.head_kind, m.head.settings["covariance"]) == (PATCH_BUNDLE["model_id"], "patch",
                                                                                    "padim", "shared")
    assert m.backbone.input_size == [64, 64] and m.backbone.blocks == [10, 14] and m.backbone.weights_path is None
    assert (m.features.dim, m.features.n_patches, m.input.colour_order) == (304, 1216, "BGR")
    assert (m.calibration.center, m.calibration.threshold) == (82.87295532226562, 120.62981454788641)
    assert m.calibration.target_fpr == 0.001 and m.calibration.date.endswith("Z")
    assert m.training.data.layout == "mvtec" and m.training.n_holdout == 5 and m.training.max_train is None
    assert m.patch.stride == 8 and m.anomaly_map.grid == [8, 8] and m.outputs == ["scores", "anomaly_maps"]
    assert m.exports.onnx.sha256.startswith("8df6") and m.roi is None


def test_changes_are_written_and_nothing_else(tmp_path):
    from algan.bundle import write_manifest

    old = {k: v for k, v in FEATURE_BUNDLE.items() if k not in ("exports", "outputs", "variant", "roi")}
    m = load_manifest(write(tmp_path, old))
    assert m.variant == "feature" and m.outputs == ["scores"] and m.exports == Exports()  # defaults of absent keys
    assert m.to_json() == old  # ... are not written
    m.roi = [1, 2, 30, 40]
    m.exports.onnx = GraphExport(file="model.onnx")  # a record set in the absent section writes it
    m.calibration = CalibrationSection.model_validate({"tool": "test", "center": 1.0, "threshold": 2.0})
    write_manifest(tmp_path / "bundle", m)
    got = json.loads((tmp_path / "bundle" / MANIFEST_FILE).read_text())
    assert got == {**old, "calibration": {"tool": "test", "center": 1.0, "threshold": 2.0}, "roi": [1, 2, 30, 40],
                   "exports": {"onnx": {"file": "model.onnx"}}}
    assert list(got)[-2:] == ["exports", "roi"]  # new keys after the ones read (in the order of the Manifest fields)


def test_extra_keys_are_tolerated_and_kept(tmp_path):
    d = copy.deepcopy(FEATURE_BUNDLE)
    d["future_section"] = {"a": [1, 2]}
    d["head"]["future"] = "x"
    d["calibration"]["future"] = 3
    d["training"]["data"]["future"] = True
    m = load_manifest(write(tmp_path, d))
    assert m.head.kind == "knn" and m.model_extra == {"future_section": {"a": [1, 2]}}
    assert manifest_bytes(m) == old_writer(d)


def test_bundles_that_only_serve_their_graph_still_read(tmp_path):
    """The torch-free bundles of the edge tests (tests/edgekit.py, tests/mapkit.py): no backbone, features or
    training section, a head kind the torch loader does not know."""
    d = {"format_version": 1, "model_id": "tiny-1", "calibration": {"center": 0.0, "threshold": 1.0},
         "exports": {"onnx": {"file": "model.onnx", "sha256": "ab"}}, "head": {"kind": "standin"}}
    m = load_manifest(write(tmp_path, d))
    assert m.backbone is None and m.head_kind == "standin" and m.to_json() == d
    with pytest.raises(BundleError, match=r"algan.json: field 'backbone' is missing; .*re-train"):
        m.require("backbone")


def test_the_runtime_reads_leniently_and_cannot_write_back(tmp_path):
    """lenient=True (the runtime's read) drops a damaged training section but still refuses what serving needs, and a
    manifest read that way cannot be written back (it would lose the dropped section)."""
    from algan.contract import write_manifest

    d = copy.deepcopy(FEATURE_BUNDLE)
    d["head"] = {"settings": "lost"}  # no kind, settings not a mapping
    d["training"]["n_train"] = "many"
    bundle = write(tmp_path, d)
    with pytest.raises(BundleError, match=r"field 'head.kind' is missing \(and 2 more\)"):
        load_manifest(bundle)
    m = load_manifest(bundle, lenient=True)
    assert m.head is None and m.training is None and m.calibration.threshold == d["calibration"]["threshold"]
    with pytest.raises(BundleError, match=r"read without its damaged training sections and cannot be written back"):
        write_manifest(bundle, m)
    d["calibration"]["threshold"] = "high"
    with pytest.raises(BundleError, match=r"field 'calibration.threshold' is invalid"):
        load_manifest(write(tmp_path, d, "cal"), lenient=True)


# -- refusals ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("drop", "field"), [(("calibration", "threshold"), "calibration.threshold"),
                                             (("model_id",), "model_id"), (("calibration",), "calibration"),
                                             (("head", "kind"), "head.kind"), (("backbone", "mean"), "backbone.mean")])
def test_a_missing_field_is_named(tmp_path, drop, field):
    d = copy.deepcopy(FEATURE_BUNDLE)
    section = d
    for key in drop[:-1]:
        section = section[key]
    del section[drop[-1]]
    bundle = write(tmp_path, d)
    with pytest.raises(BundleError) as info:
        load_manifest(bundle)
    msg = str(info.value)
    assert msg.startswith(f"{bundle / MANIFEST_FILE}: field '{field}' is missing;"), msg
    assert "re-train or re-export the bundle with this algan-edge version" in msg and "\n" not in msg


def test_a_mistyped_field_is_named(tmp_path):
    d = copy.deepcopy(FEATURE_BUNDLE)
    d["calibration"]["center"] = "median"
    d["features"]["dim"] = [3]
    with pytest.raises(BundleError, match=r"field 'calibration.center' is invalid: .*number.* \(got 'median'\) "
                                          r"\(and 1 more\); .*re-train"):
        load_manifest(write(tmp_path, d))


@pytest.mark.parametrize("version", [2, 0, "1", None])
def test_an_unknown_format_version_is_refused(tmp_path, version):
    d = copy.deepcopy(FEATURE_BUNDLE)
    if version is None:
        del d["format_version"]
    else:
        d["format_version"] = version
    bundle = write(tmp_path, d)
    with pytest.raises(BundleError, match=rf"has format version {version}, this algan-edge reads version "
                                          rf"{FORMAT_VERSION}; re-train the model or install the algan-edge version"):
        load_manifest(bundle)


def test_unreadable_manifests(tmp_path):
    with pytest.raises(BundleError, match="cannot read .*algan.json.*; re-train or restore the bundle"):
        load_manifest(write(tmp_path, '{"format_version": 1, "model_id": "x", "calib', "cut"))
    with pytest.raises(BundleError, match="is not a JSON object"):
        load_manifest(write(tmp_path, "[1, 2]", "list"))
    with pytest.raises(BundleError, match="does not exist; train one"):
        load_manifest(tmp_path / "missing")
    with pytest.raises(BundleError, match=r"not a model bundle \(algan.json missing\)"):
        load_manifest(tmp_path)
    bundle = write(tmp_path, FEATURE_BUNDLE, "ok")
    (bundle / "model.onnx").write_bytes(b"")
    with pytest.raises(BundleError, match="model.onnx is a file, but a model bundle directory is needed"):
        load_manifest(bundle / "model.onnx")
    assert load_manifest(bundle / MANIFEST_FILE).model_id == load_manifest(bundle).model_id  # the file itself


def test_save_bundle_validates_a_dict(tmp_path):
    torch = pytest.importorskip("torch")
    from algan.bundle import save_bundle

    det = torch.nn.Module()
    det.head = torch.nn.Linear(2, 2)
    with pytest.raises(BundleError, match="field 'calibration' is missing"):
        save_bundle(tmp_path / "b", det, {"model_id": "m1"})
    assert not (tmp_path / "b").exists()
    out = save_bundle(tmp_path / "b", det, {"model_id": "m1", "calibration": {"center": 0.0, "threshold": 1.0}})
    assert json.loads((out / MANIFEST_FILE).read_text()) == {"format_version": 1, "model_id": "m1",
                                                            "calibration": {"center": 0.0, "threshold": 1.0}}


# -- a bundle written by algan-train -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    pytest.importorskip("torch")
    from algan.cli.train import main
    from algan.data.synthetic import generate_dataset

    base = tmp_path_factory.mktemp("manifest")
    generate_dataset(base / "metal", texture="metal", n_train=12, n_test_good=2, n_test_defect=1, size=64, seed=1)
    assert main(["--data", str(base / "metal"), "--out", str(base / "knn"), "--head", "knn", "--input-size", "64",
                 "64", "--quiet"]) == 0
    return base / "knn"


def test_a_trained_bundle_round_trips(trained):
    from algan.bundle import load_bundle

    text = (trained / MANIFEST_FILE).read_bytes()
    m = load_manifest(trained)
    assert isinstance(m, Manifest) and manifest_bytes(m) == text and m.path == trained / MANIFEST_FILE
    # the same keys, in the same order, as algan-train wrote before the typed manifest
    assert shape(json.loads(text)) == shape(FEATURE_BUNDLE)
    det, loaded = load_bundle(trained)
    assert loaded.to_json() == m.to_json() and det.calibration.center.item() == pytest.approx(m.calibration.center)


def test_update_calibration_changes_only_the_calibration(trained, tmp_path):
    import shutil

    from algan.bundle import update_calibration

    b = Path(shutil.copytree(trained, tmp_path / "b"))
    before = json.loads((b / MANIFEST_FILE).read_text())
    m = update_calibration(b, 1.0, 3.0, {"target_fpr": 0.02, "method": "test"})
    after = json.loads((b / MANIFEST_FILE).read_text())
    assert after == {**before, "calibration": {"target_fpr": 0.02, "method": "test", "center": 1.0, "threshold": 3.0}}
    assert list(after) == list(before) and m.calibration.threshold == 3.0


def test_patch_section_is_derived_from_patch_spec() -> None:
    """The manifest's ``patch`` section is built from PatchSpec's fields: same names, types and defaults, a mistyped
    value refused naming the field, and a section read back gives the spec it was written from."""
    import dataclasses

    from algan.contract import BundleError, PatchSection, PatchSpec, parse_manifest

    spec = {f.name: f.default for f in dataclasses.fields(PatchSpec)}
    section = {name: f.default for name, f in PatchSection.model_fields.items()}
    # one deliberate difference: a manifest without map_norm was written before the map normalisation existed, so
    # it reads as none (new bundles always write the key)
    assert section.pop("map_norm") == "none" and spec.pop("map_norm") == "standardize"
    assert section == spec
    d = copy.deepcopy(FEATURE_BUNDLE)
    d["patch"] = {"stride": 16, "projection": "random", "dim": 64}
    m = parse_manifest(d)
    assert PatchSpec.from_json(m.patch.model_dump()) == PatchSpec(stride=16, projection="random", dim=64,
                                                                  map_norm="none")
    d["patch"]["stride"] = "wide"
    with pytest.raises(BundleError, match=r"field 'patch.stride' is invalid"):
        parse_manifest(d)
