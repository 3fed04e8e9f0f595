"""Synthetic industrial-surface anomaly data set (MVTec AD layout), numpy + OpenCV only.

The generator renders textured surfaces that look like what a line camera sees, and draws defects on some of them:

Textures (``TEXTURES``):
    ``"metal"``  brushed steel: white noise box-filtered along an (almost) horizontal brushing direction at two
                 scales, fine isotropic grain and low-frequency mottling, slightly cool tint.
    ``"weave"``  plain-woven technical fabric: over/under warp and weft threads with rounded cross-sections,
                 fibre streaks along each thread, jittered thread positions (smooth displacement field), relief
                 shading from a top-left light; beige tint.

Every image also gets a random brightness gain, a linear illumination gradient, a broad highlight, a slight rotation
and phase shift of the texture, and Gaussian sensor noise, so no two normal images are identical.

Defects (``DEFECT_TYPES``):
    ``"scratch"``  one or two thin, slightly curved (quadratic Bezier) bright or dark lines that fade in and out.
    ``"spot"``     irregular soft-edged blobs (stains, residues), dark/tinted or bright, sometimes with satellites.
    ``"crack"``    dark branching random-walk polylines that thin out towards their tips.

Each defect comes with a ground-truth mask (255 on defect pixels). A defect is drawn into the surface *before* the
illumination and the sensor noise, so it is lit and noisy like the rest of the image.

Determinism: everything is drawn from ``numpy.random.Generator`` objects seeded from ``numpy.random.SeedSequence``;
the same seed gives byte-identical PNG files. The background of a sample depends only on its seed, not on the
defect type, so ``synthesize(t, "good", s, seed)`` is exactly the defect-free version of
``synthesize(t, "scratch", s, seed)`` (useful in tests). In a data set each file has its own seed derived from
``(seed, texture, split, class, index)``, so ``train/good/007.png`` does not change when ``n_train`` changes.

On-disk layout written by :func:`generate_dataset` (the MVTec AD layout)::

    ROOT/train/good/000.png ...
    ROOT/test/good/000.png ...
    ROOT/test/<defect>/000.png ...
    ROOT/ground_truth/<defect>/000_mask.png ...

Images are 3-channel BGR uint8 PNG, masks single-channel uint8 PNG with values {0, 255}, both ``size x size``.
"""

from __future__ import annotations

import math
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

__all__ = [
    "DEFECT_TYPES",
    "MIN_SIZE",
    "TEXTURES",
    "DatasetSummary",
    "generate_dataset",
    "render_defect",
    "render_surface",
    "synthesize",
]

#: Texture families the generator knows.
TEXTURES: tuple[str, ...] = ("metal", "weave")
#: Defect classes, in the order they are written.
DEFECT_TYPES: tuple[str, ...] = ("scratch", "spot", "crack")
#: Smallest image side the generator accepts (textures and defects need a few pixels of room).
MIN_SIZE = 32

_GOOD = "good"
_SPLIT_CODE = {"train": 1, "test": 2}
_CLASS_CODE = {_GOOD: 0, **{d: i + 1 for i, d in enumerate(DEFECT_TYPES)}}
_TEXTURE_CODE = {t: i + 1 for i, t in enumerate(TEXTURES)}
# Per-texture BGR tint applied to the grey surface (cool steel, beige fabric).
_TINT = {"metal": np.array([1.0, 0.985, 0.955], np.float32), "weave": np.array([0.66, 0.83, 0.94], np.float32)}


# ----------------------------------------------------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------------------------------------------------
def _unit(a: np.ndarray) -> np.ndarray:
    """Zero-mean, unit-std copy of ``a`` (float32)."""
    a = a - a.mean()
    return (a / (a.std() + 1e-6)).astype(np.float32, copy=False)


