"""Training reads images through the daemon's checked decoder (issue 24, finding 6): a truncated or unreadable image
is skipped with one line naming it, and the run fails only above --max-bad-fraction (default 0.01), with the list."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from algan.runtime.preprocess import ImageReadError, decode_image


def _data(folder, n=30):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        cv2.imwrite(str(folder / f"{i:02d}.jpg"), rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    good = (folder / "00.jpg").read_bytes()
    (folder / "broken.jpg").write_bytes(good[: len(good) // 2])  # cut short: libjpeg would decode it half grey
    (folder / "zero.png").write_bytes(b"")
    return folder


def test_decoder_refuses_truncated_and_empty_files(tmp_path):
    d = _data(tmp_path / "d", 1)
    with pytest.raises(ImageReadError, match="broken.jpg is truncated"):
        decode_image(d / "broken.jpg")
    with pytest.raises(ImageReadError, match="empty"):
        decode_image(d / "zero.png")
    assert decode_image(d / "00.jpg").shape == (64, 64, 3)


def test_train_skips_bad_images_within_the_fraction(tmp_path, capsys):
    from algan.cli.train import main
    from algan.contract import load_manifest

    d = _data(tmp_path / "d")
    rc = main(["--data", str(d), "--out", str(tmp_path / "m"), "--head", "mahalanobis", "--input-size", "64", "64",
               "--max-bad-fraction", "0.1", "--holdout", "0.2"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "skipped: image" in err and "broken.jpg is truncated" in err and "zero.png is empty" in err
    assert "skipped 2 of 32 unreadable training images" in err
    t = load_manifest(tmp_path / "m").training
    assert t.n_train + t.n_holdout == 30


def test_train_fails_above_the_fraction_with_the_list(tmp_path, capsys):
    from algan.cli.train import main

    d = _data(tmp_path / "d")
    rc = main(["--data", str(d), "--out", str(tmp_path / "m"), "--head", "mahalanobis", "--input-size", "64", "64"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert err[-1].startswith("algan-train: error: 2 of 32 training images cannot be read (more than "
                              "--max-bad-fraction 0.01)")
    assert "broken.jpg" in err[-1] and "zero.png" in err[-1] and "Traceback" not in "\n".join(err)
    assert not (tmp_path / "m").exists()
