"""The model bundle: a directory with ``weights.safetensors`` (no pickles) and the ``algan.json`` manifest.

Manifest (format version 1; typed as :class:`algan.contract.Manifest`, one pydantic model per section)::

    format_version, model_id, created (UTC ISO 8601), algan_edge_version,
    backbone:    BackboneSpec (name, blocks, pooling, input_size [H, W], mean, std, weights_sha256, weights_path)
    input:       {height, width, layout: NHWC, dtype: uint8, colour_order: BGR}
    variant:     feature | image | patch
    features:    {transform: standardize|pca (patch: none|random|pca), in_dim, dim}
    head:        {kind: algan|mahalanobis|knn (patch: algan|patchcore|padim), settings: {...}}
    patch:       PatchSpec of the patch variant (stride, aggregate, projection, map_stride, smoothing, reduction,
                 map_norm: the per-location map normalisation, none when absent (bundles written before it))
    outputs:     ["scores"] or ["scores", "anomaly_maps"] (patch heads); anomaly_map: {height, width, reduction,
                 grid, normalization, normalization_images}; the normalisation's statistics are the weights'
                 ``postprocess.norm.mean`` / ``postprocess.norm.scale`` (h, w)
    calibration: {center, threshold, target_fpr, n_images, source}
    training:    {data: dataset summary, n_train, n_holdout, seed, train_s, final losses}
    exports:     filled by algan-export
    roi:         [x, y, w, h] the frames were cropped to before resizing, or null (the whole frame)

The backbone's ImageNet weights are not copied into the bundle: they are rebuilt from their package and checked
against ``weights_sha256``. ``samples.safetensors`` optionally holds a few uint8 held-out normal frames
(N, H, W, 3) for parity checks and INT8 calibration without the original data.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from algan.contract import (
    BUNDLE_DIR_MODE,
    BUNDLE_FILE_MODE,
    FORMAT_VERSION,
    IMAGES_KEY,
    MANIFEST_FILE,
    SAMPLES_FILE,
    WEIGHTS_FILE,
    BundleError,
    CalibrationSection,
    Manifest,
    atomic_directory,
    check_output_dir,
    load_manifest,
    parse_manifest,
    write_manifest,
)

if TYPE_CHECKING:
    from algan.features.base import BackboneSpec

#: state-dict prefixes that are stored; the backbone and preprocessing are rebuilt from the manifest.
STORED_PREFIXES = ("transform.", "head.", "calibration.", "postprocess.norm.")

__all__ = ["FORMAT_VERSION", "BundleError", "Manifest", "load_bundle", "load_samples",
           "save_bundle", "update_calibration", "write_manifest"]


def _load_weights(wpath: Path) -> dict:
    """``safetensors.torch.load_file`` with its errors (a truncated file, a pickle renamed) as one BundleError line."""
    from safetensors.torch import load_file

    try:
        return load_file(str(wpath))
    except OSError as exc:
        raise BundleError(f"cannot read {wpath} ({exc.strerror or exc}); check its permissions") from None
    except Exception as exc:  # safetensors_rust.SafetensorError: truncated, not safetensors (e.g. a pickle)
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise BundleError(f"{wpath} is damaged or not a safetensors file ({reason}); copy the bundle again or "
                          "re-train it") from None



def save_bundle(model_dir: str | Path, detector, manifest: Manifest | dict, extra_tensors: dict | None = None,
                samples: np.ndarray | None = None) -> Path:
    """Write a bundle. The directory is built under a temporary name and renamed into place, so an interrupted
    save never leaves a half-written bundle (an existing bundle at ``model_dir`` is replaced only on success).

    Args:
        detector: :class:`algan.model.detector.AnomalyDetector`.
        manifest: the manifest (a dict is validated into a :class:`Manifest`; ``format_version`` is set here).

        extra_tensors: more named tensors to store (e.g. the generator, ``generator.*``).
        samples: optional uint8 (N, H, W, 3) held-out normal frames.

    Raises:
        BundleError: a manifest dict with a missing or mistyped field.
        OutputDirError: ``model_dir`` exists, is not empty and is not a bundle, or holds files no bundle has
            (:func:`algan.contract.check_output_dir`); nothing is written.
    """
    from safetensors.torch import save_file

    model_dir = Path(model_dir)
    # replaces only an earlier bundle: a directory holding anything else is refused (OutputDirError)
    check_output_dir(model_dir, force=True, flag="model directory")
    data = manifest.to_json() if isinstance(manifest, Manifest) else dict(manifest)
    data = {"format_version": FORMAT_VERSION, **data}
    data["format_version"] = FORMAT_VERSION
    manifest = parse_manifest(data, model_dir / MANIFEST_FILE)
    with atomic_directory(model_dir) as tmp:  # fsynced, then swapped in; removed on any error
        os.chmod(tmp, BUNDLE_DIR_MODE)  # mkdtemp gives 0700: the service user must read the bundle
        state = {k: v.detach().contiguous() for k, v in detector.state_dict().items() if k.startswith(STORED_PREFIXES)}
        for k, v in (extra_tensors or {}).items():
            state[k] = v.detach().contiguous()
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"model_id": manifest.model_id})
        if samples is not None:
            import torch

            save_file({IMAGES_KEY: torch.from_numpy(np.ascontiguousarray(samples))}, str(tmp / SAMPLES_FILE))
        for f in tmp.iterdir():
            os.chmod(f, BUNDLE_FILE_MODE)
        write_manifest(tmp, manifest)
    return model_dir


def load_samples(model_dir: str | Path) -> np.ndarray | None:
    """The bundle's stored uint8 (N, H, W, 3) sample frames, or ``None``."""
    path = Path(model_dir) / SAMPLES_FILE
    if not path.is_file():
        return None
    from safetensors.numpy import load_file

    return load_file(str(path))[IMAGES_KEY]


