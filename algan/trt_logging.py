"""The bridge from TensorRT's logger to Python logging, shared by the engine builder (``algan.export``) and the edge
runner (``algan.edge``). Imports neither torch nor TensorRT: the ``tensorrt`` module is passed in, so tests can use a
stand-in and the edge runtime stays torch-free.
"""

from __future__ import annotations

import logging
from typing import Any


def make_logger(trt: Any, logger: logging.Logger, sink: list[str] | None = None, info_level: int = logging.INFO) -> Any:
    """A ``trt.ILogger`` that routes TensorRT messages into ``logger`` (TensorRT would print to stdout otherwise).

    Args:
        trt: the ``tensorrt`` module (or a stand-in with ``ILogger`` and ``ILogger.Severity``).
        logger: where the messages go, prefixed ``TensorRT:``.
        sink: when given, error and internal-error messages are also appended to it (a failed build quotes them).
        info_level: the Python level of TensorRT's INFO messages (the runtime logs them at DEBUG: they are chatty).

    Returns:
        a ``trt.ILogger`` instance. Severity mapping: INTERNAL_ERROR -> CRITICAL, ERROR -> ERROR, WARNING -> WARNING,
        INFO -> ``info_level``, VERBOSE -> DEBUG.
    """
    sev = trt.ILogger.Severity
    levels = {sev.INTERNAL_ERROR: logging.CRITICAL, sev.ERROR: logging.ERROR, sev.WARNING: logging.WARNING,
              sev.INFO: info_level, sev.VERBOSE: logging.DEBUG}

    class TrtLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: Any, msg: str) -> None:
            level = levels.get(severity, logging.INFO)
            if level >= logging.ERROR and sink is not None:
                sink.append(str(msg))
            logger.log(level, "TensorRT: %s", msg)

    return TrtLogger()
