"""Model runners: the edge side of the exported-graph contract, and the choice of backend.

Contract (names and keys: :mod:`algan.contract`): one input ``images`` uint8 ``[N, H, W, 3]`` (BGR, N dynamic, H and W
static), output ``scores`` float32 ``[N]``, calibrated so that 1.0 is the alarm threshold and higher is more
anomalous, and for patch heads a second output ``anomaly_maps`` float32 ``[N, h, w]`` (h, w static, e.g. 56x56 for
a 224x224 input) on the same calibrated scale; map cell (i, j) covers input pixels
``[i*H/h, (i+1)*H/h) x [j*W/w, (j+1)*W/w)``. ``metadata_props`` may carry ``algan.model_id``, the export-time
calibration (see :mod:`algan.runtime.runners.calibration`; it re-maps the maps with the same affine constants),
``algan.outputs`` (``scores`` or ``scores,anomaly_maps``) and ``algan.map_size`` (``h,w``).

Runner interface (:class:`Runner`, complete: every backend implements every member): ``input_size``, ``backend``,
``model_id``, ``has_maps``, ``map_size``, ``run(images) -> RunnerOutput(scores, maps)`` (``maps`` is ``None`` for a
score-only graph) and ``close()``; :func:`load_runner` is the one factory. :func:`check_contract` accepts both output
lists and :func:`map_output_size` reads the map size from the output list.

Backends, each in its own module and imported only when chosen (this module needs only numpy, never torch):

============  ==========================  ==========================================================
backend       module                      needs
============  ==========================  ==========================================================
onnxruntime   ``runners.onnx``            onnxruntime (CPU; CUDA/TensorRT providers with onnxruntime-gpu)
tensorrt      ``runners.tensorrt``        tensorrt + pycuda, a serialized ``.engine`` with its JSON sidecar
torch         ``algan.export.runner_torch`` torch with CUDA, the model bundle (FP16)
triton        ``runners.triton``          tritonclient[grpc], a Triton server serving the bundle's exported model
============  ==========================  ==========================================================

``runner.backend: auto`` picks tensorrt for a ``.engine`` model and onnxruntime otherwise.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from algan.contract import (
    ENGINE_FILE,
    INPUT_NAME,
    MANIFEST_FILE,
    MAPS_OUTPUT_NAME,
    ONNX_FILE,
    OUTPUT_NAME,
)
from algan.runtime.errors import ModelError
from algan.runtime.runners.settings import RunnerConfig

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class RunnerOutput:
    """What a runner returns for one batch of N frames.

    Attributes:
        scores: float32 ``(N,)`` calibrated scores (1.0 = alarm threshold).
        maps: float32 ``(N, h, w)`` anomaly maps on the same calibrated scale (cell (i, j) covers input pixels
            ``[i*H/h, (i+1)*H/h) x [j*W/w, (j+1)*W/w)``), or ``None`` for a score-only model.
    """

    scores: np.ndarray
    maps: np.ndarray | None = None


@runtime_checkable
class Runner(Protocol):
    """Scores batches of prepared frames: what every backend implements (ONNX Runtime, TensorRT, Triton, torch)."""

    @property
    def input_size(self) -> tuple[int, int]:
        """Model input ``(height, width)`` in pixels."""

    @property
    def backend(self) -> str:
        """Backend name, e.g. ``onnxruntime``."""

    @property
    def model_id(self) -> str:
        """Model identifier used in messages."""

    @property
    def has_maps(self) -> bool:
        """True when :meth:`run` returns anomaly maps (a patch head's graph)."""

    @property
    def map_size(self) -> tuple[int, int] | None:
        """``(h, w)`` of the anomaly maps in cells, ``None`` for a score-only graph."""

    def run(self, images: np.ndarray) -> RunnerOutput:
        """Score a batch: uint8 BGR ``(N, H, W, 3)`` -> :class:`RunnerOutput` (float32 ``(N,)`` calibrated scores and,
        with :attr:`has_maps`, float32 ``(N, h, w)`` maps).

        Raises:
            ValueError: a batch of the wrong shape or dtype.
            RuntimeError: the backend failed.
        """

    def close(self) -> None:
        """Release the backend's resources (sessions, CUDA context, connections); idempotent."""


def resolve_model_path(model: Path, backend: str = "onnxruntime") -> Path:
    """Return the model file for ``model`` (a bundle directory, or the file itself).

    Args:
        model: bundle directory or file.
        backend: ``tensorrt`` looks for ``model.engine`` in a bundle, others for ``model.onnx``; ``torch`` takes
            the bundle directory itself.

    Raises:
        ModelError: when no such file exists.
    """
    if backend == "torch":
        if not (model.is_dir() and (model / MANIFEST_FILE).is_file()):
            raise ModelError(f"backend 'torch' needs a model bundle directory with algan.json; {model} is not one")
        return model
    name = ENGINE_FILE if backend == "tensorrt" else ONNX_FILE
    if model.is_dir():
        path = model / name
        if not path.is_file():
            how = (f"algan-edge build-engine --fp16 {model} on this device" if backend == "tensorrt"
                   else f"algan-export {model}")
            raise ModelError(f"model bundle {model} has no {name}; export it first ({how})")
        return path
    if not model.is_file():
        raise ModelError(f"model {model} does not exist; set 'model' to a bundle directory or a .onnx/.engine file")
    return model


#: Largest image side a graph may take (pixels): the models of this project take 224-1024.
MAX_INPUT_SIDE = 8192


def check_contract(path: Path, inputs: list, outputs: list) -> tuple[int, int]:
    """Check ONNX Runtime NodeArg lists against the contract.

    Returns:
        The static input ``(H, W)`` in pixels.

    Raises:
        ModelError: one line naming what differs.
    """

    def bad(what: str) -> ModelError:
        return ModelError(
            f"model {path} does not match the edge contract ({what}); expected input 'images' uint8 [N,H,W,3] "
            "and output 'scores' float32 [N] (optionally 'anomaly_maps' float32 [N,h,w]): re-export it with "
            "algan-export"
        )

    if len(inputs) != 1 or inputs[0].name != INPUT_NAME:
        raise bad(f"inputs are {[i.name for i in inputs]}")
    inp = inputs[0]
    if inp.type != "tensor(uint8)":
        raise bad(f"input 'images' is {inp.type}")
    shape = list(inp.shape)
    if len(shape) != 4 or shape[3] != 3:
        raise bad(f"input 'images' has shape {shape}")
    if isinstance(shape[0], int):
        raise bad(f"input 'images' has a fixed batch size {shape[0]} instead of a dynamic N")
    h, w = shape[1], shape[2]
    if not (isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0):
        raise bad(f"input 'images' has non-static height/width {shape[1:3]}")
    if max(h, w) > MAX_INPUT_SIDE:
        raise ModelError(f"model {path} takes {w}x{h} pixel images, more than {MAX_INPUT_SIDE} pixels a side (one "
                         f"batch of them would need {h * w * 3 / 2**30:.1f} GiB); re-export it at the size it was "
                         "trained with")
    names = [o.name for o in outputs]
    if names not in ([OUTPUT_NAME], [OUTPUT_NAME, MAPS_OUTPUT_NAME]):
        raise bad(f"outputs are {names}")
    out = outputs[0]
    if out.type != "tensor(float)" or len(out.shape) != 1:
        raise bad(f"output 'scores' is {out.type} with shape {list(out.shape)}")
    if len(outputs) == 2:
        maps = outputs[1]
        mshape = list(maps.shape)
        if maps.type != "tensor(float)" or len(mshape) != 3:
            raise bad(f"output 'anomaly_maps' is {maps.type} with shape {mshape}")
        if any(isinstance(v, int) and v <= 0 for v in mshape[1:]):
            raise bad(f"output 'anomaly_maps' has height/width {mshape[1:]}")
    return h, w


def map_output_size(outputs: list) -> tuple[int, int] | None:
    """``(h, w)`` of the ``anomaly_maps`` output in an output NodeArg list already passed by :func:`check_contract`;
    ``(0, 0)`` when the graph declares them symbolic (the runner then takes them from the ``algan.map_size``
    metadata or from a warm-up run), ``None`` for a score-only graph."""
    for o in outputs:
        if o.name == MAPS_OUTPUT_NAME:
            h, w = o.shape[1], o.shape[2]
            return (h, w) if isinstance(h, int) and isinstance(w, int) else (0, 0)
    return None


def parse_map_size(text: str | None) -> tuple[int, int] | None:
    """``"56,56"`` (metadata ``algan.map_size``) -> ``(56, 56)``; ``None`` when absent or malformed."""
    try:
        h, w = (int(v) for v in str(text).split(","))
    except ValueError:
        return None
    return (h, w) if h > 0 and w > 0 else None




def choose_backend(model: Path, backend: str = "auto") -> str:
    """The backend to use: ``backend``, or for ``auto`` the model file (``.engine`` -> tensorrt, else onnxruntime)."""
    if backend != "auto":
        return backend
    return "tensorrt" if Path(model).suffix == ".engine" else "onnxruntime"


#: backend -> (module, class, install hint); modules are imported only when chosen
BACKENDS: dict[str, tuple[str, str, str]] = {
    "onnxruntime": ("algan.runtime.runners.onnx", "OnnxRuntimeRunner", "pip install onnxruntime (or onnxruntime-gpu)"),
    "tensorrt": ("algan.runtime.runners.tensorrt", "TensorRTRunner",
                 "install NVIDIA TensorRT and pycuda (JetPack has both; pip install 'algan-edge[tensorrt]')"),
    "torch": ("algan.export.runner_torch", "TorchRunner", "pip install 'algan-edge[train]' with a CUDA build of torch"),
    "triton": ("algan.runtime.runners.triton", "TritonRunner", "pip install 'algan-edge[triton]' (tritonclient[grpc])"),
}


def load_runner(model: Path, settings: RunnerConfig | None = None, *, verify: bool = True,
                trusted_keys: Sequence[str] = ()) -> Runner:
    """The one runner factory: the backend :func:`choose_backend` picks for ``model`` with ``settings``.

    Args:
        model: a bundle directory, or a ``.onnx`` / ``.engine`` file.
        settings: the runner settings (the daemon config's ``runner:`` section); default :class:`RunnerConfig`.
        verify: check the bundle against its integrity record first (:func:`algan.runtime.verify.verify_model`:
            format version, the graph's recorded sha256 and model id, the weights file's integrity).
        trusted_keys: public keys (``model.trusted_keys``); when given, the bundle must carry a valid signature of
            one of them.

    Raises:
        ModelError: model problems, a bundle failing its integrity record, or a backend whose packages are not
            installed (with the install hint).
    """
    from algan.runtime.verify import verify_model

    model = Path(model)
    r = settings if settings is not None else RunnerConfig()
    backend = choose_backend(model, r.backend)
    if verify:
        verify_model(model, resolve_model_path(model, backend), trusted_keys)
    module, cls, hint = BACKENDS[backend]
    kwargs: dict[str, Any] = {"device": r.device}
    if backend == "onnxruntime":
        kwargs.update(threads=r.threads, providers=list(r.providers), fp16=r.fp16)
    if backend == "torch":
        kwargs.update(fp16=r.fp16)
    if backend == "triton":
        t = r.triton
        kwargs.update(url=t.url, model_name=t.model, model_version=t.version, timeout_s=t.timeout_s)
    try:
        factory = getattr(importlib.import_module(module), cls)
        runner = factory(model, **kwargs)
    except ImportError as e:
        raise ModelError(f"backend '{backend}' needs a package that is missing ({e.name or e}): {hint}") from None
    except MemoryError:
        raise ModelError(f"model {model} needs more memory than this device has to load or run one image; "
                         "re-export it (a smaller input size or backbone)") from None
    check_input_size(model, tuple(runner.input_size))
    return runner


def check_input_size(model: Path, size: tuple[int, int]) -> None:
    """The graph's input ``(H, W)`` must be the size the bundle's manifest says the model was trained at
    (``backbone.input_size``, or ``head.settings.size`` of a pixel model); nothing to compare without a bundle.

    Raises:
        ModelError: they differ (one line with both sizes).
    """
    from algan.runtime.verify import bundle_dir_of, bundle_manifest, manifest_input_size

    bundle = bundle_dir_of(Path(model))
    if bundle is None:
        return
    want = manifest_input_size(bundle_manifest(bundle))
    if want is not None and tuple(want) != tuple(size):
        raise ModelError(f"the graph of {bundle} takes {size[1]}x{size[0]} pixel images, but its manifest says the "
                         f"model was trained at {want[1]}x{want[0]}: the graph comes from another export; re-run "
                         f"algan-export {bundle}")
