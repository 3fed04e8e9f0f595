"""The model contract, said once: what training writes, export bakes into the graph and the edge runtime reads.

Torch-free and light (standard library, numpy and pydantic only), so that every layer may import it: ``data``,
``features``, ``model``, ``bundle``, ``calibration``, ``export`` and ``edge`` all take these names from here.

Exported graph (ONNX; the TensorRT engine keeps the same names):

- input ``images``: uint8 [N, H, W, 3], BGR, 0-255, NHWC (H, W static);
- output ``scores``: float32 [N], calibrated (0 = typical normal, 1.0 = the alarm threshold, higher = more
  anomalous);
- optional second output ``anomaly_maps``: float32 [N, h, w] (h, w static), on the same calibrated scale; map cell
  (i, j) covers input pixels [i*H/h, (i+1)*H/h) x [j*W/w, (j+1)*W/w). Image-only heads have one output.

Graph ``metadata_props`` (all strings): :data:`KEY_MODEL_ID`, :data:`KEY_OUTPUTS` (``scores`` or
``scores,anomaly_maps``), :data:`KEY_MAP_SIZE` (``h,w``; absent for score-only graphs), and the calibration constants
baked into the graph, :data:`KEY_CAL_CENTER` / :data:`KEY_CAL_SCALE` (``raw = score * scale + center``), with which
the edge re-maps scores (and maps) after a re-calibration. Graphs with maps of a bundle that has a pixel threshold
also carry :data:`KEY_PIXEL_THRESHOLD`: the map level of a defect pixel on the graph's own calibrated map scale
(:attr:`CalibrationSection.pixel_level`).

Bundle directory: :data:`MANIFEST_FILE` (the manifest), :data:`WEIGHTS_FILE`, :data:`SAMPLES_FILE` (held-out normal
frames), :data:`ONNX_FILE`, :data:`ENGINE_FILE`. The manifest is typed: :class:`Manifest` (one pydantic model per
section), read with :func:`load_manifest` (one :class:`BundleError` line naming the file, the bad field and the fix).

The threshold rule (:func:`order_statistic_rank`, :func:`empirical_threshold`) is the one order statistic that both
training (``algan.model.fit``) and re-calibration (``algan.calibration.threshold``) use for "the threshold at a
target false-alarm rate"; :func:`pixel_threshold` applies the same rule to the anomaly-map cells of normal images.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
    model_validator,
)

# -- graph I/O ------------------------------------------------------------------------------------------------
INPUT_NAME = "images"
OUTPUT_NAME = "scores"
MAPS_OUTPUT_NAME = "anomaly_maps"

# -- graph metadata_props keys ------------------------------------------------------------------------------
KEY_MODEL_ID = "algan.model_id"
KEY_OUTPUTS = "algan.outputs"
KEY_MAP_SIZE = "algan.map_size"
KEY_CAL_CENTER = "algan.calibration_center"
KEY_CAL_SCALE = "algan.calibration_scale"
KEY_PIXEL_THRESHOLD = "algan.pixel_threshold"

# -- bundle files -------------------------------------------------------------------------------------------
MANIFEST_FILE = "algan.json"
WEIGHTS_FILE = "weights.safetensors"
SAMPLES_FILE = "samples.safetensors"
ONNX_FILE = "model.onnx"
ENGINE_FILE = "model.engine"

#: image file suffixes (lower case) read from data sets, image-folder cameras and folder-to-video conversion: the
#: formats OpenCV's ``imread`` decodes in the opencv-python wheels
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm"})


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


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in ``chunk``-byte blocks (default 1 MiB).

    Raises:
        OSError: the file cannot be read.
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def utc_now_iso() -> str:
    """Current UTC time as ISO 8601 with milliseconds and ``Z`` (the manifests' timestamp format), e.g.
    ``2026-12-02T18:00:00.123Z``."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- durable writes ---------------------------------------------------------------------------------------------
def fsync_path(path: str | os.PathLike[str]) -> None:
    """``fsync`` a file or directory so that its contents (a directory: its entries) survive a power cut; silently
    skipped where the platform cannot open or sync it (e.g. directories on Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def replace_directory(tmp: str | os.PathLike[str], final: str | os.PathLike[str]) -> Path:
    """Atomically put the finished directory ``tmp`` in place of ``final`` (same file system).

    Every file below ``tmp`` and ``tmp`` itself are fsynced first; an existing ``final`` is renamed to
    ``.<name>.old`` beside it, ``tmp`` renamed to ``final``, the parent directory fsynced, and the old copy removed.
    A crash leaves either the old or the new directory at ``final`` (or, between the two renames, the old one at
    ``.<name>.old``), never a half-written one.

    Returns:
        ``final`` as a Path.

    Raises:
        OSError: a rename failed (``tmp`` is left for the caller to remove).
    """
    tmp, final = Path(tmp), Path(final)
    for dirpath, _, files in os.walk(tmp):
        for name in files:
            fsync_path(Path(dirpath) / name)
        fsync_path(dirpath)
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        if old.exists():
            shutil.rmtree(old)
        final.rename(old)
        tmp.rename(final)
        fsync_path(final.parent)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(final)
        fsync_path(final.parent)
    return final


@contextmanager
def atomic_directory(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Build a directory under a temporary name beside ``final`` and swap it in with :func:`replace_directory` when
    the ``with`` block succeeds; on any exception the temporary directory is removed and ``final`` is untouched.

    Example::

        with atomic_directory(out) as tmp:
            (tmp / MANIFEST_FILE).write_text(...)
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp"))
    try:
        yield tmp
        replace_directory(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class OutputDirError(ValueError):
    """An output directory the program refuses to write: it holds files the program did not create, it contains or
    lies inside the input data, or it holds an earlier output and replacing it was not asked for (``--force``)."""


#: entry names a model bundle may hold (fnmatch patterns): what training, calibration, export and engine builds write
#: there. Anything else in a directory is a user's file, which replacing the directory would delete.
BUNDLE_ENTRY_PATTERNS = ("algan.*", "model.*", "*.safetensors", "*.cache", "calibration_*", ".*.tmp", ".tmp-*")


def is_bundle_dir(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a directory holding a model bundle's manifest (:data:`MANIFEST_FILE`)."""
    return (Path(path) / MANIFEST_FILE).is_file()


def foreign_entries(path: str | os.PathLike[str], patterns: tuple[str, ...] = BUNDLE_ENTRY_PATTERNS) -> list[str]:
    """Names in directory ``path`` that match none of ``patterns`` (sorted), i.e. entries the program never writes.
    Sub-directories are always foreign."""
    import fnmatch

    out = []
    for e in os.scandir(path):
        if e.is_dir(follow_symlinks=False) or not any(fnmatch.fnmatchcase(e.name, pat) for pat in patterns):
            out.append(e.name)
    return sorted(out)


def _overlaps(a: Path, b: Path) -> bool:
    """``a`` and ``b`` are the same directory or one lies inside the other (both resolved)."""
    return a == b or a in b.parents or b in a.parents


def check_output_dir(out: str | os.PathLike[str], *, force: bool, flag: str = "--out",
                     inputs: dict[str, str | os.PathLike[str] | None] | None = None,
                     kind: str = "model bundle") -> None:
    """Refuse an output directory whose replacement would destroy what the program did not write.

    Accepted: a path that does not exist, an empty directory, and (only with ``force``) an earlier model bundle
    (:func:`is_bundle_dir`) holding nothing but bundle files (:data:`BUNDLE_ENTRY_PATTERNS`).

    Args:
        out: the directory to be written (replaced as a whole by :func:`atomic_directory`).
        force: the user asked to replace an earlier bundle (``--force``).
        flag: the option's name in messages.
        inputs: ``{option name: path}`` of inputs (``--data``, ``--checkpoint``) that must neither contain ``out``
            nor lie inside it; ``None`` values are ignored.

    Raises:
        OutputDirError: one line naming the directory, what it holds and the fix.
    """
    path = Path(out)
    resolved = path.resolve()
    for name, src in (inputs or {}).items():
        if src is None:
            continue
        s = Path(src).resolve()
        if _overlaps(resolved, s):
            where = ("is" if resolved == s else "contains" if resolved in s.parents else "lies inside")
            raise OutputDirError(f"{flag} {path} {where} {name} {src}; writing the {kind} there would replace "
                                 f"the input: choose an {flag} directory outside it")
    if not path.exists() and not path.is_symlink():
        return
    if not path.is_dir():
        raise OutputDirError(f"{flag} {path} exists and is not a directory; choose a new directory name")
    if path.is_symlink():
        raise OutputDirError(f"{flag} {path} is a symbolic link; give the directory it points to, or a new name")
    entries = sorted(os.listdir(path))
    if not entries:
        return
    if not is_bundle_dir(path):
        shown = ", ".join(entries[:3]) + (f" (+{len(entries) - 3} more)" if len(entries) > 3 else "")
        raise OutputDirError(f"{flag} {path} is not empty and is not a {kind} (it holds {shown}); nothing was "
                             f"written: choose a new or empty directory")
    foreign = foreign_entries(path)
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" (+{len(foreign) - 3} more)" if len(foreign) > 3 else "")
        raise OutputDirError(f"{flag} {path} holds an earlier {kind} and files that are not part of one ({shown}); "
                             f"nothing was written: move those files out or choose another directory")
    if not force:
        raise OutputDirError(f"{flag} {path} holds an earlier {kind}; pass --force to replace it, or choose "
                             "another directory")


