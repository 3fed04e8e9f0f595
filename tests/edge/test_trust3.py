"""Issue 25 (trust, round three): no poison message, one daemon per state directory, bounded config, signed bundles.

Each test reproduces one failure of the probe set run against the main of that time (it failed there)."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from edgekit import DARK, edge_config, make_folder, write_config

from algan.edge.config import MqttConfig, parse_config
from algan.edge.errors import ConfigError, StateLockError
from algan.edge.publish.mqtt import MqttPublisher, topic_problem
from algan.edge.publish.outbox import Outbox

REPO = Path(__file__).resolve().parents[2]


def _cli(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "algan.cli.edge", *args], capture_output=True, text=True,
                          timeout=timeout, check=False, env=env)


# -- 1. poison messages -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("over", "field"), [
    ({"device_id": "line1\n"}, "device_id"),
    ({"mqtt": {"prefix": "algan\n"}}, "mqtt.prefix"),
    ({"mqtt": {"prefix": "plant\t1/algan"}}, "mqtt.prefix"),
    ({"mqtt": {"client_id": "edge-1\n"}}, "mqtt.client_id"),
    ({"camera": "cam1\n"}, "camera"),
], ids=["device-newline", "prefix-newline", "prefix-tab", "client-id-newline", "camera-newline"])
def test_names_with_a_control_character_or_trailing_newline_are_refused(tmp_path, over, field):
    cam = over.pop("camera", "cam1")
    cfg = edge_config(tmp_path / "model", ("127.0.0.1", 1883), [{"name": cam, "source": "/dev/null"}], **over)
    with pytest.raises(ConfigError) as info:
        parse_config(cfg)
    assert field in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_topic_problem_names_the_reason():
    assert topic_problem("algan/line1/cam1/alarm") is None
    assert topic_problem("algan/line1/cam1\n/state") == "the topic holds a control character (U+000A)"
    assert topic_problem("algan/+/x") == "the topic holds a wildcard ('+' or '#')"
    assert topic_problem("") == "the topic is empty"


def _publisher(ob: Outbox, broker, **mqtt) -> MqttPublisher:
    cfg = MqttConfig(host=broker.host, port=broker.port, reconnect_min_s=1, reconnect_max_s=1, connect_timeout_s=5,
                     **mqtt)
    return MqttPublisher(cfg, "algan-edge-poison", "algan/line1/status", ob)


def test_poison_message_from_an_earlier_run_is_a_dead_letter_and_the_rest_go_out(tmp_path, mosquitto_factory,
                                                                                  caplog):
    """The outbox holds a state message on a topic with a newline (queued by a config that passed the old name
    check) before 7 good messages: mosquitto closes the connection on it; the 7 must still reach the subscriber."""
    from mqttkit import Collector

    broker = mosquitto_factory()
    ob = Outbox(tmp_path / "ob.sqlite")
    ob.add("algan/line1/cam1\n/state", "normal", 1, True)
    good = [ob.add("algan/line1/cam1/alarm", json.dumps({"n": i}), 1, False) for i in range(7)]
    col = Collector(broker.host, broker.port, "algan/#")
    pub = _publisher(ob, broker)
    try:
        with caplog.at_level(logging.ERROR, logger="algan.edge.mqtt"):
            pub.connect(5)
            assert col.wait_for(lambda ms: len(col.on("/alarm")) == 7, timeout=15), col.messages
        assert [e["n"] for e in col.events()] == list(range(7))
        (dead,) = ob.dead_letters()
        assert dead.topic == "algan/line1/cam1\n/state" and "control character (U+000A)" in dead.reason
        lines = [r.getMessage() for r in caplog.records if "dead letters" in r.getMessage()]
        assert len(lines) == 1 and "'algan/line1/cam1\\n/state'" in lines[0] and "U+000A" in lines[0], lines
        assert pub.flush(10) == 0 and len(ob) == 0 and len(good) == 7, "every good row acknowledged and deleted"
    finally:
        pub.close(2)
        col.stop()


def test_message_the_broker_keeps_closing_the_connection_on_goes_to_the_dead_letters(tmp_path, mosquitto_factory,
                                                                                     caplog):
    """A message mosquitto closes the connection on (here: larger than its max_packet_size) is re-sent by the client
    after every reconnect; after mqtt.outbox.max_tries it is a dead letter and the messages after it are delivered."""
    from mqttkit import Collector

    broker = mosquitto_factory("allow_anonymous true\nmax_packet_size 2000\n")
    ob = Outbox(tmp_path / "ob.sqlite")
    big = ob.add("algan/line1/cam1/alarm", json.dumps({"n": -1, "pad": "x" * 5000}), 1, False)
    for i in range(3):
        ob.add("algan/line1/cam1/alarm", json.dumps({"n": i}), 1, False)
    col = Collector(broker.host, broker.port, "algan/#")
    pub = _publisher(ob, broker, outbox={"max_tries": 3})
    try:
        with caplog.at_level(logging.ERROR, logger="algan.edge.mqtt"):
            pub.connect(5)
            assert col.wait_for(lambda ms: len(col.on("/alarm")) == 3, timeout=90), col.messages
        assert [e["n"] for e in col.events()] == [0, 1, 2]
        (dead,) = ob.dead_letters()
        assert dead.seq == big and dead.tries == 3 and "closed the connection each time it was sent" in dead.reason
        lines = [r.getMessage() for r in caplog.records if "dead letters" in r.getMessage()]
        assert len(lines) == 1 and "'algan/line1/cam1/alarm'" in lines[0], lines
        assert pub.flush(10) == 0 and len(ob) == 0
    finally:
        pub.close(2)
        col.stop()


def test_dead_letter_during_paho_resend_walk_leaves_its_queue_alone_until_the_next_connect(tmp_path):
    """paho calls on_disconnect from inside its re-send walk over its queue (a write fails mid-walk); the dead letter
    made there must not change that queue during the walk (paho's network thread would end with "OrderedDict
    mutated during iteration" and never reconnect), and the message leaves the queue at the next connect."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.reasoncodes import ReasonCode

    ob = Outbox(tmp_path / "ob.sqlite")
    seq = ob.add("algan/line1/cam1/alarm", json.dumps({"n": -1}), 1, False)
    cfg = MqttConfig(host="127.0.0.1", port=1, outbox={"max_tries": 1})
    pub = MqttPublisher(cfg, "algan-edge-walk", "algan/line1/status", ob)
    client = pub._client
    pub._ledger.connected(time.monotonic())
    pub._connected.set()
    for mid in (41, 42):
        client._out_messages[mid] = mqtt.MQTTMessage(mid, b"algan/line1/cam1/alarm")
    pub._ledger.handed(seq, 41)
    lost = ReasonCode(PacketTypes.DISCONNECT, "Unspecified error")
    with client._out_message_mutex:
        walked = []
        for mid in client._out_messages:  # paho's walk; on_disconnect fires at its first entry
            walked.append(mid)
            if mid == 41:
                pub._on_disconnect(client, None, None, lost, None)
    assert walked == [41, 42] and list(client._out_messages) == [41, 42]
    (dead,) = ob.dead_letters()
    assert dead.seq == seq and dead.tries == 1
    pub._on_connect(client, None, None, ReasonCode(PacketTypes.CONNACK, "Success"), None)
    assert 41 not in client._out_messages and 42 in client._out_messages
    ob.close()


def test_a_failing_callback_is_logged_and_leaves_the_network_thread_running(caplog):
    from algan.edge.publish.mqtt import guarded

    calls = []

    def _on_publish(*args):
        calls.append(args)
        raise OSError("disk full")

    with caplog.at_level(logging.ERROR, logger="algan.edge.mqtt"):
        guarded(_on_publish)(None, None, 7)
    assert calls == [(None, None, 7)]
    (rec,) = [r for r in caplog.records if "callback" in r.getMessage()]
    assert rec.getMessage() == "MQTT callback _on_publish failed; the connection goes on" and rec.exc_info[0] is OSError


def test_outbox_cli_lists_retries_and_drops_dead_letters(tmp_path):
    path = tmp_path / "state" / "ob.sqlite"
    cfg = write_config(tmp_path / "edge.yaml", edge_config(tmp_path / "model", ("127.0.0.1", 1883),
                                                           [{"name": "cam1", "source": str(tmp_path)}],
                                                           mqtt={"outbox": {"path": str(path)}}))
    ob = Outbox(path)
    a = ob.add("algan/line1/cam1\n/state", "normal", 1, True)
    b = ob.add("algan/line1/cam1/alarm", "{}", 1, False)
    ob.dead_letter(a, "the topic holds a control character (U+000A)")
    ob.dead_letter(b, "the broker closed the connection each time it was sent (5 tries, last: x)")
    ob.close()
    res = _cli("outbox", "list", "--config", str(cfg))
    assert res.returncode == 0, res.stderr
    assert "0 message(s) queued, 2 dead letter(s)" in res.stdout
    assert "'algan/line1/cam1\\n/state'" in res.stdout and "U+000A" in res.stdout
    res = _cli("outbox", "retry", "--config", str(cfg))
    assert res.returncode == 2 and "--all" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    res = _cli("outbox", "retry", "--config", str(cfg), "999")
    assert res.returncode == 2 and "no dead letter 999" in res.stderr
    assert _cli("outbox", "retry", "--config", str(cfg), str(b)).returncode == 0
    assert _cli("outbox", "drop", "--config", str(cfg), "--all").returncode == 0
    ob = Outbox(path)
    assert ob.dead_letters() == [] and [r.topic for r in ob.after(0)] == ["algan/line1/cam1/alarm"]
    ob.close()


# -- 2. one daemon per state directory ------------------------------------------------------------------------------


def test_second_daemon_on_the_same_state_directory_exits_2_naming_the_pid(tmp_path, tiny_model, mqtt_broker):
    inbox = make_folder(tmp_path / "inbox", [DARK] * 2)
    cams = [{"name": "cam1", "source": str(inbox), "watch": True, "settle_s": 0.1}]
    path = write_config(tmp_path / "edge.yaml", edge_config(tiny_model, mqtt_broker, cams))
    first = subprocess.Popen([sys.executable, "-m", "algan.cli.edge", "run", "--config", str(path)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        lock = tmp_path / "line1" / "algan-edge.lock"
        end = time.monotonic() + 30
        while time.monotonic() < end and not (lock.is_file() and lock.read_text().strip()):
            time.sleep(0.1)
        second = _cli("run", "--config", str(path), timeout=60)
        assert second.returncode == 2, second.stderr
        err = second.stderr.strip().splitlines()
        assert len(err) == 1 and f"in use by another algan-edge (PID {first.pid})" in err[0], err
        assert str(tmp_path / "line1") in err[0]
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=30)
    assert first.returncode == 0


def test_state_lock_is_exclusive_and_released(tmp_path):
    from algan.edge.state import StateLock

    one = StateLock(tmp_path / "s")
    code = ("import sys\nfrom algan.edge.state import StateLock\nfrom algan.edge.errors import StateLockError\n"
            "try:\n    StateLock(sys.argv[1])\nexcept StateLockError as e:\n    print(e); sys.exit(2)\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path / "s")], capture_output=True, text=True,
                         env=env, timeout=60, check=False)
    assert res.returncode == 2 and f"PID {os.getpid()}" in res.stdout
    one.release()
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path / "s")], capture_output=True, text=True,
                         env=env, timeout=60, check=False)
    assert res.returncode == 0, res.stdout
    with pytest.raises(StateLockError):  # flock is per open file: a second lock in one process is refused too
        two = StateLock(tmp_path / "s")
        StateLock(tmp_path / "s")
    two.release()


