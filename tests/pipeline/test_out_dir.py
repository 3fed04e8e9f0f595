"""``--out`` never destroys what the program did not write (issue 24, finding 1): algan-train, save_bundle, the
Triton repository, algan-predict, algan-demo and training checkpoints refuse a directory that holds a user's files."""

from __future__ import annotations

import numpy as np
import pytest

from algan.contract import OutputDirError, check_output_dir

SMALL = ("--input-size", "64", "64")


def _images(folder, n=6):
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        cv2.imwrite(str(folder / f"img{i:02d}.png"), rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    return sorted(p.name for p in folder.iterdir())


def _train(argv):
    from algan.cli.train import main

    return main([*argv, "--head", "mahalanobis", *SMALL, "--quiet"])


def _one_line_error(capsys, *words):
    err = capsys.readouterr().err.strip()
    assert err.startswith("algan-train: error:") and "\n" not in err, err
    for w in words:
        assert w in err, err


def test_train_refuses_out_equal_to_data(tmp_path, capsys):
    data = tmp_path / "datacopy"
    names = _images(data)
    assert _train(["--data", str(data), "--layout", "folder", "--out", str(data)]) == 2
    _one_line_error(capsys, "--data", "outside")
    assert sorted(p.name for p in data.iterdir()) == names


def test_train_refuses_out_holding_the_data(tmp_path, capsys):
    parent = tmp_path / "parent"
    names = _images(parent / "sub")
    assert _train(["--data", str(parent / "sub"), "--layout", "folder", "--out", str(parent), "--force"]) == 2
    _one_line_error(capsys, "contains --data")
    assert sorted(p.name for p in (parent / "sub").iterdir()) == names


def test_train_refuses_out_inside_the_data(tmp_path, capsys):
    data = tmp_path / "data"
    _images(data)
    assert _train(["--data", str(data), "--layout", "folder", "--out", str(data / "model")]) == 2
    _one_line_error(capsys, "lies inside --data")
    assert not (data / "model").exists()


def test_train_refuses_a_folder_with_a_users_file(tmp_path, capsys):
    data, precious = tmp_path / "data", tmp_path / "precious"
    _images(data)
    precious.mkdir()
    (precious / "notes.txt").write_text("mine")
    assert _train(["--data", str(data), "--layout", "folder", "--out", str(precious), "--force"]) == 2
    _one_line_error(capsys, "not empty", "notes.txt")
    assert (precious / "notes.txt").read_text() == "mine" and sorted(p.name for p in precious.iterdir()) == [
        "notes.txt"]


def test_replacing_a_bundle_needs_force(tmp_path, capsys):
    from algan.contract import load_manifest

    data, out = tmp_path / "data", tmp_path / "model"
    _images(data, 12)
    assert _train(["--data", str(data), "--layout", "folder", "--out", str(out), "--seed", "1"]) == 0
    first = load_manifest(out).model_id
    assert load_manifest(out).training.seed == 1
    capsys.readouterr()
    assert _train(["--data", str(data), "--layout", "folder", "--out", str(out), "--seed", "2"]) == 2
    _one_line_error(capsys, "earlier model bundle", "--force")
    assert load_manifest(out).model_id == first and load_manifest(out).training.seed == 1
    # a user's file inside the bundle is not deleted, even with --force
    (out / "notes.txt").write_text("mine")
    assert _train(["--data", str(data), "--layout", "folder", "--out", str(out), "--seed", "2", "--force"]) == 2
    _one_line_error(capsys, "notes.txt")
    (out / "notes.txt").unlink()
    assert _train(["--data", str(data), "--layout", "folder", "--out", str(out), "--seed", "2", "--force"]) == 0
    assert load_manifest(out).training.seed == 2
    assert load_manifest(out).model_id != first  # a new id even when both are trained within one second
    assert not list(tmp_path.glob(".model*"))  # no temporary or old copy left beside it


def test_check_output_dir_rules(tmp_path):
    check_output_dir(tmp_path / "new", force=False)
    (tmp_path / "empty").mkdir()
    check_output_dir(tmp_path / "empty", force=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputDirError, match="not a directory"):
        check_output_dir(tmp_path / "file", force=True)
    b = tmp_path / "b"
    b.mkdir()
    # everything training, algan-calibrate, algan-export and build-engine write into a bundle
    for name in ("algan.json", "weights.safetensors", "samples.safetensors", "model.onnx", "model.fp16.onnx",
                 "model.engine", "model.engine.json", "model.engine.timing.cache", "model.engine.int8.cache",
                 "calibration_scores.safetensors", "int8_calibration.safetensors", "calibration_report.png"):
        (b / name).write_text("{}")
    with pytest.raises(OutputDirError, match="--force"):
        check_output_dir(b, force=False)
    check_output_dir(b, force=True)
    (b / "sub").mkdir()
    with pytest.raises(OutputDirError, match="sub"):
        check_output_dir(b, force=True)


def test_save_bundle_never_replaces_a_non_bundle(tmp_path):
    from algan.bundle import save_bundle

    d = tmp_path / "d"
    d.mkdir()
    (d / "x.jpg").write_bytes(b"1")
    with pytest.raises(OutputDirError, match="x.jpg"):
        save_bundle(d, None, {"model_id": "m"})
    assert (d / "x.jpg").read_bytes() == b"1"


def test_triton_repo_never_replaces_a_foreign_model_dir(tmp_path):
    from algan.export.triton import TritonModel, write_model

    src = tmp_path / "model.onnx"
    src.write_bytes(b"not read before the check")
    (tmp_path / "repo" / "algan").mkdir(parents=True)
    (tmp_path / "repo" / "algan" / "README").write_text("mine")
    with pytest.raises(OutputDirError, match="not a Triton model directory"):
        write_model(tmp_path / "repo", TritonModel(name="algan", platform="onnxruntime_onnx", source=str(src),
                                                   input_size=(64, 64), max_batch_size=1, map_size=(4, 4)))
    assert (tmp_path / "repo" / "algan" / "README").read_text() == "mine"


def test_predict_out_with_a_users_files_is_refused(tmp_path, capsys):
    from algan.cli.predict import main

    imgs = tmp_path / "imgs"
    _images(imgs, 2)
    out = tmp_path / "out"
    out.mkdir()
    (out / "predictions.csv").write_text("mine")
    (out / "budget.xlsx").write_text("mine")
    model = tmp_path / "model"  # refused before the model is opened: its files need only exist
    model.mkdir()
    (model / "algan.json").write_text("{}")
    (model / "model.onnx").write_bytes(b"")
    assert main([str(model), str(imgs), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "budget.xlsx" in err and (out / "predictions.csv").read_text() == "mine"


def test_demo_out_with_a_users_files_is_refused(tmp_path, capsys):
    from algan.cli.demo import main

    (tmp_path / "notes.txt").write_text("mine")
    assert main(["--out", str(tmp_path)]) == 2
    assert "not an earlier algan-demo directory" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_checkpoint_cleanup_keeps_a_users_folder(tmp_path):
    import torch

    from algan.model.gan.checkpoint import save_state

    (tmp_path / "state-notes").mkdir()
    (tmp_path / "state-notes" / "a.txt").write_text("mine")
    save_state(tmp_path, 0, 1, {"w": torch.zeros(2)}, {"epoch": 1})
    save_state(tmp_path, 0, 2, {"w": torch.ones(2)}, {"epoch": 2})
    assert (tmp_path / "state-notes" / "a.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("state-m")) == ["state-m000-e000002"]
