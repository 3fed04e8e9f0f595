"""Synthetic defects drawn on normal images, to rank anomaly heads without a real defect sample.

Pure numpy / OpenCV, deterministic for a seed. Every function takes uint8 BGR images (H, W, 3) and returns the
defective image (uint8, same shape) and its mask (bool (H, W)): ``True`` exactly where the image was changed
(outside the mask the output equals the input, bit for bit).

Kinds (:data:`DEFECT_KINDS`), so that no one kind decides a ranking. Local marks (:data:`LOCAL_KINDS`):

- ``cutpaste``: a rectangle cut from another normal image and pasted at a random place, with a small colour
  jitter; or, half the time, a thin rotated "scar" strip (CutPaste and CutPaste-Scar, Li et al., "CutPaste:
  Self-Supervised Learning for Anomaly Detection and Localization", CVPR 2021).
- ``perlin``: a region from thresholded Perlin noise (Perlin, "An image synthesizer", SIGGRAPH 1985) blended with a
  foreign texture, ``out = (1 - M) I + M ((1 - beta) T + beta I)`` (DRAEM, Zavrtanik et al., ICCV 2021, eq. 1);
  textures offline: the project's synthetic metal/weave surfaces (:mod:`algan.data.synthetic`), another image of
  the set (rotated), or coloured noise.
- ``scratch``: a thin curved stroke (quadratic Bezier), darker or brighter than the surface.
- ``spot``: a filled ellipse blob with a soft edge, darker or brighter.
- ``crack``: a jagged random walk with a branch, dark.
- ``shift``: a local brightness, blur or colour change inside a Perlin or elliptic region.

Sizes: the defect's area is drawn log-uniformly between :data:`MIN_AREA_PX` pixels and a tenth of the image
(:data:`MAX_AREA_FRACTION`); strokes (scratch, crack, scar) are a few pixels wide, and their length follows the
area.

Texture changes (:data:`TEXTURE_KINDS`): a large region's texture statistics change, as a magnetic tile's unevenness
or fray does (the region a soft-edged thresholded Perlin blob over 10-50 % of the image):

- ``uneven``: a low-frequency multiplicative brightness field, ``I (1 + a n / max|n|)``, ``a ~ U(0.15, 0.35)``,
  ``n`` Perlin noise of 2-5 cells;
- ``contrast``: the region's contrast about its mean scaled by 0.4-0.7 or 1.4-1.9;
- ``stretch``: the image resampled 1.3-1.8x larger about a point near the centre (a change of texture scale);
- ``soften``: a Gaussian blur of sigma 1.5-3 px.

On six data sets the local marks alone ranked the heads against their real-defect AUROC where the real defects change
a whole tile (MTD); with both families the choice fell short of the best head by at most 0.030 (benchmarks/
RESULTS.md, "Session 14").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

#: local marks, drawn in turn by :func:`synthesize_defects` by default
LOCAL_KINDS = ("cutpaste", "perlin", "scratch", "spot", "crack", "shift")
#: changes of a large region's texture statistics
TEXTURE_KINDS = ("uneven", "contrast", "stretch", "soften")
#: every kind :func:`make_defect` draws
DEFECT_KINDS = LOCAL_KINDS + TEXTURE_KINDS
#: the families :func:`synthesize_families` draws, in order, with the rng stream of each
DEFECT_FAMILIES = {"local marks": (LOCAL_KINDS, 0), "texture changes": (TEXTURE_KINDS, 100)}
#: smallest texture change, as a fraction of the image (redrawn below it)
MIN_TEXTURE_FRACTION = 0.02
#: smallest defect area in pixels
MIN_AREA_PX = 16
#: largest defect area as a fraction of the image
MAX_AREA_FRACTION = 0.1


def perlin_noise(shape: tuple[int, int], res: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """2-D gradient noise (Perlin 1985, improved fade curve of Perlin 2002), float32 (H, W) in about [-1, 1].

    Args:
        shape: output (H, W) in pixels.
        res: lattice cells along (H, W), >= 1 each; larger = finer noise.
        rng: random gradients.
    """
    ry, rx = max(int(res[0]), 1), max(int(res[1]), 1)
    h, w = shape
    # evaluate on a grid that the lattice divides, then resize to the asked shape
    gh, gw = ry * math.ceil(h / ry), rx * math.ceil(w / rx)
    angles = rng.uniform(0.0, 2.0 * math.pi, (ry + 1, rx + 1))
    grad = np.stack([np.cos(angles), np.sin(angles)], axis=-1)
    yy, xx = np.meshgrid(np.arange(gh) * ry / gh, np.arange(gw) * rx / gw, indexing="ij")
    yi, xi = yy.astype(int), xx.astype(int)
    fy, fx = yy - yi, xx - xi

    def dot(dy: int, dx: int) -> np.ndarray:
        g = grad[yi + dy, xi + dx]
        return g[..., 0] * (fy - dy) + g[..., 1] * (fx - dx)

    def fade(t: np.ndarray) -> np.ndarray:
        return t * t * t * (t * (t * 6 - 15) + 10)

    uy, ux = fade(fy), fade(fx)
    top = dot(0, 0) * (1 - ux) + dot(0, 1) * ux
    bottom = dot(1, 0) * (1 - ux) + dot(1, 1) * ux
    noise = (top * (1 - uy) + bottom * uy) * math.sqrt(2.0)
    if (gh, gw) != (h, w):
        noise = cv2.resize(noise, (w, h), interpolation=cv2.INTER_LINEAR)
    return noise.astype(np.float32)


def draw_area(shape: tuple[int, int], rng: np.random.Generator) -> float:
    """A defect area in pixels, log-uniform in [MIN_AREA_PX, MAX_AREA_FRACTION * H * W]."""
    hi = max(MAX_AREA_FRACTION * shape[0] * shape[1], MIN_AREA_PX + 1.0)
    return float(math.exp(rng.uniform(math.log(MIN_AREA_PX), math.log(hi))))


def _is_grey(image: np.ndarray) -> bool:
    """All three channels equal (a grey camera's frame stored as BGR)."""
    return bool(np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2]))


