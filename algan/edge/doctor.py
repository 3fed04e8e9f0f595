"""``algan-edge doctor``: what this machine gives the daemon, and why a configured backend or camera would fail.

Prints, one line each: Python; OpenCV (version, file, whether built with GStreamer and FFMPEG, read from
``cv2.getBuildInformation()``: PyPI's ``opencv-python(-headless)`` wheels have no GStreamer, so ``nvarguscamerasrc``
and ``nvv4l2decoder`` pipelines need JetPack's OpenCV); ONNX Runtime (version, execution providers); TensorRT
(version, or why absent); pycuda and the CUDA device (name, compute capability), or why absent. With ``--config``
it then checks the configured model and backend (files present, packages importable, ONNX Runtime providers
available, an engine's sidecar built for this TensorRT and GPU and from the bundle's current graph) and each camera's
source (file/folder exists, device node exists, GStreamer/FFMPEG support in this OpenCV for pipeline/URL sources).
Nothing is opened or started (no camera, no broker, no model load).

Exit status: 0 every check passed; 2 the config file is invalid (one line, as ``check-config``) or a check failed
on what the config names (a model or camera file that does not exist: the exit status ``check-config`` gives it);
1 a check of this machine failed (a package, provider, engine or device; each failure is a ``FAIL`` line saying
why and how to fix).
"""

from __future__ import annotations

import importlib.util
import platform
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

INSTALL_JETSON = "deploy/jetson/install.sh"


@dataclass
class Report:
    """Lines printed by :func:`doctor`; ``failures`` counts the ``FAIL`` lines, ``user_failures`` those caused by the
    config (files it names that do not exist)."""

    lines: list[str] = field(default_factory=list)
    failures: int = 0
    user_failures: int = 0

    def info(self, what: str, text: str) -> None:
        self.lines.append(f"{what:<12} {text}")

    def ok(self, what: str, text: str) -> None:
        self.lines.append(f"ok   {what}: {text}")

    def fail(self, what: str, text: str, user: bool = False) -> None:
        self.failures += 1
        self.user_failures += bool(user)
        self.lines.append(f"FAIL {what}: {text}")


def build_flags(info: str) -> dict[str, bool]:
    """``{"GStreamer": bool, "FFMPEG": bool}`` from the Video I/O section of ``cv2.getBuildInformation()`` (lines
    like ``GStreamer:                   YES (1.20.3)`` / ``NO``)."""
    out = {}
    for name in ("GStreamer", "FFMPEG"):
        m = re.search(rf"^\s*{name}:\s*(\w+)", info, re.MULTILINE)
        out[name] = bool(m and m.group(1).upper() == "YES")
    return out


def opencv_info() -> tuple[dict[str, Any] | None, str]:
    """``(info, reason)``: version, file, GStreamer/FFMPEG flags of the importable OpenCV, or None and why."""
    try:
        import cv2
    except ImportError as e:
        return None, f"not importable ({e}); on a Jetson use JetPack's python3-opencv through {INSTALL_JETSON}"
    flags = build_flags(cv2.getBuildInformation())
    return {"version": cv2.__version__, "file": str(Path(cv2.__file__).parent), **flags}, ""


def onnxruntime_info() -> tuple[dict[str, Any] | None, str]:
    try:
        import onnxruntime as ort
    except ImportError as e:
        return None, f"not importable ({e}); pip install onnxruntime, or JetPack's onnxruntime-gpu wheel on a Jetson"
    return {"version": ort.__version__, "providers": list(ort.get_available_providers()),
            "file": str(Path(ort.__file__).parent)}, ""


def tensorrt_info() -> tuple[dict[str, Any] | None, str]:
    from algan.export.engine_build import tensorrt_status

    ok, reason = tensorrt_status()
    if not ok and not reason.startswith("only the TensorRT lean runtime"):
        return None, reason
    import tensorrt

    return {"version": str(tensorrt.__version__), "builder": ok}, reason


def cuda_info() -> tuple[dict[str, Any] | None, str]:
    """CUDA device 0 through pycuda (what the TensorRT runner uses), or why not."""
    try:
        import pycuda
        import pycuda.driver as cuda
    except ImportError as e:
        return None, (f"pycuda not importable ({e}); the tensorrt backend needs it: apt-get install python3-pycuda "
                      "on a Jetson, pip install pycuda elsewhere")
    try:
        cuda.init()
        n = cuda.Device.count()
        if n == 0:
            return None, f"pycuda {pycuda.VERSION_TEXT}: no CUDA device"
        dev = cuda.Device(0)
        major, minor = dev.compute_capability()
        return {"pycuda": pycuda.VERSION_TEXT, "devices": n, "name": dev.name(), "capability": f"{major}.{minor}",
                "driver": ".".join(map(str, divmod(cuda.get_driver_version(), 1000)))}, ""
    except Exception as e:  # pycuda.driver.Error: no driver, no device
        return None, f"pycuda {getattr(pycuda, 'VERSION_TEXT', '?')}: CUDA unusable ({str(e)[:200]})"


