"""Fixtures for the training/export pipeline: a small synthetic data set and bundles trained on it once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SMALL = (64, 64)


def shared_data_dir() -> Path:
    return Path(os.environ.get("ALGAN_DATA_DIR", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared real data (``ALGAN_DATA_DIR`` or ``<repo>/../shared/data``); may not exist."""
    return shared_data_dir()


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    from algan.data.synthetic import generate_dataset

    root = tmp_path_factory.mktemp("synth") / "metal"
    generate_dataset(root, texture="metal", n_train=40, n_test_good=10, n_test_defect=6, size=96, seed=3)
    return root


def _train(root: Path, out: Path, head: str, epochs: int = 8) -> Path:
    from algan.cli.train import main

    rc = main(["--data", str(root), "--out", str(out), "--head", head, "--epochs", str(epochs),
               "--input-size", str(SMALL[0]), str(SMALL[1]), "--quiet"])
    assert rc == 0
    return out


@pytest.fixture(scope="session")
def bundles(synth_root, tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("bundles")
    return {head: _train(synth_root, base / head, head) for head in ("algan", "mahalanobis", "knn")}
