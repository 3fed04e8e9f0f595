"""``algan-export`` as a function: stage every artifact, check parity, then commit by renaming.

Order: FP32 ONNX -> parity vs torch -> optional simplification (kept only if parity holds) -> FP16 ONNX -> parity
-> AUROC on labelled data -> TensorRT engine (where the builder is installed) -> rename into the bundle -> manifest
``exports`` -> Triton repository. Everything is written in a staging directory inside the bundle first; a failed
check raises :class:`ExportError` and the staging directory is removed, so the bundle never holds half an export.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from algan.contract import (
    ENGINE_FILE,
    ENGINE_INT8_CACHE_FILE,
    ENGINE_SIDECAR_FILE,
    ENGINE_TIMING_CACHE_FILE,
    FP16_ONNX_FILE,
    INT8_SET_FILE,
    MAP_OUTPUTS,
    ONNX_FILE,
    EngineExport,
    Exports,
    GraphExport,
    TritonExport,
    file_sha256,
    load_manifest,
    write_manifest,
)
from algan.export import parity as par
from algan.export.onnx_export import DEFAULT_OPSET, ExportError, export_onnx, ort_outputs, simplify_onnx, torch_outputs
from algan.export.tensorrt import (
    DEFAULT_WORKSPACE_MIB,
    BatchProfile,
    EngineRequest,
    build_engine,
    plan_build,
    tensorrt_status,
)
from algan.runtime.tiling import FrameTiling, bundle_tiling, load_tiles, untile

log = logging.getLogger(__name__)

@dataclass
class ExportOptions:
    """What ``algan-export`` was asked to do (CLI flags)."""

    model_dir: Path
    fp16: bool = False
    int8: bool = False
    batch: BatchProfile = field(default_factory=BatchProfile)
    workspace_mib: int = DEFAULT_WORKSPACE_MIB
    opset: int = DEFAULT_OPSET
    images: Path | None = None
    data: Path | None = None
    layout: str = "auto"
    max_data: int = 256
    simplify: bool = True
    triton_repo: Path | None = None
    triton_name: str = "algan"
    triton_queue_delay_us: int = 2000


@dataclass
class ExportReport:
    """What an export produced: final file paths, parity results, AUROC figures and notes."""

    files: dict[str, Path] = field(default_factory=dict)
    parity: list[par.ParityResult] = field(default_factory=list)
    auroc: dict | None = None
    engine_note: str = ""
    seconds: float = 0.0
    fp16_fp32_blocks: int | None = None  # leading backbone blocks kept float32 in model.fp16.onnx


def _load_calibration_set(model_dir: Path, size: tuple[int, int]) -> np.ndarray:
    path = model_dir / INT8_SET_FILE
    if not path.is_file():
        raise ValueError(f"--int8 needs {path} (tensor 'images', uint8 [N,H,W,3]); run algan-calibrate first")
    from safetensors.numpy import load_file

    imgs = load_file(str(path)).get("images")
    if imgs is None or imgs.dtype != np.uint8 or imgs.ndim != 4 or imgs.shape[1:] != (*size, 3):
        got = None if imgs is None else (imgs.dtype, imgs.shape)
        raise ValueError(f"{path} must hold tensor 'images' uint8 [N,{size[0]},{size[1]},3], got {got}; "
                         "re-run algan-calibrate")
    return imgs


@dataclass
class _Labelled:
    """The graph inputs of ``--data``'s test images (uint8 (N, H, W, 3); a tiled bundle's: every image's tiles,
    (N * T, H, W, 3)), their labels (N,), and for a tiled bundle the grid and each image's ROI ``(h, w)``."""

    inputs: np.ndarray
    labels: np.ndarray
    tiling: FrameTiling | None = None
    shapes: list[tuple[int, int]] | None = None

    def __getitem__(self, i: int):  # noqa: ANN204
        return (self.inputs, self.labels)[i]

    def tile_index(self, image_index: np.ndarray) -> np.ndarray:
        """Rows of :attr:`inputs` for images ``image_index``: the middle tile of each (a tiled bundle)."""
        if self.tiling is None:
            return image_index
        t = self.tiling.spec.n_tiles
        return np.asarray(image_index) * t + t // 2

    def scores(self, path: Path) -> np.ndarray:
        """Image scores of the graph at ``path`` (ONNX Runtime): the graph's ``scores``, or for a tiled bundle the
        reduction of the stitched maps (:func:`algan.runtime.tiling.untile`)."""
        out = ort_outputs(path, self.inputs)
        if self.tiling is None:
            return out[0]
        t = self.tiling
        assert self.shapes is not None
        return untile(out[0], out[1] if len(out) > 1 else None, self.shapes, t.spec, t.reduction, t.topk).scores


