"""``algan-export``: ONNX graph, FP16 ONNX, TensorRT engine and Triton repository, each checked against torch.

Usage::

    algan-export MODEL_DIR [--fp16] [--int8] [--batch MIN:OPT:MAX] [--workspace-mib N] [--opset 17]
                 [--images DIR] [--data DIR [--layout L] [--max-data N]] [--triton-repo DIR] [--no-simplify]
                 [--sign KEY]

Exit codes: 0 done (also when TensorRT is absent: the ONNX graphs are written and the reason is printed),
1 export failed (parity, checker, engine build; nothing is written), 2 user error (missing bundle, bad option).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from algan.cli._common import DeprecatedFlag, add_quiet, add_version, run_cli, setup_logging


def _batch(text: str):
    from algan.export.tensorrt import BatchProfile

    try:
        return BatchProfile.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="algan-export", description="Export a model bundle to ONNX, FP16 ONNX, a "
                                "TensorRT engine and a Triton model repository, with parity checks against torch.")
    p.add_argument("model_dir", help="model bundle directory (algan-train --out)")
    p.add_argument("--fp16", action="store_true", help="also write model.fp16.onnx and, where TensorRT is "
                   "installed, an FP16 engine")
    p.add_argument("--int8", action="store_true", help="build an INT8 engine from MODEL_DIR/"
                   "int8_calibration.safetensors (algan-calibrate); TensorRT < 11 only")
    p.add_argument("--batch-profile", dest="batch", type=_batch, default="1:8:16", metavar="MIN:OPT:MAX",
                   help="engine batch profile and Triton max batch size (default 1:8:16)")
    p.add_argument("--batch", dest="batch", type=_batch, action=DeprecatedFlag, new="--batch-profile")
    p.add_argument("--workspace-mib", type=_positive, default=1024, help="TensorRT builder workspace (MiB)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 17)")
    p.add_argument("--images", type=Path, default=None, help="directory of extra frames for the parity check")
    p.add_argument("--data", type=Path, default=None, help="labelled data (MVTec AD / MTD layout): parity on part "
                   "of it and the AUROC change of the FP16 graph")
    p.add_argument("--layout", default="auto", choices=["auto", "mvtec", "mtd", "folder"], help="layout of --data")
    p.add_argument("--max-data", type=int, default=256, help="use at most N test images of --data, spread over "
                   "normal and anomalous (default 256; 0 = all)")
    p.add_argument("--triton-repo", type=Path, default=None, help="write a Triton model repository here")
    p.add_argument("--triton-name", default="algan", help="Triton model name (default algan)")
    p.add_argument("--triton-queue-delay-us", type=int, default=2000,
                   help="Triton dynamic batching max_queue_delay_microseconds")
    p.add_argument("--no-simplify", action="store_true", help="skip the onnxslim/onnxsim pass")
    p.add_argument("--sign", type=Path, default=None, metavar="KEY",
                   help="sign the bundle (algan.sig: Ed25519 over algan.json, the graphs and the weights) with the "
                   "private key KEY from algan-edge keygen; a daemon with model.trusted_keys refuses unsigned bundles")
    p.add_argument("--log-level", default="WARNING")
    add_quiet(p, "print only the last line (what was written, in how long), warnings and errors")
    return add_version(p)


def _main(args: argparse.Namespace) -> int:
    from algan.export.pipeline import ExportOptions, export_bundle
    from algan.runtime.signing import SignatureError, check_signing_key, sign_bundle

    if args.sign is not None:
        try:
            check_signing_key(args.sign)  # an unusable key is refused before the export's work
        except SignatureError as e:
            raise ValueError(str(e)) from None

    opts = ExportOptions(model_dir=Path(args.model_dir), fp16=args.fp16, int8=args.int8, batch=args.batch,
                         workspace_mib=args.workspace_mib, opset=args.opset, images=args.images, data=args.data,
                         layout=args.layout, max_data=args.max_data, simplify=not args.no_simplify,
                         triton_repo=args.triton_repo, triton_name=args.triton_name,
                         triton_queue_delay_us=args.triton_queue_delay_us)
    lines: list[str] = []
    export_bundle(opts, say=lines.append if args.quiet else (lambda line: print(line, flush=True)))
    if args.quiet and lines:
        print(lines[-1], flush=True)
    if args.sign is not None:
        try:
            sig = sign_bundle(Path(args.model_dir), args.sign)
        except SignatureError as e:
            raise ValueError(str(e)) from None
        print(f"signed {args.model_dir}: wrote {sig}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    return run_cli("algan-export", lambda: _main(args))


if __name__ == "__main__":
    sys.exit(main())
