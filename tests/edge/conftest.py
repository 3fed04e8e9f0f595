"""Edge test fixtures (helpers live in ``edgekit``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from edgekit import BRIGHT, DARK, make_model, make_video


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 64x64 tiny model file (model id 'tiny-1')."""
    return make_model(tmp_path_factory.mktemp("model") / "tiny.onnx")


@pytest.fixture(scope="session")
def step_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 frames: 20 dark, 15 bright (frames 20-34), 25 dark."""
    levels = [DARK] * 20 + [BRIGHT] * 15 + [DARK] * 25
    return make_video(tmp_path_factory.mktemp("video") / "step.mp4", levels)
