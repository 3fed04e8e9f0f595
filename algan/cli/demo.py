"""``algan-demo``: the whole product end to end on the project's own synthetic data.

synthetic surfaces -> algan-train (a patch head: anomaly maps) -> algan-eval -> algan-calibrate -> algan-export ->
line video -> algan-edge (ONNX Runtime; alarms with regions and full-frame snapshots) -> MQTT (an embedded amqtt
broker when nothing listens at the address) -> algan-alarms -> algan-predict (HTML report of the test images).
Every step runs the real command-line tool as a subprocess, and the commands are printed so a user can repeat them
by hand.
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from algan.cli._common import add_version, run_cli, setup_logging

#: what the demo writes into --out (configs/edge.example.yaml points at the model and the video of the default one)
DEFAULT_OUT = "demo-out"
MODEL_NAME = "model"
VIDEO_NAME = "line.mkv"


def _bin(name: str) -> str:
    """Path of a console script installed beside this Python (the venv's bin/), else the bare name."""
    cand = Path(sys.executable).with_name(name)
    return str(cand) if cand.exists() else name


def shown(cmd: list[str]) -> str:
    """A command as the user can paste it: the bare tool name when that name on PATH is this very script (the venv
    is active), else the script's path (``.venv/bin/algan-train``: relative to the working directory when below
    it)."""
    import shutil

    exe = cmd[0]
    name = Path(exe).name
    on_path = shutil.which(name)
    if Path(exe).is_absolute() and not (on_path and Path(on_path).resolve() == Path(exe).resolve()):
        try:
            name = str(Path(exe).relative_to(Path.cwd()))
        except ValueError:
            name = exe
    return shlex.join([name, *cmd[1:]])


def _tool(name: str, module: str) -> list[str]:
    """The console script ``name`` beside this Python, else ``python -m module`` (an install older than the tool)."""
    cand = Path(sys.executable).with_name(name)
    return [str(cand)] if cand.exists() else [sys.executable, "-m", module]


def _step(title: str, cmd: list[str]) -> None:
    print(f"\n== {title}\n$ {shown(cmd)}", flush=True)
    rc = subprocess.call(cmd)
    if rc != 0:
        raise RuntimeError(f"step '{title}' failed with exit code {rc}")


#: first line of the demo's edge.yaml: marks a directory as an earlier demo's, which a new run may write over
CONFIG_HEADER = "# written by algan-demo; see configs/edge.example.yaml for every option\n"


def check_demo_out(out: Path) -> None:
    """Refuse an ``--out`` that exists, is not empty and is not an earlier demo's directory (its ``edge.yaml`` starts
    with :data:`CONFIG_HEADER`): the demo writes data, model, config and reports there.

    Raises:
        OutputDirError: one line naming the directory and the fix.
    """
    from algan.contract import OutputDirError

    if out.exists() and not out.is_dir():
        raise OutputDirError(f"--out {out} exists and is not a directory; choose a new directory name")
    if not out.is_dir() or not any(out.iterdir()):
        return
    cfg = out / "edge.yaml"
    try:
        ours = cfg.is_file() and cfg.read_text(encoding="utf-8").startswith(CONFIG_HEADER)
    except (OSError, UnicodeDecodeError):
        ours = False
    if not ours:
        raise OutputDirError(f"--out {out} is not empty and is not an earlier algan-demo directory; nothing was "
                             "written: choose a new or empty directory")


def _write_config(out: Path, port: int) -> Path:
    cfg = out / "edge.yaml"
    cfg.write_text(
        CONFIG_HEADER +
        "device_id: demo\n"
        f"model: {MODEL_NAME}\n"
        "runner: {backend: onnxruntime, threads: 0}\n"
        "batch: {max_size: 8, max_wait_ms: 20}\n"
        f"mqtt: {{host: 127.0.0.1, port: {port}, prefix: algan, embedded_broker: auto}}\n"
        "alarm:\n"
        "  threshold: 1.0\n"
        "  clear_threshold: 0.9\n"
        "  raise_frames: 3\n"
        "  clear_frames: 5\n"
        "  snapshots: {dir: snapshots, max_count: 200}   # full frame, heat map over the ROI, region outlined\n"
        "stats_interval_s: 2\n"
        "cameras:\n"
        f"  - {{name: line1, source: {VIDEO_NAME}}}\n"
    )
    return cfg


def _main(args: argparse.Namespace) -> int:
    from algan.data.synthetic import generate_dataset
    from algan.data.video import make_sequence_video
    from algan.edge.publish.broker import EmbeddedBroker
    from algan.edge.publish.mqtt import probe_tcp

    t0 = time.perf_counter()
    out = Path(args.out).resolve()
    check_demo_out(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = _write_config(out, args.port)  # first: it marks the directory as the demo's
    data = out / "data"
    print(f"== synthetic data: textured metal surfaces with scratches, spots and cracks -> {data}", flush=True)
    summary = generate_dataset(data, texture="metal", n_train=args.n_train, n_test_good=args.n_test_good,
                               n_test_defect=12, size=256, seed=args.seed, overwrite=True)
    print(f"   {summary}")
    labels = make_sequence_video(data, out / VIDEO_NAME, fps=10.0, seed=args.seed)
    n_defect_runs = sum(1 for i, r in enumerate(labels) if r["label"] == 1 and (i == 0 or labels[i - 1]["label"] == 0))
    print(f"   line video {out / VIDEO_NAME}: {len(labels)} frames, {n_defect_runs} runs of defective parts")

    model = out / MODEL_NAME
    train = [_bin("algan-train"), "--data", str(data), "--out", str(model), "--force", "--seed", str(args.seed),
             "--variant", args.variant, "--head", args.head]
    if args.epochs:
        train += ["--epochs", str(args.epochs)]
    heads = {"padim": "PaDiM patch head", "patchcore": "PatchCore patch head", "algan": "ALGAN"}
    what = heads.get(args.head, args.head)
    _step(f"train ({what} on EfficientNet-Lite0 {'feature maps' if args.variant == 'patch' else 'features'})", train)
    _step("evaluate on the labelled test split", [_bin("algan-eval"), str(model), "--data", str(data)])
    _step(f"calibrate the threshold at a per-frame false-alarm rate of {args.target_fpr:g} on held-out normals",
          [_bin("algan-calibrate"), str(model), "--data", str(data), "--target-fpr", str(args.target_fpr)])
    _step("export to ONNX (+ TensorRT FP16 where available)", [_bin("algan-export"), str(model), "--fp16"])

    broker = None
    if probe_tcp("127.0.0.1", args.port, 0.5) is not None:  # nothing listens: bring our own broker
        broker = EmbeddedBroker("127.0.0.1", args.port)
        broker.start()
        print(f"\n== no MQTT broker on 127.0.0.1:{args.port}: started the embedded amqtt broker", flush=True)
    events = out / "alarm-events.jsonl"
    events.unlink(missing_ok=True)
    alarms_cmd = [_bin("algan-alarms"), "--broker", f"127.0.0.1:{args.port}", "--prefix", "algan",
                  "--exec", f"cat >> {shlex.quote(str(events))}; echo >> {shlex.quote(str(events))}"]
    print(f"\n== alarm subscriber (runs the --exec command for each raised alarm)\n$ "
          f"{shown(alarms_cmd)} &", flush=True)
    alarms = subprocess.Popen(alarms_cmd)
    try:
        time.sleep(2.0)  # let the subscriber connect and subscribe before alarms flow
        # the daemon logs warnings and errors only: each alarm is printed once, by algan-alarms, in order
        _step("edge daemon on the line video", [_bin("algan-edge"), "run", "--config", str(cfg),
                                                "--log-level", "error"])
        time.sleep(1.5)  # last QoS 1 alarm deliveries
    finally:
        alarms.send_signal(signal.SIGTERM)
        try:
            alarms.wait(10)
        except subprocess.TimeoutExpired:
            alarms.kill()
        if broker is not None:
            broker.stop()
    raised = [json.loads(line) for line in events.read_text().splitlines() if line.strip()] if events.exists() else []
    report = out / "report"
    _step("score the test images offline and write the HTML report",
          [*_tool("algan-predict", "algan.cli.predict"), str(model), str(data / "test"), "--out", str(report)])
    with_region = sum(1 for e in raised if e.get("region"))
    print(f"\n== done in {time.perf_counter() - t0:.0f} s: {len(raised)} alarms raised ({with_region} with a region) "
          f"for {n_defect_runs} runs of defective parts in the video")
    print(f"   model:     {model}  (algan.json, model.onnx, calibration_report.png)")
    print(f"   report:    {report / 'report.html'}  (open it in a browser; overlays in {report / 'overlays'})")
    print(f"   config:    {cfg}  (snapshots in {out / 'snapshots'}, alarm events in {events})")
    for line in next_steps(out, model, data, cfg):
        print(line)
    return 0


def next_steps(out: Path, model: Path, data: Path, cfg: Path) -> list[str]:
    """The closing lines: commands that run as printed (the venv's script paths unless the venv is active, with the
    line that activates it), on the demo's own files."""
    bindir = Path(sys.executable).parent
    lines = []
    if shown([_bin("algan-predict")]) != "algan-predict":
        try:
            where = bindir.relative_to(Path.cwd())
        except ValueError:
            where = bindir
        lines.append(f"   the tools live in {where}/: activate it to call them by name: source {where}/activate")
    rep, mine = out / "my-report", out / "my-model"
    head = ["--variant", "patch", "--head", "patchcore"]
    lines += [
        "   next (each line runs as printed):",
        f"     {shown([_bin('algan-predict'), str(model), str(data / 'test'), '--out', str(rep)])}",
        f"     {shown([_bin('algan-train'), '--data', str(data), '--out', str(mine), *head])}",
        f"     {shown([_bin('algan-calibrate'), str(mine), '--data', str(data)])}",
        f"     {shown([_bin('algan-export'), str(mine)])}",
        f"     {shown([_bin('algan-edge'), 'run', '--config', str(cfg)])}",
        "   your own images: the same commands with your folders; with --head auto --variant auto instead of "
        "--variant patch --head patchcore, algan-train picks the head that catches the most synthetic defects on your "
        "line (see README)",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="algan-demo", description="Run the whole product end to end on synthetic data.")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"working directory (default: {DEFAULT_OUT})")
    p.add_argument("--port", type=int, default=1883, help="MQTT port on 127.0.0.1 (default 1883)")
    p.add_argument("--epochs", type=int, default=None, help="ALGAN epochs (--head algan; default: the preset's)")
    p.add_argument("--n-train", type=int, default=160, help="synthetic normal training images")
    p.add_argument("--n-test-good", type=int, default=60,
                   help="synthetic normal test images (half of them calibrate the threshold: >= 40 for 20)")
    p.add_argument("--variant", default="patch", choices=["patch", "feature"],
                   help="patch (default: anomaly maps, alarms with regions) or feature (image scores only)")
    p.add_argument("--head", default="patchcore", choices=["patchcore", "padim", "algan", "mahalanobis", "knn"],
                   help="scoring head (default patchcore: seconds to fit on a CPU, tight defect masks on the demo's "
                        "surfaces; algan = ALGAN-patch/-feature, slower)")
    p.add_argument("--target-fpr", type=float, default=0.001, help="algan-calibrate --target-fpr (default 0.001)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-level", default="WARNING")
    args = add_version(p).parse_args(argv)
    setup_logging(args.log_level)
    return run_cli("algan-demo", lambda: _main(args))


if __name__ == "__main__":
    sys.exit(main())