def _lowfreq_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth random field, shape (size, size) float32, zero mean / unit std, about ``cells`` blobs per side."""
    cells = max(2, int(cells))
    n = rng.standard_normal((cells + 3, cells + 3), dtype=np.float32)
    big = cv2.resize(n, (size + 2 * size // cells + 8,) * 2, interpolation=cv2.INTER_CUBIC)
    o = (big.shape[0] - size) // 2
    return _unit(big[o : o + size, o : o + size])


def _rotate_crop(img: np.ndarray, angle_deg: float, size: int, shift: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Rotate a (larger, square) float image about its centre, shift it and crop the central ``size x size``."""
    c = (img.shape[1] - 1) / 2.0
    m = cv2.getRotationMatrix2D((c, c), angle_deg, 1.0)
    # move the rotated centre to the centre of the output crop
    m[0, 2] += (size - 1) / 2.0 - c + shift[0]
    m[1, 2] += (size - 1) / 2.0 - c + shift[1]
    return cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def _quad_bezier(p0: np.ndarray, p1: np.ndarray, p2: np.ndarray, n: int) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n, dtype=np.float64)[:, None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2


_SHIFT = 4  # sub-pixel bits for cv2 drawing
_SCALE = 1 << _SHIFT


def _fx(p: np.ndarray) -> tuple[int, int]:
    return int(round(float(p[0]) * _SCALE)), int(round(float(p[1]) * _SCALE))


def _draw_strokes(size: int, pts: np.ndarray, values: np.ndarray, thickness: np.ndarray) -> np.ndarray:
    """Anti-aliased polyline with per-segment value/thickness, as a float32 (size, size) canvas in [0, 1].

    Segments are max-composited so joints do not double up.
    """
    canvas = np.zeros((size, size), np.float32)
    tmp = np.zeros((size, size), np.uint8)
    for i in range(len(pts) - 1):
        v = float(np.clip(values[i], 0.0, 1.0))
        if v <= 0.02:
            continue
        tmp[:] = 0
        cv2.line(tmp, _fx(pts[i]), _fx(pts[i + 1]), 255, int(thickness[i]), cv2.LINE_AA, _SHIFT)
        np.maximum(canvas, tmp.astype(np.float32) * (v / 255.0), out=canvas)
    return canvas


def _busyness(surf: np.ndarray) -> float:
    """How much fine texture competes with a thin defect: >= 1, about 1 for brushed metal, ~1.8 for the weave."""
    g = surf.mean(axis=2) if surf.ndim == 3 else surf
    hf = float((g - cv2.GaussianBlur(g, (0, 0), 2.0)).std())
    return float(np.clip(hf / 0.04, 1.0, 2.5))


def _mask_from_alpha(alpha: np.ndarray, thresh: float, dilate: int) -> np.ndarray:
    m = (alpha > thresh).astype(np.uint8) * 255
    if dilate > 0:
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * dilate + 1, 2 * dilate + 1))
        m = cv2.dilate(m, k)
    return m


