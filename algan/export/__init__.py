"""Export of a model bundle: ONNX graph, FP16 ONNX, TensorRT engine, Triton model repository.

Modules: :mod:`~algan.export.onnx_export` (trace, simplify, run), :mod:`~algan.export.metadata` (I/O contract in
``metadata_props``), :mod:`~algan.export.fp16`, :mod:`~algan.export.parity`, :mod:`~algan.export.tensorrt`
(version plan + build) with :mod:`~algan.export.trt_helpers` (logger, INT8 calibrator, GPU identity),
:mod:`~algan.export.triton` and :mod:`~algan.export.pipeline` (what ``algan-export`` runs).
"""
