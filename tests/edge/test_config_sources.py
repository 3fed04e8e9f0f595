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
