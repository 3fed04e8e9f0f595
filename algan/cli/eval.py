"""``algan-eval``: image-level AUROC of a model bundle on a labelled test split."""

from __future__ import annotations

import argparse
import json
import sys

from algan.cli._common import run_cli, setup_logging


def _main(args: argparse.Namespace) -> int:
    from algan.bundle import load_bundle
    from algan.data.datasets import load_dataset
    from algan.model.evaluate import evaluate

    det, manifest = load_bundle(args.model_dir)
    ds = load_dataset(args.data, args.layout)
    res = evaluate(det, ds, progress=not (args.json or args.quiet))
    if args.json:
        print(json.dumps({
            "model_id": manifest["model_id"],
            "head": manifest["head"]["kind"],
            "auroc": round(res["auroc"], 6),
            "n_normal": res["n_normal"],
            "n_anomalous": res["n_anomalous"],
            "per_class": {k: round(v, 6) for k, v in res["per_class"].items()},
        }))
    else:
        print(f"model {manifest['model_id']} ({manifest['head']['kind']}) on {ds.root}: image AUROC "
              f"{res['auroc']:.4f} ({res['n_normal']} normal, {res['n_anomalous']} anomalous test images)")
        for cls, v in res["per_class"].items():
            print(f"  {cls:<12} AUROC {v:.4f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="algan-eval", description="Score the test split and print image-level AUROC.")
    p.add_argument("model_dir", help="model bundle directory")
    p.add_argument("--data", required=True, help="data directory with a labelled test split (mvtec or mtd layout)")
    p.add_argument("--layout", default="auto", choices=["auto", "mvtec", "mtd", "folder"])
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--log-level", default="WARNING")
    args = p.parse_args(argv)
    setup_logging(args.log_level)
    return run_cli("algan-eval", lambda: _main(args))


if __name__ == "__main__":
    sys.exit(main())
