"""algan-edge: visual anomaly detection for production lines (ALGAN, Murase & Fukumizu, IEEE Access 2022).

``algan.Inferencer`` and ``algan.Prediction`` (the exported model from Python, no torch; see
:mod:`algan.runtime.inference`)
are loaded on first use, so ``import algan`` stays light.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {"Inferencer": "algan.runtime.inference", "Prediction": "algan.runtime.inference"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'algan' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
