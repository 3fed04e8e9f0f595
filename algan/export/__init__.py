"""Export of a model bundle: ONNX graph, FP16 ONNX, TensorRT engine, Triton model repository.

Modules: :mod:`~algan.export.onnx_export` (trace, simplify, run; the graph's ``metadata_props`` are
:func:`algan.contract.graph_metadata`), :mod:`~algan.export.fp16`, :mod:`~algan.export.parity`,
:mod:`~algan.export.engine_build` (the TensorRT engine builder, torch-free: also what ``algan-edge build-engine``
runs on the device) with :mod:`~algan.export.trt_helpers` (INT8 calibrator, GPU identity),
:mod:`~algan.export.tensorrt` (the builder with export errors), :mod:`~algan.export.triton` and
:mod:`~algan.export.pipeline` (what ``algan-export`` runs).
"""
