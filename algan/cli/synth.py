"""``algan-synth``: generate the synthetic MVTec-layout data set, and optionally a labelled production-line video.

Examples::

    algan-synth data/synth_metal
    algan-synth data/synth_weave --texture weave --n-train 100 --size 128 --seed 3
    algan-synth data/synth_metal --video data/line.mp4 --fps 10 --pattern "12g 6d 10g 6d 12g"
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from algan.data.synthetic import DEFECT_TYPES, MIN_SIZE, TEXTURES, generate_dataset
from algan.data.video import DEFAULT_PATTERN, labels_path_for, make_sequence_video, parse_pattern

PROG = "algan-synth"


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(message)


def _build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=PROG,
        description="Generate a synthetic industrial-surface anomaly data set in the MVTec AD layout "
        "(train/good, test/<class>, ground_truth/<defect>/*_mask.png), optionally with a labelled line video.",
    )
    p.add_argument("out_dir", metavar="OUT_DIR", help="output folder (the data set root)")
    p.add_argument("--texture", choices=TEXTURES, default="metal", help="surface texture family (default: metal)")
    p.add_argument("--n-train", type=int, default=200, metavar="N", help="normal training images (default: 200)")
    p.add_argument("--n-test-good", type=int, default=40, metavar="N", help="normal test images (default: 40)")
    p.add_argument("--n-test-defect", type=int, default=20, metavar="N",
                   help=f"test images per defect class ({', '.join(DEFECT_TYPES)}) (default: 20)")
    p.add_argument("--defects", default=",".join(DEFECT_TYPES), metavar="LIST",
                   help="comma-separated defect classes to generate (default: all)")
    p.add_argument("--size", type=int, default=256, metavar="PX", help="image side in pixels (default: 256)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="master seed (default: 0)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing data set in OUT_DIR")
    p.add_argument("--video", metavar="PATH.mp4", help="also write a labelled line video from the test split "
                   "(labels: PATH.labels.json beside it)")
    p.add_argument("--fps", type=float, default=10.0, metavar="F", help="video frame rate (default: 10)")
    p.add_argument("--pattern", default=DEFAULT_PATTERN, metavar="P",
                   help=f"video run pattern: <n>g good, <n>d defect, <n>:<class> (default: '{DEFAULT_PATTERN}')")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output, only the summary line")
    from algan.cli._common import add_version

    return add_version(p)


def _validate(args: argparse.Namespace) -> None:
    if args.size < MIN_SIZE:
        raise _UsageError(f"--size must be >= {MIN_SIZE}, got {args.size}")
    for name in ("n_train", "n_test_good", "n_test_defect", "seed"):
        if getattr(args, name) < 0:
            raise _UsageError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    defects = [d.strip() for d in args.defects.split(",") if d.strip()]
    bad = [d for d in defects if d not in DEFECT_TYPES]
    if bad or len(set(defects)) != len(defects):
        raise _UsageError(f"--defects must be distinct names from {','.join(DEFECT_TYPES)}, got {args.defects!r}")
    args.defects = tuple(defects)
    if args.video is not None:
        if not args.video.lower().endswith((".mp4", ".mkv", ".avi")):
            raise _UsageError(f"--video must be a .mp4, .mkv (lossless) or .avi path, got {args.video!r}")
        if not args.fps > 0:
            raise _UsageError(f"--fps must be > 0, got {args.fps}")
        try:
            runs = parse_pattern(args.pattern)
        except ValueError as e:
            raise _UsageError(f"--pattern: {e}") from None
        needs_good = any(k == "good" for k, _ in runs)
        if needs_good and args.n_test_good == 0:
            raise _UsageError("--video needs test/good images: --n-test-good must be > 0")
        needs_defect = any(k != "good" for k, _ in runs)
        if needs_defect and (args.n_test_defect == 0 or not defects):
            raise _UsageError("--video pattern has defect runs: --n-test-defect must be > 0 with some --defects")
        named = {k for k, _ in runs} - {"good", "defect"}
        missing = sorted(named - set(defects))
        if missing:
            raise _UsageError(f"--pattern names classes that are not generated: {', '.join(missing)}")


def _progress(quiet: bool):
    if quiet or not sys.stderr.isatty():  # bars only on a terminal: in a log they are carriage-return spam
        return None, lambda: None
    try:
        from tqdm import tqdm  # optional
    except ImportError:  # pragma: no cover - depends on the environment
        tqdm = None
    if tqdm is not None:
        bar = None

        def cb(done: int, total: int) -> None:
            nonlocal bar
            if bar is None:
                bar = tqdm(total=total, unit="img", desc=PROG, file=sys.stderr, leave=False)
            bar.update(1)

        def close() -> None:
            if bar is not None:
                bar.close()

        return cb, close

    def cb_plain(done: int, total: int) -> None:
        if done == total or done % 20 == 0:
            end = "\n" if done == total else ""
            print(f"\r{PROG}: {done}/{total} images", end=end, file=sys.stderr, flush=True)

    return cb_plain, lambda: None


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point. Returns 0 on success, 2 for bad arguments, 1 when generation fails."""
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
        _validate(args)
    except _UsageError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2

    cb, close = _progress(args.quiet)
    t0 = time.perf_counter()
    try:
        summary = generate_dataset(
            args.out_dir, texture=args.texture, n_train=args.n_train, n_test_good=args.n_test_good,
            n_test_defect=args.n_test_defect, size=args.size, seed=args.seed, defects=args.defects,
            overwrite=args.overwrite, progress=cb,
        )
    except FileExistsError as e:
        close()
        msg = str(e) if "did not write" in str(e) else (f"{args.out_dir} already contains a data set; choose "
                                                        "another folder or pass --overwrite")
        print(f"{PROG}: error: {msg}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as e:
        close()
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    close()
    msg = f"{PROG}: wrote {summary} in {time.perf_counter() - t0:.1f} s"
    if args.video is not None:
        try:
            labels = make_sequence_video(args.out_dir, args.video, pattern=args.pattern, fps=args.fps,
                                         seed=args.seed)
        except (OSError, ValueError, RuntimeError) as e:
            print(f"{PROG}: error: video: {e}", file=sys.stderr)
            return 1
        n_bad = sum(r["label"] for r in labels)
        msg += (f"; video {args.video}: {len(labels)} frames ({n_bad} defective) @ {args.fps:g} fps, "
                f"labels {labels_path_for(args.video)}")
    print(msg)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
