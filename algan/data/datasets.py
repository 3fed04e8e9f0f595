"""Dataset readers: MVTec AD layout, Magnetic Tile Defects (MTD) layout and plain folders of normal images.

A reader returns file lists only (no pixels): training images are normal, test images carry a label
(0 = normal, 1 = anomalous), a class name and, where the data set has one, the path of the ground-truth defect
mask. Pixels are read by :func:`algan.runtime.preprocess.load_batch`, masks by :func:`load_mask`.
numpy/OpenCV only, no torch.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from algan.contract import IMAGE_SUFFIXES, ImageListing, list_images

Layout = Literal["auto", "mvtec", "mtd", "folder"]


class DatasetError(ValueError):
    """A data directory that does not match the requested layout."""


@dataclass(frozen=True)
class Sample:
    """One image file with its label (0 normal, 1 anomalous) and class name (e.g. ``good``, ``crack``).

    ``mask`` is the ground-truth defect mask file of an anomalous image (nonzero/white = defect pixel), or ``None``:
    for a normal image the mask is all zero by definition (no file is read), for an anomalous one ``None`` means
    the data set has no mask for it (see :attr:`Dataset.has_masks`).
    """

    path: Path
    label: int
    cls: str
    mask: Path | None = None


@dataclass
class Dataset:
    """File lists of one data set.

    Attributes:
        root: the data directory.
        layout: the resolved layout (``mvtec``, ``mtd`` or ``folder``).
        train: normal training images.
        test: labelled test images (empty for ``folder``).
        skipped: ``{reason: count}`` of files in the image folders that are not images of the set (masks, hidden
            files, other suffixes; :func:`algan.contract.image_skip_reason`).
    """

    root: Path
    layout: str
    train: list[Path] = field(default_factory=list)
    test: list[Sample] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)

    def _list(self, folder: Path) -> list[Path]:
        listing = list_images(folder)
        ImageListing([], self.skipped).extend(listing)
        return listing.images

    def skipped_line(self) -> str | None:
        """One line saying what the listing skipped (``None`` when nothing), said once by the commands."""
        line = ImageListing([], self.skipped).skipped_line()
        return f"{self.root}: {line}" if line else None

    @property
    def n_test_normal(self) -> int:
        return sum(1 for s in self.test if s.label == 0)

    @property
    def n_test_anomalous(self) -> int:
        return sum(1 for s in self.test if s.label == 1)

    @property
    def has_masks(self) -> bool:
        """True when every anomalous test image has a ground-truth mask file (pixel-level metrics possible)."""
        anomalous = [s for s in self.test if s.label == 1]
        return bool(anomalous) and all(s.mask is not None for s in anomalous)

    def summary(self) -> dict:
        """JSON-able summary (stored in the bundle manifest)."""
        return {
            "root": str(self.root),
            "layout": self.layout,
            "n_train": len(self.train),
            "n_test_normal": self.n_test_normal,
            "n_test_anomalous": self.n_test_anomalous,
            "has_masks": self.has_masks,
        }


def _images(folder: Path) -> list[Path]:
    return list_images(folder).images


def mtd_is_test(name: str) -> bool:
    """The project's fixed MTD split: ``int(sha1(name).hexdigest(), 16) % 3 == 0`` -> test (../shared/data/README)."""
    return int(hashlib.sha1(name.encode()).hexdigest(), 16) % 3 == 0


def detect_layout(root: Path) -> str:
    """Guess the layout of ``root``.

    Raises:
        DatasetError: when none of the layouts fits.
    """
    if (root / "train" / "good").is_dir():
        return "mvtec"
    if (root / "MT_Free").is_dir():
        return "mtd"
    if root.is_dir() and _images(root):
        return "folder"
    msg = (
        f"cannot tell the layout of {root}: expected train/good (MVTec AD), MT_Free (MTD) or image files "
        "(folder); pass --layout or point --data at the right directory"
    )
    raise DatasetError(msg)


def _existing(path: Path) -> Path | None:
    return path if path.is_file() else None


def load_mvtec(root: Path) -> Dataset:
    """MVTec AD layout: ``train/good``, ``test/good``, ``test/<defect>``; the mask of ``test/<defect>/<name>.<ext>``
    is ``ground_truth/<defect>/<name>_mask.png`` where that file exists."""
    train_dir = root / "train" / "good"
    if not train_dir.is_dir():
        raise DatasetError(f"{root} is not in MVTec AD layout: {train_dir} is missing")
    ds = Dataset(root=root, layout="mvtec")
    ds.train = ds._list(train_dir)
    test_dir = root / "test"
    if test_dir.is_dir():
        for cls_dir in sorted(d for d in test_dir.iterdir() if d.is_dir()):
            label = 0 if cls_dir.name == "good" else 1
            gt = root / "ground_truth" / cls_dir.name
            ds.test.extend(Sample(p, label, cls_dir.name, _existing(gt / f"{p.stem}_mask.png") if label else None)
                           for p in ds._list(cls_dir))
    return ds


