"""The daemon: camera sources, cross-camera batching, alarm logic and MQTT publishing around a runner of the
torch-free runtime (:mod:`algan.runtime`: runners, maps, bundle verification).

Subpackages and modules, in the order a frame travels (one responsibility each; each docstring says more)::

    capture/    sources (OpenCV video/RTSP/V4L2/GStreamer, image folders once or watched), camera (one reader
                thread per camera: prepare, hand over, stale watchdog, reopen with backoff), journal (read
                journal of a watched folder), hub (bounded per-camera frame queues), batcher (pure batching
                rule + thin driver)
    (runner)    algan.runtime.runners: the model, built by load_runner from the config's runner: section
    alarm       pure debounced alarm state machine with hysteresis
    publish/    messages (topics and JSON payloads), mqtt (paho-mqtt publisher: Last Will, QoS 1, flush),
                delivery (pure bookkeeping of in-flight/acknowledged messages), outbox (durable queue of alarms and
                states), discovery (Home Assistant), broker (embedded amqtt broker), snapshots (JPEG of the frame
                of each raised/update alarm event)
    config/     pydantic schema of the YAML config, one module per section; errors (one-line schema errors);
                loading (load_config: ${ENV}/${file:} substitution, path and secret resolution)
    shared      state (private permissions of the daemon's state files), errors (the daemon's one-line user
                errors), logs, stats (fps/latency), metrics (optional Prometheus endpoint), sdnotify (systemd
                notifications), doctor (algan-edge doctor)
    app         EdgeApp: ordered start, the loop, ordered stop; its decisions are pure helpers elsewhere:
                stats.stats_payload, config.reload.plan_reload, alarm.AlarmTracker

Rule: nothing here imports torch at module level (tests/edge/test_no_torch.py imports every module found here;
tests/test_import_layers.py checks the imports statically, and that capture and publish do not import each other).
Import submodules directly; this package module imports nothing so that ``import algan.edge.config`` stays light.
"""