def environment(report: Report) -> dict[str, Any]:
    """Fill ``report`` with what this machine provides; returns the collected facts for the config checks."""
    from algan import __version__

    facts: dict[str, Any] = {}
    report.info("python", f"{platform.python_version()} ({sys.executable}); algan {__version__}")
    cv, why = opencv_info()
    facts["opencv"] = cv
    if cv is None:
        report.info("opencv", why)
    else:
        report.info("opencv", f"{cv['version']} ({cv['file']}): GStreamer {'YES' if cv['GStreamer'] else 'NO'}, "
                              f"FFMPEG {'YES' if cv['FFMPEG'] else 'NO'}")
    ort, why = onnxruntime_info()
    facts["onnxruntime"] = ort
    report.info("onnxruntime", why if ort is None else f"{ort['version']} providers {', '.join(ort['providers'])}")
    trt, why = tensorrt_info()
    facts["tensorrt"] = trt
    report.info("tensorrt", why if trt is None else
                f"{trt['version']}{'' if trt['builder'] else ' (lean runtime: cannot build engines)'}")
    cuda, why = cuda_info()
    facts["cuda"] = cuda
    report.info("cuda", why if cuda is None else
                f"{cuda['name']} (compute capability {cuda['capability']}, driver {cuda['driver']}, "
                f"pycuda {cuda['pycuda']})")
    return facts


def _check_model(cfg: Any, facts: dict[str, Any], report: Report) -> None:
    from algan.edge.config import ORT_PROVIDERS
    from algan.runtime.errors import ModelError
    from algan.runtime.runners.base import choose_backend, resolve_model_path

    backend = choose_backend(cfg.model, cfg.runner.backend)
    try:
        path = resolve_model_path(cfg.model, backend)
    except ModelError as e:
        report.fail("model", str(e), user=True)
        return
    if backend == "onnxruntime":
        ort = facts["onnxruntime"]
        if ort is None:
            report.fail("backend onnxruntime", "ONNX Runtime is not importable: pip install onnxruntime")
            return
        wanted = [ORT_PROVIDERS[p] for p in cfg.runner.providers]
        missing = [p for p in wanted if p not in ort["providers"]]
        if missing:
            report.fail("backend onnxruntime", f"runner.providers asks for {', '.join(missing)}, which this "
                        f"onnxruntime {ort['version']} lacks (has {', '.join(ort['providers'])}); on a Jetson install "
                        f"JetPack's onnxruntime-gpu into a venv made by {INSTALL_JETSON}, or drop them")
        else:
            report.ok("backend onnxruntime", f"{path} with {', '.join(wanted)}")
    elif backend == "tensorrt":
        _check_tensorrt(path, facts, report)
    elif backend == "torch":
        if importlib.util.find_spec("torch") is None:
            report.fail("backend torch", "torch is not installed; use the onnxruntime or tensorrt backend on a device")
        else:
            report.ok("backend torch", f"{path} (torch importable; CUDA not probed without importing it)")
    elif backend == "triton":
        _check_triton(cfg, report)


def _check_tensorrt(path: Path, facts: dict[str, Any], report: Report) -> None:
    from algan.runtime.errors import ModelError
    from algan.runtime.runners.tensorrt import read_sidecar
    from algan.runtime.verify import check_engine_source

    trt, cuda = facts["tensorrt"], facts["cuda"]
    if trt is None:
        report.fail("backend tensorrt", "TensorRT is not importable here; see the tensorrt line above")
    if cuda is None:
        report.fail("backend tensorrt", "pycuda/CUDA is unusable here; see the cuda line above")
    try:
        meta = read_sidecar(path)
    except ModelError as e:
        report.fail("engine", str(e))
        return
    try:
        check_engine_source(path)
        stale = False
    except ModelError as e:
        report.fail("engine", str(e))
        stale = True
    diffs = []
    if trt is not None and meta.tensorrt_version != trt["version"]:
        diffs.append(f"TensorRT {meta.tensorrt_version} != {trt['version']} here")
    if cuda is not None and (meta.gpu_name, meta.compute_capability) != (cuda["name"], cuda["capability"]):
        diffs.append(f"GPU {meta.gpu_name} {meta.compute_capability} != {cuda['name']} {cuda['capability']}")
    if diffs:
        report.fail("engine", f"{path} was built elsewhere ({'; '.join(diffs)}); rebuild it here with algan-edge "
                    f"build-engine --fp16 {path.parent}")
    elif trt is not None and cuda is not None and not stale:
        report.ok("engine", f"{path} ({meta.precision}, built for this TensorRT and GPU)")


