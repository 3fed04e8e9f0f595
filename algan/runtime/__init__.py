"""The torch-free runtime: what turns a frame into a verdict with an exported bundle, shared by the daemon
(:mod:`algan.edge`), ``algan-predict`` and the export's engine parity.

Modules, in the order a frame travels::

    preprocess  crop the region of interest and resize to the model input (the one frame preparation, also used
                by training and evaluation)
    runners/    settings (RunnerConfig), base (the Runner protocol, graph contract check, the one factory
                load_runner), onnx (ONNX Runtime), tensorrt (a serialized engine via pycuda), triton (a Triton
                Inference Server over gRPC), calibration (run-time re-map of exported scores after a re-calibration)
    maps        anomaly map -> region in frame pixels, heat-map overlay, JPEG
    inference   Inferencer / Prediction: frame -> score, verdict, map, region
    verify      bundle integrity before a runner loads (hashes, model id, weights, stale engines)
    errors      one-line user errors (EdgeError, ModelError)

The torch backend is a plug-in outside the runtime (:mod:`algan.export.runner_torch`, imported by name only when
chosen); the TensorRT engine builder is on the export side (:mod:`algan.export.engine_build`, torch-free too).
Rule: nothing here imports torch (tests/edge/test_no_torch.py, tests/test_import_layers.py). Import submodules
directly; this package module imports nothing.
"""
