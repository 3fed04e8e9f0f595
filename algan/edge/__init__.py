"""The line-side runtime: camera sources, cross-camera batching, model runners, alarm logic and MQTT publishing.

Modules, in the order a frame travels (one responsibility each; each module's docstring says more)::

    capture     sources (OpenCV video/RTSP/V4L2/GStreamer, image folders once or watched), camera (one reader
                thread per camera: prepare, hand over, stale watchdog, reopen with backoff), journal (read
                journal of a watched folder), hub (bounded per-camera frame queues)
    batching    batcher (pure batching rule + thin driver)
    runners     runner (Runner protocol, graph contract check, backend choice), runner_onnx, runner_tensorrt,
                runner_triton; the torch backend lives outside the runtime, in algan.export.runner_torch (it needs
                torch and the bundle; imported by name only when chosen), calibration (run-time re-map of
                exported scores after a re-calibration)
    alarm       alarm (pure debounced state machine with hysteresis), snapshots (JPEG of each alarm's peak frame)
    publishing  messages (topics and JSON payloads), mqtt (paho-mqtt publisher: Last Will, QoS 1, flush), outbox
                (durable queue of alarms and states), discovery (Home Assistant), broker (embedded amqtt broker)
    operations  config (pydantic schema of the YAML config, load_config), errors (one-line user errors), logs,
                stats (fps/latency), metrics (optional Prometheus endpoint), sdnotify (systemd notifications)
    app         EdgeApp: ordered start, the loop, ordered stop

Rule: nothing here imports torch at module level (tests/edge/test_no_torch.py imports every module found here;
tests/test_import_layers.py checks the imports statically). Import submodules directly; this package module
imports nothing so that ``import algan.edge.config`` stays light.
"""