def load_mtd(root: Path) -> Dataset:
    """Magnetic Tile Defects: ``MT_Free/Imgs`` normal, ``MT_<Defect>/Imgs`` anomalous; only ``*.jpg`` are images
    (the ``*.png`` of the same name are masks, white = defect; an anomalous image's mask is set where the file
    exists). Normal images are split by :func:`mtd_is_test`."""
    free = root / "MT_Free" / "Imgs"
    if not free.is_dir():
        raise DatasetError(f"{root} is not in MTD layout: {free} is missing")
    ds = Dataset(root=root, layout="mtd")
    for p in ds._list(free):
        if mtd_is_test(p.name):
            ds.test.append(Sample(p, 0, "good"))
        else:
            ds.train.append(p)
    for d in sorted(root.glob("MT_*")):
        if d.name == "MT_Free" or not (d / "Imgs").is_dir():
            continue
        cls = d.name.removeprefix("MT_").lower()
        ds.test.extend(Sample(p, 1, cls, _existing(p.with_suffix(".png"))) for p in ds._list(d / "Imgs"))
    return ds


def load_folder(root: Path) -> Dataset:
    """A plain folder of normal images (all used for training; no test split)."""
    ds = Dataset(root=root, layout="folder")
    ds.train = ds._list(root)
    if not ds.train:
        raise DatasetError(f"{root} holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return ds


def load_dataset(root: str | Path, layout: Layout = "auto") -> Dataset:
    """Read a data directory.

    Args:
        root: data directory.
        layout: ``auto`` (detect), ``mvtec``, ``mtd`` or ``folder``.

    Raises:
        DatasetError: missing directory, unknown layout, or no training images.
    """
    root = Path(root)
    if root.is_file():
        raise DatasetError(f"--data {root} is a file; pass the directory that holds the images (a folder of normal "
                           "images, or an MVTec AD / MTD data set)")
    if not root.is_dir():
        raise DatasetError(f"data directory {root} does not exist; pass an existing directory with --data")
    resolved = detect_layout(root) if layout == "auto" else layout
    loaders = {"mvtec": load_mvtec, "mtd": load_mtd, "folder": load_folder}
    if resolved not in loaders:
        raise DatasetError(f"unknown layout {layout!r}; use one of auto, mvtec, mtd, folder")
    ds = loaders[resolved](root)
    if not ds.train:
        raise DatasetError(f"no training images found in {root} (layout {resolved})")
    return ds


#: OpenCV interpolation for masks: nearest neighbour with pixel-centre alignment (``INTER_NEAREST_EXACT``), the same
#: geometry as the images' :data:`algan.runtime.preprocess.RESIZE_INTERPOLATION` (``INTER_AREA`` maps pixel centres to
#: pixel centres; plain ``INTER_NEAREST`` would shift the mask by up to half a source pixel).
MASK_INTERPOLATION = cv2.INTER_NEAREST_EXACT


def load_mask(path: str | Path | None, size: tuple[int, int], image_shape: tuple[int, int] | None = None,
              roi=None) -> np.ndarray:
    """Read a ground-truth mask and bring it to the model input, aligned with the prepared image.

    The mask goes through the same host-side geometry as its image in :func:`algan.runtime.preprocess.prepare_frame`
    (optional ROI crop, then a plain resize of the whole frame to ``size``, no aspect-preserving crop or padding),
    resized with nearest neighbour (:data:`MASK_INTERPOLATION`). A pixel is a defect pixel when its mask value is
    >= 128 (MTD's masks are JPEG-like with soft values 0..255; MVTec AD and ``algan-synth`` masks are {0, 255}).

    Args:
        path: mask file (any format OpenCV reads; colour masks are converted to gray), or ``None`` for a normal
            image (all-zero mask).
        size: model input ``(height, width)``.
        image_shape: ``(height, width)`` of the image file, to check that the mask matches it (optional).
        roi: the ``(x, y, width, height)`` crop applied to the image, or ``None``.

    Returns:
        bool array, shape ``size``; True = defect pixel.

    Raises:
        DatasetError: the mask file is missing or unreadable, or its size differs from ``image_shape``.
    """
    from algan.runtime.preprocess import crop_roi

    h, w = int(size[0]), int(size[1])
    if path is None:
        return np.zeros((h, w), bool)
    m = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if m is None:
        raise DatasetError(f"cannot read mask {path}: file missing, unreadable or not an image; fix or remove it")
    if image_shape is not None and tuple(m.shape[:2]) != tuple(image_shape[:2]):
        msg = (f"mask {path} is {m.shape[1]}x{m.shape[0]} but its image is {image_shape[1]}x{image_shape[0]}; "
               "a mask must have its image's size")
        raise DatasetError(msg)
    m = crop_roi(m, roi)
    if m.shape != (h, w):
        m = cv2.resize(m, (w, h), interpolation=MASK_INTERPOLATION)
    return m >= 128
