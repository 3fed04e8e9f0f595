"""--head auto (algan.model.select): the rule, a constructed case with one clearly better head, the manifest record,
the CLI and an MTD subset."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from algan.contract import Manifest
from algan.data.defects import DEFECT_KINDS
from algan.model.fit import FitSettings
from algan.model.select import (
    CANDIDATES,
    RULE,
    CandidateResult,
    VariantData,
    candidates_for,
    choose,
    fitter,
    select,
    selection_json,
)

_REPO = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())


def _result(name: str, recall: float, auc: float) -> CandidateResult:
    return CandidateResult(name, recall, auc, {"spot": recall}, 1.0, np.zeros(3), np.ones(3))


def test_rule_recall_first_then_the_cheaper_head():
    a, b, c = (_result("feature:mahalanobis", 0.60, 0.95), _result("feature:knn", 0.80, 0.90),
               _result("patch:patchcore", 0.79, 0.97))
    # recall tie (0.01 <= RECALL_TIE): the cheaper head, whatever the synthetic AUROC
    assert choose([a, b, c]).name == "feature:knn"
    assert choose([a, _result("feature:knn", 0.76, 0.99), c]).name == "patch:patchcore"  # 0.03 apart: recall decides
    assert choose([_result("patch:padim", 0.8, 0.9), _result("feature:knn", 0.8, 0.9)]).name == "feature:knn"
    with pytest.raises(ValueError):
        choose([])


def test_candidates_per_variant():
    # the cost order comes from the heads registry (HeadKind.auto_cost): per frame first, then to train
    assert CANDIDATES == ("feature:mahalanobis", "feature:knn", "feature:algan", "patch:padim", "patch:algan",
                          "patch:patchcore")
    assert candidates_for("auto") == CANDIDATES
    assert candidates_for("feature") == ("feature:mahalanobis", "feature:knn", "feature:algan")
    assert candidates_for("patch") == ("patch:padim", "patch:algan", "patch:patchcore")
    with pytest.raises(ValueError, match="one head"):
        candidates_for("image")


def test_tiled_candidates_follow_every_whole_frame_one_and_lose_ties_to_them():
    from algan.model.select import candidate_name, cost_rank, split_candidate
    from algan.runtime.tiling import TileSpec

    grid = TileSpec(3, 3, 0.25)
    names = candidates_for("auto", grid)
    assert names[:6] == CANDIDATES
    assert names[6:] == ("patch:padim@3x3", "patch:algan@3x3")
    assert candidates_for("feature", grid) == candidates_for("feature")  # feature heads take whole frames
    assert candidates_for("patch", grid)[3:] == names[6:]
    assert split_candidate("patch:algan@2x4") == ("patch", "algan", "2x4")
    assert split_candidate("feature:knn") == ("feature", "knn", None)
    assert candidate_name("patch:padim", None) == "patch:padim"
    with pytest.raises(ValueError, match="variant:head"):
        split_candidate("padim")
    assert [cost_rank(n) for n in names] == sorted(cost_rank(n) for n in names)
    # a tiled candidate must beat the whole-frame ones by more than TILED_MARGIN (+ the tie): it costs its tiles
    from algan.model.select import TILED_MARGIN

    whole = _result("patch:patchcore", 0.70, 0.9)
    assert choose([_result("patch:padim@3x3", 0.70 + TILED_MARGIN, 0.9), whole]).name == "patch:patchcore"
    assert choose([_result("patch:padim@3x3", 0.70 + TILED_MARGIN + 0.015, 0.9), whole]).name == "patch:patchcore"
    assert choose([_result("patch:padim@3x3", 0.70 + TILED_MARGIN + 0.03, 0.9), whole]).name == "patch:padim@3x3"
    # ballscrew's figures (Session 15): PatchCore on 2x4 tiles 0.854, whole-frame 0.800 -> the whole frame
    assert choose([_result("patch:patchcore@2x4", 0.854, 0.95), _result("patch:patchcore", 0.800, 0.93)]).name == \
        "patch:patchcore"
    # among tiled candidates the usual rule: the tie goes to the cheaper head
    assert choose([_result("patch:padim@3x3", 0.71, 0.9), _result("patch:algan@3x3", 0.72, 0.9)]).name == \
        "patch:padim@3x3"
    assert _result("patch:padim@3x3", 0.8, 0.9).head == "padim"


def test_auto_picks_the_clearly_better_head_on_a_constructed_case():
    """Normals: 8 loud directions (std 5) and 8 quiet ones (std 1). Defects: +6 along a quiet direction. The
    Mahalanobis head sees a 6-sigma shift; Euclidean kNN drowns it in the loud directions."""
    rng = np.random.default_rng(0)
    scale = np.r_[np.full(8, 5.0), np.full(8, 1.0)].astype(np.float32)
    train = (rng.standard_normal((400, 16)) * scale).astype(np.float32)
    normal = (rng.standard_normal((100, 16)) * scale).astype(np.float32)
    defect = (rng.standard_normal((60, 16)) * scale).astype(np.float32)
    defect[:, 12] += 6.0
    shared = VariantData("feature", train, torch.from_numpy(normal), torch.from_numpy(defect))
    fitters = {"feature:mahalanobis": fitter(FitSettings(head="mahalanobis")),
               "feature:knn": fitter(FitSettings(head="knn", knn_metric="euclidean"))}
    names = ["feature:knn", "feature:mahalanobis"]
    data = dict.fromkeys(names, shared)
    chosen, results = select(names, fitters, data, ["shift"] * 60, 0.01)
    by = {r.name: r for r in results}
    assert chosen.name == "feature:mahalanobis"
    assert by["feature:mahalanobis"].recall_at_fpr > 0.6 > 0.1 > by["feature:knn"].recall_at_fpr
    assert by["feature:mahalanobis"].auroc > 0.97 > 0.8 > by["feature:knn"].auroc
    assert [r.name for r in results] == names  # reported in the order scored


def test_selection_round_trips_through_the_manifest(tmp_path):
    res = [_result("feature:knn", 0.8, 0.9), _result("patch:padim", 0.7, 0.95)]
    sel = selection_json(res[0], res, seed=3, target_fpr=0.01, n_normal=40, kinds=["spot", "crack"] * 40,
                         wall_s=12.5)
    doc = {"format_version": 1, "model_id": "m", "calibration": {"center": 0.0, "threshold": 1.0},
           "head": {"kind": "knn", "settings": {"k": 1}, "selection": sel}}
    m = Manifest.model_validate(doc)
    assert m.head.selection.chosen == "feature:knn" and m.head.selection.rule == RULE
    assert m.head.selection.candidates[1].auroc == 0.95 and m.head.selection.seed == 3
    assert m.head.selection.defect_kinds == ["crack", "spot"] and m.head.selection.n_defects == 80
    text = json.dumps(m.to_json())
    assert json.loads(text) == doc
    assert Manifest.model_validate(json.loads(text)).to_json() == doc


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory) -> Path:
    from algan.data.synthetic import generate_dataset

    root = tmp_path_factory.mktemp("auto") / "metal"
    generate_dataset(root, texture="metal", seed=1, n_train=60, n_test_good=4, n_test_defect=4, size=64)
    return root


@pytest.mark.slow
def test_algan_train_head_auto_writes_the_selection(tiny_set, tmp_path, capsys):
    from algan.bundle import load_bundle
    from algan.cli.train import main

    out = tmp_path / "bundle"
    rc = main(["--data", str(tiny_set), "--out", str(out), "--head", "auto", "--variant", "feature", "--epochs", "1",
               "--holdout", "0.4", "--input-size", "64", "64", "--quiet"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "head selection on synthetic defects" in printed and "chosen: feature:" in printed
    chosen_line = next(line for line in printed.splitlines() if "of the synthetic defects" in line)
    assert "at the threshold for 0.01 false alarms per frame" in chosen_line
    assert "local marks" in chosen_line and "texture changes" in chosen_line
    det, m = load_bundle(out)
    sel = m.head.selection
    figures = next(c for c in sel.candidates if c.name == sel.chosen)
    assert f"flags {figures.recall_at_fpr:.0%} of the synthetic defects" in chosen_line
    assert sel is not None and [c.name for c in sel.candidates] == list(candidates_for("feature"))
    assert sel.chosen == f"feature:{m.head_kind}" and m.variant == "feature"
    assert sel.n_normal == 24 and sel.n_defects == 288  # 6 local marks and 6 texture changes per held-out image
    assert set(sel.defect_kinds) == set(DEFECT_KINDS)
    assert all(0.0 <= c.recall_at_fpr <= 1.0 and 0.0 <= c.auroc <= 1.0 for c in sel.candidates)
    on_disk = json.loads((out / "algan.json").read_text())
    assert on_disk["head"]["selection"]["chosen"] == sel.chosen


def test_each_patch_head_takes_its_default_blocks_and_a_given_blocks_flag_wins():
    from algan.cli.train import build_parser, fit_settings
    from algan.model.select import data_key

    args = build_parser().parse_args(["--data", ".", "--out", "x", "--head", "auto", "--variant", "patch"])
    by = {h: fit_settings(args, "patch", h) for h in ("algan", "padim", "patchcore")}
    assert by["patchcore"].backbone.blocks == [4, 10] and by["padim"].backbone.blocks == [10, 14]
    # one extraction for ALGAN-patch and PaDiM, another for PatchCore
    assert data_key(by["algan"]) == data_key(by["padim"]) != data_key(by["patchcore"])
    given = build_parser().parse_args(["--data", ".", "--out", "x", "--variant", "patch", "--head", "patchcore",
                                       "--blocks", "10,14"])
    assert fit_settings(given, "patch", "patchcore").backbone.blocks == [10, 14]


@pytest.mark.slow
@pytest.mark.parametrize("head, blocks", [("padim", [10, 14]), ("patchcore", [4, 10])])
def test_auto_judges_a_patch_head_on_the_maps_its_bundle_ships(tiny_set, head, blocks):
    """The candidate's held-out scores are the shipped bundle's: the per-location map normalisation is fitted before
    scoring, on the training images algan-train fits it on (not the unnormalised maps), with the head's own default
    blocks."""
    from algan.cli.train import build_parser, fit_settings
    from algan.data.datasets import load_dataset
    from algan.model.fit import training_split
    from algan.model.select import fit_auto, image_scores
    from algan.runtime.preprocess import load_batch

    args = build_parser().parse_args(["--data", str(tiny_set), "--out", "x", "--head", "auto", "--variant", "patch",
                                      "--holdout", "0.4", "--input-size", "64", "64"])
    patch = fit_settings(args, "patch", head)
    assert patch.patch.map_norm == "standardize"
    ds = load_dataset(tiny_set)
    res = fit_auto(ds, {f"patch:{head}": patch})
    assert res.fit.manifest.backbone.blocks == blocks
    r = res.results[0]
    assert r.post is not None and not torch.equal(r.post.norm.scale, torch.ones_like(r.post.norm.scale))
    # the detector that fit_auto trained for the bundle scores the held-out normals as the selection did
    det = res.fit.detector.eval()
    _, hold = training_split(ds, patch)
    with torch.no_grad():
        shipped = det.raw_scores(torch.from_numpy(load_batch(hold, (64, 64)))).numpy()
    np.testing.assert_allclose(r.normal_scores, shipped, rtol=1e-3, atol=1e-4)
    # without the fitted normalisation the scores differ: the check above is not vacuous
    head = r.fitted[0] if r.fitted is not None else det.head
    from algan.model.select import build_variant_data

    fit_paths, _ = training_split(ds, patch)
    data, _ = build_variant_data(patch, fit_paths, load_batch(hold, (64, 64)), load_batch(hold[:2], (64, 64)))
    plain = image_scores(head, data, data.normal)
    assert not np.allclose(plain, shipped, rtol=1e-3, atol=1e-4)


@pytest.mark.slow
def test_a_tiled_candidate_is_judged_on_the_stitched_maps_its_bundle_ships(tmp_path):
    """Frames 2.5x the input: auto adds the patch heads on 3x3 tiles (on the finer blocks); the tiled candidate's
    held-out scores are the shipped tiled bundle's frame scores (tiles, per-location statistics of the tiles' maps,
    stitched maps, reduction), and the bundle records the grid."""
    from algan.cli.train import auto_settings, build_parser
    from algan.data.datasets import load_dataset
    from algan.data.synthetic import generate_dataset
    from algan.model.fit import frame_raw_scores, training_split
    from algan.model.select import fit_auto
    from algan.runtime.tiling import auto_grid, frame_size

    root = tmp_path / "large"
    generate_dataset(root, texture="metal", seed=2, n_train=60, n_test_good=2, n_test_defect=2, size=160)
    ds = load_dataset(root)
    grid = auto_grid(frame_size(ds.train), (64, 64))
    assert grid is not None and (grid.rows, grid.cols) == (3, 3)
    args = build_parser().parse_args(["--data", str(root), "--out", "x", "--head", "auto", "--variant", "patch",
                                      "--holdout", "0.4", "--input-size", "64", "64"])
    settings = auto_settings(args, grid)
    assert list(settings)[3:] == ["patch:padim@3x3", "patch:algan@3x3"]
    tiled = settings["patch:padim@3x3"]
    assert tiled.tiling == grid and tiled.backbone.blocks == settings["patch:patchcore"].backbone.blocks
    res = fit_auto(ds, {"patch:padim@3x3": tiled})
    det = res.fit.detector.eval()
    assert det.tiling == grid and res.fit.manifest.head.selection.chosen == "patch:padim@3x3"
    _, hold = training_split(ds, tiled)
    np.testing.assert_allclose(res.results[0].normal_scores, frame_raw_scores(det, hold), rtol=1e-3, atol=1e-4)


@pytest.mark.slow
def test_algan_train_head_auto_on_large_frames_says_it_tries_tiles_and_records_them(tmp_path, capsys):
    from algan.bundle import load_bundle
    from algan.cli.train import main
    from algan.data.synthetic import generate_dataset

    root = tmp_path / "large"
    generate_dataset(root, texture="weave", seed=3, n_train=50, n_test_good=2, n_test_defect=2, size=160)
    out = tmp_path / "bundle"
    rc = main(["--data", str(root), "--out", str(out), "--head", "auto", "--variant", "patch", "--epochs", "1",
               "--holdout", "0.4", "--input-size", "64", "64"])
    assert rc == 0
    captured = capsys.readouterr()
    assert "note: the frames (160 x 160 px) are much larger than the model input: --head auto also tries the patch " \
           "heads on 3x3 overlap 0.25 tiles" in captured.err
    assert "patch:algan@3x3" in captured.out and "patch:padim@3x3" in captured.out
    det, m = load_bundle(out)
    sel = m.head.selection
    assert [c.name for c in sel.candidates] == [*candidates_for("patch"), "patch:padim@3x3", "patch:algan@3x3"]
    # the bundle is the chosen candidate: tiled exactly when the choice is
    assert (det.tiling is not None) == ("@" in sel.chosen) and sel.chosen.split("@")[0] == f"patch:{m.head_kind}"
    assert "tiles per frame" in captured.out if "@" in sel.chosen else "tiles per frame" not in captured.out


def test_auto_holdout_raises_the_hold_out_to_20_only_where_40_or_more_images_allow_it():
    from algan.model.fit import split_holdout
    from algan.model.select import MIN_HELD_OUT, auto_holdout

    assert auto_holdout(500, 0.2) == 0.2 and auto_holdout(100, 0.2) == 0.2  # 20 held out already
    assert auto_holdout(39, 0.2) == 0.2  # 20 held out would leave 19 to fit on: select_heads refuses instead
    for n in (40, 60, 97, 99):
        fit, held = split_holdout([Path(f"{i}.png") for i in range(n)], auto_holdout(n, 0.2), 0)
        assert len(held) == MIN_HELD_OUT and len(fit) == n - MIN_HELD_OUT


def test_held_out_advice_names_what_the_user_can_change():
    from algan.model.select import held_out_advice

    assert "raise --max-train to 40 or more (the data holds 100)" in held_out_advice(39, 100, False)
    assert "drop --holdout" in held_out_advice(60, 60, True)
    assert "add normal images (40 or more)" in held_out_advice(30, 30, False)
    assert "--head algan" in held_out_advice(30, 30, True)


@pytest.mark.slow
def test_algan_train_head_auto_on_60_images_holds_out_20_unless_holdout_is_given(tiny_set, tmp_path, capsys):
    """60 normals: the default 20 % would hold out 12, too few to measure recall at 1 % false alarms; --head auto
    holds out 20 itself and says so; a --holdout the user gives is kept, and too few held out is refused in one line
    that says what to do."""
    from algan.bundle import load_bundle
    from algan.cli.train import main

    base = ["--data", str(tiny_set), "--head", "auto", "--variant", "feature", "--epochs", "1", "--input-size", "64"]
    assert main([*base, "--out", str(tmp_path / "b")]) == 0
    err = capsys.readouterr().err
    assert "note: 60 normal training images: --head auto holds out 20 (33%, not 20%)" in err
    _, m = load_bundle(tmp_path / "b")
    assert m.head.selection.n_normal == 20  # (the chosen feature head is then cross-fitted on all 60)

    assert main([*base, "--out", str(tmp_path / "c"), "--holdout", "0.2", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "needs >= 20 held-out normal images" in err and "got 12 of 60 training images" in err
    assert "drop --holdout" in err  # 60 images: without it, auto holds out 20 itself
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "c").exists()


@pytest.mark.parametrize("argv, message", [
    (["--variant", "auto", "--head", "knn"], "use it with --head auto"),
    (["--head", "auto", "--variant", "image"], "one head"),
    (["--head", "auto", "--variant", "feature", "--topk", "0.02"], "apply to the patch heads"),
])
def test_bad_auto_flags_exit_2_with_one_line(argv, message, tmp_path, capsys):
    from algan.cli.train import main

    (tmp_path / "data").mkdir()
    rc = main(["--data", str(tmp_path / "data"), "--out", str(tmp_path / "b"), *argv])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err


@pytest.mark.slow
@pytest.mark.realdata
def test_mtd_subset_auto_chooses_a_head_that_detects_real_defects():
    from algan.cli.train import build_parser, fit_settings
    from algan.data.datasets import load_dataset
    from algan.model.evaluation.image_eval import auroc
    from algan.model.select import select_heads

    base = Path(os.environ.get("ALGAN_DATA_DIR", _REPO.parent / "shared" / "data"))
    if not (base / "mtd" / "MT_Free").is_dir():
        pytest.skip(f"MTD not found at {base / 'mtd'} (set ALGAN_DATA_DIR to the folder holding mtd/)")
    ds = load_dataset(base / "mtd", "mtd")
    args = build_parser().parse_args(["--data", ".", "--out", ".", "--head", "auto", "--max-train", "150"])
    args.variant = "auto"
    names = ["feature:mahalanobis", "feature:knn", "patch:padim", "patch:patchcore"]
    candidates = {n: fit_settings(args, *n.split(":")) for n in names}
    sel = select_heads(ds, candidates)
    assert sel.n_normal == 30 and len(sel.kinds) == 360
    by = {r.name: r for r in sel.results}
    # MTD's normals are textured tiles: synthetic defects of every kind are found by the classical heads
    assert max(r.recall_at_fpr for r in sel.results) > 0.4 and min(r.auroc for r in sel.results) > 0.6
    # the chosen head, as fitted, on 120 real test images (60 normal, 60 defective)
    from algan.model.select import build_variant_data
    from algan.runtime.preprocess import load_batch

    rng = np.random.default_rng(0)
    normal = [s for s in ds.test if s.label == 0]
    bad = [s for s in ds.test if s.label == 1]
    pick = [normal[i] for i in rng.choice(len(normal), 60, replace=False)] + \
        [bad[i] for i in rng.choice(len(bad), 60, replace=False)]
    from algan.model.fit import training_split
    from algan.model.select import image_scores

    fit_paths, _ = training_split(ds, candidates[sel.chosen.name])
    u8 = load_batch([s.path for s in pick], (224, 224))
    data, _ = build_variant_data(candidates[sel.chosen.name], fit_paths, u8[:2], u8)
    scores = image_scores(by[sel.chosen.name].fitted[0], data, data.defect, post=by[sel.chosen.name].post)
    assert auroc(np.array([s.label for s in pick]), scores) > 0.85
