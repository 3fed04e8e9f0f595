import json
import subprocess
import sys

import pytest

#: today's keys plus the patch variant's (pixel_auroc, aupro and mask_f1 null for image-level heads); recall_at_fpr is
#: null with fewer than 20 normal test images
KEYS = {"dataset", "variant", "head", "auroc", "recall_at_fpr", "train_s", "head_ms", "backbone_ms", "pixel_auroc",
        "aupro", "mask_f1", "model_mb"}
#: the patch rows' localisation figures (algan.calibration.localisation)
LOC_KEYS = {"border_peak_fraction", "peak_hit_rate", "peak_hit_rate_flagged", "region_iou"}


def json_rows(data, *flags: str) -> list[dict]:
    """``algan-bench detection --data DATA --json FLAGS...`` in a subprocess: its rows (exit status 0 asserted)."""
    r = subprocess.run([sys.executable, "-m", "algan.cli.bench", "detection", "--data", str(data), "--json", *flags],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]


def test_bench_detection_json_rows(synth_root):
    rows = json_rows(synth_root, "--input-size", "64", "--epochs", "1", "--variants", "feature,image", "--presets",
                     "default")
    assert [row["head"] for row in rows] == ["algan-image[default,1ep]", "algan[default]", "mahalanobis", "knn"]
    for row in rows:
        assert set(row) == KEYS
        assert 0.0 <= row["auroc"] <= 1.0 and row["head_ms"] > 0 and row["backbone_ms"] > 0
        assert row["pixel_auroc"] is None and row["aupro"] is None and row["mask_f1"] is None and row["model_mb"] > 0
    maha = next(row for row in rows if row["head"] == "mahalanobis")
    assert maha["auroc"] > 0.75  # the synthetic defects are visible in ImageNet features


def test_bench_patch_rows_have_pixel_metrics(synth_root):
    # the default ALGAN-patch schedule (1500 steps): a few explicit epochs leave D near its start, where it scores
    # the data's centre (G's first outputs) as fake, an inverted map (pixel AUROC 0.30 after 32 steps)
    rows = json_rows(synth_root, "--input-size", "96", "--variants", "patch")
    assert [row["head"] for row in rows] == ["algan-patch", "patchcore-patch", "padim-patch"]
    for row in rows:
        extra = {"global_weight"} if row["head"] == "algan-patch" else set()
        assert set(row) == KEYS | LOC_KEYS | {"blocks"} | extra and row["variant"] == "patch"
        assert 0.5 < row["pixel_auroc"] <= 1.0 and 0.0 < row["aupro"] <= 1.0 and row["model_mb"] > 0
        assert 0.0 <= row["mask_f1"] <= 1.0  # at thresholds calibrated on half the test normals
        assert 0.0 <= row["border_peak_fraction"] <= 1.0 and 0.0 <= row["peak_hit_rate"] <= 1.0
    # each head on its default blocks: PatchCore on Lite0 4 + 10, the others on 10 + 14
    assert [row["blocks"] for row in rows] == [[10, 14], [4, 10], [10, 14]]
    padim = next(row for row in rows if row["head"] == "padim-patch")
    assert padim["auroc"] > 0.9 and padim["pixel_auroc"] > 0.7  # measured 0.99 / 0.78 on this set at 96 px
    algan = rows[0]
    assert algan["auroc"] > 0.9 and algan["pixel_auroc"] > 0.7  # measured 0.99 / 0.78
    # 32 training images: a fifth (6) is too few to scale the global branch on, so the row (as algan-train) has none
    assert algan["global_weight"] == 0.0