def test_default_state_path_is_per_device(tmp_path, monkeypatch):
    from algan.edge.config import load_config

    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    paths = []
    for dev in ("line1", "line2"):
        cfg = edge_config(tmp_path / "model", ("127.0.0.1", 1883), [{"name": "cam1", "source": str(tmp_path)}],
                          device_id=dev)
        paths.append(load_config(write_config(tmp_path / f"{dev}.yaml", cfg)).outbox_path)
    assert paths == [tmp_path / "line1" / "outbox.sqlite", tmp_path / "line2" / "outbox.sqlite"]


def test_open_alarms_are_keyed_by_device_and_camera(tmp_path):
    ob = Outbox(tmp_path / "shared.sqlite")
    ob.set_open_alarm("cam1", '{"id": "a"}', device="line1")
    ob.set_open_alarm("cam1", '{"id": "b"}', device="line2")
    assert ob.open_alarms("line1") == {"cam1": b'{"id": "a"}'}
    assert ob.open_alarms("line2") == {"cam1": b'{"id": "b"}'}
    ob.set_open_alarm("cam1", None, device="line1")
    assert ob.open_alarms("line1") == {} and ob.open_alarms("line2") == {"cam1": b'{"id": "b"}'}
    ob.close()


def test_outbox_file_of_the_earlier_layout_keeps_its_rows(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, payload BLOB NOT "
               "NULL, qos INTEGER NOT NULL, retain INTEGER NOT NULL, created REAL NOT NULL)")
    db.execute("CREATE TABLE open_alarms (camera TEXT PRIMARY KEY, payload BLOB NOT NULL)")
    db.execute("INSERT INTO outbox (topic, payload, qos, retain, created) VALUES ('a/b', x'7b7d', 1, 0, 1.0)")
    db.execute("INSERT INTO open_alarms VALUES ('cam1', x'7b7d')")
    db.commit()
    db.close()
    ob = Outbox(path)
    (row,) = ob.after(0)
    assert (row.topic, row.tries) == ("a/b", 0)
    assert ob.open_alarms("line1") == {"cam1": b"{}"}
    ob.close()


