"""Synthetic MVTec-layout data set generator and the ``algan-synth`` CLI."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from algan.cli.synth import main as synth_main
from algan.data.synthetic import DEFECT_TYPES, TEXTURES, DatasetSummary, generate_dataset, synthesize

SIZE = 64


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.png"))}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, DatasetSummary]:
    root = tmp_path_factory.mktemp("synth") / "metal"
    s = generate_dataset(root, texture="metal", n_train=3, n_test_good=2, n_test_defect=2, size=SIZE, seed=5)
    return root, s


def test_layout_and_counts(tiny):
    root, s = tiny
    assert s.counts == {"train": {"good": 3}, "test": {"good": 2, "scratch": 2, "spot": 2, "crack": 2}}
    assert (s.n_train, s.n_test, s.total) == (3, 8, 11)
    assert s.defect_types == DEFECT_TYPES
    json.dumps(s.as_dict())
    assert sorted(p.name for p in (root / "train" / "good").iterdir()) == ["000.png", "001.png", "002.png"]
    assert sorted(p.name for p in (root / "test").iterdir()) == sorted(["good", *DEFECT_TYPES])
    assert sorted(p.name for p in (root / "ground_truth").iterdir()) == sorted(DEFECT_TYPES)
    assert not (root / "ground_truth" / "good").exists()
    for d in DEFECT_TYPES:
        imgs = sorted(p.stem for p in (root / "test" / d).glob("*.png"))
        masks = sorted(p.name for p in (root / "ground_truth" / d).glob("*.png"))
        assert imgs == ["000", "001"]
        assert masks == [f"{i}_mask.png" for i in imgs]


def test_image_and_mask_formats(tiny):
    root, _ = tiny
    for p in root.glob("t*/*/*.png"):
        img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        assert img.dtype == np.uint8 and img.shape == (SIZE, SIZE, 3), p
    for p in (root / "ground_truth").glob("*/*.png"):
        m = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        assert m.dtype == np.uint8 and m.shape == (SIZE, SIZE), p
        assert set(np.unique(m)) <= {0, 255}
        assert np.count_nonzero(m) >= 6, f"empty defect mask {p}"


def test_deterministic_bytes(tmp_path, tiny):
    root, _ = tiny
    again = tmp_path / "again"
    generate_dataset(again, texture="metal", n_train=3, n_test_good=2, n_test_defect=2, size=SIZE, seed=5)
    assert _files(again) == _files(root)


def test_seed_changes_images_and_files_are_independent_of_counts(tmp_path, tiny):
    root, _ = tiny
    other = generate_dataset(tmp_path / "s6", n_train=1, n_test_good=0, n_test_defect=0, size=SIZE, seed=6).root
    assert (other / "train/good/000.png").read_bytes() != (root / "train/good/000.png").read_bytes()
    # the per-file seed depends on (seed, texture, split, class, index), not on how many files are written
    fewer = generate_dataset(tmp_path / "s5", n_train=1, n_test_good=0, n_test_defect=1, size=SIZE, seed=5,
                             defects=("crack",)).root
    assert (fewer / "train/good/000.png").read_bytes() == (root / "train/good/000.png").read_bytes()
    assert (fewer / "test/crack/000.png").read_bytes() == (root / "test/crack/000.png").read_bytes()


def test_normal_images_all_differ(tiny):
    root, _ = tiny
    imgs = [cv2.imread(str(p)) for p in sorted(root.glob("t*/good/*.png"))]
    assert len(imgs) == 5
    for i in range(len(imgs)):
        for j in range(i + 1, len(imgs)):
            assert np.abs(imgs[i].astype(int) - imgs[j].astype(int)).mean() > 2.0


@pytest.mark.parametrize("texture", TEXTURES)
def test_synthesize_good_has_empty_mask_and_texture(texture):
    img, mask = synthesize(texture, None, SIZE, 1)
    assert img.shape == (SIZE, SIZE, 3) and img.dtype == np.uint8
    assert mask.shape == (SIZE, SIZE) and mask.dtype == np.uint8 and not mask.any()
    assert img.std() > 4 and 30 < img.mean() < 225  # textured, not blank or saturated
    img2, _ = synthesize(texture, "good", SIZE, 1)
    assert np.array_equal(img, img2)


@pytest.mark.parametrize("texture", TEXTURES)
@pytest.mark.parametrize("defect", DEFECT_TYPES)
def test_defect_changes_image_inside_mask_only(texture, defect):
    for seed in range(3):
        clean, _ = synthesize(texture, None, 96, seed)
        img, mask = synthesize(texture, defect, 96, seed)
        assert 0 < np.count_nonzero(mask) < 0.35 * mask.size
        diff = np.abs(img.astype(np.int16) - clean.astype(np.int16)).max(axis=2)
        inside, outside = diff[mask > 0], diff[mask == 0]
        assert inside.mean() > 8, f"{texture}/{defect}/{seed}: defect barely visible ({inside.mean():.1f})"
        assert outside.mean() < 1.0
        assert (outside > 20).mean() < 0.01
        assert img.max() < 255 or (img == 255).mean() < 0.01  # not a saturated blob


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="size"):
        synthesize("metal", None, 16, 0)
    with pytest.raises(ValueError, match="texture"):
        synthesize("wood", None, 64, 0)
    with pytest.raises(ValueError, match="defect"):
        synthesize("metal", "dent", 64, 0)
    with pytest.raises(ValueError, match="n_train"):
        generate_dataset(tmp_path / "x", n_train=-1, size=SIZE)
    with pytest.raises(ValueError, match="defects"):
        generate_dataset(tmp_path / "x", defects=("dent",), size=SIZE)


def test_existing_dataset_needs_overwrite(tmp_path):
    root = tmp_path / "d"
    generate_dataset(root, n_train=3, n_test_good=1, n_test_defect=1, size=SIZE)
    with pytest.raises(FileExistsError):
        generate_dataset(root, n_train=1, n_test_good=1, n_test_defect=1, size=SIZE)
    s = generate_dataset(root, n_train=1, n_test_good=1, n_test_defect=0, size=SIZE, overwrite=True)
    assert len(list(root.rglob("*.png"))) == s.total == 2  # stale files are gone
    assert not (root / "ground_truth").exists() or not list((root / "ground_truth").rglob("*.png"))


def test_progress_callback(tmp_path):
    calls = []
    generate_dataset(tmp_path / "p", n_train=2, n_test_good=1, n_test_defect=1, size=32, texture="weave",
                     progress=lambda d, t: calls.append((d, t)))
    assert calls == [(i, 6) for i in range(1, 7)]


# ------------------------------------------------------------------------------------------------------------- CLI
def test_cli_generates_dataset_and_video(tmp_path, capsys):
    out = tmp_path / "ds"
    video = tmp_path / "line.mp4"
    rc = synth_main([str(out), "--texture", "weave", "--n-train", "2", "--n-test-good", "3", "--n-test-defect", "2",
                     "--size", "48", "--seed", "1", "--video", str(video), "--fps", "5", "--pattern", "3g 2d 2g",
                     "-q"])
    assert rc == 0
    line = capsys.readouterr().out.strip()
    assert "\n" not in line and "texture=weave" in line and "7 frames" in line
    assert len(list((out / "train" / "good").glob("*.png"))) == 2
    labels = json.loads((tmp_path / "line.labels.json").read_text())
    assert [r["label"] for r in labels] == [0, 0, 0, 1, 1, 0, 0]


@pytest.mark.parametrize(
    "args, msg",
    [
        (["--size", "16"], "--size must be >= 32"),
        (["--n-train", "-1"], "--n-train"),
        (["--texture", "wood"], "invalid choice"),
        (["--defects", "dent"], "--defects"),
        (["--video", "x.mov"], ".mp4"),
        (["--video", "x.mp4", "--pattern", "3q"], "--pattern"),
        (["--video", "x.mp4", "--fps", "0"], "--fps"),
        (["--video", "x.mp4", "--pattern", "2g 2:crack", "--defects", "spot"], "not generated"),
    ],
)
def test_cli_bad_arguments_exit_2(tmp_path, capsys, args, msg):
    rc = synth_main([str(tmp_path / "o"), *args])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("algan-synth: error:") and msg in err and "\n" not in err
    assert not (tmp_path / "o").exists()


def test_cli_existing_dataset_exit_2(tmp_path, capsys):
    argv = [str(tmp_path / "o"), "--n-train", "1", "--n-test-good", "1", "--n-test-defect", "0", "--size", "32", "-q"]
    assert synth_main(argv) == 0
    assert synth_main(argv) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert synth_main([*argv, "--overwrite"]) == 0


def test_overwrite_never_deletes_a_data_set_it_did_not_write(tmp_path, capsys):
    """--overwrite replaces only what algan-synth wrote: a user's own image (or any other file) in train/ keeps the
    whole folder, with one line and exit 2."""
    argv = [str(tmp_path / "o"), "--n-train", "1", "--n-test-good", "1", "--n-test-defect", "0", "--size", "32", "-q"]
    assert synth_main(argv) == 0
    own = tmp_path / "o" / "train" / "good" / "line3_part17.jpg"
    own.write_bytes(b"precious")
    assert synth_main([*argv, "--overwrite"]) == 2
    err = capsys.readouterr().err.strip()
    assert "did not write" in err and "line3_part17.jpg" in err and "\n" not in err
    assert own.read_bytes() == b"precious"
    own.unlink()
    (tmp_path / "o" / "test" / "notes").mkdir()
    assert synth_main([*argv, "--overwrite"]) == 2
    assert (tmp_path / "o" / "test" / "notes").is_dir()


def test_cli_writes_no_progress_bar_into_a_pipe(tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "algan.cli.synth", str(tmp_path / "d"), "--n-train", "3",
                        "--n-test-good", "1", "--n-test-defect", "1", "--size", "32"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "\r" not in r.stderr and "img/s" not in r.stderr, r.stderr[-300:]
    assert (tmp_path / "d" / "train" / "good").is_dir()
