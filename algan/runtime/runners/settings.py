"""Runner settings: the inference backend (ONNX Runtime providers, TensorRT, torch, Triton); the daemon config's
``runner:`` section and the argument of :func:`algan.runtime.runners.base.load_runner`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Section(BaseModel):
    """Settings as the config sections are: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)

#: Short names of ONNX Runtime execution providers accepted in ``runner.providers`` and their ORT names.
ORT_PROVIDERS = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}


class TritonConfig(Section):
    """``runner.backend: triton``: the Triton Inference Server that serves the model (gRPC)."""

    url: str = Field("localhost:8001", min_length=1, description="gRPC host:port of the Triton server")
    model: str | None = Field(
        None, description="Triton model name; default: the one algan-export --triton-repo recorded in the bundle"
    )
    version: str = Field("", description="Triton model version; empty = the server's version policy (latest)")
    timeout_s: float = Field(10.0, gt=0, le=600, description="deadline of one inference request (seconds)")


class RunnerConfig(Section):
    """Inference backend settings."""

    backend: Literal["auto", "onnxruntime", "tensorrt", "torch", "triton"] = Field(
        "auto",
        description="inference backend: 'auto' (a .engine model -> tensorrt, else onnxruntime), 'onnxruntime', "
        "'tensorrt' (serialized engine via pycuda, NVIDIA GPU), 'torch' (bundle on a CUDA GPU in FP16) or 'triton' "
        "(a Triton Inference Server, runner.triton)",
    )
    providers: list[Literal["tensorrt", "cuda", "cpu"]] = Field(
        default_factory=lambda: ["cpu"],
        min_length=1,
        description="ONNX Runtime execution providers in order of preference (tensorrt, cuda, cpu); unavailable "
        "ones are skipped with a warning and cpu is always the last fallback",
    )
    threads: int = Field(
        0, ge=0, le=256, description="ONNX Runtime intra-op threads (count); 0 = ONNX Runtime default (all cores)"
    )
    device: int = Field(
        0, ge=0, le=64, description="CUDA device index for the tensorrt/torch backends and the GPU providers"
    )
    fp16: bool = Field(
        True, description="half precision where the backend chooses it (torch backend, ORT TensorRT provider)"
    )

    triton: TritonConfig = Field(default_factory=TritonConfig, description="Triton server (backend triton)")

    @field_validator("providers")
    @classmethod
    def _unique_providers(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"providers {v} lists one twice; give each of tensorrt, cuda, cpu at most once")
        return v