#: modes of bundle directories and files: a bundle holds nothing secret and is often trained as one user and run as
#: another (the service's User=), so it is world-readable whatever the umask (mkstemp/mkdtemp would give 0600/0700)
BUNDLE_DIR_MODE = 0o755
BUNDLE_FILE_MODE = 0o644


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file beside it (mode :data:`BUNDLE_FILE_MODE`) renamed over it:
    a reader sees the old or the new contents, never half of them.

    Raises:
        OSError: the directory is not writable (nothing is left behind).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, BUNDLE_FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# -- the threshold rule -----------------------------------------------------------------------------------------
def order_statistic_rank(n: int, target_fpr: float) -> int:
    """1-based rank ``k = ceil((n + 1)(1 - target_fpr))`` of the empirical threshold among ``n`` sorted normal
    scores. For exchangeable scores the expected false-alarm rate of ``X_(k)`` on new normal frames is
    ``1 - k / (n + 1) <= target_fpr`` (the split-conformal quantile, Vovk et al. 2005). May exceed ``n``: the rate
    cannot then be resolved from ``n`` scores (it needs ``n >= 1 / target_fpr - 1``)."""
    return math.ceil((n + 1) * (1.0 - target_fpr) - 1e-9)


@dataclass(frozen=True)
class EmpiricalThreshold:
    """Result of :func:`empirical_threshold`.

    Attributes:
        threshold: the chosen order statistic (score units of the input).
        rank: its 1-based rank among the sorted scores.
        expected_fpr: ``1 - rank / (n + 1)``, the expected per-frame false-alarm rate on new normal frames.
        resolved: False when ``target_fpr`` needed a rank above ``n`` and the maximum was used instead (then
            ``expected_fpr`` is ``1 / (n + 1)``, above the target).
        needed: fewest scores that resolve ``target_fpr`` (:func:`scores_needed`).
    """

    threshold: float
    rank: int
    expected_fpr: float
    resolved: bool
    needed: int


