import cv2
import numpy as np
import pytest

from algan.data.datasets import DatasetError, load_dataset, mtd_is_test
from algan.runtime.preprocess import crop_roi, prepare_frame


def test_mvtec_layout_counts(synth_root):
    ds = load_dataset(synth_root)
    assert ds.layout == "mvtec"
    assert len(ds.train) == 40
    assert ds.n_test_normal == 10
    assert ds.n_test_anomalous == 18
    assert {s.cls for s in ds.test} == {"good", "scratch", "spot", "crack"}


def test_folder_layout(tmp_path):
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((8, 8, 3), i, np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    ds = load_dataset(tmp_path)
    assert ds.layout == "folder" and len(ds.train) == 3 and ds.test == []


def test_bad_directories_give_clear_errors(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(tmp_path / "nope")
    with pytest.raises(DatasetError, match="cannot tell the layout"):
        load_dataset(tmp_path)
    with pytest.raises(DatasetError, match="not in MVTec AD layout"):
        load_dataset(tmp_path, "mvtec")


def test_mtd_split_is_the_documented_one(data_dir):
    root = data_dir / "mtd"
    if not root.is_dir():
        pytest.skip(f"MTD data not found at {root} (set ALGAN_DATA_DIR)")
    ds = load_dataset(root)
    assert (len(ds.train), ds.n_test_normal, ds.n_test_anomalous) == (619, 333, 392)
    assert all(not mtd_is_test(p.name) for p in ds.train)
    assert all(s.path.suffix == ".jpg" for s in ds.test)


def test_prepare_frame_gray_roi_and_resize():
    gray = np.arange(100 * 120, dtype=np.uint32).reshape(100, 120).astype(np.uint8)
    out = prepare_frame(gray, (32, 48), roi=(10, 20, 60, 40))
    assert out.shape == (32, 48, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    assert np.array_equal(out[..., 0], out[..., 2])
    with pytest.raises(ValueError, match="does not fit"):
        crop_roi(np.zeros((10, 10, 3), np.uint8), (5, 5, 10, 10))
    with pytest.raises(ValueError, match="uint8"):
        prepare_frame(np.zeros((4, 4, 3), np.float32), (4, 4))
