"""Triton runner: the daemon scores on a shared NVIDIA Triton Inference Server over gRPC (``runner.backend:
triton``), so many line devices share one GPU server and its dynamic batcher.

The model is the one ``algan-export --triton-repo DIR`` put into the server's repository: its name comes from
``runner.triton.model``, else from the bundle manifest (``exports.triton.models[0]``); its version from
``runner.triton.version``, else the server's version policy (latest). The bundle directory stays the configured
``model``: it is verified like for every backend, and its calibration re-maps scores (and maps) re-calibrated after
export, with the constants from the bundle's ``model.onnx`` metadata (the graph the server runs).

Requests: ``images`` uint8 [N, H, W, 3] (``InferInput`` ``UINT8``), split into chunks of the model's
``max_batch_size``; responses ``scores`` float32 [N] (a server-side ``dims: [1]`` output reshaped to ``[]`` arrives
as [N]; [N, 1] is accepted too) and, when the model declares it, ``anomaly_maps`` float32 [N, h, w]. Uses
``tritonclient.grpc`` (extra ``triton``); the client is imported only when this backend is chosen.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

import numpy as np

from algan.contract import (
    INPUT_NAME,
    KEY_MODEL_ID,
    MANIFEST_FILE,
    MAPS_OUTPUT_NAME,
    ONNX_FILE,
    OUTPUT_NAME,
    BundleError,
    load_manifest,
)
from algan.runtime.errors import ModelError
from algan.runtime.runners.base import RunnerOutput
from algan.runtime.runners.calibration import onnx_metadata, remap_for

log = logging.getLogger(__name__)
DEFAULT_URL = "localhost:8001"


def model_name_from_bundle(model: Path) -> str:
    """The Triton model name ``algan-export --triton-repo`` recorded in the bundle manifest.

    Raises:
        ModelError: no manifest or no Triton export recorded (one line: set runner.triton.model or export one).
    """
    manifest = (model if model.is_dir() else model.parent) / MANIFEST_FILE
    try:
        triton = load_manifest(manifest, lenient=True).exports.triton if manifest.is_file() else None
    except BundleError as e:
        raise ModelError(f"{e}; or set runner.triton.model") from None
    if triton is None or not triton.models:
        raise ModelError(f"{manifest} records no Triton model (exports.triton.models); set runner.triton.model or "
                         f"export one with algan-export {manifest.parent} --triton-repo DIR")
    return triton.models[0]


class TritonRunner:
    """Scores batches on a Triton server.

    Args:
        model: the bundle directory (or its ``model.onnx``) that was exported to the server's repository.
        url: gRPC ``host:port`` of the server (default ``localhost:8001``).
        model_name: Triton model name; None = from the bundle manifest (:func:`model_name_from_bundle`).
        model_version: Triton model version ("" = the server's policy, latest).
        timeout_s: per-request deadline (seconds).
        client: a ``tritonclient.grpc.InferenceServerClient`` (tests); created from ``url`` when None.
        device: ignored (the server owns the GPU); accepted like every backend's.

    Raises:
        ModelError: server unreachable, model missing/not ready, or a model whose I/O does not match the contract.
        ImportError: tritonclient is not installed (turned into the install hint by ``load_runner``).
    """

    def __init__(self, model: Path, url: str = DEFAULT_URL, model_name: str | None = None, model_version: str = "",
                 timeout_s: float = 10.0, client: Any = None, device: int = 0) -> None:
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException

        self._grpc, self._error = grpcclient, InferenceServerException
        model = Path(model)
        self.name = model_name or model_name_from_bundle(model)
        self.version = str(model_version or "")
        self.url = url
        self._timeout = float(timeout_s)
        where = f"Triton model {self.name!r}{f' version {self.version}' if self.version else ''} at {url}"
        try:
            self._client = client if client is not None else grpcclient.InferenceServerClient(url=url)
            if not self._client.is_server_live(client_timeout=self._timeout):
                raise ModelError(f"the Triton server at {url} is not live; start it or fix runner.triton.url")
            if not self._client.is_model_ready(self.name, self.version, client_timeout=self._timeout):
                raise ModelError(f"{where} is not ready: load it (its repository comes from algan-export "
                                 "--triton-repo) or fix runner.triton.model/version")
            meta = self._client.get_model_metadata(self.name, self.version, as_json=True, client_timeout=self._timeout)
            cfg = self._client.get_model_config(self.name, self.version, as_json=True, client_timeout=self._timeout)
        except self._error as e:
            raise ModelError(f"cannot use {where}: {str(e).splitlines()[0][:300]}") from None
        self._size, self.output_names = self._check(meta, where)
        maps_meta = [o for o in meta.get("outputs", []) if o.get("name") == MAPS_OUTPUT_NAME]
        mshape = [int(d) for d in maps_meta[0].get("shape", [])][-2:] if maps_meta else []
        self._map_size: tuple[int, int] | None = (mshape[0], mshape[1]) if len(mshape) == 2 else None
        self.max_batch = int((cfg.get("config", cfg) or {}).get("max_batch_size", 0) or 0) or 64
        onnx = (model if model.is_dir() else model.parent) / ONNX_FILE
        metadata = onnx_metadata(onnx) if onnx.is_file() else {}
        self._model_id = str(metadata.get(KEY_MODEL_ID) or f"triton:{self.name}")
        self._remap = remap_for(model, metadata)
        self._warmup()

    @staticmethod
    def _check(meta: dict, where: str) -> tuple[tuple[int, int], list[str]]:
        inputs = meta.get("inputs", [])
        outputs = [o["name"] for o in meta.get("outputs", [])]
        shape = [int(d) for d in inputs[0].get("shape", [])] if len(inputs) == 1 else []
        if (len(inputs) != 1 or inputs[0].get("name") != INPUT_NAME or inputs[0].get("datatype") != "UINT8"
                or len(shape) != 4 or shape[3] != 3 or min(shape[1:3]) < 1):
            raise ModelError(f"{where} takes {inputs}; the edge contract is '{INPUT_NAME}' UINT8 [N, H, W, 3]: "
                             "serve the repository algan-export --triton-repo writes")
        if OUTPUT_NAME not in outputs or not set(outputs) <= {OUTPUT_NAME, MAPS_OUTPUT_NAME}:
            raise ModelError(f"{where} outputs {outputs}; the edge contract is '{OUTPUT_NAME}' "
                             f"(and '{MAPS_OUTPUT_NAME}')")
        return (shape[1], shape[2]), [OUTPUT_NAME] + [n for n in outputs if n != OUTPUT_NAME]

    def _warmup(self) -> None:
        h, w = self._size
        try:
            out = self(np.zeros((1, h, w, 3), np.uint8))
        except (RuntimeError, ValueError) as e:
            raise ModelError(f"Triton model {self.name!r} fails on a test batch: {str(e)[:300]}") from None
        if out.shape != (1,):
            raise ModelError(f"Triton model {self.name!r} returned scores of shape {out.shape} for 1 image")

    @property
    def input_size(self) -> tuple[int, int]:
        return self._size

    @property
    def backend(self) -> str:
        return "triton"

    @property
    def model_id(self) -> str:
        return self._model_id

    def _request(self, images: np.ndarray) -> dict[str, np.ndarray]:
        g = self._grpc
        inp = g.InferInput(INPUT_NAME, list(images.shape), "UINT8")
        inp.set_data_from_numpy(np.ascontiguousarray(images))
        wanted = [g.InferRequestedOutput(n) for n in self.output_names]
        try:
            res = self._client.infer(self.name, [inp], model_version=self.version, outputs=wanted,
                                     client_timeout=self._timeout)
        except self._error as e:
            raise RuntimeError(f"Triton inference failed: {str(e).splitlines()[0][:300]}") from None
        n = images.shape[0]
        out = {}
        for name in self.output_names:
            arr = res.as_numpy(name)
            if arr is None:
                raise RuntimeError(f"Triton returned no {name!r}")
            arr = np.asarray(arr, np.float32)
            if name == OUTPUT_NAME:
                if arr.shape not in ((n,), (n, 1)):
                    raise RuntimeError(f"Triton returned scores of shape {arr.shape} for {n} images")
                arr = arr.reshape(n)
            elif arr.ndim != 3 or arr.shape[0] != n:
                raise RuntimeError(f"Triton returned anomaly_maps of shape {arr.shape} for {n} images")
            out[name] = arr
        return out

    def _outputs_of(self, images: np.ndarray) -> dict[str, np.ndarray]:
        h, w = self._size
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (h, w, 3):
            raise ValueError(f"expected uint8 images of shape (N, {h}, {w}, 3), got {images.dtype} {images.shape}")
        parts = [self._request(images[i : i + self.max_batch]) for i in range(0, len(images), self.max_batch)]
        out = {k: np.concatenate([p[k] for p in parts]) if len(parts) > 1 else parts[0][k] for k in self.output_names}
        if self._remap is not None:  # the same affine re-map for scores and anomaly_maps
            out = {k: self._remap(v) for k, v in out.items()}
        return out

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Score a batch: uint8 BGR (N, H, W, 3) -> float32 calibrated scores (N,).

        Raises:
            ValueError: wrong dtype or shape.
            RuntimeError: the server failed or answered with wrong shapes.
        """
        return self._outputs_of(images)[OUTPUT_NAME]

    def run(self, images: np.ndarray) -> RunnerOutput:
        """Scores and anomaly maps of a batch (same arguments and errors as :meth:`__call__`).

        Returns:
            ``RunnerOutput(scores float32 (N,), maps float32 (N, h, w) or None for a score-only model)``, both on the
            calibrated scale (re-mapped with the same constants).
        """
        out = self._outputs_of(images)
        return RunnerOutput(out[OUTPUT_NAME], out.get(MAPS_OUTPUT_NAME))

    @property
    def map_size(self) -> tuple[int, int] | None:
        """``(h, w)`` of the served model's anomaly maps, ``None`` for a score-only model."""
        return self._map_size

    @property
    def has_maps(self) -> bool:
        """True when the model has the ``anomaly_maps`` output."""
        return MAPS_OUTPUT_NAME in self.output_names

    def close(self) -> None:
        """Close the gRPC channel."""
        with contextlib.suppress(Exception):  # closing twice or a dead channel: nothing to release
            self._client.close()