def _blend(image: np.ndarray, other: np.ndarray, alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(1 - alpha) image + alpha other`` where alpha > 0, the input elsewhere; mask = changed pixels."""
    a = alpha[..., None].astype(np.float32)
    other = np.asarray(other, np.float32)
    if _is_grey(image):  # a grey line gets grey defects: a colour cast would be a defect no grey camera shows
        other = np.broadcast_to(other.mean(axis=-1, keepdims=True), image.shape)
    out = np.clip(np.rint(image.astype(np.float32) * (1 - a) + other * a), 0, 255).astype(np.uint8)
    touched = alpha > 0
    out[~touched] = image[~touched]
    mask = np.any(out != image, axis=-1)
    return out, mask


def _region_mask(shape: tuple[int, int], area: float, rng: np.random.Generator) -> np.ndarray:
    """A blob of about ``area`` pixels, float32 (H, W) in {0, 1}: thresholded Perlin noise inside a window
    (DRAEM's mask), or an ellipse when the noise leaves too little."""
    h, w = shape
    side = int(min(max(math.sqrt(area) * 1.6, 4), min(h, w)))
    cy, cx = int(rng.integers(0, max(h - side, 0) + 1)), int(rng.integers(0, max(w - side, 0) + 1))
    res = int(rng.integers(1, 4))
    noise = perlin_noise((side, side), (res, res), rng)
    thr = np.quantile(noise, max(0.0, 1.0 - area / (side * side)))
    blob = (noise >= thr).astype(np.float32)
    out = np.zeros(shape, np.float32)
    out[cy : cy + side, cx : cx + side] = blob[: h - cy, : w - cx]
    if out.sum() < 0.3 * area:
        out[:] = 0
        ax = max(math.sqrt(area / math.pi), 1.0)
        ratio = rng.uniform(0.5, 2.0)
        cv2.ellipse(out, (int(rng.integers(0, w)), int(rng.integers(0, h))),
                    (max(int(ax * ratio), 1), max(int(ax / ratio), 1)), float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
    return out


def cutpaste(image: np.ndarray, source: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """CutPaste / CutPaste-Scar (Li et al. 2021): a patch of ``source`` (another normal, same shape) pasted on
    ``image``. Returns ``(uint8 (H, W, 3), bool (H, W))``."""
    h, w = image.shape[:2]
    patch_img = source.astype(np.float32) * rng.uniform(0.85, 1.15, 3) + rng.uniform(-15, 15, 3)  # colour jitter
    patch_img = np.clip(patch_img, 0, 255)
    alpha = np.zeros((h, w), np.float32)
    if rng.random() < 0.5:  # rectangle
        area = draw_area((h, w), rng)
        ratio = math.exp(rng.uniform(math.log(0.3), math.log(3.3)))
        ph = int(min(max(round(math.sqrt(area * ratio)), 2), h - 1))
        pw = int(min(max(round(area / ph), 2), w - 1))
        sy, sx = int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))
        dy, dx = int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))
        shifted = image.astype(np.float32).copy()
        shifted[dy : dy + ph, dx : dx + pw] = patch_img[sy : sy + ph, sx : sx + pw]
        alpha[dy : dy + ph, dx : dx + pw] = 1.0
        return _blend(image, shifted, alpha)
    # scar: a thin rotated strip of the source, moved by a random offset
    length = int(rng.integers(max(6, min(h, w) // 20), max(7, min(h, w) // 5)))
    width = int(rng.integers(2, 7))
    cy, cx = float(rng.uniform(0, h)), float(rng.uniform(0, w))
    box = cv2.boxPoints(((cx, cy), (length, width), float(rng.uniform(0, 180)))).astype(np.int32)
    cv2.fillPoly(alpha, [box], 1.0)
    off = (int(rng.integers(-h // 4, h // 4 + 1)), int(rng.integers(-w // 4, w // 4 + 1)))
    moved = np.roll(patch_img, off, axis=(0, 1))
    return _blend(image, moved, alpha)


def _texture(image: np.ndarray, others: Sequence[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """A foreign texture the size of ``image`` (float32 BGR 0..255): a synthetic metal/weave surface, another normal
    image rotated, or coloured noise (DRAEM's texture source, offline)."""
    from algan.data.synthetic import render_surface

    h, w = image.shape[:2]
    pick = int(rng.integers(0, 3))
    if pick == 0:
        side = max(h, w, 32)
        surf = render_surface(("metal", "weave")[int(rng.integers(0, 2))], side, rng)[:h, :w]
        tex = np.clip(surf, 0, 1) * 255.0
        return tex * rng.uniform(0.5, 1.5, 3)
    if pick == 1 and len(others):
        src = others[int(rng.integers(0, len(others)))]
        m = cv2.getRotationMatrix2D((w / 2, h / 2), float(rng.uniform(0, 360)), float(rng.uniform(1.0, 2.0)))
        return cv2.warpAffine(src, m, (w, h), borderMode=cv2.BORDER_REFLECT).astype(np.float32)
    base = rng.uniform(0, 255, 3)
    noise = cv2.GaussianBlur(rng.normal(0, 40, (h, w, 3)).astype(np.float32), (0, 0), float(rng.uniform(0.5, 3)))
    return np.clip(base + noise, 0, 255)


def perlin_texture(image: np.ndarray, others: Sequence[np.ndarray],
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """DRAEM-style defect: a Perlin-noise region blended with a foreign texture, opacity ``1 - beta``,
    ``beta ~ U(0, 0.8)`` (Zavrtanik et al. 2021). Returns ``(uint8 (H, W, 3), bool (H, W))``."""
    h, w = image.shape[:2]
    region = _region_mask((h, w), draw_area((h, w), rng), rng)
    beta = float(rng.uniform(0.0, 0.8))
    return _blend(image, _texture(image, others, rng), region * (1.0 - beta))


def _stroke_colour(image: np.ndarray, region: np.ndarray, rng: np.random.Generator, dark_only: bool = False):
    """A colour clearly darker (or brighter) than the image under ``region``."""
    m = region > 0
    mean = image[m].mean(axis=0) if m.any() else image.reshape(-1, 3).mean(axis=0)
    if dark_only or rng.random() < 0.6 or mean.mean() > 200:
        return mean * rng.uniform(0.15, 0.6)
    return np.minimum(mean + rng.uniform(50, 120), 255.0)


def scratch(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A thin curved stroke (quadratic Bezier, 1-3 px wide). Returns ``(uint8 (H, W, 3), bool (H, W))``."""
    h, w = image.shape[:2]
    width = int(rng.integers(1, 4))
    length = float(np.clip(draw_area((h, w), rng) / width, 6, 0.9 * math.hypot(h, w)))
    p0 = np.array([rng.uniform(0, w), rng.uniform(0, h)])
    ang = rng.uniform(0, 2 * math.pi)
    p2 = p0 + length * np.array([math.cos(ang), math.sin(ang)])
    p1 = (p0 + p2) / 2 + rng.normal(0, length / 6, 2)
    t = np.linspace(0, 1, max(int(length), 4))[:, None]
    pts = ((1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2).round().astype(np.int32)
    alpha = np.zeros((h, w), np.float32)
    cv2.polylines(alpha, [pts], False, 1.0, width, cv2.LINE_AA)
    colour = np.broadcast_to(_stroke_colour(image, alpha, rng), image.shape)
    return _blend(image, colour, alpha * rng.uniform(0.7, 1.0))


def spot(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A blob (ellipse, soft edge) darker or brighter than the surface. Returns ``(uint8 (H, W, 3), bool (H, W))``."""
    h, w = image.shape[:2]
    area = draw_area((h, w), rng)
    ax = max(math.sqrt(area / math.pi), 1.5)
    ratio = rng.uniform(0.6, 1.7)
    hard = np.zeros((h, w), np.float32)
    cv2.ellipse(hard, (int(rng.integers(0, w)), int(rng.integers(0, h))),
                (max(int(ax * ratio), 1), max(int(ax / ratio), 1)), float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
    soft = cv2.GaussianBlur(hard, (0, 0), max(ax / 4, 0.5)) * hard  # fades towards the edge, zero outside
    alpha = np.clip(soft * 1.5, 0, 1) * rng.uniform(0.6, 1.0)
    colour = np.broadcast_to(_stroke_colour(image, hard, rng), image.shape)
    return _blend(image, colour, alpha)


def crack(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A dark jagged random walk (1-3 px) with one branch. Returns ``(uint8 (H, W, 3), bool (H, W))``."""
    h, w = image.shape[:2]
    width = int(rng.integers(1, 4))
    length = float(np.clip(draw_area((h, w), rng) / width, 8, 0.9 * math.hypot(h, w)))
    alpha = np.zeros((h, w), np.float32)

    def walk(p: np.ndarray, heading: float, n: int) -> None:
        step = 3.0
        pts = [p.copy()]
        for _ in range(max(int(n / step), 2)):
            heading += rng.normal(0, 0.35)
            p = p + step * np.array([math.cos(heading), math.sin(heading)])
            pts.append(p.copy())
        cv2.polylines(alpha, [np.array(pts).round().astype(np.int32)], False, 1.0, width, cv2.LINE_8)

    start = np.array([rng.uniform(0, w), rng.uniform(0, h)])
    heading = rng.uniform(0, 2 * math.pi)
    walk(start, heading, length * 0.7)
    walk(start, heading + rng.choice([-1, 1]) * rng.uniform(0.5, 1.2), length * 0.3)
    colour = np.broadcast_to(_stroke_colour(image, alpha, rng, dark_only=True), image.shape)
    return _blend(image, colour, alpha)


def local_shift(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A local brightness, blur or colour change inside a Perlin/ellipse region. Returns ``(uint8 (H, W, 3),
    bool (H, W))``; where the change rounds to nothing (blur of a flat area) the mask is empty there."""
    h, w = image.shape[:2]
    region = _region_mask((h, w), draw_area((h, w), rng), rng)
    img = image.astype(np.float32)
    kind = int(rng.integers(0, 3))
    if kind == 0:  # brightness
        changed = img * rng.choice([rng.uniform(0.4, 0.75), rng.uniform(1.3, 1.8)]) + rng.uniform(-20, 20)
    elif kind == 1:  # blur
        changed = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(2.0, 5.0)))
        changed = changed * rng.uniform(0.9, 1.1)
    else:  # colour: per-channel gains
        gains = np.ones(3) + rng.choice([-1, 1], 3) * rng.uniform(0.2, 0.5, 3)
        changed = img * gains
    return _blend(image, np.clip(changed, 0, 255), region)


def _large_region(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A soft-edged blob over 10-50 % of the image, float32 (H, W) in [0, 1] (thresholded Perlin noise)."""
    h, w = shape
    frac = float(rng.uniform(0.1, 0.5))
    noise = perlin_noise((h, w), (int(rng.integers(1, 3)), int(rng.integers(1, 3))), rng)
    hard = (noise >= np.quantile(noise, 1.0 - frac)).astype(np.float32)
    soft = cv2.GaussianBlur(hard, (0, 0), max(min(h, w) / 40, 1.0))
    return np.clip(soft * hard * 1.5, 0, 1)


def texture_change(image: np.ndarray, kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One change of ``kind`` (:data:`TEXTURE_KINDS`) over a large region. Returns ``(uint8 (H, W, 3), bool (H, W))``.

    Raises:
        ValueError: a kind that is not a texture kind.
    """
    h, w = image.shape[:2]
    region = _large_region((h, w), rng)
    img = image.astype(np.float32)
    if kind == "uneven":
        field = perlin_noise((h, w), (int(rng.integers(2, 6)),) * 2, rng)
        changed = img * (1.0 + float(rng.uniform(0.15, 0.35)) * field[..., None] / max(np.abs(field).max(), 1e-6))
    elif kind == "contrast":
        inside = region > 0.5
        m = img[inside].mean(axis=0) if inside.any() else img.reshape(-1, 3).mean(axis=0)
        changed = m + float(rng.choice([rng.uniform(0.4, 0.7), rng.uniform(1.4, 1.9)])) * (img - m)
    elif kind == "stretch":
        scale = float(rng.uniform(1.3, 1.8))
        centre = (float(rng.uniform(0.3, 0.7) * w), float(rng.uniform(0.3, 0.7) * h))
        mat = cv2.getRotationMatrix2D(centre, 0.0, scale)
        changed = cv2.warpAffine(img, mat, (w, h), borderMode=cv2.BORDER_REFLECT)
    elif kind == "soften":
        changed = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(1.5, 3.0)))
    else:
        raise ValueError(f"unknown texture kind {kind!r}; use one of {', '.join(TEXTURE_KINDS)}")
    return _blend(image, np.clip(changed, 0, 255), region)


def make_defect(image: np.ndarray, kind: str, others: Sequence[np.ndarray],
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic defect of ``kind`` (:data:`DEFECT_KINDS`) on a uint8 BGR image (H, W, 3); ``others``: other
    normal images of the same shape (CutPaste's source, a DRAEM texture). Redraws (up to 10 times) until the mask
    holds at least a few pixels (texture kinds: :data:`MIN_TEXTURE_FRACTION` of the image).

    Returns:
        ``(defective uint8 (H, W, 3), mask bool (H, W))``; outside the mask the output equals ``image``.

    Raises:
        ValueError: unknown kind, a non-uint8 or non-(H, W, 3) image, or ``cutpaste`` without another image.
    """
    if kind not in DEFECT_KINDS:
        raise ValueError(f"unknown defect kind {kind!r}; use one of {', '.join(DEFECT_KINDS)}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"images must be uint8 (H, W, 3) BGR, got {image.dtype} {image.shape}")
    if kind == "cutpaste" and not len(others):
        raise ValueError("cutpaste needs at least one other normal image to cut from")
    least = MIN_TEXTURE_FRACTION * image.shape[0] * image.shape[1] if kind in TEXTURE_KINDS else 4
    for _ in range(10):
        if kind in TEXTURE_KINDS:
            out, mask = texture_change(image, kind, rng)
        elif kind == "cutpaste":
            out, mask = cutpaste(image, others[int(rng.integers(0, len(others)))], rng)
        elif kind == "perlin":
            out, mask = perlin_texture(image, others, rng)
        elif kind == "scratch":
            out, mask = scratch(image, rng)
        elif kind == "spot":
            out, mask = spot(image, rng)
        elif kind == "crack":
            out, mask = crack(image, rng)
        else:
            out, mask = local_shift(image, rng)
        if int(mask.sum()) >= least:
            break
    return out, mask


@dataclass
class DefectSet:
    """Synthetic defects made from normal images.

    Attributes:
        images: uint8 BGR (M, H, W, 3); masks: bool (M, H, W), True where the image was changed;
        kinds: the defect kind of each image; source: int (M,), the index of the normal image each was drawn on.
    """

    images: np.ndarray
    masks: np.ndarray
    kinds: list[str]
    source: np.ndarray


def synthesize_defects(normals: np.ndarray, per_image: int = 2, seed: int = 0,
                       kinds: Sequence[str] = LOCAL_KINDS, stream: int = 0) -> DefectSet:
    """Draw ``per_image`` synthetic defects on each normal image (uint8 BGR (N, H, W, 3)), the kinds in turn.

    Deterministic for ``seed``: defect ``j`` uses ``numpy.random.default_rng([seed, j])``, or
    ``default_rng([seed, stream, j])`` for a ``stream`` > 0 (families drawn from one seed stay independent). Local
    kinds first draw up to three other images of ``normals`` (CutPaste's source, DRAEM's texture); texture kinds use
    the image alone.

    Raises:
        ValueError: fewer than 2 images, ``per_image < 1``, an unknown kind (:func:`make_defect`).
    """
    normals = np.asarray(normals)
    if normals.ndim != 4 or len(normals) < 2:
        raise ValueError(f"need >= 2 normal images (N, H, W, 3) to draw defects from, got shape {normals.shape}")
    if per_image < 1:
        raise ValueError(f"per_image must be >= 1, got {per_image}")
    n = len(normals)
    images, masks, out_kinds, source = [], [], [], []
    for j in range(n * per_image):
        i, kind = j % n, kinds[j % len(kinds)]
        rng = np.random.default_rng([seed, j] if stream == 0 else [seed, stream, j])
        others = [] if kind in TEXTURE_KINDS else \
            [normals[k] for k in rng.choice(np.delete(np.arange(n), i), min(3, n - 1), replace=False)]
        img, mask = make_defect(normals[i], kind, others, rng)
        images.append(img)
        masks.append(mask)
        out_kinds.append(kind)
        source.append(i)
    return DefectSet(np.stack(images), np.stack(masks), out_kinds, np.array(source, np.int64))


def synthesize_families(normals: np.ndarray, per_image: int = 2, seed: int = 0) -> DefectSet:
    """Every family of :data:`DEFECT_FAMILIES` on each normal image, ``per_image`` defects each, in that order
    (local marks first); ``len(DEFECT_FAMILIES) N per_image`` defects.

    Raises:
        ValueError: as :func:`synthesize_defects`.
    """
    sets = [synthesize_defects(normals, per_image, seed, kinds, stream) for kinds, stream in DEFECT_FAMILIES.values()]
    return DefectSet(np.concatenate([d.images for d in sets]), np.concatenate([d.masks for d in sets]),
                     [k for d in sets for k in d.kinds], np.concatenate([d.source for d in sets]))


def defect_grid(defects: DefectSet, n: int = 24, cols: int = 6) -> np.ndarray:
    """A uint8 BGR contact sheet of the first ``n`` defects, each with its mask outline in red (for a person to look
    at; ``cv2.imwrite`` it)."""
    tiles = []
    for img, mask, kind in zip(defects.images[:n], defects.masks[:n], defects.kinds[:n], strict=True):
        t = img.copy()
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        side = img.copy()
        cv2.drawContours(side, contours, -1, (0, 0, 255), 1)
        cv2.putText(t, kind, (3, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 255, 255), 1, cv2.LINE_AA)
        tiles.append(np.concatenate([t, side], axis=1))
    while len(tiles) % cols:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.concatenate(tiles[r : r + cols], axis=1) for r in range(0, len(tiles), cols)]
    return np.concatenate(rows, axis=0)
