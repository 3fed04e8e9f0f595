"""algan.trt_logging: TensorRT's logger routed into Python logging (shared by the builder and the edge runner)."""

from __future__ import annotations

import logging

from trt_standin import make_standin

from algan.trt_logging import make_logger


def _trt():
    return make_standin("10.3")


def test_severities_map_to_python_levels_and_errors_reach_the_sink(caplog):
    trt = _trt()
    sev = trt.ILogger.Severity
    sink: list[str] = []
    logger = logging.getLogger("algan.test.trt")
    trt_log = make_logger(trt, logger, sink)
    assert isinstance(trt_log, trt.ILogger) and trt.calls == [("ILogger.__init__",)]  # the base class is initialised
    with caplog.at_level(logging.DEBUG, logger="algan.test.trt"):
        for s in sev:
            trt_log.log(s, f"m{int(s)}")
    got = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "algan.test.trt"]
    assert got == [(logging.CRITICAL, "TensorRT: m0"), (logging.ERROR, "TensorRT: m1"),
                   (logging.WARNING, "TensorRT: m2"), (logging.INFO, "TensorRT: m3"), (logging.DEBUG, "TensorRT: m4")]
    assert sink == ["m0", "m1"]


def test_runtime_logs_info_at_debug_without_a_sink(caplog):
    trt = _trt()
    logger = logging.getLogger("algan.test.trt2")
    trt_log = make_logger(trt, logger, info_level=logging.DEBUG)
    with caplog.at_level(logging.DEBUG, logger="algan.test.trt2"):
        trt_log.log(trt.ILogger.Severity.INFO, "building")
        trt_log.log(trt.ILogger.Severity.ERROR, "bad")
    assert [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "algan.test.trt2"] == [
        (logging.DEBUG, "TensorRT: building"), (logging.ERROR, "TensorRT: bad")]
