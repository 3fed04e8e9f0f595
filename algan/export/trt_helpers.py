"""Moved to :mod:`algan.edge.runners.trt_helpers` (torch-free, shared with ``algan-edge build-engine``);
re-exported here."""

from algan.edge.runners.trt_helpers import DeviceBuffer, default_device_alloc, gpu_identity, make_calibrator  # noqa: F401