def scores_needed(target_fpr: float) -> int:
    """Fewest normal scores ``n`` whose order statistic resolves ``target_fpr``: ``ceil(1 / target_fpr - 1)``
    (then ``order_statistic_rank(n, target_fpr) <= n``)."""
    return max(1, math.ceil(1.0 / target_fpr - 1.0 - 1e-9))


def empirical_threshold(scores: np.ndarray, target_fpr: float, *, clip: bool) -> EmpiricalThreshold:
    """The threshold at ``target_fpr`` (per frame): order statistic ``X_(k)`` with :func:`order_statistic_rank`.

    Args:
        scores: finite normal scores, 1-D (any float dtype).
        target_fpr: per-frame false-alarm rate in (0, 1).
        clip: what happens when ``n`` scores cannot resolve the rate (``k > n``): True takes the maximum and
            reports ``resolved=False`` (training, where too few held-out images must not stop a run; the caller
            says so); False raises.

    Raises:
        ValueError: empty or non-finite scores, ``target_fpr`` outside (0, 1), or (``clip=False``) too few scores.
    """
    s = np.sort(np.asarray(scores, dtype=np.float64).ravel())
    n = len(s)
    if not 0 < target_fpr < 1:
        raise ValueError(f"target_fpr must lie in (0, 1), got {target_fpr}")
    if n == 0 or not np.all(np.isfinite(s)):
        raise ValueError(f"need finite normal scores for a threshold, got {n} values "
                         f"({int((~np.isfinite(s)).sum())} NaN/inf)")
    k = order_statistic_rank(n, target_fpr)
    need = scores_needed(target_fpr)
    if k > n:
        if not clip:
            raise ValueError(f"{n} normal scores cannot resolve a per-frame FPR of {target_fpr:g} empirically "
                             f"(needs >= {need})")
        return EmpiricalThreshold(float(s[-1]), n, 1.0 / (n + 1), False, need)
    return EmpiricalThreshold(float(s[k - 1]), k, 1.0 - k / (n + 1), True, need)