def _check_in_dim(model_dir: Path, spec: BackboneSpec, backbone_dim: int, in_dim: int) -> None:
    """Refuse a manifest whose backbone gives other features than the ones the head was trained on (e.g. a hand-edited
    ``backbone.name`` or ``blocks``): one line instead of a tensor-size error at the first image."""
    if backbone_dim != in_dim:
        raise BundleError(f"{model_dir / MANIFEST_FILE}: backbone {spec.name} blocks {spec.blocks} gives "
                          f"{backbone_dim}-d features, but the head was trained on {in_dim}-d ones (features.in_dim); "
                          "the manifest's backbone section was changed after training: restore it or re-train the "
                          "bundle")


def load_bundle(model_dir: str | Path):
    """Rebuild the torch detector of a bundle.

    Returns:
        ``(detector, manifest)``; the detector is an :class:`AnomalyDetector` in eval mode.

    Raises:
        BundleError: missing/invalid files or tensors that do not match the manifest.
    """
    import torch

    from algan.features.backbone import BackboneSpec, Preprocess, build_backbone
    from algan.model.detector import AnomalyDetector, Calibration
    from algan.model.heads.registry import MissingSetting, check_global_branch, head_kind
    from algan.model.heads.vector import FeatureTransform

    model_dir = Path(model_dir)
    manifest = load_manifest(model_dir)
    wpath = model_dir / WEIGHTS_FILE
    if not wpath.is_file():
        raise BundleError(f"{wpath} is missing; the bundle is incomplete, re-train it")
    feat = manifest.require("features")
    head_cfg = manifest.require("head")
    bb = manifest.require("backbone")
    cal = manifest.calibration
    variant, settings = manifest.variant, head_cfg.settings
    try:
        kind = head_kind(variant, head_cfg.kind)
    except ValueError as exc:
        raise BundleError(f"{model_dir / MANIFEST_FILE}: {exc}; re-train the bundle or use the algan-edge version "
                          "that wrote it") from None
    postprocess = None
    if variant == "image":
        from algan.model.gan.image import ImageConfig, PixelBackbone

        icfg = ImageConfig.from_json(settings)
        input_size = (icfg.size, icfg.size)
        preprocess, backbone = Preprocess(bb.mean, bb.std), PixelBackbone(icfg.channels)
        transform = torch.nn.Identity()
    elif variant == "patch":
        from algan.features.patch import MapPostprocess, PatchFeatureMaps, PatchProjection, PatchSpec

        spec = BackboneSpec.from_json(bb.to_json())
        # a manifest without patch.map_norm predates the map normalisation: its maps have none
        patch_json = manifest.patch.to_json() if manifest.patch is not None else {}
        pspec = PatchSpec.from_json({**patch_json, "map_norm": manifest.patch.map_norm if manifest.patch else "none"})
        input_size = spec.input_size
        preprocess, backbone = Preprocess(spec.mean, spec.std), PatchFeatureMaps(spec, pspec)
        _check_in_dim(model_dir, spec, backbone.out_dim, feat.in_dim)
        transform = PatchProjection(feat.transform, feat.in_dim, feat.dim)
        postprocess = MapPostprocess(pspec, input_size)
    else:
        spec = BackboneSpec.from_json(bb.to_json())
        input_size = spec.input_size
        preprocess, backbone = Preprocess(spec.mean, spec.std), build_backbone(spec)
        _check_in_dim(model_dir, spec, backbone.out_dim, feat.in_dim)
        transform = FeatureTransform.empty(feat.transform, feat.in_dim, feat.dim)
    try:
        head = kind.load(settings, feat.dim)
    except MissingSetting as exc:
        raise manifest.field_error(f"head.settings.{exc.args[0]}") from None
    except (ValueError, TypeError) as exc:  # a hand-edited value the head cannot be built from
        raise manifest.field_error("head.settings", f"is invalid ({exc})") from None
    det = AnomalyDetector(preprocess, backbone, transform, head,
                          Calibration(cal.center, cal.threshold), input_size=input_size, postprocess=postprocess)
    if manifest.tiling is not None:
        from algan.runtime.tiling import manifest_tiling

        det.tiling = manifest_tiling(manifest)
    state = _load_weights(wpath)
    wanted = {k for k in det.state_dict() if k.startswith(STORED_PREFIXES)}
    stored = {k: v for k, v in state.items() if k.startswith(STORED_PREFIXES)}
    if set(stored) != wanted:
        missing = sorted(wanted - set(stored))[:3]
        extra = sorted(set(stored) - wanted)[:3]
        raise BundleError(f"{wpath} does not match its manifest (missing {missing}, unexpected {extra}); re-train")
    try:
        det.load_state_dict(stored, strict=False)
    except RuntimeError as exc:
        raise BundleError(f"{wpath} does not match its manifest: {str(exc).splitlines()[0]}; re-train") from exc
    if (why := check_global_branch(head, settings)) is not None:
        raise manifest.field_error("head.settings.global_branch.weight", why)
    det.eval()
    return det, manifest


