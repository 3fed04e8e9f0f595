"""The one rule for "is this file an image of the set" (training, calibration, ``algan-predict`` and the daemon's
folder source ask it), and the listing of a folder by it. Pure names and one directory scan; no image is read."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from algan.contract.names import IMAGE_SUFFIXES

#: stem endings of ground-truth mask files (``000_mask.png``, MVTec AD and algan-synth), compared lower-case
MASK_STEM_SUFFIXES = ("_mask",)
#: the photo suffixes whose same-stem ``.png`` neighbour is its mask (MTD: ``exp1_num_1.jpg`` + ``exp1_num_1.png``)
PHOTO_SUFFIXES = (".jpg", ".jpeg")


def image_skip_reason(name: str, siblings: frozenset[str] | set[str] = frozenset()) -> str | None:
    """The one rule for "is this file an image of the set": training, calibration, ``algan-predict`` and the edge
    daemon's folder source all ask it. Pure (names only, no I/O).

    Args:
        name: a file name (no directory part).
        siblings: the names of the other files in the same folder (for MTD's ``.png`` masks beside ``.jpg`` photos).

    Returns:
        ``None`` for an image of the set, else why it is skipped: ``"hidden"`` (name starts with ``.``),
        ``"not an image"`` (suffix outside :data:`IMAGE_SUFFIXES`, compared lower-case), ``"mask"`` (stem ends in
        :data:`MASK_STEM_SUFFIXES`, or a ``.png`` whose stem has a ``.jpg``/``.jpeg`` sibling).
    """
    if name.startswith("."):
        return "hidden"
    stem, dot, suffix = name.rpartition(".")
    suffix = f".{suffix.lower()}" if dot else ""
    if not dot or not stem or suffix not in IMAGE_SUFFIXES:
        return "not an image"
    if stem.lower().endswith(MASK_STEM_SUFFIXES):
        return "mask"
    if suffix == ".png" and any(f"{stem}{s}" in siblings or f"{stem}{s.upper()}" in siblings for s in PHOTO_SUFFIXES):
        return "mask"
    return None


@dataclass
class ImageListing:
    """The images of one or more folders by :func:`image_skip_reason`, and what was skipped.

    Attributes:
        images: the image files, sorted by name within each folder.
        skipped: ``{reason: count}`` of the files that are not images of the set.
    """

    images: list[Path]
    skipped: dict[str, int]

    def skipped_line(self) -> str | None:
        """One line saying what was skipped (``skipped 57 files: 57 masks``), or ``None`` when nothing was."""
        if not self.skipped:
            return None
        plural = {"mask": "masks", "hidden": "hidden files", "not an image": "not images"}
        parts = [f"{n} {plural.get(r, r)}" for r, n in sorted(self.skipped.items(), key=lambda kv: -kv[1])]
        return f"skipped {sum(self.skipped.values())} files that are not images of the set: {', '.join(parts)}"

    def extend(self, other: ImageListing) -> None:
        self.images.extend(other.images)
        for r, n in other.skipped.items():
            self.skipped[r] = self.skipped.get(r, 0) + n


def list_images(folder: str | os.PathLike[str]) -> ImageListing:
    """The images of the set directly in ``folder`` (no recursion; sub-folders are ignored, not counted).

    Raises:
        OSError: the folder cannot be listed.
    """
    folder = Path(folder)
    files = sorted(e.name for e in os.scandir(folder) if e.is_file())
    names = set(files)
    out = ImageListing([], {})
    for name in files:
        reason = image_skip_reason(name, names)
        if reason is None:
            out.images.append(folder / name)
        else:
            out.skipped[reason] = out.skipped.get(reason, 0) + 1
    return out
