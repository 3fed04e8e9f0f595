"""Research families of synthetic defects for ``benchmarks/auto_select.py --families`` (not product code).

The product's kinds (:data:`algan.data.defects.DEFECT_KINDS`) are local marks of 16 px to a tenth of the image. Two
families test whether other defects rank the heads closer to real defects:

- ``weak``: the product's kinds at reduced strength, ``out = I + f (D - I)``, ``f ~ U(0.25, 0.5)`` (subtle marks,
  where the normal variability of each head's score decides rather than the mark's contrast);
- ``texture``: changes of a large region's texture statistics (a tenth to half of the image), as MTD's unevenness
  and frays are: a low-frequency multiplicative brightness field (``uneven``), the region's contrast about its mean
  scaled (``contrast``), the region resampled 1.3-1.8x larger (``stretch``, a change of texture scale), a blur of the
  region (``soften``).

Every function takes and returns uint8 BGR (H, W, 3) images with a bool mask of the changed pixels, deterministic
for the generator.
"""

from __future__ import annotations

import cv2
import numpy as np

from algan.data.defects import DefectSet, _blend, perlin_noise

TEXTURE_KINDS = ("uneven", "contrast", "stretch", "soften")


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


def _large_region(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A soft-edged blob covering 10-50 % of the image, float32 (H, W) in [0, 1] (thresholded Perlin noise)."""
    h, w = shape
    frac = float(rng.uniform(0.1, 0.5))
    noise = perlin_noise((h, w), (int(rng.integers(1, 3)), int(rng.integers(1, 3))), rng)
    hard = (noise >= np.quantile(noise, 1.0 - frac)).astype(np.float32)
    soft = cv2.GaussianBlur(hard, (0, 0), max(min(h, w) / 40, 1.0))
    return np.clip(soft * hard * 1.5, 0, 1)


def texture_defect(image: np.ndarray, kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One ``texture`` family defect of ``kind`` (:data:`TEXTURE_KINDS`). Returns ``(uint8 (H, W, 3), bool (H, W))``."""
    h, w = image.shape[:2]
    region = _large_region((h, w), rng)
    img = image.astype(np.float32)
    if kind == "uneven":
        field = perlin_noise((h, w), (int(rng.integers(2, 6)),) * 2, rng)
        changed = img * (1.0 + float(rng.uniform(0.15, 0.35)) * field[..., None] / max(np.abs(field).max(), 1e-6))
    elif kind == "contrast":
        m = img[region > 0.5].mean(axis=0) if (region > 0.5).any() else img.reshape(-1, 3).mean(axis=0)
        g = float(rng.choice([rng.uniform(0.4, 0.7), rng.uniform(1.4, 1.9)]))
        changed = m + g * (img - m)
    elif kind == "stretch":
        s = float(rng.uniform(1.3, 1.8))
        cx, cy = float(rng.uniform(0.3, 0.7) * w), float(rng.uniform(0.3, 0.7) * h)
        mat = cv2.getRotationMatrix2D((cx, cy), 0.0, s)
        changed = cv2.warpAffine(img, mat, (w, h), borderMode=cv2.BORDER_REFLECT)
    elif kind == "soften":
        changed = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(1.5, 3.0)))
    else:
        raise ValueError(f"unknown texture kind {kind!r}; use one of {', '.join(TEXTURE_KINDS)}")
    return _blend(image, np.clip(changed, 0, 255), region)


def texture_defects(normals: np.ndarray, per_image: int, seed: int) -> DefectSet:
    """``per_image`` texture defects per normal image, the kinds in turn (defect ``j``: ``default_rng([seed, 100,
    j])``)."""
    images, masks, kinds, source = [], [], [], []
    n = len(normals)
    for j in range(n * per_image):
        i, kind = j % n, TEXTURE_KINDS[j % len(TEXTURE_KINDS)]
        rng = np.random.default_rng([seed, 100, j])
        for _ in range(10):
            img, mask = texture_defect(normals[i], kind, rng)
            if mask.sum() >= 0.02 * mask.size:
                break
        images.append(img)
        masks.append(mask)
        kinds.append(kind)
        source.append(i)
    return DefectSet(np.stack(images), np.stack(masks), kinds, np.array(source, np.int64))


def families(names: list[str], normals: np.ndarray, base: DefectSet, seed: int) -> dict[str, DefectSet]:
    """``{family: DefectSet}`` for ``names`` among ``base``, ``weak``, ``texture``."""
    out = {}
    for name in names:
        if name == "base":
            out[name] = base
        elif name == "weak":
            out[name] = weaken(normals, base, seed)
        elif name == "texture":
            out[name] = texture_defects(normals, max(1, len(base.images) // len(normals)), seed)
        else:
            raise SystemExit(f"unknown defect family {name!r}; use base, weak, texture")
    return out
