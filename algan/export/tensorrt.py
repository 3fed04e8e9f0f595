"""TensorRT engine building (extra ``tensorrt``). Imported lazily: TensorRT is optional."""

from __future__ import annotations


def tensorrt_status() -> tuple[bool, str]:
    """``(available, reason)``: whether the TensorRT builder can be imported here, and why not."""
    try:
        import tensorrt as trt  # noqa: F401
    except ImportError as exc:
        return False, (f"TensorRT is not installed ({exc}); install NVIDIA's TensorRT (pip install "
                       "'algan-edge[tensorrt]' from NVIDIA's package index) on the GPU machine and run "
                       "algan-export --fp16 there")
    if not hasattr(trt, "Builder"):
        return False, "only the TensorRT lean runtime is installed, which cannot build engines; install the builder"
    return True, ""
