"""Config validators of the camera, runner and metrics sections added for production sources (one test each)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from algan.edge.config import CameraConfig, parse_config
from algan.edge.errors import ConfigError


def config(cam: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"device_id": "line1", "model": "model.onnx", "cameras": [{"name": "cam1", **cam}], **top}


@pytest.mark.parametrize(
    ("cam", "top", "needle"),
    [
        ({"source": 0, "loop": True}, {}, "cameras.0: loop only apply to file/folder sources, not to a device source"),
        ({"source": "rtsp://h/s", "realtime": True}, {}, "realtime only apply to file/folder sources"),
        ({"source": "imgs", "watch": True, "loop": True}, {}, "a watched folder never ends"),
        ({"source": "a.mp4", "kind": "file", "watch": True}, {}, "watch applies to folder sources"),
        ({"source": "imgs", "journal": "j.sqlite"}, {}, "journal applies to watched folders (watch: true)"),
        ({"source": 0, "reconnect_interval_s": 10, "reconnect_max_s": 5}, {}, "reconnect_max_s (5.0) must be >="),
        ({"source": 0, "kind": "gstreamer"}, {}, "kind 'gstreamer' needs a path or URL as source"),
        ({"source": 0, "fps": 0}, {}, "cameras.0.fps: Input should be greater than 0"),
        ({"source": 0, "stale_timeout_s": 0}, {}, "cameras.0.stale_timeout_s: Input should be greater than 0"),
        ({"source": "rtsp://h/s", "rtsp_transport": "http"}, {}, "cameras.0.rtsp_transport: Input should be 'tcp'"),
        ({"source": 0}, {"runner": {"providers": ["cuda", "cuda"]}}, "providers ['cuda', 'cuda'] lists one twice"),
        ({"source": 0}, {"runner": {"providers": ["rocm"]}}, "runner.providers.0: Input should be 'tensorrt'"),
        ({"source": 0}, {"metrics": {"port": 0}}, "metrics.port: Input should be greater than or equal to 1"),
    ],
)
def test_validators_name_the_field(cam, top, needle):
    with pytest.raises(ConfigError) as info:
        parse_config(config(cam, **top), Path("edge.yaml"))
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_kinds_and_endless():
    gst = "v4l2src device=/dev/video0 ! videoconvert ! appsink"
    assert CameraConfig(name="c", source=gst).resolved_kind == "gstreamer"
    assert CameraConfig(name="c", source="rtsp://x/y").is_live
    assert CameraConfig(name="c", source="imgs", watch=True).endless
    assert not CameraConfig(name="c", source="imgs").endless
    assert CameraConfig(name="c", source="a.mp4", loop=True, replay_fps=10).endless
    cfg = parse_config(config({"source": 0}))
    assert cfg.runner.backend == "auto" and cfg.runner.providers == ["cpu"] and cfg.metrics.port is None


def test_watched_folder_journal_paths(tmp_path, monkeypatch):
    """Default journal beside the outbox (state directory); an explicit relative one is resolved like the outbox."""
    from algan.edge.config import load_config

    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    cams = [{"name": "inbox", "source": "imgs", "watch": True},
            {"name": "lab", "source": "lab", "watch": True, "journal": "j/lab.sqlite"},
            {"name": "once", "source": "once", "watch": True, "resume": False},
            {"name": "files", "source": "files"}]
    (tmp_path / "edge.yaml").write_text(
        "device_id: line1\nmodel: model.onnx\nmqtt: {outbox: {path: state/outbox.sqlite}}\ncameras:\n"
        + "".join(f"  - {c}\n".replace("'", '"').replace("True", "true").replace("False", "false") for c in cams))
    cfg = load_config(tmp_path / "edge.yaml")
    paths = [cfg.journal_path(c) for c in cfg.cameras]
    assert paths == [tmp_path / "state" / "inbox.journal.sqlite", tmp_path / "j" / "lab.sqlite", None, None]
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "var"))
    cfg = load_config(tmp_path / "edge.yaml")
    assert [cfg.journal_path(c) for c in cfg.cameras][:2] == [tmp_path / "var" / "state" / "inbox.journal.sqlite",
                                                              tmp_path / "var" / "j" / "lab.sqlite"]
