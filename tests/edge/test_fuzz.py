"""Bounded fuzzing (hypothesis, a few seconds each) of what an operator or an upstream machine feeds the daemon: the
config loader (random bytes, random values at every known key) and the image decode path of folder sources (random
bytes, cut and corrupted JPEG/PNG files). Never a traceback: a config gives a config or ONE line (exit 2); an image
gives a frame or a counted Corrupt."""

from __future__ import annotations

import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from algan.edge.capture.sources import MIN_IMAGE_SIDE, Corrupt, decode_image_file  # noqa: E402
from algan.edge.config import EdgeConfig, load_config  # noqa: E402
from algan.edge.errors import ConfigError  # noqa: E402

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
_DIR = Path(tempfile.mkdtemp(prefix="algan-fuzz-"))

BASE = {"device_id": "line1", "model": "m.onnx", "mqtt": {"host": "127.0.0.1", "username": "u", "password": "p"},
        "alarm": {"threshold": 1.0}, "cameras": [{"name": "cam1", "source": "clip.mp4"}]}
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True),
                    st.text(max_size=30), st.sampled_from(["${X}", "${file:}", "${A:-1}", "$${", "${", "}", "*", "&a"]))
VALUES = st.recursive(SCALARS, lambda c: st.one_of(st.lists(c, max_size=3),
                                                   st.dictionaries(st.text(max_size=8), c, max_size=3)), max_leaves=6)
KEYS = [*EdgeConfig.model_fields, "mqtt.port", "mqtt.password", "mqtt.tls", "mqtt.outbox", "alarm.cameras",
        "cameras.0.source", "cameras.0.roi", "cameras.0.kind", "cameras.0.watch", "cameras.0.fps", "cameras"]


def _load(text: bytes) -> None:
    f = _DIR / "edge.yaml"
    f.write_bytes(text)
    try:
        load_config(f)
    except ConfigError as e:
        msg = str(e)
        assert msg.startswith("config error: ") and "\n" not in msg and "Traceback" not in msg, msg
        assert e.exit_code == 2


@FUZZ
@given(st.binary(max_size=300))
def test_config_loader_random_bytes(data):
    _load(data)


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(KEYS), VALUES), min_size=1, max_size=3))
def test_config_loader_random_values(edits):
    cfg = yaml.safe_load(yaml.safe_dump(BASE))
    for key, value in edits:
        node = cfg
        *parents, last = key.split(".")
        try:
            for p in parents:
                node = node[int(p)] if isinstance(node, list) else node.setdefault(p, {})
            if isinstance(node, list):
                node[int(last)] = value
            else:
                node[last] = value
        except (IndexError, KeyError, TypeError, ValueError, AttributeError):
            continue  # an earlier edit replaced the parent with something else
    _load(yaml.safe_dump(cfg, allow_unicode=True).encode())


def _image(kind: str) -> bytes:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)
    return cv2.imencode(kind, img)[1].tobytes()


JPG, PNG = _image(".jpg"), _image(".png")


def _check_decode(data: bytes) -> None:
    out = decode_image_file(_DIR / "fuzz.img", data=data)
    if isinstance(out, Corrupt):
        assert "fuzz.img" in out.reason and "\n" not in out.reason
    else:
        assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3 and min(out.shape[:2]) >= MIN_IMAGE_SIDE


@FUZZ
@given(st.binary(max_size=400))
def test_image_decode_random_bytes(data):
    _check_decode(data)


@FUZZ
@given(st.sampled_from([JPG, PNG]), st.integers(0, 10**6), st.lists(st.tuples(st.integers(0, 10**6),
                                                                              st.integers(0, 255)), max_size=8))
def test_image_decode_cut_and_corrupted_files(base, cut, flips):
    data = bytearray(base[: max(0, len(base) - cut % len(base))])
    for pos, value in flips:
        if data:
            data[pos % len(data)] = value
    _check_decode(bytes(data))


def test_cut_files_are_always_refused():
    for base in (JPG, PNG):
        for n in range(0, len(base) - 1, max(1, len(base) // 200)):
            assert isinstance(decode_image_file(_DIR / "cut.img", data=base[:n]), Corrupt), n
