"""Dev stand-ins for two kinds of line where ALGAN-patch was far from the best head on the held-out sets (issue 28).

Built from the real dev sets, so no defect is invented here beyond what the source set has:

- ``ballscrew-dark``: ballscrew's colour photos darkened as a dark rubber or cast part looks
  (``out = 255 * 0.45 * (in / 255) ** 1.8``: mean grey level about a quarter of the original); masks unchanged.
  Stands in for "rubber tyre, colour, dark, small cuts" and "cast impeller, dark metal object".
- ``bottle-rot``: the bottle-video set (``benchmarks/patch_defaults.build_bottle``) with every image turned by its
  own angle in [0, 360) degrees about the centre (seeded by the file name; borders reflected), masks turned alike.
  Stands in for "screw, object at random orientation".

Both are written in the MVTec layout (``train/good``, ``test/<kind>``, ``ground_truth/<kind>/<name>_mask.png``)
under ``work`` once and reused.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

STAND_INS = ("ballscrew-dark", "bottle-rot")


def _angle(name: str) -> float:
    """The turn of one image in degrees, fixed by its file name (mask and image of one name turn alike)."""
    stem = name.removesuffix("_mask.png").rsplit(".", 1)[0]
    return int(hashlib.sha1(stem.encode()).hexdigest(), 16) % 36000 / 100.0


def darken(img: np.ndarray, name: str, is_mask: bool) -> np.ndarray:
    if is_mask:
        return img
    x = img.astype(np.float32) / 255.0
    return np.clip(255.0 * 0.45 * x**1.8, 0, 255).astype(np.uint8)


def rotate(img: np.ndarray, name: str, is_mask: bool) -> np.ndarray:
    import cv2

    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), _angle(name), 1.0)
    if is_mask:
        return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def derive(src: Path, dst: Path, transform: Callable[[np.ndarray, str, bool], np.ndarray]) -> Path:
    """Copy the MVTec-layout set ``src`` to ``dst`` with ``transform`` applied to every image and mask; returns dst.

    Nothing is written when ``dst/test`` already exists (a finished build is reused)."""
    import cv2

    if (dst / "test").is_dir():
        return dst
    tmp = dst.with_name(dst.name + ".partial")
    for path in sorted(src.rglob("*")):
        if path.suffix.lower() not in (".png", ".jpg", ".jpeg", ".bmp") or not path.is_file():
            continue
        rel = path.relative_to(src)
        is_mask = rel.parts[0] == "ground_truth"
        img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE if is_mask else cv2.IMREAD_COLOR)
        if img is None:
            raise SystemExit(f"cannot read {path}")
        out = tmp / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(out), transform(img, path.name, is_mask))
    tmp.rename(dst)
    return dst


def build_stand_in(name: str, work: Path, data: Path) -> tuple[Path, str] | None:
    """``(root, layout)`` of the stand-in ``name`` (one of :data:`STAND_INS`), built under ``work``; None without
    its source set."""
    from benchmarks.patch_defaults import build_bottle

    if name == "ballscrew-dark":
        src = data / "ballscrew"
        return (derive(src, work / name, darken), "mvtec") if (src / "train").is_dir() else None
    if name == "bottle-rot":
        video = data / "video" / "bottle-detection.mp4"
        if not video.is_file():
            return None
        return derive(build_bottle(work / "bottle", video), work / name, rotate), "mvtec"
    raise ValueError(f"unknown stand-in {name!r}; use one of {', '.join(STAND_INS)}")
