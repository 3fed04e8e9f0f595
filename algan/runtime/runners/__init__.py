"""Runners: a batch of prepared frames -> calibrated scores (and anomaly maps).

settings (RunnerConfig: backend, providers, threads, device, Triton server), base (the Runner protocol, graph
contract check, backend choice, the one factory ``load_runner``), onnx (ONNX Runtime), tensorrt (a serialized engine
via pycuda), triton (a Triton Inference Server over gRPC), calibration (run-time re-map of exported scores after a
re-calibration). The torch backend lives outside the runtime, in :mod:`algan.export.runner_torch` (imported by name
only when chosen). Import the submodules directly.
"""
