"""Moved to :mod:`algan.edge.trt_helpers` (torch-free, shared with ``algan-edge build-engine``); re-exported here."""

from algan.edge.trt_helpers import DeviceBuffer, default_device_alloc, gpu_identity, make_calibrator  # noqa: F401