@pytest.mark.parametrize("flags, message", [
    (["--variants", "patch", "--global-weight", "2"], "--global-weight must lie in [0, 1], got 2.0"),
    (["--variants", "patch", "--patch-heads", "padim", "--global-weight", "0.3"], "--global-weight applies to ALGAN"),
    (["--global-weight", "0.3"], "--global-weight applies to ALGAN-patch"),
])
def test_bench_refuses_global_weight_misuse_before_any_work(synth_root, flags, message):
    r = subprocess.run([sys.executable, "-m", "algan.cli.bench", "detection", "--data", str(synth_root), *flags],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr


def test_bench_rejects_folder_without_test_split(tmp_path):
    import cv2
    import numpy as np

    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.zeros((8, 8, 3), np.uint8))
    r = subprocess.run([sys.executable, "-m", "algan.cli.bench", "detection", "--data", str(tmp_path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "no labelled test split" in r.stderr


def test_bench_image_eval_every_prints_rows_along_the_run(synth_root):
    """--eval-every N: one row per N epochs before the final one (head_ms null: only the final head is timed)."""
    rows = json_rows(synth_root, "--variants", "image", "--image-size", "64", "--epochs", "3", "--eval-every", "1")
    assert [row["head"] for row in rows] == [f"algan-image[default,{e}ep]" for e in (1, 2, 3)]
    for row in rows:
        assert set(row) == KEYS and 0.0 <= row["auroc"] <= 1.0 and row["variant"] == "image64"
    assert [row["head_ms"] is None for row in rows] == [True, True, False] and rows[-1]["head_ms"] > 0
    assert 0 < rows[0]["train_s"] <= rows[1]["train_s"] <= rows[2]["train_s"]


def test_no_progress_bars_when_stderr_is_not_a_terminal(synth_root):
    """Without --json, algan-bench shows progress bars, but only on a terminal: piped into a log (or the journal)
    they would be carriage-return spam."""
    r = subprocess.run([sys.executable, "-m", "algan.cli.bench", "detection", "--data", str(synth_root),
                        "--input-size", "64", "--variants", "patch", "--patch-heads", "padim"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "padim-patch" in r.stdout
    assert "\r" not in r.stderr and "batch/s" not in r.stderr, r.stderr[-500:]


@pytest.mark.slow
def test_bench_feature_and_patch_add_the_auto_row(tmp_path):
    """Both variants: a row "head": "auto" whose figures are those of the chosen head's row, and recall_at_fpr on
    every row (25 normal test images: the 1 % threshold is their maximum)."""
    from algan.data.synthetic import generate_dataset

    root = tmp_path / "weave"
    generate_dataset(root, texture="weave", seed=1, n_train=110, n_test_good=25, n_test_defect=10, size=64)
    rows = json_rows(root, "--input-size", "64", "--epochs", "1", "--variants", "feature,patch", "--presets", "default")
    auto = rows[-1]
    assert auto["head"] == "auto" and KEYS | {"chosen"} <= set(auto) <= KEYS | LOC_KEYS | {"chosen", "blocks"}
    variant, head = auto["chosen"].split(":")
    twin = next(r for r in rows[:-1] if r["variant"] == variant and r["head"] in (f"{head}-patch", head,
                                                                                   f"{head}[default]"))
    assert {k: auto[k] for k in ("auroc", "recall_at_fpr", "head_ms")} == \
        {k: twin[k] for k in ("auroc", "recall_at_fpr", "head_ms")}
    for r in rows:
        assert set(r) >= KEYS and 0.0 <= r["recall_at_fpr"] <= 1.0


@pytest.mark.slow
def test_bench_auto_candidates_on_large_frames_are_algan_trains_and_a_tiled_choice_is_scored_as_its_bundle(tmp_path,
                                                                                                      monkeypatch):
    """Frames 3x the input: the auto row's candidates are exactly ``algan-train --head auto``'s, tiled patch heads
    included (same settings, so the same choice); a tiled choice's row scores the bundle ``algan-train`` writes for
    it as ``algan-eval`` does (same test scores after a save and load)."""
    import numpy as np

    from algan.bundle import load_bundle, save_bundle
    from algan.cli import bench, train
    from algan.cli._common import input_size
    from algan.data.datasets import load_dataset
    from algan.data.synthetic import generate_dataset
    from algan.model.evaluation.image_eval import evaluate
    from algan.model.select import fit_auto, select_heads
    from algan.runtime.tiling import auto_grid, frame_size

    root = tmp_path / "metal"
    generate_dataset(root, texture="metal", seed=1, n_train=110, n_test_good=25, n_test_defect=10, size=192)
    common = ["--data", str(root), "--input-size", "64", "--epochs", "1", "--seed", "0"]
    args = bench.build_parser().parse_args(["detection", *common, "--variants", "feature,patch", "--json"])
    args.input_size = input_size(args.input_size)
    targs = train.build_parser().parse_args([*common, "--out", str(tmp_path / "m"), "--head", "auto"])
    targs.input_size = input_size(targs.input_size)
    train.check_args(targs)  # as algan-train: --head auto without --variant lets both variants compete
    ds = load_dataset(root, "auto")
    grid = auto_grid(frame_size(ds.train), (64, 64))
    assert grid is not None and grid.n_tiles > 1
    theirs = train.auto_settings(targs, grid)
    ours = train.with_tiled(bench.auto_candidates(args), grid, False)
    assert ours == theirs and any("@" in n for n in ours)
    seen = {}

    def record(dataset, settings, **kw):  # what bench_auto hands the selection; no fitting here
        seen.update(settings)
        raise ValueError("recorded")

    with monkeypatch.context() as m:
        m.setattr("algan.model.select.select_heads", record)
        assert bench.bench_auto(args, ds, [], []) is None
    assert seen == theirs

    name = next(n for n in ours if n.startswith("patch:padim@"))  # one tiled candidate, cheap to fit
    only = {name: ours[name]}
    row, scores = bench.tiled_auto_row(args, ds, only[name], select_heads(ds, only), 1.0)
    assert row["chosen"] == name and row["head"] == "auto" and row["head_ms"] is None and row["train_s"] > 1.0
    assert row["pixel_auroc"] is not None and 0.5 < row["auroc"] <= 1.0
    fitted = fit_auto(ds, only).fit
    save_bundle(tmp_path / "bundle", fitted.detector, fitted.manifest, fitted.extra_tensors, fitted.samples)
    det, manifest = load_bundle(tmp_path / "bundle")
    assert manifest.tiling is not None
    ev = evaluate(det, ds, progress=False)
    np.testing.assert_allclose(scores, ev["scores"], rtol=1e-4, atol=1e-4)
    assert row["auroc"] == pytest.approx(ev["auroc"], abs=1e-4)
