"""``algan-demo``: the whole product end to end on the project's own synthetic data.

synthetic surfaces -> algan-train -> algan-eval -> algan-export -> line video -> algan-edge (ONNX Runtime) ->
MQTT (an embedded amqtt broker when nothing listens at the address) -> algan-alarms. Every step runs the real
command-line tool as a subprocess, and the commands are printed so a user can repeat them by hand.
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

from algan.cli._common import run_cli, setup_logging


def _bin(name: str) -> str:
    """Path of a console script installed beside this Python (the venv's bin/), else the bare name."""
    cand = Path(sys.executable).with_name(name)
    return str(cand) if cand.exists() else name


def _step(title: str, cmd: list[str]) -> None:
    print(f"\n== {title}\n$ {shlex.join([Path(cmd[0]).name, *cmd[1:]])}", flush=True)
    rc = subprocess.call(cmd)
    if rc != 0:
        raise RuntimeError(f"step '{title}' failed with exit code {rc}")


def _write_config(out: Path, port: int) -> Path:
    cfg = out / "edge.yaml"
    cfg.write_text(
        "# written by algan-demo; see configs/edge.example.yaml for every option\n"
        "device_id: demo\n"
        "model: model\n"
        "runner: {backend: onnxruntime, threads: 0}\n"
        "batch: {max_size: 8, max_wait_ms: 20}\n"
        f"mqtt: {{host: 127.0.0.1, port: {port}, prefix: algan, embedded_broker: auto}}\n"
        "alarm: {threshold: 1.0, clear_threshold: 0.9, raise_frames: 3, clear_frames: 5}\n"
        "stats_interval_s: 2\n"
        "cameras:\n"
        "  - {name: line1, source: line.mkv}\n"
    )
    return cfg


def _main(args: argparse.Namespace) -> int:
    from algan.data.synthetic import generate_dataset
    from algan.data.video import make_sequence_video
    from algan.edge.broker import EmbeddedBroker
    from algan.edge.mqtt import probe_tcp

    t0 = time.perf_counter()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    data = out / "data"
    print(f"== synthetic data: textured metal surfaces with scratches, spots and cracks -> {data}", flush=True)
    summary = generate_dataset(data, texture="metal", n_train=args.n_train, n_test_good=30, n_test_defect=12,
                               size=256, seed=args.seed, overwrite=True)
    print(f"   {summary}")
    labels = make_sequence_video(data, out / "line.mkv", fps=10.0, seed=args.seed)
    n_defect_runs = sum(1 for i, r in enumerate(labels) if r["label"] == 1 and (i == 0 or labels[i - 1]["label"] == 0))
    print(f"   line video {out / 'line.mkv'}: {len(labels)} frames, {n_defect_runs} runs of defective parts")

    train = [_bin("algan-train"), "--data", str(data), "--out", str(out / "model"), "--seed", str(args.seed)]
    if args.epochs:
        train += ["--epochs", str(args.epochs)]
    _step("train (ALGAN on EfficientNet-Lite0 features)", train)
    _step("evaluate on the labelled test split", [_bin("algan-eval"), str(out / "model"), "--data", str(data)])
    _step("export to ONNX (+ TensorRT FP16 where available)", [_bin("algan-export"), str(out / "model"), "--fp16"])

    cfg = _write_config(out, args.port)
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
          f"{shlex.join([Path(alarms_cmd[0]).name, *alarms_cmd[1:]])} &", flush=True)
    alarms = subprocess.Popen(alarms_cmd)
    try:
        time.sleep(2.0)  # let the subscriber connect and subscribe before alarms flow
        _step("edge daemon on the line video", [_bin("algan-edge"), "run", "--config", str(cfg)])
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
    print(f"\n== done in {time.perf_counter() - t0:.0f} s: {len(raised)} alarms raised for {n_defect_runs} runs of "
          f"defective parts in the video; events in {events}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="algan-demo", description="Run the whole product end to end on synthetic data.")
    p.add_argument("--out", default="demo-out", help="working directory (default: demo-out)")
    p.add_argument("--port", type=int, default=1883, help="MQTT port on 127.0.0.1 (default 1883)")
    p.add_argument("--epochs", type=int, default=None, help="ALGAN epochs (default: the preset's)")
    p.add_argument("--n-train", type=int, default=160, help="synthetic normal training images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-level", default="WARNING")
    args = p.parse_args(argv)
    setup_logging(args.log_level)
    return run_cli("algan-demo", lambda: _main(args))


if __name__ == "__main__":
    sys.exit(main())
