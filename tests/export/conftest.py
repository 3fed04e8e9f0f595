"""Export fixtures: one tiny (64x64) Mahalanobis bundle trained once per session on synthetic data."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

SMALL = (64, 64)


@pytest.fixture(scope="session")
def export_data(tmp_path_factory) -> Path:
    from algan.data.synthetic import generate_dataset

    root = tmp_path_factory.mktemp("export-synth") / "metal"
    generate_dataset(root, texture="metal", n_train=24, n_test_good=6, n_test_defect=4, size=64, seed=5)
    return root


@pytest.fixture(scope="session")
def trained_bundle(export_data, tmp_path_factory) -> Path:
    from algan.cli.train import main

    out = tmp_path_factory.mktemp("export-bundle") / "m"
    # held-out calibration: the FP16 precision ladder's figures (tests/export/test_export_pipeline.py) are of this
    # bundle's calibrated scale; a cross-fitted threshold on 24 images is wider and every rung would pass
    rc = main(["--data", str(export_data), "--out", str(out), "--head", "mahalanobis", "--input-size",
               str(SMALL[0]), str(SMALL[1]), "--calibration", "holdout", "--quiet"])
    assert rc == 0
    return out


@pytest.fixture
def bundle(trained_bundle, tmp_path) -> Path:
    """A private copy of the trained bundle (exports modify it)."""
    dst = tmp_path / "bundle"
    shutil.copytree(trained_bundle, dst)
    return dst
