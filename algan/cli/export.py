"""``algan-export``: ONNX graph (+ FP16 / TensorRT when asked) with a parity check against torch."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from algan.cli._common import run_cli, setup_logging

FP32_TOLERANCE = 1e-4


def _parity_images(model_dir: Path, images_dir: str | None, size: tuple[int, int]) -> np.ndarray:
    from algan.bundle import load_samples
    from algan.data.datasets import IMAGE_SUFFIXES
    from algan.data.preprocess import load_batch

    parts = []
    samples = load_samples(model_dir)
    if samples is not None:
        parts.append(samples)
    if images_dir:
        d = Path(images_dir)
        if not d.is_dir():
            raise ValueError(f"--images {d} is not a directory")
        files = sorted(p for p in d.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:64]
        if not files:
            raise ValueError(f"--images {d} holds no image files")
        parts.append(load_batch(files, size))
    if not parts:
        raise ValueError(f"{model_dir} stores no sample images; pass --images DIR for the parity check")
    return np.concatenate(parts)


def _main(args: argparse.Namespace) -> int:
    from algan.bundle import load_bundle, utc_now_iso, write_manifest
    from algan.export.onnx_export import export_onnx, parity

    model_dir = Path(args.model_dir)
    det, manifest = load_bundle(model_dir)
    onnx_path = model_dir / "model.onnx"
    export_onnx(det, manifest, onnx_path, opset=args.opset)
    images = _parity_images(model_dir, args.images, det.input_size)
    rep = parity(det, onnx_path, images)
    ok = rep["max_abs_diff"] <= FP32_TOLERANCE
    print(f"wrote {onnx_path}: uint8 BGR [N,{det.input_size[0]},{det.input_size[1]},3] -> float32 scores [N]")
    print(f"parity (FP32): max |ONNX Runtime - torch| = {rep['max_abs_diff']:.2e} over {rep['n_images']} images "
          f"(tolerance {FP32_TOLERANCE:g}) {'OK' if ok else 'FAILED'}")
    if not ok:
        onnx_path.unlink(missing_ok=True)
        print("algan-export: error: parity check failed; the ONNX graph was removed", file=sys.stderr)
        return 1
    manifest.setdefault("exports", {})["onnx"] = {
        "file": onnx_path.name, "opset": args.opset, "created": utc_now_iso(),
        "parity_max_abs_diff": rep["max_abs_diff"], "parity_images": rep["n_images"],
    }
    write_manifest(model_dir, manifest)
    if args.fp16:
        from algan.export.tensorrt import tensorrt_status

        available, reason = tensorrt_status()
        if not available:
            print(f"wrote the ONNX graph; no TensorRT engine was built: {reason}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="algan-export", description="Export a model bundle to ONNX (and TensorRT).")
    p.add_argument("model_dir", help="model bundle directory")
    p.add_argument("--fp16", action="store_true", help="also build an FP16 TensorRT engine where TensorRT exists")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 17)")
    p.add_argument("--images", default=None, help="directory of extra images for the parity check")
    p.add_argument("--log-level", default="WARNING")
    args = p.parse_args(argv)
    setup_logging(args.log_level)
    return run_cli("algan-export", lambda: _main(args))


if __name__ == "__main__":
    sys.exit(main())
