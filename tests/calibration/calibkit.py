"""Helpers shared by the calibration tests (imported as ``calibkit``; pytest puts this folder on sys.path)."""

from __future__ import annotations

from pathlib import Path

#: model input size of the test bundles (height, width) in pixels
SMALL = (64, 64)


def snapshot(model_dir: Path) -> dict[str, bytes]:
    """File name -> bytes of every file in a bundle (to prove that nothing was written)."""
    return {p.name: p.read_bytes() for p in sorted(model_dir.iterdir()) if p.is_file()}


def shared_data_dir() -> Path:
    """The shared real data: ``$ALGAN_DATA_DIR`` or ``<repo>/../shared/data`` (may not exist)."""
    import os

    repo = Path(__file__).resolve().parents[2]
    return Path(os.environ.get("ALGAN_DATA_DIR", repo.parent / "shared" / "data"))
