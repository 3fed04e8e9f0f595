"""Issue 15 (trust): no silent wrong model, no open broker, no leaked secret, no bad frame scored, user errors exit 2.

Each test reproduces one failure of the fault-injection pass (it failed on the main of that time)."""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import yaml
from edgekit import DARK, edge_config, make_bundle, make_folder, make_model, make_video, run_edge, write_config

from algan.edge.config import load_config, parse_config
from algan.edge.errors import ConfigError
from algan.runtime.errors import ModelError

REPO = Path(__file__).resolve().parents[2]


def check_config(path: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "algan.cli.edge", "check-config", "--config", str(path)],
                          capture_output=True, text=True, timeout=60, check=False, env=env)


def bundle_config(tmp_path: Path, bundle: Path, broker: tuple[str, int] = ("127.0.0.1", 1), **over) -> Path:
    video = tmp_path / "clip.mp4"
    if not video.exists():
        make_video(video, [DARK] * 3)
    cfg = edge_config(bundle, broker, [{"name": "cam1", "source": str(video)}], **over)
    return write_config(tmp_path / "edge.yaml", cfg)


# -- 1. bundle verification ------------------------------------------------------------------------------------


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[:-20])


def _pickle(p: Path) -> None:
    p.write_bytes(pickle.dumps({"head.w": [1.0, 2.0, 3.0]}, protocol=4))


def _foreign_graph(p: Path) -> None:
    make_model(p.parent / "model.onnx", model_id="other-7")  # copied from another bundle


def _foreign_graph_same_hash(p: Path) -> None:
    make_model(p.parent / "model.onnx", model_id="other-7")  # ... and its hash pasted into the manifest
    m = json.loads((p.parent / "algan.json").read_text())
    import hashlib

    m["exports"]["onnx"]["sha256"] = hashlib.sha256((p.parent / "model.onnx").read_bytes()).hexdigest()
    (p.parent / "algan.json").write_text(json.dumps(m))


def _version_99(p: Path) -> None:
    m = json.loads((p.parent / "algan.json").read_text())
    (p.parent / "algan.json").write_text(json.dumps({**m, "format_version": 99}))


def _corrupt_manifest(p: Path) -> None:
    (p.parent / "algan.json").write_text('{"format_version": 1, "model_id": "tiny-1", "calib')