# ----------------------------------------------------------------------------------------------------------------------
# textures
# ----------------------------------------------------------------------------------------------------------------------
def _metal(rng: np.random.Generator, size: int) -> np.ndarray:
    """Brushed steel, float32 (size, size), values around 0.35..0.75."""
    pad = size // 2 + 8
    big = size + 2 * pad
    angle = float(rng.normal(0.0, 1.5))  # brushing direction: horizontal +- a little
    # long streaks: box-filter white noise along x twice (triangular profile), at two lengths
    n1 = rng.standard_normal((big, big), dtype=np.float32)
    l1 = max(5, size // 3) | 1
    long_ = cv2.blur(cv2.blur(n1, (l1, 1)), (l1, 1))
    n2 = rng.standard_normal((big, big), dtype=np.float32)
    l2 = max(3, size // 14) | 1
    short = cv2.blur(n2, (l2, 1))
    streaks = 1.0 * _unit(long_) + 0.7 * _unit(short)
    # a few brighter "polishing" bands that vary slowly across rows
    bands = cv2.resize(rng.standard_normal((max(4, size // 24), 1), dtype=np.float32), (1, big),
                       interpolation=cv2.INTER_CUBIC)
    streaks = streaks * (1.0 + 0.25 * bands)
    streaks = _rotate_crop(streaks, angle, size, shift=tuple(rng.uniform(-3, 3, 2)))
    grain = _unit(cv2.GaussianBlur(rng.standard_normal((size, size), dtype=np.float32), (0, 0), 0.6))
    mottle = _lowfreq_noise(rng, size, 3)
    base = float(rng.uniform(0.50, 0.56))
    return base + 0.045 * _unit(streaks) + 0.018 * grain + 0.016 * mottle


def _weave(rng: np.random.Generator, size: int) -> np.ndarray:
    """Plain-woven fabric, float32 (size, size), values around 0.15..0.85."""
    period = max(6.0, size / 14.0) * float(rng.uniform(0.97, 1.03))
    angle = math.radians(float(rng.normal(0.0, 1.2)))
    phase = rng.uniform(0.0, 2.0 * period, 2)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    ca, sa = math.cos(angle), math.sin(angle)
    jit = 0.07 * period
    u = ca * xx + sa * yy + phase[0] + jit * _lowfreq_noise(rng, size, max(3, size // 40))
    v = -sa * xx + ca * yy + phase[1] + jit * _lowfreq_noise(rng, size, max(3, size // 40))
    su, sv = u / period, v / period
    iu, iv = np.floor(su), np.floor(sv)
    fu, fv = su - iu, sv - iv
    warp_top = ((iu + iv) % 2.0) == 0.0
    pu, pv = np.sin(np.pi * fu), np.sin(np.pi * fv)
    # rounded thread cross-section; the thread on top rises in the middle of the cell
    h_warp = np.sqrt(pu) * (0.55 + 0.45 * pv)
    h_weft = np.sqrt(pv) * (0.55 + 0.45 * pu)
    height = np.where(warp_top, h_warp, h_weft).astype(np.float32)
    # fibres: noise streaked along each thread's direction (vertical for warp, horizontal for weft)
    lf = max(3, int(period * 0.8)) | 1
    fib_v = _unit(cv2.blur(rng.standard_normal((size, size), dtype=np.float32), (1, lf)))
    fib_h = _unit(cv2.blur(rng.standard_normal((size, size), dtype=np.float32), (lf, 1)))
    fibres = np.where(warp_top, fib_v, fib_h)
    # relief shading from a top-left light
    gy, gx = np.gradient(cv2.GaussianBlur(height, (0, 0), 0.8))
    relief = -(gx + gy) * period * 0.08
    tone = 1.0 + 0.04 * _lowfreq_noise(rng, size, 5)  # slight yarn-to-yarn dye variation
    out = (0.18 + 0.62 * height + 0.05 * fibres + relief) * tone
    return out.astype(np.float32)


_TEXTURE_FN: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {"metal": _metal, "weave": _weave}


def _illumination(rng: np.random.Generator, size: int) -> np.ndarray:
    """Multiplicative gain map, float32 (size, size): exposure x linear gradient x broad highlight."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    ang = rng.uniform(0, 2 * np.pi)
    strength = rng.uniform(0.05, 0.22)
    grad = 1.0 + strength * ((xx - 0.5) * math.cos(ang) + (yy - 0.5) * math.sin(ang))
    cx, cy = rng.uniform(-0.2, 1.2, 2)
    sig = rng.uniform(0.35, 0.8)
    hot = 1.0 + rng.uniform(0.0, 0.12) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sig * sig))
    return (rng.uniform(0.93, 1.07) * grad * hot).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------------------
# defects: each returns (modified surface float32 (S,S,3), mask uint8 (S,S) {0,255})
# ----------------------------------------------------------------------------------------------------------------------
def _scratch(rng: np.random.Generator, surf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    size = surf.shape[0]
    out = surf.copy()
    mask = np.zeros((size, size), np.uint8)
    n_lines = 1 if rng.random() < 0.75 else 2
    # keep clear of the horizontal brushing/weft direction, where a scratch would hide in the texture
    base_dir = rng.uniform(np.radians(12), np.radians(168))
    bright = rng.random() < 0.5
    busy = _busyness(surf)
    for k in range(n_lines):
        length = size * rng.uniform(0.3, 0.65)
        theta = base_dir + (rng.normal(0, 0.08) if k else 0.0)
        d = np.array([math.cos(theta), math.sin(theta)])
        nrm = np.array([-d[1], d[0]])
        if k == 0:
            mid = rng.uniform(0.3, 0.7, 2) * size
        else:  # a companion scratch next to the first one
            mid = mid + nrm * rng.uniform(0.03, 0.08) * size + d * rng.normal(0, 0.08) * size
        p0, p2 = mid - d * length / 2, mid + d * length / 2
        p1 = mid + nrm * rng.normal(0, 0.12) * length
        n = max(12, int(length / 3))
        pts = _quad_bezier(p0, p1, p2, n)
        t = np.linspace(0, 1, n - 1)
        # fade in/out at the ends, plus slow intensity variation along the stroke
        taper = np.clip(np.sin(np.pi * t) * 1.6, 0, 1) ** 0.7
        wobble = 0.75 + 0.25 * np.interp(t, np.linspace(0, 1, 6), rng.uniform(-1, 1, 6))
        values = taper * wobble
        thick = np.full(n - 1, (1 if size < 160 or rng.random() < 0.6 else 2) + (busy > 1.5 and size >= 96))
        alpha = _draw_strokes(size, pts, values, thick)
        alpha = cv2.GaussianBlur(alpha, (0, 0), 0.5)
        amp = min(0.9, rng.uniform(0.35, 0.6) * busy**0.5) * (1 if k == 0 else rng.uniform(0.6, 1.0))
        a3 = alpha[..., None]
        # a bright scratch is freshly exposed metal/fibre catching the light; a dark one is a groove in shadow
        out = out + amp * a3 * (1.05 - out) if bright else out - amp * a3 * out * 0.85
        # faint darker/brighter halo of displaced material
        halo = cv2.GaussianBlur(alpha, (0, 0), 1.5)[..., None]
        out = out + (-0.04 if bright else 0.03) * halo
        mask |= _mask_from_alpha(alpha, 0.25, 1)
    return out, mask


def _spot(rng: np.random.Generator, surf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    size = surf.shape[0]
    alpha = np.zeros((size, size), np.float32)
    centre = rng.uniform(0.22, 0.78, 2) * size
    r_main = size * rng.uniform(0.035, 0.11)
    blobs = [(centre, r_main)]
    for _ in range(int(rng.integers(0, 4))):  # satellites / splatter
        off = rng.normal(0, 1.0, 2)
        off = off / (np.linalg.norm(off) + 1e-6) * r_main * rng.uniform(1.2, 2.4)
        blobs.append((centre + off, r_main * rng.uniform(0.15, 0.45)))
    theta = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    for c, r in blobs:
        rad = np.ones_like(theta)
        for h in range(2, 6):  # irregular outline from a few random harmonics
            rad += rng.normal(0, 0.09 / (h - 1) ** 0.5) * np.cos(h * theta + rng.uniform(0, 2 * np.pi))
        ell = rng.uniform(0.7, 1.0)
        rot = rng.uniform(0, np.pi)
        x = r * rad * np.cos(theta) * ell
        y = r * rad * np.sin(theta)
        pts = np.stack([c[0] + x * math.cos(rot) - y * math.sin(rot), c[1] + x * math.sin(rot) + y * math.cos(rot)], 1)
        poly = np.round(pts * _SCALE).astype(np.int32)
        tmp = np.zeros((size, size), np.uint8)
        cv2.fillPoly(tmp, [poly], 255, cv2.LINE_AA, _SHIFT)
        np.maximum(alpha, tmp.astype(np.float32) / 255.0, out=alpha)
    soft = max(0.8, r_main * rng.uniform(0.15, 0.35))
    alpha = cv2.GaussianBlur(alpha, (0, 0), soft)
    mask = _mask_from_alpha(alpha, 0.15, 0)
    # mottled interior and, sometimes, a darker rim (dried stain "coffee ring")
    mott = 1.0 + 0.18 * _lowfreq_noise(rng, size, max(4, int(size / max(r_main, 1.0))))
    strength = alpha * mott
    if rng.random() < 0.4:
        rim = np.clip(alpha * (1 - alpha) * 4, 0, 1)
        strength = strength + 0.5 * rim
    kind = rng.choice(3, p=[0.5, 0.25, 0.25])
    s3 = strength[..., None]
    if kind == 0:  # dark oil/grease stain
        amp = rng.uniform(0.28, 0.5)
        out = surf * (1 - amp * s3)
    elif kind == 1:  # rust / discolouration (BGR tint: less blue, more red)
        amp = rng.uniform(0.35, 0.6)
        tint = np.array([0.45, 0.7, 0.95], np.float32)
        out = surf * (1 - amp * s3 * (1 - tint))
    else:  # bright residue / dried coolant
        amp = rng.uniform(0.2, 0.38)
        out = surf + amp * s3 * (1.0 - surf)
    return out, mask


def _crack(rng: np.random.Generator, surf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    size = surf.shape[0]
    step = max(1.5, size / 90.0)
    alpha = np.zeros((size, size), np.float32)
    busy = _busyness(surf)
    main_w = (2 if size >= 128 else 1) + (busy > 1.5 and size >= 96)

    def walk(p: np.ndarray, heading: float, n_steps: int, width: int, depth: int) -> None:
        pts = [p.copy()]
        h = heading
        drift = 0.0
        for _ in range(n_steps):
            drift = 0.7 * drift + rng.normal(0, 0.22)
            h += drift * 0.5 + rng.normal(0, 0.15)
            h = heading + float(np.clip(h - heading, -0.9, 0.9))  # keep a general direction
            p = p + step * rng.uniform(0.7, 1.3) * np.array([math.cos(h), math.sin(h)])
            pts.append(p.copy())
            if depth < 2 and len(pts) > 3 and rng.random() < 0.06:
                side = 1 if rng.random() < 0.5 else -1
                walk(p, h + side * rng.uniform(0.4, 1.1), int(n_steps * rng.uniform(0.2, 0.5)), 1, depth + 1)
        arr = np.array(pts)
        t = np.linspace(0, 1, len(arr) - 1)
        values = np.clip(1.0 - t**3, 0.25, 1.0) * rng.uniform(0.8, 1.0, len(arr) - 1)
        thick = np.where(t < 0.6, width, 1)
        np.maximum(alpha, _draw_strokes(size, arr, values, thick), out=alpha)

    start = rng.uniform(0.2, 0.8, 2) * size
    heading = rng.uniform(0, 2 * np.pi)
    total = int(size * rng.uniform(0.25, 0.5) / step)
    if rng.random() < 0.5:  # grow both ways from the start point
        walk(start, heading, total // 2, main_w, 0)
        walk(start, heading + np.pi, total - total // 2, main_w, 0)
    else:
        walk(start, heading, total, main_w, 0)
    alpha = cv2.GaussianBlur(alpha, (0, 0), 0.45)
    amp = min(0.9, rng.uniform(0.55, 0.8) * busy**0.3)
    a3 = alpha[..., None]
    out = surf * (1 - amp * a3)
    # light catches the upper edge of the crack
    rim = np.roll(np.roll(alpha, -1, 0), -1, 1) - alpha
    out = out + 0.08 * np.clip(rim, 0, 1)[..., None]
    mask = _mask_from_alpha(alpha, 0.2, 1)
    return out, mask


_DEFECT_FN = {"scratch": _scratch, "spot": _spot, "crack": _crack}


# ----------------------------------------------------------------------------------------------------------------------
# public rendering API
# ----------------------------------------------------------------------------------------------------------------------
def _check(texture: str, size: int, defect: str | None = None) -> None:
    if texture not in TEXTURES:
        raise ValueError(f"unknown texture {texture!r}; choose one of {', '.join(TEXTURES)}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < MIN_SIZE:
        raise ValueError(f"size must be an integer >= {MIN_SIZE}, got {size!r}")
    if defect is not None and defect != _GOOD and defect not in DEFECT_TYPES:
        raise ValueError(f"unknown defect {defect!r}; choose one of {_GOOD}, {', '.join(DEFECT_TYPES)}")


def render_surface(texture: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """Defect-free, un-lit, noise-free tinted surface.

    Args:
        texture: one of :data:`TEXTURES`.
        size: image side in pixels (>= :data:`MIN_SIZE`).
        rng: source of randomness.

    Returns:
        float32 array, shape (size, size, 3), BGR, values roughly in [0, 1] (not clipped).
    """
    _check(texture, size)
    grey = _TEXTURE_FN[texture](rng, int(size))
    return grey[..., None] * _TINT[texture][None, None, :]


def render_defect(defect: str, surface: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw one defect of class ``defect`` on a surface from :func:`render_surface`.

    Retries (with fresh randomness from ``rng``) until the defect covers at least a few pixels inside the image.

    Args:
        defect: one of :data:`DEFECT_TYPES`.
        surface: float32 array, shape (S, S, 3), values roughly in [0, 1]; not modified.
        rng: source of randomness.

    Returns:
        ``(surface_with_defect, mask)``: float32 (S, S, 3) and uint8 (S, S) with values {0, 255}.
    """
    if defect not in DEFECT_TYPES:
        raise ValueError(f"unknown defect {defect!r}; choose one of {', '.join(DEFECT_TYPES)}")
    size = surface.shape[0]
    min_px = max(6, int(0.0008 * size * size))
    for _ in range(20):
        out, mask = _DEFECT_FN[defect](rng, surface)
        if int(np.count_nonzero(mask)) >= min_px:
            return out.astype(np.float32, copy=False), mask
    return out.astype(np.float32, copy=False), mask  # pragma: no cover - practically unreachable


def synthesize(
    texture: str = "metal", defect: str | None = None, size: int = 256, seed: int | Sequence[int] = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Render one finished camera image and its ground-truth mask.

    The background (texture, illumination and sensor noise) depends only on ``(texture, size, seed)``; the defect
    is drawn with separate randomness, so the result for ``defect=None`` is exactly the defect-free version of
    the result for a defect class with the same seed.

    Args:
        texture: one of :data:`TEXTURES`.
        defect: ``None`` or ``"good"`` for a normal image, else one of :data:`DEFECT_TYPES`.
        size: image side in pixels (>= :data:`MIN_SIZE`).
        seed: int or sequence of non-negative ints (anything ``numpy.random.SeedSequence`` accepts).

    Returns:
        ``(image, mask)``: image uint8 BGR, shape (size, size, 3), values 0..255; mask uint8, shape (size, size),
        values {0, 255} (all zero for a normal image).
    """
    _check(texture, size, defect)
    size = int(size)
    ss = np.random.SeedSequence(seed)
    surf_ss, light_ss, noise_ss, defect_ss = ss.spawn(4)
    surf = render_surface(texture, size, np.random.default_rng(surf_ss))
    if defect is None or defect == _GOOD:
        mask = np.zeros((size, size), np.uint8)
    else:
        surf, mask = render_defect(defect, surf, np.random.default_rng(defect_ss))
    gain = _illumination(np.random.default_rng(light_ss), size)
    nrng = np.random.default_rng(noise_ss)
    sigma = nrng.uniform(1.2, 2.6)
    noise = nrng.standard_normal((size, size, 3), dtype=np.float32) * sigma
    # luminance-correlated part of the noise (most sensor noise is common to the three Bayer-demosaiced channels)
    noise[..., 1:] = 0.6 * noise[..., :1] + 0.4 * noise[..., 1:]
    img = surf * gain[..., None] * 255.0 + noise
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), mask


# ----------------------------------------------------------------------------------------------------------------------
# data set writer
# ----------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DatasetSummary:
    """What :func:`generate_dataset` wrote.

    Attributes:
        root: data set root folder.
        texture: texture family used.
        size: image side in pixels.
        seed: master seed.
        counts: ``{"train": {"good": n}, "test": {"good": n, "<defect>": n, ...}}`` (number of images written).
    """

    root: Path
    texture: str
    size: int
    seed: int
    counts: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def n_train(self) -> int:
        return sum(self.counts.get("train", {}).values())

    @property
    def n_test(self) -> int:
        return sum(self.counts.get("test", {}).values())

    @property
    def total(self) -> int:
        return self.n_train + self.n_test

    @property
    def defect_types(self) -> tuple[str, ...]:
        return tuple(c for c in self.counts.get("test", {}) if c != _GOOD)

    def as_dict(self) -> dict:
        """JSON-serialisable form."""
        return {"root": str(self.root), "texture": self.texture, "size": self.size, "seed": self.seed,
                "counts": {k: dict(v) for k, v in self.counts.items()}}

    def __str__(self) -> str:
        test = ", ".join(f"{k}={v}" for k, v in self.counts.get("test", {}).items())
        return (f"{self.root}: texture={self.texture} size={self.size} seed={self.seed} "
                f"train/good={self.n_train} test: {test} ({self.total} images)")


def _file_seed(seed: int, texture: str, split: str, cls: str, index: int) -> list[int]:
    return [int(seed), _TEXTURE_CODE[texture], _SPLIT_CODE[split], _CLASS_CODE[cls], int(index)]


def _write_png(path: Path, img: np.ndarray) -> None:
    # fixed compression level so the bytes do not depend on OpenCV's default
    if not cv2.imwrite(str(path), img, [cv2.IMWRITE_PNG_COMPRESSION, 3]):
        raise OSError(f"cannot write {path}")


_SYNTH_NAME = re.compile(r"[0-9]+(_mask)?\.png")


def _foreign_files(part: Path) -> list[Path]:
    """Entries below ``part`` (``train``, ``test`` or ``ground_truth``) that :func:`generate_dataset` never writes:
    anything but class folders (``good`` and the defect names) holding numbered PNGs (``007.png``,
    ``007_mask.png``)."""
    if not part.is_dir() or part.is_symlink():
        return [part]
    out = []
    for cls in part.iterdir():
        if cls.name not in (_GOOD, *DEFECT_TYPES) or not cls.is_dir() or cls.is_symlink():
            out.append(cls)
            continue
        out += [f for f in cls.iterdir() if not (f.is_file() and _SYNTH_NAME.fullmatch(f.name))]
    return out


def generate_dataset(
    root: str | Path,
    *,
    texture: str = "metal",
    n_train: int = 200,
    n_test_good: int = 40,
    n_test_defect: int = 20,
    size: int = 256,
    seed: int = 0,
    defects: Sequence[str] = DEFECT_TYPES,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> DatasetSummary:
    """Generate a synthetic data set in the MVTec AD layout under ``root``.

    Args:
        root: output folder (created if missing).
        texture: one of :data:`TEXTURES`.
        n_train: number of normal training images (``train/good``), >= 0.
        n_test_good: number of normal test images (``test/good``), >= 0.
        n_test_defect: number of test images *per defect class* (``test/<defect>`` + ``ground_truth/<defect>``).
        size: image side in pixels (>= :data:`MIN_SIZE`).
        seed: master seed (non-negative int); the same arguments give byte-identical files.
        defects: defect classes to write (subset of :data:`DEFECT_TYPES`).
        overwrite: if ``root`` already holds ``train``/``test``/``ground_truth`` folders written by this function
            (nothing in them but its class folders and numbered PNGs) they are deleted first; folders holding any
            other file are never deleted (FileExistsError);
            without it such a ``root`` is an error (stale files would corrupt the counts).
        progress: optional callback ``progress(done, total)`` called after each image.

    Returns:
        A :class:`DatasetSummary` with the per-split/per-class counts.

    Raises:
        ValueError: bad texture, size, counts, seed or defect names.
        FileExistsError: ``root`` already contains a data set and ``overwrite`` is False, or a data set this
            function did not write.
    """
    _check(texture, size)
    for name, v in (("n_train", n_train), ("n_test_good", n_test_good), ("n_test_defect", n_test_defect),
                    ("seed", seed)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {v!r}")
    defects = tuple(defects)
    bad = [d for d in defects if d not in DEFECT_TYPES]
    if bad or len(set(defects)) != len(defects):
        raise ValueError(f"defects must be distinct names from {', '.join(DEFECT_TYPES)}, got {list(defects)}")
    root = Path(root)
    parts = [root / p for p in ("train", "test", "ground_truth")]
    existing = [p for p in parts if p.exists()]
    if existing:
        if not overwrite:
            raise FileExistsError(f"{root} already contains a data set ({existing[0].name}/); "
                                  "choose another folder or pass overwrite=True")
        foreign = [f for p in existing for f in _foreign_files(p)]
        if foreign:
            raise FileExistsError(f"{root} holds a data set that algan-synth did not write ({foreign[0]}"
                                  f"{f' and {len(foreign) - 1} more' if len(foreign) > 1 else ''}); nothing was "
                                  "deleted: choose another folder")
        for p in existing:
            shutil.rmtree(p)

    jobs: list[tuple[str, str, int]] = [("train", _GOOD, i) for i in range(n_train)]
    jobs += [("test", _GOOD, i) for i in range(n_test_good)]
    jobs += [("test", d, i) for d in defects for i in range(n_test_defect)]
    counts: dict[str, dict[str, int]] = {"train": {_GOOD: 0}, "test": {_GOOD: 0, **{d: 0 for d in defects}}}
    (root / "train" / _GOOD).mkdir(parents=True, exist_ok=True)
    (root / "test" / _GOOD).mkdir(parents=True, exist_ok=True)
    for d in defects:
        (root / "test" / d).mkdir(parents=True, exist_ok=True)
        (root / "ground_truth" / d).mkdir(parents=True, exist_ok=True)
    width = {("train", _GOOD): n_train, ("test", _GOOD): n_test_good, **{("test", d): n_test_defect for d in defects}}
    for k, v in width.items():
        width[k] = max(3, len(str(max(v - 1, 0))))

    for done, (split, cls, i) in enumerate(jobs, 1):
        img, mask = synthesize(texture, cls, int(size), _file_seed(seed, texture, split, cls, i))
        stem = f"{i:0{width[(split, cls)]}d}"
        _write_png(root / split / cls / f"{stem}.png", img)
        if cls != _GOOD:
            _write_png(root / "ground_truth" / cls / f"{stem}_mask.png", mask)
        counts[split][cls] += 1
        if progress is not None:
            progress(done, len(jobs))
    return DatasetSummary(root=root, texture=texture, size=int(size), seed=int(seed), counts=counts)
