"""The model contract, said once: what training writes, export bakes into the graph and the edge runtime reads.

Torch-free and light (standard library and numpy only), so that every layer may import it: ``data``,
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
the edge re-maps scores (and maps) after a re-calibration.

Bundle directory: :data:`MANIFEST_FILE` (the manifest), :data:`WEIGHTS_FILE`, :data:`SAMPLES_FILE` (held-out normal
frames), :data:`ONNX_FILE`, :data:`ENGINE_FILE`.

The threshold rule (:func:`order_statistic_rank`, :func:`empirical_threshold`) is the one order statistic that both
training (``algan.model.fit``) and re-calibration (``algan.calibration.threshold``) use for "the threshold at a
target false-alarm rate".
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

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

# -- bundle files -------------------------------------------------------------------------------------------
MANIFEST_FILE = "algan.json"
WEIGHTS_FILE = "weights.safetensors"
SAMPLES_FILE = "samples.safetensors"
ONNX_FILE = "model.onnx"
ENGINE_FILE = "model.engine"

#: image file suffixes (lower case) read from data sets, image-folder cameras and folder-to-video conversion: the
#: formats OpenCV's ``imread`` decodes in the opencv-python wheels
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm"})


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
