"""``algan-edge``: the line-side anomaly detection daemon.

Usage::

    algan-edge run --config /etc/algan/edge.yaml [--log-level info]
    algan-edge check-config --config /etc/algan/edge.yaml   # exit 0 valid, 2 invalid (systemd ExecStartPre=)
    algan-edge broker [--host 127.0.0.1] [--port 1883] # the embedded amqtt broker in the foreground (demos)
    algan-edge build-engine MODEL_DIR [--fp16] [--int8] [--batch-profile 1:8:16]   # TensorRT engine, no torch
    algan-edge build-engine MODEL_DIR --adopt model.engine [--precision fp16]  # sidecar for a trtexec engine
    algan-edge doctor [--config FILE]                   # OpenCV/GStreamer, onnxruntime, TensorRT/CUDA; config checks
    algan-edge outbox list --config FILE                # messages the broker kept rejecting (dead letters)
    algan-edge outbox retry|drop --config FILE (SEQ... | --all)
    algan-edge keygen --out KEY                         # Ed25519 key pair: KEY (private, 0600) and KEY.pub
    algan-edge sign MODEL_DIR --key KEY                 # (re-)sign an exported bundle without re-exporting

Signals: SIGTERM/SIGINT stop cleanly (a second one kills at once); SIGHUP re-reads the alarm thresholds (``alarm``
section and per-camera ``threshold``/``clear_threshold``) from the config file without restarting.

Exit status: 0 clean run (file/folder sources exhausted, or stopped by SIGTERM/SIGINT); 1 runtime problem (broker
unreachable, no camera readable, undelivered messages); 2 user error: configuration, model or bundle (the same from
``run`` and ``check-config``: ``check-config`` refuses everything ``run`` refuses at start, see :func:`preflight`).
User-caused errors print one line.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence

from algan.cli._common import DeprecatedFlag, add_version, deprecated
from algan.contract import ONNX_FILE
from algan.edge.config import EdgeConfig, load_config
from algan.edge.errors import ConfigError, SourceError
from algan.edge.logs import LEVELS, redact, setup_logging
from algan.runtime.errors import EdgeError, ModelError
from algan.runtime.runners.base import check_contract, choose_backend, resolve_model_path

log = logging.getLogger("algan.edge")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="algan-edge", description="Visual anomaly detection daemon publishing to MQTT.")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("--config", "-c", required=True, help="edge config YAML (see configs/edge.example.yaml)")
    run.add_argument("--log-level", default="info", choices=LEVELS, help="log verbosity (default: info)")
    chk = sub.add_parser("check-config", help="validate a config file: exit 0 valid, 2 invalid")
    chk.add_argument("--config", "-c", dest="config", help="edge config YAML")
    chk.add_argument("old_config", nargs="?", metavar="CONFIG", help=argparse.SUPPRESS)  # the old positional form
    brk = sub.add_parser("broker", help="run the embedded MQTT broker (amqtt) until SIGINT/SIGTERM, for demos")
    brk.add_argument("--host", default="127.0.0.1", help="bind address (default: 127.0.0.1)")
    brk.add_argument("--port", type=int, default=1883, help="TCP port (default: 1883)")
    brk.add_argument("--log-level", default="info", choices=LEVELS, help="log verbosity (default: info)")
    eng = sub.add_parser("build-engine", help="build (or adopt) the TensorRT engine of a bundle on this device, "
                         "checked against ONNX Runtime CPU on the bundle's samples; imports no torch")
    eng.add_argument("model_dir", help="bundle directory holding model.onnx (and model.fp16.onnx) from algan-export")
    eng.add_argument("--fp16", action="store_true", help="FP16 engine (strongly typed from model.fp16.onnx on "
                     "TensorRT >= 10.12)")
    eng.add_argument("--int8", action="store_true", help="INT8 engine (needs int8_calibration.safetensors; TensorRT "
                     "< 11)")
    eng.add_argument("--batch", dest="batch", action=DeprecatedFlag, new="--batch-profile", default=argparse.SUPPRESS)
    eng.add_argument("--batch-profile", dest="batch", default="1:8:16",
                     help="optimization profile MIN:OPT:MAX over the batch dimension (default 1:8:16)")
    eng.add_argument("--workspace-mib", type=int, default=1024, help="builder workspace limit (default 1024 MiB)")
    eng.add_argument("--adopt", metavar="ENGINE", help="do not build: check ENGINE (e.g. from trtexec) against the "
                     "bundle and write its sidecar model.engine.json")
    eng.add_argument("--precision", default="fp16", choices=("fp32", "fp16", "int8"),
                     help="with --adopt: the precision ENGINE was built with (sets the parity tolerance)")
    eng.add_argument("--log-level", default="warning", choices=LEVELS, help="log verbosity (default: warning)")
    doc = sub.add_parser("doctor", help="print the OpenCV, onnxruntime, TensorRT and CUDA this device would use and, "
                         "with --config, why the configured backend or a camera source would fail")
    doc.add_argument("--config", "-c", help="edge config YAML to check against this device")
    obx = sub.add_parser("outbox", help="show, re-queue or delete the messages the broker kept rejecting (dead "
                         "letters of the MQTT outbox)")
    obx.add_argument("action", choices=("list", "retry", "drop"), help="list: show them; retry: queue them again "
                     "(after the cause is fixed); drop: delete them")
    obx.add_argument("seq", nargs="*", type=int, help="sequence numbers (from list) for retry/drop")
    obx.add_argument("--config", "-c", required=True, help="edge config YAML (names the outbox file)")
    obx.add_argument("--all", action="store_true", help="retry/drop every dead letter")
    kg = sub.add_parser("keygen", help="make an Ed25519 key pair for signed bundles (algan-export --sign KEY; "
                        "model.trusted_keys: [KEY.pub] on the devices)")
    kg.add_argument("--out", required=True, help="private key file to write (mode 0600; KEY.pub beside it); never "
                    "overwritten")
    sg = sub.add_parser("sign", help="sign an exported bundle (algan.sig) with a private key from keygen, without "
                        "re-exporting it (algan-export --sign does both)")
    sg.add_argument("model_dir", help="bundle directory")
    sg.add_argument("--key", required=True, help="private key file from algan-edge keygen")
    return add_version(p)


def sign_cmd(model_dir: str, key: str) -> int:
    """``algan-edge sign``: see :func:`algan.runtime.signing.sign_bundle`."""
    from pathlib import Path

    from algan.runtime.signing import sign_bundle
    from algan.runtime.verify import verify_model

    bundle = Path(model_dir)
    verify_model(bundle, bundle / ONNX_FILE if (bundle / ONNX_FILE).is_file() else bundle)  # intact first
    print(f"signed {bundle}: wrote {sign_bundle(bundle, Path(key))}")
    return 0


def keygen_cmd(out: str) -> int:
    """``algan-edge keygen``: see :func:`algan.runtime.signing.generate_key`."""
    from pathlib import Path

    from algan.runtime.signing import generate_key

    path = Path(out)
    try:
        pub, text = generate_key(path)
    except FileExistsError as e:
        raise ConfigError(f"algan-edge keygen: {e}; choose another --out (an existing key is never "
                          "overwritten)") from None
    except OSError as e:
        raise ConfigError(f"algan-edge keygen: cannot write {path} ({e.strerror or e}); choose a writable "
                          "--out") from None
    print(f"wrote private key {path} (keep it on the signing workstation) and public key {pub}: {text}")
    return 0


def outbox_cmd(args: argparse.Namespace) -> int:
    """``algan-edge outbox list|retry|drop``: the dead letters of the config's outbox file (works while the daemon
    runs: a retried message is queued after the others and sent by the running daemon)."""
    import time

    from algan.edge.publish.outbox import Outbox

    cfg = load_config(args.config)
    path = cfg.outbox_path
    if args.action != "list" and not args.seq and not args.all:
        raise ConfigError(f"algan-edge outbox {args.action}: name the messages (sequence numbers from 'algan-edge "
                          "outbox list') or give --all")
    if args.action == "list" and (args.seq or args.all):
        raise ConfigError("algan-edge outbox list takes no sequence numbers or --all")
    if not path.is_file():
        print(f"no outbox at {path}: nothing queued, no dead letters")
        return 0
    ob = Outbox(path, cfg.mqtt.outbox.max_events)
    try:
        if args.action == "list":
            dead = ob.dead_letters()
            print(f"{path}: {len(ob)} message(s) queued, {len(dead)} dead letter(s)")
            for d in dead:
                when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(d.failed))
                print(f"{d.seq:>8}  {when}  tries {d.tries}  {d.topic!r} ({len(d.payload)} bytes): {d.reason}")
            return 0
        seqs = None if args.all else list(args.seq)
        known = {d.seq for d in ob.dead_letters()}
        missing = [q for q in (seqs or []) if q not in known]
        if missing:
            raise ConfigError(f"no dead letter {', '.join(map(str, missing))} in {path}; see algan-edge outbox list")
        n = ob.retry(seqs) if args.action == "retry" else ob.drop(seqs)
        done = "queued again (sent by the running daemon, or at its next start)" if args.action == "retry" else \
            "deleted"
        print(f"{n} dead letter(s) {done}")
        return 0
    finally:
        ob.close()


def build_engine_cmd(args: argparse.Namespace) -> int:
    """``algan-edge build-engine``: see :func:`algan.export.engine_build.build_on_device` / ``adopt_engine``."""
    from pathlib import Path

    from algan.export import engine_build as eb

    setup_logging(args.log_level)
    model_dir = Path(args.model_dir)
    if not model_dir.is_dir():
        raise eb.EngineError(f"{model_dir} is not a directory; pass the bundle directory copied from the workstation")
    if args.adopt:
        report = eb.adopt_engine(Path(args.adopt), model_dir, precision=args.precision)
    else:
        try:
            batch = eb.BatchProfile.parse(args.batch)
        except ValueError as e:
            raise eb.EngineError(str(e)) from None
        report = eb.build_on_device(model_dir, fp16=args.fp16, int8=args.int8, batch=batch,
                                    workspace_mib=args.workspace_mib)
    s = report.sidecar
    print(f"wrote {', '.join(str(p) for p in report.files.values())} ({s.precision}, TensorRT "
          f"{s.tensorrt_version}, {s.gpu_name} {s.compute_capability})")
    return 0


def broker(host: str, port: int, log_level: str) -> int:
    """Serve the embedded broker until a signal arrives."""
    from algan.edge.publish.broker import EmbeddedBroker

    setup_logging(log_level)
    stop = threading.Event()
    _install_signals(stop)
    emb = EmbeddedBroker(host, port)
    emb.start()
    try:
        stop.wait()
    finally:
        emb.stop()
    return 0


def _install_signals(stop: threading.Event) -> None:
    """SIGTERM (systemd stop) and SIGINT set the stop event directly; a second signal kills at once."""

    def handler(signum: int, frame: object) -> None:
        if stop.is_set():
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)
            return
        log.info("received %s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


class _Arg:
    """An ONNX graph input/output in the shape of an ONNX Runtime ``NodeArg`` (name, type text, shape)."""

    def __init__(self, vi) -> None:
        from onnx import TensorProto

        t = vi.type.tensor_type
        self.name = vi.name
        self.type = f"tensor({TensorProto.DataType.Name(t.elem_type).lower()})"  # e.g. tensor(uint8), as ORT
        self.shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim]


def _check_graph(path) -> None:
    """The exported-graph contract of an ONNX file, read from the graph itself (no session, no warm-up).

    Raises:
        ModelError: the graph cannot be parsed or does not match the contract.
    """
    try:
        import onnx
    except ImportError:  # the edge install may have only onnxruntime: the runner checks the contract at start
        return
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise ModelError(f"{path} is not a readable ONNX graph ({str(e)[:120]}); re-run algan-export") from None
    inits = {i.name for i in model.graph.initializer}
    inputs = [_Arg(v) for v in model.graph.input if v.name not in inits]
    check_contract(path, inputs, [_Arg(v) for v in model.graph.output])


def preflight(cfg: EdgeConfig, graph_contract: bool = True):
    """What ``run`` refuses at start, checked without starting anything: the model file exists, its bundle passes
    :func:`algan.runtime.verify.verify_model`, an ONNX graph matches the contract, and file/folder cameras exist.

    Returns:
        The resolved model file.

    Raises:
        ModelError: model or bundle problems (exit 2).
        ConfigError: a camera source that does not exist (exit 2).
    """
    from algan.edge.capture.sources import check_sources
    from algan.runtime.verify import verify_model

    try:
        check_sources(cfg.cameras)
    except SourceError as e:
        raise ConfigError(f"config error: {e}") from None
    model = resolve_model_path(cfg.model, choose_backend(cfg.model, cfg.runner.backend))
    verify_model(cfg.model, model, cfg.model_trusted_keys)
    if graph_contract and model.is_file() and model.suffix == ".onnx":
        _check_graph(model)
    return model


def check_config(path: str) -> int:
    """Validate the schema, the model bundle and the camera files (see :func:`preflight`), then load the model as
    ``run`` does before scoring (:func:`~algan.runtime.runners.base.load_runner`: the ONNX Runtime session with its
    external data and operators, the input size against the manifest, a warm-up batch; not for the triton backend,
    a network service); print one line; return the exit status (0 valid, 2 invalid)."""
    from algan.runtime.runners.base import load_runner

    cfg = load_config(path)
    try:
        model = preflight(cfg)
        if choose_backend(cfg.model, cfg.runner.backend) != "triton":
            runner = load_runner(cfg.model, cfg.runner, trusted_keys=cfg.model_trusted_keys)
            runner.close()
    except ModelError as e:
        print(redact(f"config error: {path}: model: {e}"), file=sys.stderr)
        return 2
    print(f"{path}: valid ({len(cfg.cameras)} camera(s), model {model})")
    return 0


def run(path: str, log_level: str) -> int:
    """Load the config and run the daemon until its sources end or a signal stops it."""
    from algan.edge.app import EdgeApp

    setup_logging(log_level)
    if log_level != "debug":  # OpenCV's native warnings duplicate our own one-line reports (e.g. corrupt images)
        import cv2

        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    cfg = load_config(path)
    from algan.edge.capture.sources import check_sources

    try:
        check_sources(cfg.cameras)  # the model is verified by the runner factory, before the broker starts
    except SourceError as e:
        raise ConfigError(f"config error: {e}") from None
    stop = threading.Event()
    _install_signals(stop)
    app = EdgeApp(cfg, stop=stop, config_path=path)

    def on_hup(signum: int, frame: object) -> None:
        log.info("received SIGHUP: reloading alarm thresholds from %s", path)
        app.request_reload()

    signal.signal(signal.SIGHUP, on_hup)
    return app.run()


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command == "outbox" and all(x.isdigit() for x in extra):  # SEQ... after --config
        args.seq = [*args.seq, *map(int, extra)]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if args.command == "check-config":
            if args.old_config is not None:
                deprecated("algan-edge check-config", "check-config CONFIG", "check-config --config CONFIG")
                args.config = args.config or args.old_config
            if args.config is None:
                print("algan-edge: error: check-config needs --config FILE (the edge config YAML)", file=sys.stderr)
                return 2
            return check_config(args.config)
        if args.command == "broker":
            return broker(args.host, args.port, args.log_level)
        if args.command == "build-engine":
            return build_engine_cmd(args)
        if args.command == "doctor":
            from algan.edge.doctor import doctor

            return doctor(args.config)
        if args.command == "outbox":
            return outbox_cmd(args)
        if args.command == "keygen":
            return keygen_cmd(args.out)
        if args.command == "sign":
            return sign_cmd(args.model_dir, args.key)
        return run(args.config, args.log_level)
    except EdgeError as e:
        print(redact(f"algan-edge: {e}"), file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())
