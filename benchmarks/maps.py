"""Anomaly-map benchmark (not a test): what the second output costs, on the runner and end to end.

One run, ONNX Runtime CPU runner, a REAL patch model (PaDiM, 56x56 maps) and the real video:

1. runner alone, pre-decoded frames at batch size B: scores only (``runner(images)``, the maps not fetched) vs
   scores + maps (``runner.run(images)``): the map output's cost on the runner;
2. the daemon end to end with the maps (in-process :class:`algan.edge.app.EdgeApp`, the video looped as a camera,
   full frames kept for snapshots, regions computed at alarms, snapshots written, a real broker): frames/s and the
   ratio to (1) with maps (target >= 0.85).

Usage::

    python -m benchmarks.maps [--model /tmp/bench_patch_model] [--batch 8] [--frames 3000]
    python -m benchmarks.maps --smoke    # seconds: a stand-in two-output model and a synthetic video

Without ``--model`` a PaDiM bundle is trained on 100 MTD normals and exported (about a minute).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from algan.edge.app import EdgeApp
from algan.edge.config import parse_config
from algan.runtime.runners.onnx import OnnxRuntimeRunner
from benchmarks._kit import REPO, Broker, Subscriber, print_rows, synthetic_video
from benchmarks.edge import decode

DATA = Path(os.environ.get("ALGAN_DATA_DIR", REPO.parent / "shared" / "data"))
DEFAULT_VIDEO = DATA / "video" / "bottle-detection.mp4"
DEFAULT_MODEL = Path("/tmp/bench_patch_model")


def standin_map_model(path: Path, size: int = 224, cells: int = 56) -> Path:
    """A torch-free two-output stand-in: ``anomaly_maps`` = per-cell mean of ``|gray - 128| / 64``, ``scores`` =
    the map's max (the contract's shapes and names; measures the runtime around a model, not a model)."""
    import onnx
    from onnx import TensorProto, helper

    k = size // cells
    inp = helper.make_tensor_value_info("images", TensorProto.UINT8, ["N", size, size, 3])
    outs = [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N"]),
            helper.make_tensor_value_info("anomaly_maps", TensorProto.FLOAT, ["N", cells, cells])]
    nodes = [helper.make_node("Cast", ["images"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("ReduceMean", ["f"], ["g"], axes=[3], keepdims=1),
             helper.make_node("Sub", ["g", "c128"], ["d"]), helper.make_node("Abs", ["d"], ["a"]),
             helper.make_node("Div", ["a", "c64"], ["u"]),
             helper.make_node("Transpose", ["u"], ["t"], perm=[0, 3, 1, 2]),
             helper.make_node("AveragePool", ["t"], ["p"], kernel_shape=[k, k], strides=[k, k]),
             helper.make_node("Squeeze", ["p", "ax1"], ["anomaly_maps"]),
             helper.make_node("ReduceMax", ["anomaly_maps"], ["scores"], axes=[1, 2], keepdims=0)]
    init = [helper.make_tensor("c128", TensorProto.FLOAT, [], [128.0]),
            helper.make_tensor("c64", TensorProto.FLOAT, [], [64.0]),
            helper.make_tensor("ax1", TensorProto.INT64, [1], [1])]
    model = helper.make_model(helper.make_graph(nodes, "maps-standin", [inp], outs, initializer=init),
                              opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    helper.set_model_props(model, {"algan.model_id": "bench-maps-standin", "algan.outputs": "scores,anomaly_maps",
                                   "algan.map_size": f"{cells},{cells}"})
    path.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path / "model.onnx"))
    return path


def ensure_model(model: Path) -> None:
    if (model / "model.onnx").is_file():
        return
    data = DATA / "mtd" / "MT_Free" / "Imgs"
    if not data.is_dir():
        raise SystemExit(f"no model at {model} and no MTD data at {data} to train one; pass --model")
    print(f"training a PaDiM benchmark model in {model} (about a minute)...", flush=True)
    train = model.parent / (model.name + "-train")
    train.mkdir(parents=True, exist_ok=True)
    for p in sorted(data.glob("*.jpg"))[:100]:
        if not (train / p.name).exists():
            (train / p.name).symlink_to(p)
    subprocess.run([sys.executable, "-m", "algan.cli.train", "--data", str(train), "--layout", "folder", "--variant",
                    "patch", "--head", "padim", "--out", str(model), "--quiet"], check=True)
    subprocess.run([sys.executable, "-m", "algan.cli.export", str(model)], check=True)


def runner_fps(fn, frames: np.ndarray, batch: int) -> float:  # noqa: ANN001
    """Frames/s of ``fn(batch)`` over all frames at batch size ``batch`` (after a 2-batch warm-up)."""
    for i in range(0, 2 * batch, batch):
        fn(frames[i : i + batch])
    t0 = time.perf_counter()
    for i in range(0, len(frames), batch):
        fn(frames[i : i + batch])
    return len(frames) / (time.perf_counter() - t0)


def daemon_fps(model: Path, video: Path, batch: int, threads: int, n_frames: int, broker: tuple[str, int],
               work: Path) -> dict:
    """The daemon in-process on the looped video with maps and snapshots, until ``n_frames`` are scored."""
    cfg = parse_config({
        "device_id": "bench", "model": str(model),
        "runner": {"backend": "onnxruntime", "threads": threads},
        "batch": {"max_size": batch, "max_wait_ms": 50},
        "mqtt": {"host": broker[0], "port": broker[1], "embedded_broker": "never", "max_queued_messages": 100_000,
                 "outbox": {"path": str(work / "outbox.sqlite")}},
        "alarm": {"raise_frames": 3, "clear_frames": 3,
                  "snapshots": {"dir": str(work / "snaps"), "mqtt": True, "max_count": 50}},
        "stats_interval_s": 5,
        "cameras": [{"name": "cam", "source": str(video), "loop": True, "queue_size": 2 * batch}],
    })
    col = Subscriber(*broker, topic="algan/bench/cam/alarm")
    app = EdgeApp(cfg)
    thread = threading.Thread(target=app.run, name="edge-app", daemon=True)
    thread.start()
    while thread.is_alive() and app.scored.get("cam", 0) < n_frames:
        time.sleep(0.05)
    app.stop.set()
    thread.join(60)
    time.sleep(0.5)
    col.stop()
    events = [json.loads(p) for p in col.payloads]
    return {"fps": float(app.last_stats.get("fps_avg", 0.0)), "frames": int(app.scored["cam"]),
            "alarms": sum(1 for e in events if e["state"] == "raised"),
            "with_region": sum(1 for e in events if e.get("region"))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="patch bundle with model.onnx (two outputs)")
    p.add_argument("--video", type=Path, default=DEFAULT_VIDEO, help="video file (default: the bottle video)")
    p.add_argument("--batch", type=int, default=8, help="batch size B (default 8)")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0 = all cores)")
    p.add_argument("--frames", type=int, default=3000, help="frames the daemon scores (default 3000)")
    p.add_argument("--smoke", action="store_true", help="seconds: a stand-in two-output model, a synthetic video")
    args = p.parse_args(argv)
    cv2.setNumThreads(1)
    work = Path(tempfile.mkdtemp(prefix="algan-bench-maps-"))
    try:
        if args.smoke:
            args.model = standin_map_model(work / "standin") / "model.onnx"
            args.video = synthetic_video(work / "smoke.mp4", 48)
            args.frames = 200
        else:
            ensure_model(args.model)
        if not args.video.is_file():
            print(f"video {args.video} not found; pass --video", file=sys.stderr)
            return 2
        runner = OnnxRuntimeRunner(args.model, threads=args.threads)
        if not runner.has_maps:
            print(f"{args.model} has no anomaly_maps output; give a patch model (--variant patch)", file=sys.stderr)
            return 2
        frames = decode(args.video, runner.input_size, limit=400 if not args.smoke else 48)
        with_maps = [runner_fps(runner.run, frames, args.batch)]
        scores_only = [runner_fps(runner, frames, args.batch)]
        with Broker(work) as broker:
            e2e = daemon_fps(args.model, args.video, args.batch, args.threads, args.frames,
                             (broker.host, broker.port), work)
        if e2e["frames"] == 0:
            print("the daemon scored no frame (see the log above)", file=sys.stderr)
            return 1
        with_maps.append(runner_fps(runner.run, frames, args.batch))
        scores_only.append(runner_fps(runner, frames, args.batch))
        alone = max(with_maps)
        rows = [
            (f"runner alone, scores only (B={args.batch}), before/after",
             " / ".join(f"{v:.1f}" for v in scores_only) + " frames/s"),
            ("runner alone, scores + maps, before/after", " / ".join(f"{v:.1f}" for v in with_maps) + " frames/s"),
            ("map output's cost on the runner (scores-only / with maps)", f"{max(scores_only) / alone:.3f}"),
            ("daemon end to end with maps and snapshots", f"{e2e['fps']:.1f} frames/s ({e2e['frames']} frames, "
             f"{e2e['alarms']} alarms, {e2e['with_region']} events with a region)"),
            ("ratio daemon / runner with maps (target >= 0.85)", f"{e2e['fps'] / alone:.3f}"),
            ("model / broker", f"{args.model} / {broker.kind}" + (" (smoke: stand-in)" if args.smoke else "")),
        ]
        print_rows(rows)
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