#: default per-pixel false-positive rate of the pixel threshold (share of normal map cells at or above it): the lowest
#: rate measured, the best mask F1 on every dev set with flagged defects (benchmarks/pixel_threshold.py, RESULTS.md
#: "Session 11"); still resolved by 2 held-out images of 56 x 56 cells
DEFAULT_PIXEL_FPR = 0.001


def pixel_threshold(maps: np.ndarray, target_fpr: float = DEFAULT_PIXEL_FPR) -> EmpiricalThreshold:
    """The pixel threshold: :func:`empirical_threshold` (the one threshold rule) over every cell of the anomaly maps
    of held-out normal images, so that a share of at most ``target_fpr`` of normal map cells (hence, up to the
    bilinear upsampling, of normal ROI pixels) lies at or above it.

    Args:
        maps: raw (uncalibrated) anomaly maps of normal images, float (N, h, w) (any shape; all cells are pooled).
        target_fpr: per-pixel false-positive rate in (0, 1), e.g. :data:`DEFAULT_PIXEL_FPR`.

    Returns:
        The :class:`EmpiricalThreshold` in raw map units; clipped to the maximum (``resolved=False``) when the
        cells are too few for the rate.

    Raises:
        ValueError: no cells, NaN/inf values, ``target_fpr`` outside (0, 1).
    """
    return empirical_threshold(np.asarray(maps, dtype=np.float32).ravel(), target_fpr, clip=True)


# -- the bundle manifest ----------------------------------------------------------------------------------------
#: the bundle format version this package reads and writes (``format_version`` of the manifest)
FORMAT_VERSION = 1


class BundleError(ValueError):
    """A model directory that is missing, incomplete or of an unsupported format."""