def _labelled(opts: ExportOptions, size: tuple[int, int], tiling: FrameTiling | None = None) -> _Labelled | None:
    """uint8 test images and labels of ``--data`` (spread subset of ``--max-data`` when > 0), or None."""
    if opts.data is None:
        return None
    from algan.data.datasets import load_dataset
    from algan.runtime.preprocess import current_roi, load_batch, prepare_roi, read_image

    ds = load_dataset(opts.data, opts.layout)
    if not ds.test:
        raise ValueError(f"--data {opts.data} has no labelled test images (layout {ds.layout}); use an MVTec AD or "
                         "MTD layout, or --images for unlabelled frames")
    labels = np.array([s.label for s in ds.test])
    idx = par.spread_indices(labels, opts.max_data) if opts.max_data > 0 else np.arange(len(labels))
    paths = [ds.test[i].path for i in idx]
    if tiling is None:
        return _Labelled(load_batch(paths, size), labels[idx])
    shapes = [prepare_roi(read_image(p), current_roi()).shape[:2] for p in paths]
    return _Labelled(load_tiles(paths, size, tiling.spec), labels[idx], tiling, shapes)


def _auroc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    from algan.model.evaluation.image_eval import auroc

    try:
        return auroc(labels, scores)
    except ValueError:  # a single class
        return None


def _compare(name: str, ref: tuple, cand: tuple, tolerance: float, metric: str = "abs") -> list[par.ParityResult]:
    """Parity of ``(scores, maps or None)`` against the reference's: one result for the scores, one for the maps."""
    out = [par.compare(name, ref[0], cand[0], tolerance, metric)]
    if ref[1] is not None:
        if cand[1] is None:
            raise ExportError(f"{name}: the graph lost its anomaly_maps output")
        out.append(par.compare(f"{name} maps", ref[1], cand[1], tolerance, metric))
    return out


def _check(report: ExportReport, result: par.ParityResult, say: Callable[[str], None], what: str,
           why: str = "", fix: str = "") -> None:
    report.parity.append(result)
    say(result.line())
    if not result.ok:
        raise ExportError(f"parity check failed for {what}{why}; nothing was written to the bundle{fix}")