def _check_triton(cfg: Any, report: Report) -> None:
    """tritonclient importable, the server live, the model (configured or from the bundle manifest) ready."""
    from algan.runtime.errors import ModelError

    if importlib.util.find_spec("tritonclient") is None or importlib.util.find_spec("tritonclient.grpc") is None:
        report.fail("backend triton", "tritonclient is not installed: pip install 'algan-edge[triton]'")
        return
    import tritonclient.grpc as grpcclient

    from algan.runtime.runners.triton import model_name_from_bundle

    t = cfg.runner.triton
    try:
        name = t.model or model_name_from_bundle(cfg.model)
    except ModelError as e:
        report.fail("backend triton", str(e))
        return
    try:
        client = grpcclient.InferenceServerClient(url=t.url)
        if not client.is_server_live(client_timeout=min(t.timeout_s, 5.0)):
            report.fail("backend triton", f"the Triton server at {t.url} is not live")
        elif not client.is_model_ready(name, t.version, client_timeout=min(t.timeout_s, 5.0)):
            report.fail("backend triton", f"Triton model {name!r} is not ready at {t.url}: load it from the "
                        "repository algan-export --triton-repo wrote")
        else:
            report.ok("backend triton", f"model {name!r} ready at {t.url}")
        client.close()
    except Exception as e:  # InferenceServerException: unreachable, deadline
        report.fail("backend triton", f"cannot reach the Triton server at {t.url} ({str(e).splitlines()[0][:200]}); "
                    "start it or fix runner.triton.url")


def _check_camera(cam: Any, facts: dict[str, Any], report: Report) -> None:
    what = f"camera {cam.name}"
    kind = cam.resolved_kind
    cv = facts["opencv"]
    src = str(cam.source)
    if kind in ("file", "folder"):
        if Path(src).exists():
            report.ok(what, f"{kind} source {src} exists")
        else:
            report.fail(what, f"{src} does not exist; fix the source path", user=True)
        return
    if cv is None:
        report.fail(what, f"OpenCV is not importable; a {kind} source needs it")
        return
    if kind == "gstreamer":
        if cv["GStreamer"]:
            report.ok(what, "GStreamer pipeline (this OpenCV has GStreamer)")
        else:
            report.fail(what, f"a GStreamer pipeline needs OpenCV built with GStreamer; this OpenCV {cv['version']} "
                        f"({cv['file']}) has none (PyPI's opencv-python wheels never do): use JetPack's OpenCV "
                        f"through a venv made by {INSTALL_JETSON} (pip uninstall opencv-python-headless there)")
    elif kind == "stream":
        if cv["FFMPEG"] or cv["GStreamer"]:
            report.ok(what, f"stream source ({'FFMPEG' if cv['FFMPEG'] else 'GStreamer'} in this OpenCV)")
        else:
            report.fail(what, f"this OpenCV {cv['version']} has neither FFMPEG nor GStreamer, so it cannot open "
                        "URLs; install an OpenCV built with one of them")
    elif kind == "device":
        node = f"/dev/video{src}" if src.isdigit() else src
        if Path(node).exists():
            report.ok(what, f"device {node} exists")
        else:
            report.fail(what, f"device {node} does not exist (is the camera plugged in? ls /dev/video*)")


def doctor(config: str | None = None) -> int:
    """Print the report (see the module docstring); return the exit status (0 ok, 2 a file the config names is
    missing, 1 another check failed).

    Raises:
        ConfigError: ``config`` is missing or invalid (exit 2 through the CLI).
    """
    from algan.edge.config import load_config

    report = Report()
    cfg = load_config(config) if config else None
    facts = environment(report)
    if cfg is not None:
        _check_model(cfg, facts, report)
        for cam in cfg.cameras:
            _check_camera(cam, facts, report)
    print("\n".join(report.lines))
    if cfg is not None:
        print(f"{report.failures} problem(s) found with {config}" if report.failures else f"{config}: all checks "
              "passed on this machine")
    return 2 if report.user_failures else 1 if report.failures else 0