class _Section(BaseModel):
    """A manifest section: unknown keys are kept (``extra="allow"``: a newer writer's additions survive a read-modify-
    write), and :meth:`to_json` writes back exactly the keys that were read or set, in the order they were read
    (keys set later follow, in field order), so that a manifest round-trips to the same JSON."""

    # protected_namespaces: pydantic < 2.10 would warn about the field model_id
    model_config = ConfigDict(extra="allow", protected_namespaces=())

    _key_order: tuple[str, ...] = PrivateAttr(default=())

    @model_validator(mode="wrap")
    @classmethod
    def _remember_key_order(cls, data: Any, handler: Any) -> Any:
        obj = handler(data)
        if isinstance(data, dict) and obj is not data:
            obj._key_order = tuple(data)
        return obj

    @model_serializer(mode="wrap")
    def _in_key_order(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        d = handler(self)
        first = [k for k in self._key_order if k in d]
        return {**{k: d[k] for k in first}, **{k: v for k, v in d.items() if k not in self._key_order}}

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types: the keys read or set (defaults of absent keys are not written)."""
        return self.model_dump(exclude_unset=True)


class BackboneSection(_Section):
    """``backbone``: what rebuilds the feature extractor (``algan.features.base.BackboneSpec``; the image variant:
    ``name: pixels`` and ``channels``). ``input_size`` is ``[H, W]``, ``mean``/``std`` the per-channel RGB
    normalisation of [0, 1] pixels."""

    name: str
    input_size: list[int]
    mean: list[float]
    std: list[float]
    blocks: list[int] | None = None
    pooling: str | None = None
    weights_sha256: str | None = None
    weights_path: str | None = None
    channels: int | None = None


class InputSection(_Section):
    """``input``: the model input, ``{height, width, layout: NHWC, dtype: uint8, colour_order: BGR}``."""

    height: int
    width: int
    layout: str = "NHWC"
    dtype: str = "uint8"
    colour_order: str = "BGR"


class FeaturesSection(_Section):
    """``features``: the fitted transform, ``transform`` (``standardize``/``pca``; patch: ``none``/``random``/``pca``;
    image: ``none``), its input and output dimension, and the number of training patches (patch variant)."""

    transform: str
    in_dim: int
    dim: int
    n_patches: int | None = None


class CandidateFigures(_Section):
    """One candidate of ``head.selection``: ``name`` (``variant:head``), its ``recall_at_fpr`` and ``auroc`` on the
    synthetic defects (against the held-out normals), the recall per defect kind and its fit time in seconds."""

    name: str
    recall_at_fpr: float
    auroc: float
    recall_by_kind: dict[str, float] = Field(default_factory=dict)
    fit_s: float | None = None


class HeadSelection(_Section):
    """``head.selection``: how ``algan-train --head auto`` chose the head (:mod:`algan.model.select`): the
    ``chosen`` candidate, the ``rule``, the ``seed`` of the synthetic defects, the ``target_fpr`` the recall is
    measured at, the held-out normals and synthetic defects scored, and every candidate's figures."""

    chosen: str
    rule: str
    seed: int
    target_fpr: float
    n_normal: int
    n_defects: int
    defect_kinds: list[str] = Field(default_factory=list)
    defects_per_image: int | None = None
    wall_s: float | None = None
    candidates: list[CandidateFigures] = Field(default_factory=list)


class HeadSection(_Section):
    """``head``: ``kind`` (``algan``, ``mahalanobis``, ``knn``; patch: ``algan``, ``patchcore``, ``padim``), the
    head's ``settings`` (the config it was trained with) and, for a head chosen by ``--head auto``, ``selection``."""

    kind: str
    settings: dict[str, Any] = Field(default_factory=dict)
    selection: HeadSelection | None = None


class CalibrationSection(_Section):
    """``calibration``: raw score ``center`` (median normal) and ``threshold`` (the alarm level), with how they were
    found; algan-calibrate adds ``date``, ``tool``, ``data``, ``validation``... (kept as extra keys).

    Patch heads add the pixel threshold: ``pixel_threshold`` (raw map units, :func:`pixel_threshold` over the maps
    of the same held-out normals), ``pixel_target_fpr`` (its per-pixel false-positive rate) and ``n_pixels`` (map
    cells it came from). Bundles written before it have none: :attr:`pixel_level` is then 1.0.
    """

    center: float
    threshold: float
    target_fpr: float | None = None
    n_images: int | None = None
    source: str | None = None
    method: str | None = None
    date: str | None = None
    pixel_threshold: float | None = None
    pixel_target_fpr: float | None = None
    n_pixels: int | None = None

    @property
    def pixel_level(self) -> float:
        """The pixel threshold on the calibrated map scale (where 1.0 is the image threshold's level):
        ``(pixel_threshold - center) / (threshold - center)``; a map cell at or above it is a defect pixel.
        Without a ``pixel_threshold`` (bundles written before it) 1.0: the image threshold's level."""
        if self.pixel_threshold is None or not self.threshold > self.center:
            return 1.0
        return (float(self.pixel_threshold) - self.center) / (self.threshold - self.center)


class TrainingDataSection(_Section):
    """``training.data``: the training data set (``algan.data.datasets.Dataset.summary``)."""

    root: str | None = None
    layout: str | None = None
    n_train: int | None = None
    n_test_normal: int | None = None
    n_test_anomalous: int | None = None
    has_masks: bool | None = None


class TrainingSection(_Section):
    """``training``: data set summary, image counts, seed and timing; ALGAN heads add ``train_s``, the ``final``
    losses and ``epochs_run``."""

    data: TrainingDataSection = Field(default_factory=TrainingDataSection)
    n_train: int | None = None
    n_holdout: int | None = None
    seed: int | None = None
    max_train: int | None = None
    wall_s: float | None = None
    train_s: float | None = None
    final: dict[str, Any] | None = None
    epochs_run: int | None = None


class PatchSection(_Section):
    """``patch``: the patch variant's ``algan.features.patch.PatchSpec`` (same fields and defaults)."""

    stride: int = 8
    aggregate: int = 3
    projection: str = "none"
    dim: int | None = None
    map_stride: int = 4
    smooth_sigma: float = 4.0
    reduction: str = "topk_mean"
    topk: float = 0.01
    patches_per_image: int = 128
    #: per-location map normalisation (``PatchSpec.map_norm``); absent in bundles written before it existed, whose
    #: maps have none (their weights hold no ``postprocess.norm.*`` statistics), so the default here is ``none``
    map_norm: str = "none"


class AnomalyMapSection(_Section):
    """``anomaly_map``: size of the ``anomaly_maps`` output in cells, the image-score reduction, the patch grid, and
    the per-location normalisation of the map (``none``, ``mean``, ``standardize``) with the number of training
    images its statistics came from."""

    height: int
    width: int
    reduction: str | None = None
    grid: list[int] | None = None
    normalization: str | None = None
    normalization_images: int | None = None


class TilingSection(_Section):
    """``tiling``: the ROI is scored as a grid of tiles (:mod:`algan.data.tiling`): ``grid`` ``[rows, cols]`` and the
    ``overlap`` of neighbouring tiles (fraction of a tile, 0-0.5). The graph scores single tiles; the host cuts,
    stitches the maps (overlaps averaged) and reduces the stitched map to the frame score (image-only heads: the
    maximum over tiles). The calibration of a tiled bundle is on those frame scores."""

    grid: list[int]
    overlap: float = 0.25

    @model_validator(mode="after")
    def _check(self) -> TilingSection:
        if len(self.grid) != 2 or min(self.grid) < 1:
            raise ValueError(f"grid must be [rows, cols] of positive integers, got {self.grid}")
        if not 0.0 <= self.overlap <= 0.5:
            raise ValueError(f"overlap must lie in [0, 0.5], got {self.overlap}")
        return self


class Manifest(_Section):
    """The bundle manifest ``algan.json`` (format version :data:`FORMAT_VERSION`).

    Required: ``format_version``, ``model_id`` and ``calibration`` (``center``, ``threshold``). The sections that
    rebuild the torch detector (``backbone``, ``features``, ``head``) are optional here, so that a bundle that only
    serves its exported graph still reads; :meth:`require` gives them where they are needed. ``exports`` is filled by
    algan-export: ``{onnx, onnx_fp16, engine: {file, sidecar, engine_sha256, onnx_sha256, ...}, parity: [...], auroc,
    triton}``; ``engine`` also by ``algan-edge build-engine`` on the device. ``tiling`` (:class:`TilingSection`) makes
    every runtime score the ROI as a grid of tiles with stitched maps (:mod:`algan.data.tiling`).
    """

    format_version: int
    model_id: str
    calibration: CalibrationSection
    created: str | None = None
    algan_edge_version: str | None = None
    variant: str = "feature"
    backbone: BackboneSection | None = None
    input: InputSection | None = None
    features: FeaturesSection | None = None
    head: HeadSection | None = None
    training: TrainingSection | None = None
    exports: dict[str, Any] = Field(default_factory=dict)
    outputs: list[str] = Field(default_factory=lambda: [OUTPUT_NAME])
    patch: PatchSection | None = None
    anomaly_map: AnomalyMapSection | None = None
    roi: list[int] | None = None
    tiling: TilingSection | None = None

    _path: Path | None = PrivateAttr(default=None)

    @property
    def path(self) -> Path | None:
        """The file it was read from (:func:`load_manifest`), else ``None``."""
        return self._path

    @property
    def head_kind(self) -> str:
        """``head.kind``, or ``""`` without a head section."""
        return self.head.kind if self.head is not None else ""

    def require(self, name: str) -> Any:
        """The section ``name`` (e.g. ``"backbone"``); raises :class:`BundleError` naming the file and the field when
        it is absent."""
        value = getattr(self, name)
        if value is None:
            raise self.field_error(name)
        return value

    def field_error(self, field: str, what: str = "is missing") -> BundleError:
        """The :class:`BundleError` for a bad ``field`` (dotted, e.g. ``head.settings.n_bank``) of this manifest."""
        return BundleError(_field_error(self._path or MANIFEST_FILE, field, what))


def _field_error(path: str | os.PathLike[str], field: str, what: str) -> str:
    return (f"{path}: field '{field}' {what}; the manifest is damaged or was not written by algan-train: re-train or "
            "re-export the bundle with this algan-edge version, or restore its algan.json")


def parse_manifest(data: Any, path: str | os.PathLike[str] = MANIFEST_FILE) -> Manifest:
    """Validate a decoded ``algan.json`` (``path`` names it in errors).

    Raises:
        BundleError: not a JSON object, a ``format_version`` other than :data:`FORMAT_VERSION`, or a missing or
            mistyped field (the first one is named, with the count of the others).
    """
    if not isinstance(data, dict):
        raise BundleError(f"{path} is not a JSON object (got {type(data).__name__}); re-train or restore the bundle")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(f"{path} has format version {version}, this algan-edge reads version {FORMAT_VERSION}; "
                          "re-train the model or install the algan-edge version that wrote it")
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        first = errors[0]
        loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
        if first["type"] == "missing":
            what = "is missing"
        else:
            what = f"is invalid: {first['msg'][:160]} (got {first.get('input')!r:.80})"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise BundleError(_field_error(path, loc, what + more)) from None
    manifest._path = Path(path)
    return manifest


def load_manifest(path: str | os.PathLike[str]) -> Manifest:
    """Read and validate a bundle's manifest: ``path`` is the bundle directory or its ``algan.json``.

    Raises:
        BundleError: a missing directory or manifest, a file other than ``algan.json`` given for the bundle,
            unreadable JSON, an unsupported ``format_version``, or a missing or mistyped field (see
            :func:`parse_manifest`), each as one line that says what to do.
    """
    p = Path(path)
    if p.is_file() and p.name == MANIFEST_FILE:
        model_dir, file = p.parent, p
    else:
        model_dir, file = p, p / MANIFEST_FILE
        if p.is_file():
            hint = (f"give the bundle directory {p.parent}" if (p.parent / MANIFEST_FILE).is_file() else
                    "give the bundle directory that algan-train wrote")
            raise BundleError(f"{p} is a file, but a model bundle directory is needed (with {MANIFEST_FILE} and "
                              f"{WEIGHTS_FILE}); {hint}")
        if not p.is_dir():
            raise BundleError(f"model directory {p} does not exist; train one with algan-train --out {p}")
        if not file.is_file():
            raise BundleError(f"{model_dir} is not a model bundle ({MANIFEST_FILE} missing); train one with "
                              "algan-train")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise BundleError(f"cannot read {file}: {exc}; re-train or restore the bundle") from exc
    return parse_manifest(data, file)


def manifest_bytes(manifest: Manifest) -> bytes:
    """The text of ``algan.json`` for ``manifest`` (2-space indented JSON and a newline, UTF-8)."""
    return (json.dumps(manifest.to_json(), indent=2) + "\n").encode()


def write_manifest(model_dir: str | os.PathLike[str], manifest: Manifest) -> None:
    """Atomically (temp file + rename, :func:`atomic_write_bytes`) write ``model_dir/algan.json``.

    Raises:
        OSError: the bundle directory is not writable.
    """
    atomic_write_bytes(Path(model_dir) / MANIFEST_FILE, manifest_bytes(manifest))