def export_bundle(opts: ExportOptions, say: Callable[[str], None] = print, trt=None) -> ExportReport:
    """Run the whole export of one bundle.

    Args:
        opts: the request.
        say: receives one human-readable line per step.
        trt: a ``tensorrt`` module (tests pass a stand-in); None imports it when needed.

    Returns:
        :class:`ExportReport` of the committed export.

    Raises:
        BundleError / ValueError: missing bundle, unsupported format, bad option values, missing data.
        ExportError: tracing, checker, parity or engine build failures (nothing is committed).
    """
    from algan.bundle import load_bundle
    from algan.contract import utc_now_iso

    t0 = time.monotonic()
    model_dir = Path(opts.model_dir)
    det, manifest = load_bundle(model_dir)
    size = det.input_size
    want_engine = opts.fp16 or opts.int8
    trt_ok, trt_reason = (True, "") if trt is not None else (tensorrt_status() if want_engine else (False, ""))
    calib = None
    if want_engine and trt_ok:
        if trt is None:
            import tensorrt as trt
        plan_build(trt.__version__, opts.fp16, opts.int8)  # fail before any work on an unsupported request
        if opts.int8:
            calib = _load_calibration_set(model_dir, size)
    report = ExportReport()
    staging = Path(tempfile.mkdtemp(dir=model_dir, prefix=".export-"))
    try:
        onnx_path = export_onnx(det, manifest, staging / ONNX_FILE, opset=opts.opset)
        images = par.parity_images(model_dir, opts.images, size)
        labelled = _labelled(opts, size, bundle_tiling(model_dir))
        if labelled is not None:
            pick = labelled.tile_index(par.spread_indices(labelled[1], par.DATA_PARITY_IMAGES))
            images = np.concatenate([images, labelled[0][pick]])
        if len(images) == 0:
            raise ValueError(f"{model_dir} stores no sample images; pass --images DIR or --data DIR for parity")
        import onnx

        n_nodes = len(onnx.load(str(onnx_path), load_external_data=False).graph.node)
        maps_note = (f" + anomaly_maps [N,{det.map_size[0]},{det.map_size[1]}]" if det.has_maps else "")
        say(f"wrote {ONNX_FILE}: uint8 BGR [N,{size[0]},{size[1]},3] -> float32 scores [N]{maps_note} "
            f"(opset {opts.opset}, {n_nodes} nodes)")
        ref = torch_outputs(det, images)
        narrow = narrow_calibration_hint(manifest.calibration.center, manifest.calibration.threshold)
        for res in _compare("onnx-fp32", ref, ort_outputs(onnx_path, images), par.FP32_TOLERANCE):
            _check(report, res, say, ONNX_FILE, fix=narrow)
        simplified = None
        if opts.simplify:
            slim = staging / "model.slim.onnx"
            tool = simplify_onnx(onnx_path, slim)
            if tool is None:
                say("simplification skipped: neither onnxslim nor onnxsim is installed")
            else:
                results = _compare("onnx-fp32 simplified", ref, ort_outputs(slim, images), par.FP32_TOLERANCE)
                n_slim = len(onnx.load(str(slim), load_external_data=False).graph.node)
                if all(r.ok for r in results):
                    os.replace(onnx_path, staging / "model.unsimplified.onnx")
                    os.replace(slim, onnx_path)
                    simplified = tool
                    report.parity[-len(results):] = results
                    say(f"simplified with {tool}: {n_nodes} -> {n_slim} nodes; {results[0].line()}")
                else:
                    slim.unlink(missing_ok=True)
                    worst = max(r.max_abs_diff for r in results)
                    say(f"simplification with {tool} dropped: {worst:.2e} > {par.FP32_TOLERANCE:g} "
                        "against torch; the unsimplified graph is kept")
        fp16_path = None
        s32 = labelled.scores(onnx_path) if labelled is not None else None
        if opts.fp16:
            fp16_path, s16 = _fp16_graph(staging, onnx_path, simplified, ref, images, labelled, s32, report, say,
                                         narrow)
        if labelled is not None:
            y = labelled[1]
            report.auroc = {"data": str(opts.data), "n_images": int(len(y)), "n_anomalous": int(y.sum()),
                            "onnx_fp32": _auroc(y, s32)}
            if fp16_path is not None:
                a16 = _auroc(y, s16)
                report.auroc["onnx_fp16"] = a16
                if a16 is not None and report.auroc["onnx_fp32"] is not None:
                    report.auroc["change_fp16"] = a16 - report.auroc["onnx_fp32"]
            say(_auroc_line(report.auroc))
        staged = {ONNX_FILE: onnx_path}
        if fp16_path is not None:
            staged[FP16_ONNX_FILE] = fp16_path
        engine = None
        if want_engine and not trt_ok:
            written = " and ".join(staged)
            report.engine_note = (f"{written} written; no TensorRT engine was built: {trt_reason}")
        elif want_engine:
            engine = _build(opts, trt, staging, onnx_path, fp16_path, size, calib, staged, say)
            report.engine_note = (f"built {ENGINE_FILE} ({engine.plan.precision}, TensorRT "
                                  f"{engine.sidecar.tensorrt_version}, {engine.sidecar.gpu_name})")
        # commit: rename staged files into the bundle, then the manifest
        for name, path in staged.items():
            os.chmod(path, 0o644)
            os.replace(path, model_dir / name)
            report.files[name] = model_dir / name
        exports = _exports_entry(model_dir, report, opts, simplified, engine, utc_now_iso())
        latest = load_manifest(model_dir)
        kept = latest.exports.model_copy()
        stale_fp16 = model_dir / FP16_ONNX_FILE
        if fp16_path is None and (stale_fp16.exists() or kept.onnx_fp16 is not None):
            # an FP16 graph from an earlier export was converted from the model.onnx replaced above (with its
            # calibration baked in): left beside it, build-engine --fp16 and GPU runners would serve old scores
            kept = Exports.model_validate({k: v for k, v in kept.to_json().items() if k != "onnx_fp16"})
            stale_fp16.unlink(missing_ok=True)
            say(f"removed {FP16_ONNX_FILE} of an earlier export: it was converted from the model.onnx replaced now; "
                "export with --fp16 to write a new one")
        latest.exports = Exports.model_validate({**kept.to_json(), **exports.to_json()})
        write_manifest(model_dir, latest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if report.engine_note:
        say(report.engine_note)
    if opts.triton_repo is not None:
        _write_triton(opts, report, size, say, model_dir)
    report.seconds = time.monotonic() - t0
    say(f"export finished in {report.seconds:.1f} s")
    return report


def _fp16_graph(staging: Path, onnx_path: Path, simplified: str | None, ref: tuple, images: np.ndarray,
                labelled: _Labelled | None, s32: np.ndarray | None, report: ExportReport,
                say: Callable[[str], None], narrow: str = "") -> tuple[Path, np.ndarray | None]:
    """Write ``model.fp16.onnx`` with as few float32 backbone blocks as parity allows (:data:`FP16_FP32_BLOCKS`).

    Each rung is checked against torch on the parity images and, with ``--data``, against the FP32 graph on all
    labelled images; the first rung that passes both is kept. Returns the FP16 graph and its scores on the labelled
    images (or None).

    Raises:
        ExportError: not even the last rung passes (nothing is written to the bundle).
    """
    from algan.export.fp16 import FP16_FP32_BLOCKS, convert_fp16, fp32_scopes

    # from the traced graph: the converter cannot always re-type a simplified one
    src = staging / "model.unsimplified.onnx" if simplified else onnx_path
    for n in FP16_FP32_BLOCKS:
        path = convert_fp16(src, staging / FP16_ONNX_FILE, fp32_scopes(n))
        checks = _compare("onnx-fp16", ref, ort_outputs(path, images), par.FP16_TOLERANCE, "scaled")
        s16 = None
        if labelled is not None:
            s16 = labelled.scores(path)
            checks.append(par.compare("onnx-fp16 vs onnx-fp32, all data", s32, s16, par.FP16_TOLERANCE, "scaled"))
        if all(c.ok for c in checks) or n == FP16_FP32_BLOCKS[-1]:
            break
        worst = max(checks, key=lambda c: c.max_scaled_diff)
        say(f"FP16 with the {_fp32_part(n)} in FP32 misses parity ({worst.line()}); keeping more blocks in FP32")
    report.fp16_fp32_blocks = n
    for c in checks:
        _check(report, c, say, FP16_ONNX_FILE, f", even with the {_fp32_part(n)} in FP32",
               ": export without --fp16 (model.onnx alone), or re-train at a larger algan-train --input-size (small "
               "inputs leave FP16 less headroom)" + narrow)
    say(f"wrote {FP16_ONNX_FILE}: FP16 backbone ({_fp32_part(n)} FP32), FP32 head and calibration, same "
        "uint8/float32 I/O")
    return path, s16


#: raw score magnitude / (threshold - median) above which a calibration is called narrow in a parity failure
NARROW_CALIBRATION = 100.0


def narrow_calibration_hint(center: float, threshold: float) -> str:
    """A sentence for a parity failure when the bundle's calibration is narrow, else ``""``.

    Parity is measured on the calibrated scale ``(raw - center) / (threshold - center)``: when the threshold lies
    close to the median normal score compared with the raw scores' size (ratio above :data:`NARROW_CALIBRATION`), a
    rounding error of the raw score is magnified by that ratio, and a graph that is exact to float32 on the raw scale
    can miss the tolerance. Such a calibration comes from near-identical normal scores (a constant or tiny
    calibration set)."""
    span = float(threshold) - float(center)
    size = max(abs(float(center)), abs(float(threshold)))
    if span <= 0 or size / span <= NARROW_CALIBRATION:
        return ""
    return (f". The bundle's calibration is narrow: threshold - median = {span:.3g} against raw scores near "
            f"{size:.3g}, so rounding of the raw score is magnified {size / span:.0f}x on the calibrated scale; "
            "re-calibrate on more varied normal frames (algan-calibrate) or re-train with more normal images")


def _fp32_part(n_blocks: int) -> str:
    return "stem" if n_blocks == 0 else f"stem and blocks 0-{n_blocks - 1}"


def _auroc_line(a: dict) -> str:
    def f(v):
        return "n/a (one class)" if v is None else f"{v:.4f}"

    line = f"AUROC on {a['data']} ({a['n_images']} test images): ONNX FP32 {f(a['onnx_fp32'])}"
    if "onnx_fp16" in a:
        line += f", ONNX FP16 {f(a['onnx_fp16'])}"
    if "change_fp16" in a:
        line += f" (change {a['change_fp16']:+.4f})"
    return line


def _build(opts, trt, staging, onnx_path, fp16_path, size, calib, staged, say):
    model_dir = Path(opts.model_dir)
    timing_path = model_dir / ENGINE_TIMING_CACHE_FILE
    calib_cache_path = model_dir / ENGINE_INT8_CACHE_FILE
    req = EngineRequest(onnx_fp32=onnx_path, onnx_fp16=fp16_path, input_size=size, batch=opts.batch,
                        workspace_mib=opts.workspace_mib, fp16=opts.fp16, int8=opts.int8,
                        timing_cache=timing_path.read_bytes() if timing_path.is_file() else None,
                        calibration_images=calib,
                        calibration_cache=calib_cache_path.read_bytes() if calib_cache_path.is_file() else None)
    say(f"building the TensorRT engine (batch {opts.batch.min}:{opts.batch.opt}:{opts.batch.max}, workspace "
        f"{opts.workspace_mib} MiB{', timing cache reused' if req.timing_cache else ''}) ...")
    engine = build_engine(req, trt=trt)
    for note in engine.plan.notes:
        say(f"TensorRT: {note}")
    (staging / ENGINE_FILE).write_bytes(engine.engine)
    engine.sidecar.engine_sha256 = file_sha256(staging / ENGINE_FILE)
    (staging / ENGINE_SIDECAR_FILE).write_text(engine.sidecar.text())
    staged[ENGINE_FILE] = staging / ENGINE_FILE
    staged[ENGINE_SIDECAR_FILE] = staging / ENGINE_SIDECAR_FILE
    if engine.timing_cache:
        (staging / ENGINE_TIMING_CACHE_FILE).write_bytes(engine.timing_cache)
        staged[ENGINE_TIMING_CACHE_FILE] = staging / ENGINE_TIMING_CACHE_FILE
    if engine.calibration_cache:
        (staging / ENGINE_INT8_CACHE_FILE).write_bytes(engine.calibration_cache)
        staged[ENGINE_INT8_CACHE_FILE] = staging / ENGINE_INT8_CACHE_FILE
    return engine


def _exports_entry(model_dir: Path, report: ExportReport, opts: ExportOptions, simplified: str | None, engine,
                   created: str) -> Exports:
    by_name = {r.name: r for r in report.parity}
    out = Exports()
    p32 = by_name.get("onnx-fp32 simplified") or by_name["onnx-fp32"]
    out.onnx = GraphExport(file=ONNX_FILE, sha256=file_sha256(model_dir / ONNX_FILE), opset=opts.opset,
                           simplified_with=simplified, created=created, parity_max_abs_diff=p32.max_abs_diff,
                           parity_images=p32.n_images, parity_tolerance=p32.tolerance)
    if FP16_ONNX_FILE in report.files:
        p16 = by_name["onnx-fp16"]
        out.onnx_fp16 = GraphExport(file=FP16_ONNX_FILE, sha256=file_sha256(model_dir / FP16_ONNX_FILE),
                                    created=created, parity_max_abs_diff=p16.max_abs_diff,
                                    parity_max_scaled_diff=p16.max_scaled_diff, parity_images=p16.n_images,
                                    parity_tolerance=p16.tolerance, fp32_backbone_blocks=report.fp16_fp32_blocks)
    out.parity = [r.to_json() for r in report.parity]
    maps = by_name.get("onnx-fp32 simplified maps") or by_name.get("onnx-fp32 maps")
    if maps is not None:
        out.onnx.outputs = list(MAP_OUTPUTS)
        out.onnx.maps_parity_max_abs_diff = maps.max_abs_diff
    if report.auroc is not None:
        out.auroc = report.auroc
    if engine is not None:
        out.engine = EngineExport.of(engine.sidecar)
    elif opts.fp16 or opts.int8:
        out.engine = EngineExport(file=None, note=report.engine_note, created=created)
    return out


def _write_triton(opts: ExportOptions, report: ExportReport, size, say, model_dir: Path) -> None:
    from algan.export.triton import TritonModel, write_model

    b = opts.batch
    common = {"input_size": size, "max_batch_size": b.max, "preferred_batch_sizes": tuple({b.opt, b.max}),
              "max_queue_delay_us": opts.triton_queue_delay_us}
    onnx_src = report.files.get(FP16_ONNX_FILE) if opts.fp16 else report.files[ONNX_FILE]
    models = []
    if ENGINE_FILE in report.files:
        models.append(TritonModel(opts.triton_name, "tensorrt_plan", report.files[ENGINE_FILE], **common))
        models.append(TritonModel(f"{opts.triton_name}-onnx", "onnxruntime_onnx", onnx_src, **common))
    else:
        models.append(TritonModel(opts.triton_name, "onnxruntime_onnx", onnx_src, **common))
    written = [write_model(opts.triton_repo, m) for m in models]
    for m, d in zip(models, written, strict=True):
        say(f"wrote Triton model {d} ({m.platform}, {Path(m.source).name}, max_batch_size {m.max_batch_size})")
    manifest = load_manifest(model_dir)
    manifest.exports.triton = TritonExport(repository=str(opts.triton_repo), models=[m.name for m in models])
    write_manifest(model_dir, manifest)
