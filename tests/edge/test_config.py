"""Config validation: one test per validator, plus the CLI's one-line message and exit status 2."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from edgekit import run_cli

from algan.edge.config import EdgeConfig, load_config, parse_config
from algan.edge.errors import ConfigError

BASE: dict[str, Any] = {
    "device_id": "line1",
    "model": "model.onnx",
    "cameras": [{"name": "cam1", "source": "clip.mp4"}],
}


def with_(path: str, value: Any) -> dict[str, Any]:
    """BASE with one override at a dotted path ('cameras.0.roi'); value ... deletes the key."""
    data = copy.deepcopy(BASE)
    node: Any = data
    keys = [int(k) if k.isdigit() else k for k in path.split(".")]
    for k in keys[:-1]:
        node = node.setdefault(k, {}) if isinstance(node, dict) else node[k]
    if value is ...:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return data


def error_of(data: Any) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data, Path("edge.yaml"))
    text = str(info.value)
    lines = text.splitlines()  # one line per error; several start with a count line
    assert len(lines) == 1 or (lines[0].endswith(f" {len(lines) - 1} errors") and all(ln.startswith("  ")
                                                                                      for ln in lines[1:]))
    return text


def test_minimal_config_defaults():
    cfg = parse_config(BASE)
    assert isinstance(cfg, EdgeConfig)
    assert cfg.batch.max_size == 8 and cfg.mqtt.port == 1883 and cfg.alarm.raise_frames == 3
    assert cfg.cameras[0].resolved_kind == "file" and not cfg.cameras[0].is_live


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("surprise", 1, "surprise: unknown key 'surprise'"),
        ("mqtt.hots", "x",
         "mqtt.hots: unknown key 'hots'; did you mean 'host'? remove it or fix its spelling (allowed here: host, port"),
        ("cameras.0.sauce", "x", "cameras.0.sauce: unknown key"),
        ("cameras.0.source", ..., "cameras.0.source: required setting is missing; add it (video file path"),
        ("device_id", ..., "device_id: required setting is missing"),
        ("cameras", [], "cameras: List should have at least 1 item"),
        ("mqtt.port", 70000, "mqtt.port: Input should be less than or equal to 65535"),
        ("mqtt.port", "abc", "mqtt.port: Input should be a valid integer"),
        ("mqtt.score_qos", 3, "mqtt.score_qos: Input should be 0, 1 or 2"),
        ("mqtt.alarm_qos", 0, "mqtt.alarm_qos: Input should be 1 or 2"),
        ("mqtt.prefix", "algan/#", "mqtt.prefix: prefix 'algan/#' is not a valid topic prefix"),
        ("mqtt.embedded_broker", "yes", "mqtt.embedded_broker: Input should be 'auto' or 'never'"),
        ("mqtt.password", "secret", "mqtt: a broker password needs mqtt.username"),
        ("runner.backend", "tflite",
         "runner.backend: Input should be 'auto', 'onnxruntime', 'tensorrt', 'torch' or 'triton'"),
        ("runner.threads", -1, "runner.threads: Input should be greater than or equal to 0"),
        ("batch.max_size", 0, "batch.max_size: Input should be greater than or equal to 1"),
        ("batch.max_wait_ms", -5, "batch.max_wait_ms: Input should be greater than or equal to 0"),
        ("alarm.clear_threshold", 1.5, "alarm: alarm.clear_threshold (1.5) must be <= alarm.threshold (1.0)"),
        ("alarm.raise_frames", 0, "alarm.raise_frames: Input should be greater than or equal to 1"),
        ("stats_interval_s", 0, "stats_interval_s: Input should be greater than 0"),
        ("device_id", "line 1", "device_id: device_id 'line 1' is not topic-safe"),
        ("cameras.0.name", "cam/1", "cameras.0.name: camera name 'cam/1' is not topic-safe"),
        ("cameras.0.source", -1, "cameras.0.source: device index must be >= 0"),
        ("cameras.0.source", " ", "cameras.0.source: source is empty"),
        ("cameras.0.kind", "webcam",
         "cameras.0.kind: Input should be 'auto', 'file', 'device', 'stream', 'folder' or 'gstreamer'"),
        ("cameras.0.roi", [0, 0, 10], "cameras.0.roi.3: item 3 is missing; expected crop [x, y, width, height]"),
        ("cameras.0.roi", [0, 0, 1, 1, 1], "cameras.0.roi: Tuple should have at most 4 items"),
        ("cameras.0.roi", [0, 0, 0, 10], "cameras.0.roi.2: Input should be greater than 0"),
        ("cameras.0.threshold", 0, "cameras.0.threshold: Input should be greater than 0"),
    ],
)
def test_each_validator_names_the_field(path, value, expected):
    assert expected in error_of(with_(path, value))


def test_kind_needs_path_for_device_index():
    data = with_("cameras.0.source", 0)
    data["cameras"][0]["kind"] = "file"
    assert "kind 'file' needs a path or URL as source" in error_of(data)


def test_camera_clear_threshold_above_threshold():
    data = with_("cameras.0.threshold", 1.0)
    data["cameras"][0]["clear_threshold"] = 2.0
    assert "cameras.0: clear_threshold (2.0) must be <= threshold (1.0)" in error_of(data)


def test_unique_camera_names():
    data = copy.deepcopy(BASE)
    data["cameras"].append({"name": "cam1", "source": 0})
    assert "camera name 'cam1' is used twice" in error_of(data)


def test_password_and_password_file_exclusive():
    data = with_("mqtt.password", "a")
    data["mqtt"].update(username="u", password_file="p")
    assert "set either mqtt.password or mqtt.password_file" in error_of(data)


def test_typo_reported_before_the_missing_key_it_causes():
    data = with_("cameras.0.source", ...)
    data["cameras"][0]["sorce"] = "clip.mp4"
    text = error_of(data)
    lines = text.splitlines()
    assert lines[0].endswith(": 2 errors")
    assert "cameras.0.sorce: unknown key 'sorce'; did you mean 'source'?" in lines[1]
    assert "cameras.0.source" in lines[2]


def test_all_errors_are_shown_at_once():
    """A config with three errors shows all three (issue 24, finding 8), one line each after a count."""
    data = with_("mqtt.port", 0)
    data["batch"] = {"max_size": 0}
    data["alarm"] = {"raise_frames": "many"}
    lines = error_of(data).splitlines()
    assert lines[0].startswith("config error: ") and lines[0].endswith(": 3 errors")
    assert len(lines) == 4 and all(ln.startswith("  ") for ln in lines[1:])
    text = "\n".join(lines)
    assert "mqtt.port" in text and "batch.max_size" in text and "alarm.raise_frames" in text


def test_not_a_mapping():
    assert "expected a mapping of settings" in error_of(["a"])
    assert "got an empty file" in error_of(None)


def test_source_kinds_resolved():
    def kind(src):
        return parse_config(with_("cameras.0.source", src)).cameras[0].resolved_kind

    assert kind(0) == "device" and kind("2") == "device" and kind("/dev/video1") == "device"
    assert kind("rtsp://cam/stream") == "stream" and kind("http://x/y.mjpg") == "stream"
    assert kind("clip.mp4") == "file"


def test_camera_thresholds():
    data = copy.deepcopy(BASE)
    data["cameras"] = [
        {"name": "a", "source": 0},
        {"name": "b", "source": 1, "threshold": 2.0},
        {"name": "c", "source": 2, "threshold": 2.0, "clear_threshold": 1.0},
    ]
    cfg = parse_config(data)
    assert [cfg.camera_thresholds(c) for c in cfg.cameras] == [(1.0, 0.9), (2.0, 1.8), (2.0, 1.0)]


def test_load_config_resolves_paths_and_reads_password_file(tmp_path, monkeypatch):
    (tmp_path / "secret").write_text("s3cret\n")
    data = copy.deepcopy(BASE)
    data["mqtt"] = {"username": "edge", "password_file": "secret"}
    data["cameras"].append({"name": "net", "source": "rtsp://h/s"})
    f = tmp_path / "edge.yaml"
    f.write_text(yaml.safe_dump(data))
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    cfg = load_config(f)
    assert cfg.model == tmp_path / "model.onnx"
    assert cfg.cameras[0].source == str(tmp_path / "clip.mp4") and cfg.cameras[1].source == "rtsp://h/s"
    assert cfg.mqtt.password == "s3cret" and cfg.mqtt.password_file is None


def test_yaml_error_reports_line(tmp_path):
    f = tmp_path / "edge.yaml"
    f.write_text("device_id: line1\ncameras:\n  - name: a\n   source: x\n")
    with pytest.raises(ConfigError, match=r"edge.yaml:4:\d+: YAML syntax error"):
        load_config(f)


def test_schema_error_reports_yaml_line(tmp_path):
    f = tmp_path / "edge.yaml"
    f.write_text("device_id: line1\nmodel: m.onnx\ncameras:\n  - name: a\n    source: x\n    roi: nope\n")
    with pytest.raises(ConfigError, match=r"edge.yaml:6: cameras\.0\.roi: "):
        load_config(f)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (None, "cannot read"),
        ("device_id: [unclosed\n", "YAML syntax error"),
        ("device_id: line1\nmodel: m.onnx\ncameras:\n  - name: a\n    source: x\n    colour: red\n",
         "cameras.0.colour: unknown key"),
        ("device_id: line1\nmodel: m.onnx\nbatch: {max_size: lots}\ncameras: [{name: a, source: x}]\n",
         "batch.max_size: Input should be a valid integer"),
    ],
)
@pytest.mark.parametrize("command", ["run", "check-config"])
def test_cli_bad_config_one_line_exit_2(tmp_path, text, needle, command):
    f = tmp_path / "edge.yaml"
    if text is not None:
        f.write_text(text)
    args = [command, "--config", str(f)] if command == "run" else [command, str(f)]
    res = run_cli("algan.cli.edge", *args)
    assert res.returncode == 2
    lines = [ln for ln in res.stderr.splitlines() if "config error" in ln]
    assert len(lines) == 1 and needle in lines[0], res.stderr
    assert "Traceback" not in res.stderr


def test_check_config_valid_exit_0(tmp_path, tiny_model):
    f = tmp_path / "edge.yaml"
    f.write_text(yaml.safe_dump({**BASE, "model": str(tiny_model)}))
    (tmp_path / "clip.mp4").write_bytes(b"")  # check-config refuses camera files that do not exist
    res = run_cli("algan.cli.edge", "check-config", "--config", str(f))
    assert res.returncode == 0 and "valid" in res.stdout
