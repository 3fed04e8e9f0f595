"""One rule for "which files are images of the set" (issue 24, finding 2): training, calibration, algan-predict and
the edge daemon's folder source skip the same masks, hidden files and other suffixes, and say so once."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from algan.contract import image_skip_reason, list_images


@pytest.mark.parametrize(("name", "siblings", "reason"), [
    ("exp1_num_1.jpg", {"exp1_num_1.png"}, None),
    ("exp1_num_1.png", {"exp1_num_1.jpg"}, "mask"),  # MTD: the .png beside a .jpg
    ("exp1_num_1.png", {"exp1_num_1.JPEG"}, "mask"),
    ("000_mask.png", set(), "mask"),  # MVTec AD / algan-synth ground truth
    ("000_MASK.PNG", set(), "mask"),
    ("000.png", set(), None),
    ("part.TIFF", set(), None),
    (".part.jpg", set(), "hidden"),
    (".DS_Store", set(), "hidden"),
    ("labels.json", set(), "not an image"),
    ("Thumbs.db", set(), "not an image"),
    ("README", set(), "not an image"),
    ("masked_bolt.png", set(), None),  # "mask" inside the name is no mask
])
def test_image_skip_reason(name, siblings, reason):
    assert image_skip_reason(name, frozenset(siblings | {name})) == reason


def _mtd_folder(root: Path, n: int = 3) -> Path:
    """An MTD-like ``Imgs`` folder: n photos, their same-stem PNG masks, a ``*_mask.png``, a hidden file, a note."""
    d = root / "MT_Crack" / "Imgs"
    d.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for i in range(n):
        cv2.imwrite(str(d / f"exp{i}.jpg"), rng.integers(0, 255, (48, 48, 3), dtype=np.uint8))
        cv2.imwrite(str(d / f"exp{i}.png"), np.full((48, 48), 255, np.uint8))
    cv2.imwrite(str(d / "extra_mask.png"), np.full((48, 48), 255, np.uint8))
    cv2.imwrite(str(d / ".hidden.jpg"), np.zeros((48, 48, 3), np.uint8))
    (d / "notes.txt").write_text("x")
    return d


def test_every_reader_takes_the_same_images(tmp_path, caplog):
    from algan.cli.predict import list_images as predict_list
    from algan.data.datasets import load_folder
    from algan.edge.capture.sources import FolderSource

    d = _mtd_folder(tmp_path)
    want = [d / f"exp{i}.jpg" for i in range(3)]
    listing = list_images(d)
    assert listing.images == want
    assert listing.skipped == {"mask": 4, "hidden": 1, "not an image": 1}
    assert listing.skipped_line() == ("skipped 6 files that are not images of the set: 4 masks, 1 hidden files, "
                                      "1 not images")
    ds = load_folder(d)
    assert ds.train == want and "4 masks" in ds.skipped_line()
    assert predict_list(tmp_path).images == want
    # the daemon's folder camera: 3 frames, not 3 photos + 4 masks
    caplog.set_level(logging.WARNING)
    src = FolderSource(d)
    frames = []
    while src.read() is not None:
        frames.append(src.last_name)
    assert frames == [p.name for p in want]
    said = [r for r in caplog.records if "not images of the set" in r.getMessage()]
    assert len(said) == 1


def test_watched_folder_skips_masks_and_says_it_once(tmp_path, caplog):
    from algan.edge.capture.sources import NO_FRAME, FolderSource

    d = _mtd_folder(tmp_path)
    now = [0.0]
    src = FolderSource(d, watch=True, settle_s=0.0, poll_s=0.0, clock=lambda: now[0])
    caplog.set_level(logging.WARNING)
    names = []
    for _ in range(20):
        now[0] += 1.0
        f = src.read()
        if f is not NO_FRAME and f is not None:
            names.append(src.last_name)
    assert names == ["exp0.jpg", "exp1.jpg", "exp2.jpg"]
    assert sum("not images of the set" in r.getMessage() for r in caplog.records) == 1


def test_mvtec_training_skips_masks_in_train_good(tmp_path):
    from algan.data.datasets import load_dataset

    good = tmp_path / "train" / "good"
    good.mkdir(parents=True)
    for name in ("000.png", "001.png", "001_mask.png", ".002.png"):
        cv2.imwrite(str(good / name), np.zeros((32, 32, 3), np.uint8))
    ds = load_dataset(tmp_path)
    assert [p.name for p in ds.train] == ["000.png", "001.png"]
    assert ds.skipped == {"mask": 1, "hidden": 1}
