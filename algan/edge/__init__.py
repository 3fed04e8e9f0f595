"""The line-side runtime: camera sources, cross-camera batching, model runners, alarm logic and MQTT publishing.

Modules (one responsibility each)::

    config    pydantic schema of the YAML config + load_config (one-line errors)
    sources   OpenCV sources (V4L2, files, RTSP, GStreamer), image folders (once or watched), pacing/fps rules
    camera    one reader thread per camera: prepare, hand over, stale watchdog, reopen with backoff
    hub       bounded per-camera frame queues (back-pressure for files, newest-only for live sources)
    batcher   pure batching rule + thin driver
    runner    Runner protocol, model contract, backend choice (load_runner)
    runner_onnx / runner_tensorrt   the backends (the torch runner is algan.model.torch_runner, imported lazily)
    calibration  run-time re-mapping of exported scores after a re-calibration
    metrics   optional Prometheus endpoint
    alarm     pure debounced alarm state machine with hysteresis
    messages  MQTT topics and JSON payloads
    mqtt      paho-mqtt publisher (will, QoS1 queueing, flush)
    broker    embedded amqtt broker for machines without one
    stats     fps / latency bookkeeping
    sdnotify  systemd READY/STOPPING/WATCHDOG notifications
    app       EdgeApp: ordered start, the loop, ordered stop

Rule: nothing here imports torch (checked by tests/edge/test_no_torch.py). Import submodules directly; this package
module imports nothing so that ``import algan.edge.config`` stays light.
"""
