"""Research families of synthetic defects for ``benchmarks/auto_select.py --families`` (not product code).

``base`` is what ``--head auto`` draws (:func:`algan.data.defects.synthesize_families`: local marks and texture
changes). ``weak``: the same defects at reduced strength, ``out = I + f (D - I)``, ``f ~ U(0.25, 0.5)`` (subtle
marks, where the normal variability of each head's score decides rather than the mark's contrast). Images are uint8
BGR (H, W, 3) with a bool mask of the changed pixels, deterministic for the seed.
"""

from __future__ import annotations

import numpy as np

from algan.data.defects import DefectSet


def weaken(normals: np.ndarray, defects: DefectSet, seed: int) -> DefectSet:
    """The defects of ``defects`` blended back towards their normal image: ``I + f (D - I)``, ``f ~ U(0.25, 0.5)``."""
    rng = np.random.default_rng([seed, 7])
    out, masks = [], []
    for img, src in zip(defects.images, defects.source, strict=True):
        base = normals[src].astype(np.float32)
        f = float(rng.uniform(0.25, 0.5))
        w = np.clip(np.rint(base + f * (img.astype(np.float32) - base)), 0, 255).astype(np.uint8)
        out.append(w)
        masks.append(np.any(w != normals[src], axis=-1))
    return DefectSet(np.stack(out), np.stack(masks), [f"weak-{k}" for k in defects.kinds], defects.source.copy())


def families(names: list[str], normals: np.ndarray, base: DefectSet, seed: int) -> dict[str, DefectSet]:
    """``{family: DefectSet}`` for ``names`` among ``base`` (the product's) and ``weak``."""
    out = {}
    for name in names:
        if name == "base":
            out[name] = base
        elif name == "weak":
            out[name] = weaken(normals, base, seed)
        else:
            raise SystemExit(f"unknown defect family {name!r}; use base, weak")
    return out
