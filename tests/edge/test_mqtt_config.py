"""Config of the alarm and MQTT sections: new keys, per-camera overrides, TLS/outbox/snapshot paths, one-line
errors."""

from __future__ import annotations

import pytest
import yaml

from algan.edge.alarm import AlarmPolicy
from algan.edge.config import load_config, parse_config
from algan.edge.errors import ConfigError


def base(**over) -> dict:
    data = {"device_id": "line1", "model": "m.onnx", "cameras": [{"name": "cam1", "source": "a.mp4"},
                                                                   {"name": "cam2", "source": "b.mp4"}]}
    data.update(over)
    return data


def error_of(data: dict) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    text = str(info.value)
    assert "\n" not in text
    return text


def test_defaults_keep_the_old_behaviour():
    cfg = parse_config(base())
    assert cfg.alarm_policy(cfg.cameras[0]) == AlarmPolicy(1.0, 0.9, 3, None, 5, None, 0.0, 0.0)
    assert cfg.mqtt.outbox.enabled and cfg.mqtt.tls is None and not cfg.mqtt.homeassistant.enabled
    assert cfg.alarm.snapshots is None


def test_per_camera_overrides_merge():
    alarm = {"threshold": 2.0, "clear_threshold": 1.0, "raise_frames": 3, "raise_window": 5, "cooldown_s": 10,
             "cameras": {"cam2": {"raise_frames": 2, "min_duration_s": 4, "threshold": 4.0}}}
    cams = [{"name": "cam1", "source": "a.mp4", "threshold": 3.0}, {"name": "cam2", "source": "b.mp4"}]
    cfg = parse_config(base(alarm=alarm, cameras=cams))
    p1, p2 = (cfg.alarm_policy(c) for c in cfg.cameras)
    assert p1 == AlarmPolicy(3.0, 1.5, 3, 5, 5, None, 0.0, 10.0)  # camera threshold keeps the global ratio
    assert p2 == AlarmPolicy(4.0, 2.0, 2, 5, 5, None, 4.0, 10.0)
    assert cfg.camera_thresholds(cfg.cameras[1]) == (4.0, 2.0)


@pytest.mark.parametrize(("over", "want"), [
    ({"alarm": {"raise_frames": 4, "raise_window": 3}},
     "alarm: alarm.raise_window (3) must be >= alarm.raise_frames (4); raise it"),
    ({"alarm": {"cameras": {"cam3": {"raise_frames": 2}}}},
     "(top level): alarm.cameras.cam3: no camera is named 'cam3'; did you mean"),
    ({"alarm": {"raise_window": 4, "cameras": {"cam1": {"raise_frames": 6}}}},
     "alarm.cameras.cam1: raise_window (4) must be >= raise_frames (6); fix the alarm settings of this camera"),
    ({"alarm": {"cameras": {"cam1": {"threshold": 2}}},
      "cameras": [{"name": "cam1", "source": "a", "threshold": 3}]}, "threshold is set both in cameras[].threshold"),
    ({"alarm": {"cooldown_s": -1}}, "alarm.cooldown_s: Input should be greater than or equal to 0"),
    ({"alarm": {"snapshots": {"max_count": 5}}}, "alarm.snapshots.dir: required setting is missing"),
    ({"alarm": {"snapshots": {"dir": "s", "jpeg_quality": 101}}}, "alarm.snapshots.jpeg_quality: Input should be"),
    ({"mqtt": {"tls": {"cert_file": "c.pem"}}}, "mqtt.tls.cert_file and mqtt.tls.key_file go together"),
    ({"mqtt": {"tls": {"ca_flie": "c.pem"}}}, "mqtt.tls.ca_flie: unknown key 'ca_flie'; did you mean 'ca_file'?"),
    ({"mqtt": {"reconnect_min_s": 10, "reconnect_max_s": 5}},
     "mqtt.reconnect_max_s (5) must be >= mqtt.reconnect_min_s"),
    ({"mqtt": {"outbox": {"max_events": 1}}}, "mqtt.outbox.max_events: Input should be greater than or equal to 10"),
    ({"mqtt": {"homeassistant": {"discovery_prefix": "ha/#"}}}, "discovery_prefix 'ha/#' is not a valid topic"),
])
def test_errors_are_one_clear_line(over, want):
    assert want in error_of(base(**over))


def test_load_config_resolves_outbox_snapshots_and_tls(tmp_path, monkeypatch):
    (tmp_path / "ca.pem").write_text("x")
    data = base(alarm={"snapshots": {"dir": "snaps"}}, mqtt={"tls": {"ca_file": "ca.pem"}})
    path = tmp_path / "edge.yaml"
    path.write_text(yaml.safe_dump(data))
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    cfg = load_config(path)
    device = cfg.device_id  # the default state path is per device: never a bare ./outbox.sqlite shared by two configs
    assert cfg.mqtt.outbox.path == tmp_path / device / "outbox.sqlite"
    assert cfg.alarm.snapshots.dir == tmp_path / "snaps" and cfg.mqtt.tls.ca_file == tmp_path / "ca.pem"
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    assert load_config(path).mqtt.outbox.path == tmp_path / "state" / device / "outbox.sqlite"


def test_missing_tls_file_is_one_line(tmp_path):
    path = tmp_path / "edge.yaml"
    path.write_text(yaml.safe_dump(base(mqtt={"tls": {"ca_file": "nope.pem"}})))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith("config error: mqtt.tls.ca_file: cannot read ")
    assert "nope.pem" in str(info.value) and "\n" not in str(info.value)
