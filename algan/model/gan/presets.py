"""Named hyper-parameter presets for the ALGAN config dataclasses (feature and image variant alike).

A config class mixes in :class:`PresetConfig` and names its presets in ``PRESETS`` (``"paper"`` and
``"default"``) and its kind in ``KIND`` (for error messages). ``Config()`` is the ``default`` preset (the
dataclass field defaults); ``Config.preset("paper")`` the paper's settings.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, fields
from typing import Any, ClassVar


class PresetConfig:
    """Mixin for a dataclass of hyper-parameters with an ``adam_betas`` tuple field."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]]
    KIND: ClassVar[str]

    @classmethod
    def preset(cls, name: str = "default", **overrides):
        """A named preset (``paper`` or ``default``) with optional field overrides.

        Raises:
            ValueError: unknown preset name, or a field value the config rejects.
        """
        if name not in cls.PRESETS:
            raise ValueError(f"unknown {cls.KIND} preset {name!r}; use one of {', '.join(cls.PRESETS)}")
        return cls(**{**copy.deepcopy(cls.PRESETS[name]), **overrides})

    def to_json(self) -> dict:
        """Plain JSON types (the tuple ``adam_betas`` as a list)."""
        d = asdict(self)
        d["adam_betas"] = list(self.adam_betas)
        return d

    @classmethod
    def from_json(cls, d: dict):
        """Inverse of :meth:`to_json`. Fields missing from ``d`` take the *paper* values: manifests written before a
        field existed were trained with the paper's structure, so their heads rebuild to the saved shapes; unknown
        keys are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{**copy.deepcopy(cls.PRESETS["paper"]), **{k: v for k, v in d.items() if k in known}})