# -- 3. bounded config ----------------------------------------------------------------------------------------------


def _alias_bomb(levels: int = 9, fan: int = 9) -> str:
    lines = [f"a0: &a0 [{','.join(['lol'] * fan)}]"]
    lines += [f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * fan)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\ndevice_id: line1\nmodel: m.onnx\ncameras: [{name: cam1, source: /dev/null}]\n"


def test_alias_bomb_is_refused_at_once_by_check_config(tmp_path):
    """~600 bytes that expand to 9^10 values: main took minutes and GBs; refused in one line (timeout 30 s)."""
    path = tmp_path / "bomb.yaml"
    path.write_text(_alias_bomb())
    assert len(path.read_bytes()) < 700
    res = _cli("check-config", "--config", str(path), timeout=30)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    (line,) = res.stderr.strip().splitlines()
    assert "expands to more than 50000 values" in line and str(path) in line


def test_self_referencing_alias_and_deep_nesting_are_one_line(tmp_path):
    from algan.edge.config import load_config

    path = tmp_path / "edge.yaml"
    path.write_text("x: &x [1, *x]\ndevice_id: line1\n")
    with pytest.raises(ConfigError, match="endless expansion"):
        load_config(path)
    path.write_text("x: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_config(path)


def test_config_over_the_size_cap_is_refused_before_parsing(tmp_path):
    from algan.edge.config import load_config

    path = tmp_path / "edge.yaml"
    with path.open("w") as f:
        f.write("device_id: line1\nnote: |\n")
        for _ in range(40_000):
            f.write("  " + "x" * 60 + "\n")
    with pytest.raises(ConfigError, match="larger than 1024 KiB") as info:
        load_config(path)
    assert "\n" not in str(info.value)


def test_anchors_within_the_bound_still_load(tmp_path):
    from algan.edge.config import load_config

    model = tmp_path / "m.onnx"
    path = tmp_path / "edge.yaml"
    path.write_text(f"device_id: line1\nmodel: {model}\ncameras:\n  - &cam {{name: cam1, source: /dev/null, "
                    "threshold: 1.5}\n  - {<<: *cam, name: cam2}\n")
    cfg = load_config(path)
    assert [(c.name, c.threshold) for c in cfg.cameras] == [("cam1", 1.5), ("cam2", 1.5)]


def test_reload_is_read_off_the_inference_loop(tmp_path, monkeypatch):
    """While the config file is being read (here: held on an event), the loop's reload poll returns at once, so
    scoring and the watchdog go on; the new thresholds apply once the file is read."""
    import threading

    from algan.edge import app as app_mod
    from algan.edge.alarm import AlarmTracker
    from algan.edge.app import EdgeApp
    from algan.edge.config import load_config

    cfg = edge_config(tmp_path / "model", ("127.0.0.1", 1883), [{"name": "cam1", "source": str(tmp_path)}])
    path = write_config(tmp_path / "edge.yaml", cfg)
    app = EdgeApp(load_config(path), config_path=path)
    app.trackers = {c.name: AlarmTracker(c.name, policy=app.cfg.alarm_policy(c)) for c in app.cfg.cameras}
    cfg["alarm"] = {**cfg["alarm"], "threshold": 2.0, "clear_threshold": 1.8}
    write_config(path, cfg)
    release, reading = threading.Event(), threading.Event()

    def slow_load(p):  # noqa: ANN001
        reading.set()
        assert release.wait(30), "the test never released the read"
        return load_config(p)

    monkeypatch.setattr(app_mod, "load_config", slow_load)
    app.request_reload()
    t0 = time.monotonic()
    app._poll_reload()
    assert reading.wait(10) and time.monotonic() - t0 < 5, "the poll waited for the file"
    app._poll_reload()
    assert app.thresholds["cam1"][0] == 1.0, "nothing applied while the file is being read"
    release.set()
    end = time.monotonic() + 10
    while app.thresholds["cam1"][0] != 2.0 and time.monotonic() < end:
        app._poll_reload()
        time.sleep(0.01)
    assert app.thresholds["cam1"] == (2.0, 1.8) and app.reloads == 1


def test_unit_bounds_memory():
    unit = (REPO / "deploy" / "algan-edge.service").read_text()
    keys = dict(line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.startswith("#"))
    assert keys["MemoryMax"].endswith("G") and float(keys["MemoryMax"][:-1]) >= float(keys["MemoryHigh"][:-1])


# -- 4. slowly written images -------------------------------------------------------------------------------------


def test_image_written_with_pauses_longer_than_settle_is_scored_once_complete(tmp_path):
    """An SMB/FTP-like writer: a JPEG in three parts with 1.5 s pauses (settle 0.5 s). The cut file is refused as
    incomplete, read again when it changes, and the finished image is returned (main: lost for good)."""
    import threading

    import cv2
    import numpy as np

    from algan.edge.capture.sources import NO_FRAME, Corrupt, FolderSource

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    img = np.random.default_rng(0).integers(0, 255, (96, 96, 3), dtype=np.uint8)
    data = cv2.imencode(".jpg", img)[1].tobytes()
    parts = [data[: len(data) // 3], data[len(data) // 3: 2 * len(data) // 3], data[2 * len(data) // 3:]]

    def writer() -> None:
        with (inbox / "slow.jpg").open("wb") as f:
            for i, part in enumerate(parts):
                f.write(part)
                f.flush()
                if i < len(parts) - 1:
                    time.sleep(1.5)

    src = FolderSource(inbox, watch=True, settle_s=0.5, poll_s=0.05, incomplete_wait_s=10.0)
    t = threading.Thread(target=writer)
    t.start()
    got: list = []
    end = time.monotonic() + 20
    while time.monotonic() < end and not any(isinstance(g, np.ndarray) for g in got):
        r = src.read()
        if not isinstance(r, type(NO_FRAME)):
            got.append(r)
        time.sleep(0.02)
    t.join()
    assert len(got) == 1 and isinstance(got[0], np.ndarray), [getattr(g, "reason", g) for g in got]
    assert not any(isinstance(g, Corrupt) for g in got)
    assert src.read() is NO_FRAME, "read once"


# -- 5. check-config runs what run runs before scoring ---------------------------------------------------------------


def _replace_graph(bundle: Path, model) -> None:  # noqa: ANN001
    """Put ``model`` (an onnx ModelProto) in the bundle as model.onnx with its sha256 recorded (a forged bundle)."""
    import hashlib

    import onnx

    onnx.save(model, str(bundle / "model.onnx"))
    m = json.loads((bundle / "algan.json").read_text())
    m["exports"]["onnx"]["sha256"] = hashlib.sha256((bundle / "model.onnx").read_bytes()).hexdigest()
    (bundle / "algan.json").write_text(json.dumps(m))


def _tiny_proto(size=(64, 64), extra_nodes=(), domain=None):  # noqa: ANN001, ANN202
    from onnx import TensorProto, helper

    h, w = size
    inp = helper.make_tensor_value_info("images", TensorProto.UINT8, ["N", h, w, 3])
    out = helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N"])
    nodes = [helper.make_node("Cast", ["images"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("ReduceMean", ["f"], ["m"], axes=[1, 2, 3], keepdims=0),
             *extra_nodes,
             helper.make_node("Div", ["m2" if extra_nodes else "m", "k"], ["scores"])]
    k = helper.make_tensor("k", TensorProto.FLOAT, [], [128.0])
    opsets = [helper.make_opsetid("", 13)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    model = helper.make_model(helper.make_graph(nodes, "tiny", [inp], [out], initializer=[k]), opset_imports=opsets,
                              ir_version=8)
    helper.set_model_props(model, {"algan.model_id": "tiny-1"})
    return model


def _huge_input(bundle: Path) -> None:
    _replace_graph(bundle, _tiny_proto(size=(40000, 40000)))


def _external_data_outside(bundle: Path) -> None:
    import numpy as np
    from onnx import numpy_helper

    model = _tiny_proto()
    (bundle.parent / "outside.bin").write_bytes(np.float32(128.0).tobytes())
    k = model.graph.initializer[0]
    k.CopyFrom(numpy_helper.from_array(np.array(128.0, np.float32), "k"))
    k.ClearField("raw_data")
    k.data_location = 1  # EXTERNAL
    for key, value in (("location", "../outside.bin"), ("offset", "0"), ("length", "4")):
        k.external_data.add(key=key, value=value)
    _replace_graph(bundle, model)


def _custom_op(bundle: Path) -> None:
    from onnx import helper

    node = helper.make_node("Evil", ["m"], ["m2"], domain="com.example.evil")
    _replace_graph(bundle, _tiny_proto(extra_nodes=[node], domain="com.example.evil"))


def _constant_of_shape_40gb(bundle: Path) -> None:
    import numpy as np
    from onnx import helper, numpy_helper

    nodes = [helper.make_node("ConstantOfShape", ["shape"], ["big"], name="bomb"),
             helper.make_node("ReduceMax", ["big"], ["r"], keepdims=0),
             helper.make_node("Add", ["m", "r"], ["m2"])]
    model = _tiny_proto(extra_nodes=nodes)
    model.graph.initializer.append(numpy_helper.from_array(np.array([100_000, 100_000], np.int64), "shape"))
    _replace_graph(bundle, model)


def _manifest_size(bundle: Path) -> None:
    m = json.loads((bundle / "algan.json").read_text())
    m["input"] = {"height": 224, "width": 224, "layout": "NHWC", "dtype": "uint8", "colour_order": "BGR"}
    (bundle / "algan.json").write_text(json.dumps(m))


@pytest.mark.parametrize(("forge", "needle"), [
    (_huge_input, "takes 40000x40000 pixel images, more than 8192 pixels a side"),
    (_external_data_outside, "cannot load model"),
    (_custom_op, "cannot load model"),
    (_constant_of_shape_40gb, "creates a tensor of shape [100000, 100000] (37.3 GiB) with ConstantOfShape node 'bomb'"),
    (_manifest_size, "takes 64x64 pixel images, but its manifest says the model was trained at 224x224"),
], ids=["40000x40000-input", "external-data-outside", "custom-domain-op", "constant-40gb", "manifest-size"])
def test_check_config_refuses_what_run_refuses_in_one_line(tmp_path, forge, needle):
    from edgekit import make_bundle, make_video

    bundle = make_bundle(tmp_path / "bundle")
    video = make_video(tmp_path / "clip.mp4", [DARK] * 3)
    path = write_config(tmp_path / "edge.yaml", edge_config(bundle, ("127.0.0.1", 1),
                                                            [{"name": "cam1", "source": str(video)}]))
    assert _cli("check-config", "--config", str(path)).returncode == 0, "the intact bundle passes"
    forge(bundle)
    for res in (_cli("check-config", "--config", str(path)), _cli("run", "--config", str(path))):
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
        lines = res.stderr.strip().splitlines()
        assert needle in lines[-1] and not any("ERROR" in x or "error" in x for x in lines[:-1]), res.stderr
    assert len(res.stderr.strip().splitlines()) >= 1
    check = _cli("check-config", "--config", str(path))
    assert len(check.stderr.strip().splitlines()) == 1, check.stderr


# -- 6. secrets ---------------------------------------------------------------------------------------------------


PW_HEAD, PW_TAIL = "Sekr3tQ", "Pw2xZ"  # the password is PW_HEAD@PW_TAIL: neither half may appear anywhere


def _leaks(text: str) -> list[str]:
    return [line for line in text.splitlines() if PW_HEAD in line or PW_TAIL in line]


def test_password_with_at_sign_never_logged_by_run(tmp_path, tiny_model, unused_port):
    cams = [{"name": "door", "source": f"rtsp://admin:{PW_HEAD}@{PW_TAIL}@127.0.0.1:{unused_port}/s1",
             "open_timeout_s": 1, "reconnect_interval_s": 0.2, "reconnect_max_s": 0.4}]
    cfg = edge_config(tiny_model, ("127.0.0.1", unused_port), cams,
                      mqtt={"connect_timeout_s": 0, "outbox": {"path": str(tmp_path / "ob.sqlite")}})
    path = write_config(tmp_path / "edge.yaml", cfg)
    proc = subprocess.Popen([sys.executable, "-m", "algan.cli.edge", "run", "--config", str(path), "--log-level",
                             "debug"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(4)  # several open retries
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert "rtsp://admin:***@127.0.0.1" in err, err
    assert _leaks(err) == [] and _leaks(out) == []


def test_url_given_as_a_file_is_masked_before_path_normalisation(tmp_path, tiny_model):
    cams = [{"name": "door", "kind": "file", "source": f"rtsp://admin:{PW_HEAD}@{PW_TAIL}@10.0.0.5:554/s1"}]
    path = write_config(tmp_path / "edge.yaml", edge_config(tiny_model, ("127.0.0.1", 1), cams))
    res = _cli("check-config", "--config", str(path))
    assert res.returncode == 2 and "door" in res.stderr, res.stderr
    assert _leaks(res.stderr) == [] and _leaks(res.stdout) == [], res.stderr
    res = _cli("run", "--config", str(path))
    assert res.returncode == 2 and _leaks(res.stderr) == [], res.stderr


# -- 7. repeated I/O errors, unfinished snapshot files ---------------------------------------------------------------


class _Clock:
    t = 0.0

    def __call__(self) -> float:
        return self.t


def test_repeated_errors_are_one_line_then_a_count_per_minute(caplog):
    from algan.edge.logs import RepeatedErrors

    clock = _Clock()
    errs = RepeatedErrors(logging.getLogger("algan.test"), 60.0, clock)
    with caplog.at_level(logging.ERROR, logger="algan.test"):
        for i in range(86):  # the probe: 86 failures in 65 s
            clock.t = i * 65 / 86
            errs.error("outbox", "cannot write the MQTT outbox x (disk full); check the disk")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert lines[0] == "cannot write the MQTT outbox x (disk full); check the disk"
    assert lines[1].endswith("more like this in the last 60 s)") and "(79 more" in lines[1], lines


def test_outbox_and_open_alarm_write_failures_are_not_one_line_each(tmp_path, caplog):
    from algan.edge.app import EdgeApp
    from algan.edge.publish.outbox import OutboxError

    class FullOutbox(Outbox):
        def add(self, *a, **k):  # noqa: ANN002, ANN003, ANN202
            raise OutboxError(f"cannot write the MQTT outbox {self.path} (database or disk is full); check the disk")

        def set_open_alarm(self, *a, **k):  # noqa: ANN002, ANN003, ANN202
            raise OutboxError(f"cannot record the open alarm of camera cam1 in {self.path} (disk full); check the "
                              "disk")

    ob = FullOutbox(tmp_path / "ob.sqlite")
    pub = MqttPublisher(MqttConfig(port=1), "algan-edge-x", "algan/line1/status", ob)
    app = EdgeApp(parse_config(edge_config(tmp_path / "model", ("127.0.0.1", 1),
                                           [{"name": "cam1", "source": str(tmp_path)}])))
    app._outbox = ob
    with caplog.at_level(logging.ERROR):
        for _ in range(86):
            pub.publish("algan/line1/cam1/alarm", "{}", qos=1, durable=True)
        for _ in range(22):
            app._record_open_alarm("cam1", '{"id": "a"}')
    outbox_lines = [r for r in caplog.records if "cannot write the MQTT outbox" in r.getMessage()]
    alarm_lines = [r for r in caplog.records if "cannot record the open alarm" in r.getMessage()]
    assert len(outbox_lines) == 1 and len(alarm_lines) == 1, [r.getMessage() for r in caplog.records]
    ob.close()


def test_unfinished_snapshot_files_cleaned_at_start_and_never_left(tmp_path):
    import numpy as np

    from algan.edge.publish.snapshots import SnapshotStore

    snaps = tmp_path / "snaps"
    snaps.mkdir()
    ours = [".seq__20261130T010203.456Z__3f2a9c.jpg.tmp", ".cam1__20261201T000000.000Z__ab.jpg.tmp"]
    theirs = [".notes.tmp", "mine.jpg.tmp", ".seq__20261130T010203.456Z__3f2a9c.jpg.tmp.bak", "keep.jpg"]
    for name in ours + theirs:
        (snaps / name).write_bytes(b"")
    store = SnapshotStore(snaps)
    assert sorted(store.clean_temp()) == sorted(ours)
    assert sorted(p.name for p in snaps.iterdir()) == sorted(theirs), "nothing else is deleted"
    name = "cam1__20261201T000001.000Z__cd.jpg"
    (snaps / name).mkdir()  # the rename cannot replace a directory: the write fails after the temporary file
    assert store.save(name, np.zeros((32, 32, 3), np.uint8)) is None
    assert not (snaps / f".{name}.tmp").exists(), "a failed write leaves no temporary file"


# -- 8. bundle files are regular files inside the bundle -------------------------------------------------------------


@pytest.mark.parametrize("name", ["weights.safetensors", "model.onnx", "algan.json"])
def test_symlink_in_a_bundle_is_refused_by_name_without_quoting_its_target(tmp_path, name):
    import struct

    from edgekit import make_bundle, make_video

    bundle = make_bundle(tmp_path / "bundle")
    secret = tmp_path / "shadow"
    secret.write_bytes(b"root:$6$SeCrEt0123456789:19000:0:99999:7:::\n")
    video = make_video(tmp_path / "clip.mp4", [DARK] * 3)
    path = write_config(tmp_path / "edge.yaml", edge_config(bundle, ("127.0.0.1", 1),
                                                            [{"name": "cam1", "source": str(video)}]))
    if name != "weights.safetensors":  # a copy of the real file outside the bundle: still refused, by name
        (tmp_path / name).write_bytes((bundle / name).read_bytes())
        target = tmp_path / name
    else:
        target = secret
    (bundle / name).unlink()
    (bundle / name).symlink_to(target)
    res = _cli("check-config", "--config", str(path))
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    (line,) = res.stderr.strip().splitlines()
    assert f"{bundle / name} is a symbolic link" in line, line
    head = str(struct.unpack("<Q", secret.read_bytes()[:8])[0])
    assert "SeCrEt" not in line and head not in line and "root:" not in line
    res = _cli("run", "--config", str(path))
    assert res.returncode == 2 and f"{bundle / name} is a symbolic link" in res.stderr.strip().splitlines()[-1]


def test_weights_error_never_quotes_file_bytes(tmp_path):
    import struct

    from algan.runtime.verify import BundleCheckError, check_weights

    p = tmp_path / "weights.safetensors"
    p.write_bytes(b"root:$6$SeCrEt0123456789\n")
    with pytest.raises(BundleCheckError) as info:
        check_weights(p)
    assert str(struct.unpack("<Q", p.read_bytes()[:8])[0]) not in str(info.value)


# -- 9. signed bundles --------------------------------------------------------------------------------------------


@pytest.fixture
def signed(tmp_path):  # noqa: ANN201
    """A signed bundle, its key pair (algan-edge keygen), a video and a config trusting the key."""
    from edgekit import make_bundle, make_video

    from algan.runtime.signing import sign_bundle

    (tmp_path / "keys").mkdir()
    res = _cli("keygen", "--out", str(tmp_path / "keys" / "line.key"))
    assert res.returncode == 0, res.stderr
    key = tmp_path / "keys" / "line.key"
    assert oct(key.stat().st_mode & 0o777) == "0o600" and "ed25519:" in res.stdout
    bundle = make_bundle(tmp_path / "bundle")
    sign_bundle(bundle, key)
    video = make_video(tmp_path / "clip.mp4", [DARK] * 3)
    cfg = edge_config(bundle, ("127.0.0.1", 1), [{"name": "cam1", "source": str(video)}])
    cfg["model"] = {"path": str(bundle), "trusted_keys": [str(tmp_path / "keys" / "line.key.pub")]}
    return bundle, key, write_config(tmp_path / "edge.yaml", cfg)


def _refused(path: Path, needle: str) -> None:
    for res in (_cli("check-config", "--config", str(path)), _cli("run", "--config", str(path))):
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
        assert needle in res.stderr.strip().splitlines()[-1], res.stderr
    assert len(_cli("check-config", "--config", str(path)).stderr.strip().splitlines()) == 1


def test_signed_bundle_passes_and_a_forged_one_is_refused(signed):
    """The probe's forgery: rewrite the graph and its sha256 in algan.json (verify_model alone accepts that)."""
    import hashlib

    from edgekit import make_model

    bundle, _, path = signed
    res = _cli("check-config", "--config", str(path))
    assert res.returncode == 0, res.stderr
    make_model(bundle / "model.onnx", model_id="tiny-1", size=(32, 32))
    m = json.loads((bundle / "algan.json").read_text())
    m["exports"]["onnx"]["sha256"] = hashlib.sha256((bundle / "model.onnx").read_bytes()).hexdigest()
    (bundle / "algan.json").write_text(json.dumps(m))
    _refused(path, "was changed after the bundle was signed")


def test_unsigned_or_foreign_key_bundle_refused(signed, tmp_path):
    from algan.runtime.signing import generate_key, sign_bundle

    bundle, _, path = signed
    (bundle / "algan.sig").unlink()
    _refused(path, "is not signed (algan.sig missing) and model.trusted_keys is set")
    other = tmp_path / "other.key"
    generate_key(other)
    res = _cli("sign", str(bundle), "--key", str(other))
    assert res.returncode == 0 and f"wrote {bundle / 'algan.sig'}" in res.stdout, res.stderr
    _refused(path, "which is not in model.trusted_keys")
    assert _cli("sign", str(bundle), "--key", str(tmp_path / "keys" / "line.key")).returncode == 0
    assert _cli("check-config", "--config", str(path)).returncode == 0, "re-signed with the trusted key"
    sign_bundle(bundle, other)
    sig = json.loads((bundle / "algan.sig").read_text())
    trusted = (tmp_path / "keys" / "line.key.pub").read_text().split()[0]
    from algan.runtime.signing import key_id, parse_public_key

    sig["key_id"] = key_id(parse_public_key(trusted))  # claims the trusted key: the signature does not verify
    (bundle / "algan.sig").write_text(json.dumps(sig))
    _refused(path, "the signature does not verify")


def test_trusted_keys_config_errors_are_one_line(tmp_path):
    from algan.edge.config import load_config

    def cfg(model) -> Path:  # noqa: ANN001
        c = edge_config(tmp_path / "m", ("127.0.0.1", 1), [{"name": "cam1", "source": "/dev/null"}])
        c["model"] = model
        return write_config(tmp_path / "edge.yaml", c)

    for model, needle in [
        ({"path": "m", "trusted_keys": ["ed25519:AAAA"]}, "an Ed25519 public key has 32 bytes"),
        ({"path": "m", "trusted_keys": ["missing.pub"]}, "cannot read"),
        ({"trusted_keys": []}, "give model.path"),
        ({"path": "m", "keys": []}, "unknown setting(s) keys"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(needle)) as info:
            load_config(cfg(model))
        assert "\n" not in str(info.value)


def test_export_sign_refuses_a_bad_key_before_exporting(tmp_path, capsys, monkeypatch):
    from algan.cli import export as export_cli
    from algan.export import pipeline

    called = []
    monkeypatch.setattr(pipeline, "export_bundle", lambda opts, say: called.append(opts))
    (tmp_path / "bad.key").write_text("ed25519:not a private key\n")
    assert export_cli.main([str(tmp_path / "bundle"), "--sign", str(tmp_path / "bad.key")]) == 2
    assert "is not an unencrypted PEM private key" in capsys.readouterr().err and not called


def test_export_sign_writes_a_signature_the_daemon_accepts(tmp_path, capsys, monkeypatch):
    from edgekit import make_bundle

    from algan.cli import export as export_cli
    from algan.export import pipeline
    from algan.runtime.signing import generate_key
    from algan.runtime.verify import verify_model

    bundle = make_bundle(tmp_path / "bundle")
    monkeypatch.setattr(pipeline, "export_bundle", lambda opts, say: None)  # the export itself: tests/export
    _, pub = generate_key(tmp_path / "k")
    assert export_cli.main([str(bundle), "--sign", str(tmp_path / "k")]) == 0
    assert f"wrote {bundle / 'algan.sig'}" in capsys.readouterr().out
    verify_model(bundle, bundle / "model.onnx", [pub])
    assert sorted(json.loads((bundle / "algan.sig").read_text())["files"]) == [
        "algan.json", "model.onnx", "weights.safetensors"]


# -- 10. broker ACL, endpoints ------------------------------------------------------------------------------------


def test_deploy_acl_lets_each_device_write_its_own_topics_and_subscribers_only_read(tmp_path, mosquitto_factory):
    """mosquitto with deploy/mosquitto.acl as shipped: device line2 cannot forge line1's 'cleared' or 'normal', a
    subscriber cannot publish, the alarms user reads only alarms."""
    import paho.mqtt.client as mqtt
    from mqttkit import Collector, password_file, run_as_me

    users = {"line1": "pw-line1", "line2": "pw-line2", "alarms": "pw-alarms", "ops": "pw-ops"}
    pw = password_file(tmp_path / "passwd", users)
    acl = tmp_path / "algan.acl"
    acl.write_text((REPO / "deploy" / "mosquitto.acl").read_text())  # as shipped (the broker user reads it here)
    broker = mosquitto_factory(f"allow_anonymous false\npassword_file {pw}\nacl_file {acl}\n{run_as_me()}")
    ops = Collector(broker.host, broker.port, "#", username="ops", password="pw-ops")
    alarms = Collector(broker.host, broker.port, "#", username="alarms", password="pw-alarms")

    def publish(user: str, topic: str, payload: str) -> None:
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        c.username_pw_set(user, users[user])
        c.connect(broker.host, broker.port)
        c.loop_start()
        c.publish(topic, payload, qos=1).wait_for_publish(5)
        c.disconnect()
        c.loop_stop()

    try:
        publish("line2", "algan/line1/cam1/alarm", '{"state": "cleared", "forged": true}')
        publish("line2", "algan/line1/cam1/state", "normal")
        publish("ops", "algan/line1/cam1/state", "normal")
        publish("alarms", "algan/line1/cam1/alarm", '{"state": "cleared", "forged": true}')
        publish("line1", "algan/line1/cam1/state", "alarm")
        publish("line1", "algan/line1/cam1/alarm", '{"state": "raised"}')
        publish("line2", "algan/line2/cam1/alarm", '{"state": "raised", "device": "line2"}')
        assert ops.wait_for(lambda ms: len(ms) >= 3, timeout=10)
        assert alarms.wait_for(lambda ms: len(ms) >= 2, timeout=10)
        time.sleep(0.5)
        got = [(m.topic, m.payload) for m in ops.messages]
        assert got == [("algan/line1/cam1/state", "alarm"), ("algan/line1/cam1/alarm", '{"state": "raised"}'),
                       ("algan/line2/cam1/alarm", '{"state": "raised", "device": "line2"}')], got
        assert [m.topic for m in alarms.messages] == ["algan/line1/cam1/alarm", "algan/line2/cam1/alarm"]
    finally:
        ops.stop()
        alarms.stop()
    conf = (REPO / "deploy" / "mosquitto.conf").read_text()
    assert "\nacl_file /etc/mosquitto/algan.acl" in conf and "require_certificate true" in conf


def test_metrics_bound_beyond_loopback_warns(caplog):
    pytest.importorskip("prometheus_client")
    from algan.edge.config import MetricsConfig
    from algan.edge.metrics import Metrics, is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3")
    from benchmarks._kit import free_port

    for host, warned in (("127.0.0.1", False), ("0.0.0.0", True)):
        caplog.clear()
        m = Metrics(MetricsConfig(port=free_port(), host=host), "line1", dict)
        with caplog.at_level(logging.WARNING, logger="algan.edge.metrics"):
            m.start()
        m.stop()
        lines = [r.getMessage() for r in caplog.records if "without authentication" in r.getMessage()]
        assert len(lines) == int(warned), lines


def test_alarms_password_flag_warns_and_env_var_works(tmp_path, mosquitto_factory):
    from mqttkit import password_file, run_as_me

    pw = password_file(tmp_path / "passwd", {"alarms": "S3cret-alarms"})
    broker = mosquitto_factory(f"allow_anonymous false\npassword_file {pw}\n{run_as_me()}")
    base = [sys.executable, "-m", "algan.cli.alarms", "--broker", f"{broker.host}:{broker.port}", "--username",
            "alarms", "--timeout", "1"]
    env = {**os.environ, "ALGAN_MQTT_PASSWORD": "S3cret-alarms"}
    res = subprocess.run(base, capture_output=True, text=True, env=env, timeout=60, check=False)
    assert res.returncode == 0 and "--password is visible" not in res.stderr, res.stderr
    env.pop("ALGAN_MQTT_PASSWORD")
    res = subprocess.run([*base, "--password", "S3cret-alarms"], capture_output=True, text=True, env=env,
                         timeout=60, check=False)
    assert res.returncode == 0 and "--password is visible to every user" in res.stderr, res.stderr
    assert "S3cret-alarms" not in res.stderr


def test_outbox_of_the_earlier_default_path_is_pointed_out(tmp_path, monkeypatch, caplog, unused_port):
    from algan.edge.app import EdgeApp
    from algan.edge.config import load_config

    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    Outbox(tmp_path / "outbox.sqlite").close()  # ./outbox.sqlite, the shared default of earlier versions
    cfg = edge_config(tmp_path / "model", ("127.0.0.1", unused_port), [{"name": "cam1", "source": str(tmp_path)}],
                      mqtt={"connect_timeout_s": 0})
    app = EdgeApp(load_config(write_config(tmp_path / "edge.yaml", cfg)))
    with caplog.at_level(logging.WARNING, logger="algan.edge.app"):
        pub = app._connect()
    pub.close(0.1)
    (line,) = [r.getMessage() for r in caplog.records if "is no longer used" in r.getMessage()]
    assert str(tmp_path / "outbox.sqlite") in line and str(tmp_path / "line1" / "outbox.sqlite") in line