def update_calibration(model_dir: str | Path, center: float, threshold: float, info: dict,
                       roi: Sequence[int] | None | Literal["keep"] = "keep") -> Manifest:
    """Replace a bundle's score calibration in place (weights and manifest), keeping its exports.

    ``weights.safetensors`` gets new ``calibration.center`` / ``calibration.scale`` (= threshold - center) tensors
    and ``algan.json`` a new ``calibration`` section (``center``, ``threshold`` plus ``info``). Both files are
    written to temporary names first and renamed, weights before manifest.

    Args:
        roi: the crop ``[x, y, w, h]`` the calibration scores were computed on (``None`` = whole frames), recorded as
            the manifest's ``roi`` in the same write; ``"keep"`` (default) leaves the recorded ROI as it is.

    Returns:
        the updated manifest.

    Raises:
        BundleError: not a bundle; ValueError: threshold not above center.
    """
    import torch
    from safetensors.torch import save_file

    if not threshold > center:
        raise ValueError(f"threshold ({threshold}) must exceed the normal-score center ({center})")
    model_dir = Path(model_dir)
    manifest = load_manifest(model_dir)
    wpath = model_dir / WEIGHTS_FILE
    if not wpath.is_file():
        raise BundleError(f"{wpath} is missing; the bundle is incomplete, re-train it")
    state = _load_weights(wpath)
    state["calibration.center"] = torch.tensor(float(center), dtype=torch.float32)
    state["calibration.scale"] = torch.tensor(float(threshold - center), dtype=torch.float32)
    fd, tmp = tempfile.mkstemp(dir=model_dir, prefix=f".{WEIGHTS_FILE}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(state, tmp, metadata={"model_id": manifest.model_id})
        os.chmod(tmp, BUNDLE_FILE_MODE)
        os.replace(tmp, wpath)
    finally:
        Path(tmp).unlink(missing_ok=True)
    manifest.calibration = CalibrationSection.model_validate({**info, "center": float(center),
                                                              "threshold": float(threshold)})
    if roi != "keep":
        manifest.roi = [int(v) for v in roi] if roi is not None else None
    write_manifest(model_dir, manifest)
    return manifest
