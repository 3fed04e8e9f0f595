"""TensorRT engine building for ``algan-export``: the torch-free builder of
:mod:`algan.export.engine_build` (the code ``algan-edge build-engine`` runs on the device), with its errors
raised as :class:`ExportError` so the export CLI reports them like every other export failure.
"""

from __future__ import annotations

from typing import Any

from algan.export import engine_build as _eb
from algan.export.engine_build import (  # noqa: F401 - the export API
    DEFAULT_WORKSPACE_MIB,
    MIN_VERSION,
    NO_IMPLICIT_INT8_FROM,
    STRONGLY_TYPED_FROM,
    BatchProfile,
    BuildPlan,
    EngineBuild,
    EngineRequest,
    parse_version,
    parser_errors,
    tensorrt_status,
)
from algan.export.onnx_export import ExportError


class EngineBuildError(ExportError, _eb.EngineBuildError):
    """TensorRT could not parse or build; the message carries the parser/builder errors."""


def plan_build(trt_version: str | tuple[int, int], fp16: bool, int8: bool) -> BuildPlan:
    """:func:`algan.export.engine_build.plan_build`, raising :class:`ExportError`."""
    try:
        return _eb.plan_build(trt_version, fp16, int8)
    except _eb.EngineError as e:
        raise ExportError(str(e)) from None


def build_engine(req: EngineRequest, trt: Any = None, gpu: Any = None, device_alloc: Any = None) -> EngineBuild:
    """:func:`algan.export.engine_build.build_engine`, raising :class:`ExportError` /
    :class:`EngineBuildError`."""
    try:
        return _eb.build_engine(req, trt=trt, gpu=gpu, device_alloc=device_alloc)
    except _eb.EngineError as e:
        raise ExportError(str(e)) from None
    except _eb.EngineBuildError as e:
        raise EngineBuildError(str(e)) from None
