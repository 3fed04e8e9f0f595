"""Video writer and the labelled production-line video."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

import algan.data.video as video_mod
from algan.data.synthetic import generate_dataset
from algan.data.video import (
    VideoWriteError,
    count_frames,
    labels_path_for,
    make_sequence_video,
    parse_pattern,
    write_video,
)

SIZE = 64


def _read_all(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    cap.release()
    return frames


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("vid") / "ds"
    generate_dataset(root, n_train=0, n_test_good=6, n_test_defect=3, size=SIZE, seed=2)
    return root


def test_write_video_arrays_roundtrip(tmp_path):
    frames = [np.full((48, 64, 3), 20 * i, np.uint8) for i in range(7)]
    frames[3] = frames[3][..., 0]  # a grayscale frame is expanded to BGR
    out = tmp_path / "sub" / "v.mp4"
    assert write_video(iter(frames), out, fps=5.0) == 7
    back = _read_all(out)
    assert len(back) == 7 == count_frames(out)
    assert back[0].shape == (48, 64, 3)
    means = [f.mean() for f in back]
    assert np.allclose(means, [20 * i for i in range(7)], atol=4)


def test_write_video_paths_resize_and_odd_size(tmp_path):
    paths = []
    for i in range(3):
        p = tmp_path / f"{i}.png"
        cv2.imwrite(str(p), np.full((40 + 10 * i, 50, 3), 60 * i, np.uint8))
        paths.append(p)
    out = tmp_path / "p.mp4"
    assert write_video(paths, out, size=(33, 31)) == 3
    back = _read_all(out)
    assert len(back) == 3 and back[0].shape == (30, 32, 3)  # rounded down to even for MPEG-4


def test_write_video_errors(tmp_path, monkeypatch):
    f = [np.zeros((32, 32, 3), np.uint8)]
    with pytest.raises(ValueError, match=".mp4"):
        write_video(f, tmp_path / "v.mov")
    with pytest.raises(ValueError, match="no frames"):
        write_video([], tmp_path / "v.mp4")
    with pytest.raises(ValueError, match="fps"):
        write_video(f, tmp_path / "v.mp4", fps=0)
    with pytest.raises(ValueError, match="cannot read"):
        write_video([tmp_path / "missing.png"], tmp_path / "v.mp4")
    with pytest.raises(ValueError, match="uint8"):
        write_video([np.zeros((32, 32, 3), np.float32)], tmp_path / "v.mp4")

    class _ClosedWriter:
        def __init__(self, *a, **k):
            pass

        def isOpened(self):  # noqa: N802 - OpenCV's name
            return False

        def release(self):
            pass

    monkeypatch.setattr(video_mod.cv2, "VideoWriter", _ClosedWriter)
    with pytest.raises(VideoWriteError, match="cannot open a video writer"):
        write_video(f, tmp_path / "w.mp4")


def test_parse_pattern():
    assert parse_pattern("12g 6d, 3:crack 1g") == [("good", 12), ("defect", 6), ("crack", 3), ("good", 1)]
    assert parse_pattern([("good", 2), ("spot", 1)]) == [("good", 2), ("spot", 1)]
    for bad in ("", "3x", "g3", "0g"):
        with pytest.raises(ValueError):
            parse_pattern(bad)


def test_sequence_video_labels(dataset, tmp_path):
    out = tmp_path / "line.mp4"
    pattern = "4g 3d 2g 3d 2g 3d 3g 2:spot"
    labels = make_sequence_video(dataset, out, pattern=pattern, fps=8, seed=1)
    runs = parse_pattern(pattern)
    assert len(labels) == sum(n for _, n in runs) == 22
    assert [r["frame"] for r in labels] == list(range(22))
    # JSON next to the video equals the returned list
    assert labels_path_for(out) == tmp_path / "line.labels.json"
    assert json.loads(labels_path_for(out).read_text()) == labels
    # run structure: good runs, then defect runs of a single class each; the three "d" runs use three classes
    groups = [(cls, len(list(g))) for cls, g in itertools.groupby(r["class"] for r in labels)]
    assert [n for _, n in groups] == [n for _, n in runs]
    assert [c for c, _ in groups][0::2] == ["good"] * 4
    assert sorted(c for c, _ in groups[1:6:2]) == ["crack", "scratch", "spot"]
    assert groups[-1][0] == "spot"
    for r in labels:
        assert r["label"] == int(r["class"] != "good")
        assert r["source"].startswith(f"test/{r['class']}/") and (dataset / r["source"]).is_file()
        if r["label"]:
            assert (dataset / r["mask"]).is_file()
        else:
            assert r["mask"] is None
    # consecutive frames are different parts (drawn without replacement within a run)
    for a, b in itertools.pairwise(labels):
        assert a["source"] != b["source"]


def test_sequence_video_frames_match_sources(dataset, tmp_path):
    out = tmp_path / "v.mp4"
    labels = make_sequence_video(dataset, out, pattern="3g 3d 3g", fps=10, seed=0)
    frames = _read_all(out)
    assert len(frames) == len(labels) == 9
    for r, f in zip(labels, frames, strict=True):
        src = cv2.imread(str(dataset / r["source"]))
        assert f.shape == src.shape
        # MPEG-4 is lossy; the right source must still be by far the closest
        others = [cv2.imread(str(dataset / o["source"])) for o in labels if o["source"] != r["source"]]
        err = np.abs(f.astype(int) - src).mean()
        assert err < min(np.abs(f.astype(int) - o).mean() for o in others)
        assert err < 12


def test_sequence_video_is_deterministic_and_resizes(dataset, tmp_path):
    a = make_sequence_video(dataset, tmp_path / "a.mp4", pattern="3g 2d", seed=4, size=(32, 32),
                            labels_path=tmp_path / "lab" / "a.json")
    b = make_sequence_video(dataset, tmp_path / "b.mp4", pattern="3g 2d", seed=4, size=(32, 32))
    assert a == b
    assert json.loads((tmp_path / "lab" / "a.json").read_text()) == a
    assert _read_all(tmp_path / "a.mp4")[0].shape == (32, 32, 3)


def test_sequence_video_errors(dataset, tmp_path):
    with pytest.raises(FileNotFoundError, match="MVTec"):
        make_sequence_video(tmp_path, tmp_path / "x.mp4")
    with pytest.raises(FileNotFoundError, match="dent"):
        make_sequence_video(dataset, tmp_path / "x.mp4", pattern="2g 2:dent")
    good_only = tmp_path / "g"
    generate_dataset(good_only, n_train=0, n_test_good=2, n_test_defect=0, size=32)
    with pytest.raises(ValueError, match="no defect class"):
        make_sequence_video(good_only, tmp_path / "x.mp4", pattern="2g 2d")


def test_mkv_is_lossless(tmp_path):
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (32, 48, 3), dtype=np.uint8) for _ in range(4)]
    assert write_video(frames, tmp_path / "v.mkv") == 4
    back = _read_all(tmp_path / "v.mkv")
    assert all(np.array_equal(a, b) for a, b in zip(frames, back, strict=True))
