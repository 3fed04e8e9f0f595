"""Fixtures for algan-calibrate: a small synthetic MVTec-layout data set and one bundle trained on it (64x64)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from calibkit import SMALL


@pytest.fixture(scope="session")
def calib_data(tmp_path_factory) -> Path:
    """MVTec layout: 30 train, 60 test normals (30 calibration + 30 validation), 3 x 4 defects."""
    from algan.data.synthetic import generate_dataset

    root = tmp_path_factory.mktemp("calib") / "metal"
    generate_dataset(root, texture="metal", n_train=30, n_test_good=60, n_test_defect=4, size=80, seed=5)
    return root


@pytest.fixture(scope="session")
def calib_bundle(calib_data, tmp_path_factory) -> Path:
    """A Mahalanobis bundle trained on ``calib_data`` (never modified: copy it with ``bundle_copy``)."""
    from algan.cli.train import main

    out = tmp_path_factory.mktemp("calib_bundle") / "model"
    rc = main(["--data", str(calib_data), "--out", str(out), "--head", "mahalanobis",
               "--input-size", str(SMALL[0]), str(SMALL[1]), "--quiet"])
    assert rc == 0
    return out


@pytest.fixture
def bundle_copy(calib_bundle, tmp_path) -> Path:
    """A fresh copy of the session bundle that a test may change."""
    return Path(shutil.copytree(calib_bundle, tmp_path / "model"))