@pytest.mark.parametrize(("damage", "needle"), [
    (_truncate, "weights.safetensors is damaged (truncated"),
    (_pickle, "weights.safetensors is damaged (a pickle"),
    (_foreign_graph, "is not the graph"),
    (_foreign_graph_same_hash, "belongs to model 'other-7'"),
    (_version_99, "has format version 99"),
    (_corrupt_manifest, "algan.json: not valid JSON"),
], ids=["truncated-weights", "pickle-weights", "foreign-graph", "foreign-model-id", "format-99", "corrupt-json"])
def test_damaged_bundle_refused_by_check_config(tmp_path, capsys, damage, needle):
    from algan.cli.edge import main

    bundle = make_bundle(tmp_path / "bundle")
    cfg = bundle_config(tmp_path, bundle)
    assert main(["check-config", "--config", str(cfg)]) == 0, "the intact bundle passes"
    damage(bundle / "weights.safetensors")
    capsys.readouterr()
    assert main(["check-config", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


def test_damaged_bundle_refused_by_run_before_the_broker(tmp_path):
    bundle = make_bundle(tmp_path / "bundle")
    _foreign_graph(bundle / "weights.safetensors")
    res = run_edge(bundle_config(tmp_path, bundle))  # port 1: nothing listens there
    assert res.returncode == 2, res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert "is not the graph" in last and "re-run algan-export" in last
    assert "Traceback" not in res.stderr and "MQTT" not in res.stderr


def test_bare_onnx_and_engine_less_bundle_reports(tmp_path):
    from algan.runtime.verify import verify_model

    bare = make_model(tmp_path / "solo" / "m.onnx")
    rep = verify_model(bare, bare)
    assert rep.bundle is None and not rep.sha256_checked
    bundle = make_bundle(tmp_path / "bundle")
    rep = verify_model(bundle, bundle / "model.onnx")
    assert rep.bundle == bundle and rep.model_id == "tiny-1" and rep.sha256_checked


def _engine_of(bundle: Path, onnx_file: str = "model.onnx", precision: str = "fp16") -> Path:
    """``model.engine`` + sidecar as algan-edge build-engine leaves them: the sidecar records the graph's sha256."""
    from algan.contract import file_sha256

    (bundle / "model.engine").write_bytes(b"engine bytes")
    (bundle / "model.engine.json").write_text(json.dumps({
        "tensorrt_version": "10.3.0", "gpu_name": "Orin", "compute_capability": "8.7", "precision": precision,
        "batch_profile": {"min": 1, "opt": 4, "max": 8}, "onnx_file": onnx_file,
        "onnx_sha256": file_sha256(bundle / onnx_file), "input_name": "images", "output_name": "scores",
        "input_shape": [64, 64]}))
    return bundle / "model.engine"


def _re_export(bundle: Path) -> str:
    """A new model.onnx (another graph, same model id) with its sha256 recorded, as a later algan-export leaves it."""
    import hashlib

    make_model(bundle / "model.onnx", size=(32, 32))
    digest = hashlib.sha256((bundle / "model.onnx").read_bytes()).hexdigest()
    m = json.loads((bundle / "algan.json").read_text())
    m["exports"]["onnx"]["sha256"] = digest
    (bundle / "algan.json").write_text(json.dumps(m))
    return digest


def test_stale_engine_names_both_hashes_and_the_rebuild_command(tmp_path):
    from algan.contract import EngineSidecar
    from algan.runtime.verify import stale_engine

    engine = tmp_path / "b" / "model.engine"
    side = EngineSidecar(onnx_file="model.fp16.onnx", onnx_sha256="a1" * 32, precision="int8",
                         tensorrt_version="10.3.0", gpu_name="Orin", compute_capability="8.7",
                         batch_profile={"min": 1, "opt": 4, "max": 8}, input_name="images", output_name="scores",
                         input_shape=[224, 224])
    assert stale_engine(side, engine, "a1" * 32) is None, "same graph"
    assert stale_engine(side, engine, None) is None, "no graph beside the engine: nothing to compare"
    assert stale_engine(side.model_copy(update={"onnx_sha256": None}), engine, "b2" * 32) is None, "no recorded hash"
    assert stale_engine(side, engine, "b2" * 32) == (
        f"engine {engine} is stale: it was built from a model.fp16.onnx with sha256 a1a1a1a1a1a1..., but "
        f"{engine.parent / 'model.fp16.onnx'} is now b2b2b2b2b2b2... (the bundle was re-exported after the engine "
        f"was built); rebuild it with algan-edge build-engine --int8 {engine.parent} on this device")
    assert f"build-engine {engine.parent} on" in stale_engine(side.model_copy(update={"precision": "fp32"}), engine,
                                                              "b2" * 32)


def test_engine_built_before_a_re_export_refused_by_check_config(tmp_path, capsys, monkeypatch):
    from algan.cli.edge import main
    from algan.runtime.runners import base
    from algan.runtime.verify import BundleCheckError, verify_model

    # the stand-in engine cannot be loaded (no TensorRT here): what is checked is the bundle check before loading
    monkeypatch.setattr(base, "load_runner", lambda model, settings, **kw: SimpleNamespace(close=lambda: None))

    bundle = make_bundle(tmp_path / "bundle")
    engine = _engine_of(bundle)
    cfg = bundle_config(tmp_path, bundle, runner={"backend": "tensorrt"})
    assert main(["check-config", "--config", str(cfg)]) == 0, "the engine of the current graph passes"
    verify_model(bundle, engine)
    digest = _re_export(bundle)
    verify_model(bundle, bundle / "model.onnx")  # the re-exported graph itself is intact
    with pytest.raises(BundleCheckError, match=rf"engine {engine} is stale: .* is now {digest[:12]}\.\.\."):
        verify_model(bundle, engine)
    capsys.readouterr()
    assert main(["check-config", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and f"algan-edge build-engine --fp16 {bundle} on this device" in err, err
    _engine_of(bundle)  # rebuilt
    assert main(["check-config", "--config", str(cfg)]) == 0


def test_unreadable_bundle_file_names_file_and_user(tmp_path):
    """The service runs as another user than the one who trained: the message names the file and that user."""
    base = Path(tempfile.mkdtemp(prefix="algan-perm-"))  # pytest's tmp dirs are 0700: 'nobody' could not enter
    try:
        bundle = make_bundle(base / "bundle")
        os.chmod(base, 0o755)
        os.chmod(bundle, 0o755)
        os.chmod(bundle / "algan.json", 0o644)
        os.chmod(bundle / "model.onnx", 0o644)
        os.chmod(bundle / "weights.safetensors", 0o600)  # as mkstemp left it before the fix
        code = ("import os, pwd, sys; from pathlib import Path; from algan.runtime.verify import verify_model\n"
                "if os.geteuid() == 0: os.setuid(65534)  # nobody, after the imports (root's interpreter)\n"
                "try:\n    verify_model(Path(sys.argv[1]), Path(sys.argv[1]) / 'model.onnx')\n"
                "except Exception as e:\n    print(e)\n")
        res = subprocess.run([sys.executable, "-c", code, str(bundle)], capture_output=True, text=True, timeout=60,
                             check=False, env={**os.environ, "PYTHONPATH": str(REPO)})
        assert f"cannot read {bundle / 'weights.safetensors'}: permission denied for user" in res.stdout, res
        assert "chmod -R a+rX" in res.stdout
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_training_side_turns_safetensors_errors_into_one_line(tmp_path):
    pytest.importorskip("torch")
    from algan.bundle import BundleError, update_calibration
    from algan.contract import load_manifest

    bundle = make_bundle(tmp_path / "bundle")
    _truncate(bundle / "weights.safetensors")
    with pytest.raises(BundleError, match="is damaged or not a safetensors file") as info:
        update_calibration(bundle, 0.0, 2.0, {})
    assert "\n" not in str(info.value)
    _pickle(bundle / "weights.safetensors")
    with pytest.raises(BundleError, match="is damaged or not a safetensors file"):
        update_calibration(bundle, 0.0, 2.0, {})
    with pytest.raises(BundleError, match=r"model.onnx is a file, but a model bundle directory is needed .* give "
                                          r"the bundle directory"):
        load_manifest(bundle / "model.onnx")  # algan-eval / calibrate / export given the graph instead of the bundle


def test_eval_given_the_onnx_file_explains(tmp_path):
    bundle = make_bundle(tmp_path / "bundle")
    res = subprocess.run([sys.executable, "-m", "algan.cli.eval", str(bundle / "model.onnx"), "--data",
                          str(tmp_path)], capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert "is a file, but a model bundle directory is needed" in res.stderr
    assert "does not exist; train one" not in res.stderr


# -- 4. permissions ----------------------------------------------------------------------------------------------


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_bundle_written_world_readable_under_a_private_umask(tmp_path):
    torch = pytest.importorskip("torch")
    from algan.bundle import save_bundle, update_calibration

    det = torch.nn.Module()
    det.head = torch.nn.Linear(2, 2)
    old = os.umask(0o077)
    try:
        out = save_bundle(tmp_path / "b", det, {"model_id": "m1", "calibration": {"center": 0.0, "threshold": 1.0}},
                          samples=np.zeros((1, 4, 4, 3), np.uint8))
        assert _mode(out) == 0o755
        assert {p.name: _mode(p) for p in out.iterdir()} == {
            "weights.safetensors": 0o644, "samples.safetensors": 0o644, "algan.json": 0o644}
        update_calibration(out, 0.0, 2.0, {"source": "test"})
        assert _mode(out / "weights.safetensors") == 0o644 and _mode(out / "algan.json") == 0o644
    finally:
        os.umask(old)


def test_daemon_state_is_private_whatever_the_umask(tmp_path):
    from algan.edge.capture.journal import FolderJournal
    from algan.edge.publish.outbox import Outbox
    from algan.edge.publish.snapshots import SnapshotStore

    old = os.umask(0o022)
    try:
        ob = Outbox(tmp_path / "state" / "outbox.sqlite")
        ob.add("t", "x", 1, False)
        j = FolderJournal(tmp_path / "jstate" / "cam.journal.sqlite")
        j.add("a.png", 1, 2)
        snaps = SnapshotStore(tmp_path / "snaps" / "cam1")
        path = Path(snaps.save("a.jpg", np.zeros((16, 16, 3), np.uint8)))
    finally:
        os.umask(old)
    for d in (tmp_path / "state", tmp_path / "jstate", tmp_path / "snaps", tmp_path / "snaps" / "cam1"):
        assert _mode(d) == 0o700, d
    files = [*(tmp_path / "state").iterdir(), *(tmp_path / "jstate").iterdir(), path]
    assert files and all(_mode(f) == 0o600 for f in files), {f.name: oct(_mode(f)) for f in files}
    ob.close()
    j.close()


def test_unit_sets_private_umask_and_deploy_config_never_embeds_a_broker():
    unit = (REPO / "deploy" / "algan-edge.service").read_text()
    assert "\nUMask=0077\n" in unit and "\nRestartPreventExitStatus=2\n" in unit
    deploy = yaml.safe_load((REPO / "deploy" / "edge.yaml").read_text())
    assert deploy["mqtt"]["embedded_broker"] == "never"


# -- 2. embedded broker ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mqtt", [{"username": "edge", "password": "pw"}, {"tls": {}}, {"host": "10.1.2.3"}],
                         ids=["credentials", "tls", "not-loopback"])
def test_embedded_broker_never_replaces_an_authenticating_broker(unused_port, mqtt):
    from algan.edge.publish.broker import embedded_broker_refusal, wants_embedded_broker

    base = {"device_id": "d", "model": "m.onnx", "cameras": [{"name": "c", "source": 0}]}
    cfg = parse_config({**base, "mqtt": {"port": unused_port, "embedded_broker": "auto", **mqtt}}).mqtt
    assert not wants_embedded_broker(cfg) and embedded_broker_refusal(cfg)
    plain = parse_config({**base, "mqtt": {"port": unused_port, "embedded_broker": "auto"}}).mqtt
    assert wants_embedded_broker(plain), "nothing listens and nothing to protect: auto still starts it"


def test_daemon_with_credentials_waits_for_the_real_broker(tmp_path, tiny_model, step_video, unused_port):
    (tmp_path / "pw").write_text("Pa55word-xyz\n")
    cfg = edge_config(tiny_model, ("127.0.0.1", unused_port), [{"name": "cam1", "source": str(step_video)}],
                      mqtt={"embedded_broker": "auto", "username": "edge", "password_file": "pw",
                            "connect_timeout_s": 1})
    res = run_edge(write_config(tmp_path / "edge.yaml", cfg))
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "embedded broker not allowed: mqtt.username/password are set" in res.stderr
    assert "starting the embedded one" not in res.stderr and "cannot reach MQTT broker" in res.stderr
    assert "Pa55word-xyz" not in res.stderr


# -- 3. secrets ----------------------------------------------------------------------------------------------------


SECRET = "Zq9-secret-Kx7"


def test_camera_and_mqtt_passwords_never_logged(tmp_path, tiny_model, mosquitto_factory, unused_port):
    """A refusing broker (wrong password), a stream camera with user:password@ that cannot be opened (retried):
    nothing of either secret reaches stderr; the URL appears with the password masked."""
    broker = mosquitto_factory("allow_anonymous false\n")
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "cam_pw").write_text(SECRET + "\n")
    cams = [{"name": "door", "source": f"rtsp://admin:${{file:cam_pw}}@127.0.0.1:{unused_port}/s1",
             "open_timeout_s": 2, "reconnect_interval_s": 0.2, "reconnect_max_s": 0.4}]
    cfg = edge_config(tiny_model, (broker.host, broker.port), cams,
                      mqtt={"username": "edge", "password": "${EDGE_MQTT_PW}", "reconnect_max_s": 1,
                            "connect_timeout_s": 0})
    path = write_config(tmp_path / "edge.yaml", cfg)
    env = {**os.environ, "CREDENTIALS_DIRECTORY": str(creds), "EDGE_MQTT_PW": SECRET + "-mqtt"}
    proc = subprocess.Popen([sys.executable, "-m", "algan.cli.edge", "run", "--config", str(path), "--log-level",
                             "debug"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    time.sleep(4)  # several open retries and broker refusals
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert "cannot open stream source rtsp://admin:***@127.0.0.1" in err, err
    assert "opened" not in err or "admin:***@" in err
    assert SECRET not in err and SECRET not in out
    assert "refused the connection" in err


def test_config_error_never_echoes_a_password(tmp_path):
    f = tmp_path / "edge.yaml"
    f.write_text("device_id: d\nmodel: m.onnx\nmqtt: {username: u, password: 918273645}\n"
                 "cameras: [{name: c, source: 0}]\n")
    res = check_config(f)
    assert res.returncode == 2 and "mqtt.password" in res.stderr and "918273645" not in res.stderr


def test_log_filter_masks_urls_registered_secrets_and_tracebacks(capsys):
    from algan.edge.logs import register_secret, setup_logging

    setup_logging("info")
    register_secret("s3cr3t-val")
    log = logging.getLogger("algan.test")
    log.info("opened %s", "rtsp://u:hunter22@cam/x")
    log.warning("value s3cr3t-val here; gst user-pw=abc123 ok")
    try:
        raise RuntimeError("boom rtsp://u:tb-secret@cam/x")
    except RuntimeError:
        log.exception("failed")
    err = capsys.readouterr().err
    assert "rtsp://u:***@cam/x" in err and "user-pw=***" in err
    for s in ("hunter22", "s3cr3t-val", "abc123", "tb-secret"):
        assert s not in err


def test_env_and_file_substitution(tmp_path, monkeypatch):
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "cam_pw").write_text("pw-from-file\nignored\n")
    f = tmp_path / "edge.yaml"
    f.write_text("device_id: ${DEV:-line9}\nmodel: m.onnx\n"
                 "mqtt: {host: '${BROKER_HOST}', port: '${BROKER_PORT:-1999}', username: u, password: '${PW}'}\n"
                 "cameras: [{name: c, source: 'rtsp://u:${file:cam_pw}@h/s'}, {name: d, source: 'a$${b}.mp4'}]\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    monkeypatch.setenv("BROKER_HOST", "10.0.0.9")
    monkeypatch.setenv("PW", "pw-from-env")
    monkeypatch.delenv("DEV", raising=False)
    monkeypatch.delenv("BROKER_PORT", raising=False)
    cfg = load_config(f)
    assert (cfg.device_id, cfg.mqtt.host, cfg.mqtt.port, cfg.mqtt.password) == ("line9", "10.0.0.9", 1999,
                                                                                 "pw-from-env")
    assert cfg.cameras[0].source == "rtsp://u:pw-from-file@h/s" and cfg.cameras[1].source.endswith("a${b}.mp4")
    monkeypatch.delenv("PW")
    with pytest.raises(ConfigError) as info:
        load_config(f)
    msg = str(info.value)
    assert msg.startswith(f"config error: {f}:3: mqtt.password: environment variable PW is not set") and "\n" not in msg
    monkeypatch.setenv("PW", "x")
    (creds / "cam_pw").unlink()
    with pytest.raises(ConfigError, match=r"cameras.0.source: \$\{file:cam_pw\}: cannot read .*cam_pw"):
        load_config(f)


# -- 5. bad frames ---------------------------------------------------------------------------------------------


def test_truncated_tiny_and_empty_images_counted_and_journalled(tmp_path):
    from algan.edge.capture.journal import FolderJournal
    from algan.edge.capture.sources import NO_FRAME, FolderSource

    class Clock:
        t = 0.0

        def __call__(self) -> float:
            return self.t

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    jpg = cv2.imencode(".jpg", np.full((64, 64, 3), 200, np.uint8))[1].tobytes()
    png = cv2.imencode(".png", np.full((64, 64, 3), 200, np.uint8))[1].tobytes()
    (inbox / "a_cut.jpg").write_bytes(jpg[: len(jpg) // 2])
    (inbox / "b_cut.png").write_bytes(png[:-12])
    (inbox / "c_dot.png").write_bytes(cv2.imencode(".png", np.zeros((1, 1, 3), np.uint8))[1].tobytes())
    (inbox / "d_empty.jpg").write_bytes(b"")
    (inbox / "e_good.jpg").write_bytes(jpg)
    journal = FolderJournal(tmp_path / "j.sqlite")
    clock = Clock()
    src = FolderSource(inbox, watch=True, settle_s=0.5, poll_s=0.0, clock=clock, journal=journal,
                       incomplete_wait_s=10.0)
    assert src.read() is NO_FRAME, "nothing read before it settled, not even the empty file"

    def drain() -> list:
        got = []
        while not isinstance(r := src.read(), type(NO_FRAME)):
            got.append(r)
            src.acker()()  # what the camera reader does for a corrupt frame: not read again after a restart
        return got

    clock.t = 1.0
    got = drain()  # incomplete files (cut short, empty) wait: their writer may still be at it
    assert len(got) == 2 and isinstance(got[1], np.ndarray)
    assert "c_dot.png is 1x1 pixels, smaller than the minimum 16x16" in got[0].reason
    clock.t = 10.5
    assert drain() == [], "not reported before they stayed unchanged for incomplete_wait_s"
    clock.t = 11.5
    reasons = [g.reason for g in drain()]
    assert len(reasons) == 3
    assert "a_cut.jpg is truncated (no JPEG end-of-image marker FFD9" in reasons[0]
    assert "b_cut.png is truncated (no PNG IEND chunk" in reasons[1]
    assert "d_empty.jpg is empty (0 bytes)" in reasons[2]
    clock.t = 12.0
    assert src.read() is NO_FRAME, "each bad file is reported once"
    (inbox / "d_empty.jpg").write_bytes(jpg)  # the empty file is finally written
    clock.t = 13.0
    src.read()
    clock.t = 14.0
    assert isinstance(src.read(), np.ndarray), "a file that was empty is read once it has content"
    src.acker()()
    again = FolderSource(inbox, watch=True, settle_s=0.0, poll_s=0.0, clock=clock, journal=journal)
    assert again.read() is NO_FRAME, "after a restart the journal skips every file reported or scored"


def test_bad_images_counted_as_corrupt_in_the_daemon_stats(tmp_path, tiny_model, mqtt_broker, mqtt_collector):
    folder = make_folder(tmp_path / "imgs", [DARK] * 3)
    jpg = cv2.imencode(".jpg", np.full((32, 32, 3), 250, np.uint8))[1].tobytes()
    (folder / "003.jpg").write_bytes(jpg[:-30])  # a bright frame cut short
    (folder / "004.png").write_bytes(cv2.imencode(".png", np.full((1, 1, 3), 250, np.uint8))[1].tobytes())
    col = mqtt_collector()
    res = run_edge(write_config(tmp_path / "edge.yaml", edge_config(tiny_model, mqtt_broker,
                                                                   [{"name": "c", "source": str(folder)}])))
    assert res.returncode == 0 and "Traceback" not in res.stderr
    assert "003.jpg is truncated" in res.stderr and "004.png is 1x1 pixels" in res.stderr
    assert "Premature end of JPEG" not in res.stderr
    assert col.wait_for(lambda ms: any(m.topic.endswith("/stats") for m in ms))
    stats = json.loads(col.on("line1/stats")[-1].payload)
    assert stats["corrupt"] == 2 and stats["frames"] == 3


# -- 7. exit codes and messages ----------------------------------------------------------------------------------


def test_missing_camera_file_is_exit_2_for_check_config_and_run(tmp_path, tiny_model, unused_port):
    cfg = edge_config(tiny_model, ("127.0.0.1", unused_port), [{"name": "cam1", "source": "nope/clip.mp4"}],
                      mqtt={"embedded_broker": "auto"})
    path = write_config(tmp_path / "edge.yaml", cfg)
    chk = check_config(path)
    assert chk.returncode == 2 and "cameras.cam1.source: file" in chk.stderr and "does not exist" in chk.stderr
    res = run_edge(path)
    assert res.returncode == 2 and "does not exist" in res.stderr
    assert "embedded" not in res.stderr, "refused before any broker is started"
    cfg["cameras"] = [{"name": "inbox", "source": str(tmp_path / "later"), "watch": True}]
    assert check_config(write_config(path, cfg)).returncode == 0, "a watched folder may appear later (retried)"


def test_example_config_passes_check_config_with_a_model(tmp_path):
    """configs/edge.example.yaml as shipped, in a checkout where `make demo` wrote demo-out/ (its model and video)."""
    repo = tmp_path / "repo"
    (repo / "configs").mkdir(parents=True)
    shutil.copy(REPO / "configs" / "edge.example.yaml", repo / "configs" / "edge.example.yaml")
    make_bundle(repo / "demo-out" / "model")
    make_video(repo / "demo-out" / "line.mkv", [DARK] * 3)
    res = check_config(repo / "configs" / "edge.example.yaml")
    assert res.returncode == 0, res.stderr
    cfg = load_config(repo / "configs" / "edge.example.yaml")
    assert Path(cfg.cameras[0].source).resolve() == (repo / "demo-out" / "line.mkv")
    assert cfg.mqtt.embedded_broker == "auto" and cfg.model == repo / "configs" / ".." / "demo-out" / "model"


def test_stream_refused_at_once_says_refused(unused_port):
    from algan.edge.capture.sources import VideoSource
    from algan.edge.errors import SourceError

    t0 = time.monotonic()
    with pytest.raises(SourceError) as info:
        VideoSource(f"rtsp://127.0.0.1:{unused_port}/s", "stream", open_timeout_s=5)
    msg = str(info.value)
    assert time.monotonic() - t0 < 5
    assert f"connection to 127.0.0.1:{unused_port} failed at once (Connection refused)" in msg
    assert "silent for" not in msg


def test_wrong_ca_hint_does_not_suggest_insecure(tmp_path, tiny_model, step_video, mosquitto_factory):
    from mqttkit import make_certs, run_as_me

    (tmp_path / "real").mkdir()
    (tmp_path / "other").mkdir()
    certs = make_certs(tmp_path / "real")
    other = make_certs(tmp_path / "other")
    broker = mosquitto_factory(f"cafile {certs['ca.crt']}\ncertfile {certs['server.crt']}\n"
                               f"keyfile {certs['server.key']}\nallow_anonymous true\n{run_as_me()}")
    cfg = edge_config(tiny_model, (broker.host, broker.port), [{"name": "cam1", "source": str(step_video)}],
                      mqtt={"tls": {"ca_file": str(other["ca.crt"])}, "connect_timeout_s": 2})
    res = run_edge(write_config(tmp_path / "edge.yaml", cfg))
    assert res.returncode == 1
    last = res.stderr.strip().splitlines()[-1]
    assert "TLS certificate check failed" in last and "mqtt.tls.ca_file" in last and "insecure" not in last


def test_model_errors_exit_2(tmp_path):
    from algan.runtime.verify import verify_model

    with pytest.raises(ModelError) as info:
        verify_model(tmp_path / "nothing", tmp_path / "nothing")
    assert info.value.exit_code == 2
