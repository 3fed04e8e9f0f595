"""The pure decisions of the daemon's loop: the stats message (algan.edge.stats), what a SIGHUP applies
(algan.edge.config.reload)."""

from __future__ import annotations

from algan.edge.config import parse_config
from algan.edge.config.reload import RESTART_SETTINGS, plan_reload
from algan.edge.stats import stats_payload, status_line

FIGURES = {"fps": 12.5, "fps_avg": 11.0, "latency_ms_p50": 20.0, "latency_ms_p99": 41.5, "batch_mean": 2.0,
           "inference_ms": 9.0}


def cam(status: str, dropped: int, corrupt: int = 0, skipped: int = 0, backpressure: int = 0) -> dict:
    return {"status": status, "frames": 10, "dropped": dropped, "corrupt": corrupt, "skipped": skipped,
            "backpressure": backpressure}


# -- stats -------------------------------------------------------------------------------------------------------
def test_stats_payload_sums_cameras_and_keeps_the_message_order():
    cams = {"a": cam("online", 3, corrupt=1, skipped=4, backpressure=2), "b": cam("offline", 5, skipped=1)}
    p = stats_payload("2026-01-01T00:00:00.000Z", FIGURES, cams, frames=20, queue_depth=7, batches=(4, 6),
                      backend="onnxruntime", model_id="m1", mqtt_lost=2, outbox=(9, 1))
    assert list(p) == ["ts", "fps", "fps_avg", "latency_ms_p50", "latency_ms_p99", "batch_mean", "inference_ms",
                       "frames", "dropped", "corrupt", "skipped", "backpressure", "queue_depth", "batches_full",
                       "batches_partial", "backend", "model_id", "mqtt_lost", "outbox_depth", "outbox_dropped",
                       "cameras"]
    assert (p["dropped"], p["corrupt"], p["skipped"], p["backpressure"]) == (8, 1, 5, 2)
    assert (p["frames"], p["queue_depth"], p["batches_full"], p["batches_partial"]) == (20, 7, 4, 6)
    assert (p["outbox_depth"], p["outbox_dropped"], p["mqtt_lost"]) == (9, 1, 2)
    assert p["cameras"] == cams and p["fps"] == 12.5 and p["backend"] == "onnxruntime" and p["model_id"] == "m1"


def test_stats_payload_without_outbox_or_cameras():
    p = stats_payload("t", FIGURES, {}, frames=0, queue_depth=0, batches=(0, 0), backend="x", model_id="",
                      mqtt_lost=0, outbox=None)
    assert (p["outbox_depth"], p["outbox_dropped"], p["dropped"], p["cameras"]) == (0, 0, 0, {})


def test_status_line():
    cams = {"a": cam("online", 3), "b": cam("offline", 5), "c": cam("online", 0)}
    p = stats_payload("t", FIGURES, cams, frames=1, queue_depth=0, batches=(0, 0), backend="x", model_id="",
                      mqtt_lost=0, outbox=None)
    assert status_line(p) == "12.5 frames/s, latency p99 41.5 ms, 2/3 cameras online, 8 dropped"


# -- reload --------------------------------------------------------------------------------------------------------
def config(**over):
    data = {"device_id": "line1", "model": "/models/m", "cameras": [{"name": "a", "source": "a.mp4"},
                                                                    {"name": "b", "source": "b.mp4"}]}
    data.update(over)
    return parse_config(data)


def test_reload_applies_alarm_thresholds():
    old = config()
    new = config(alarm={"threshold": 2.0, "clear_threshold": 1.5, "cameras": {"b": {"threshold": 4.0}}})
    plan = plan_reload(old, new)
    assert plan.error is None and not plan.cameras_changed and plan.ignored == ()
    assert plan.thresholds == {"a": (2.0, 1.5), "b": (4.0, 3.0)}  # b keeps the global ratio 1.5 / 2.0
    assert plan.policies["a"].threshold == 2.0 and plan.policies["b"].clear_threshold == 3.0
    assert plan.config is not None and plan.config.alarm == new.alarm and plan.config.device_id == "line1"


def test_reload_ignores_what_needs_a_restart():
    old = config()
    new = config(device_id="line2", mqtt={"port": 1884}, batch={"max_size": 2},
                 cameras=[{"name": "a", "source": "a.mp4", "threshold": 3.0}, {"name": "c", "source": "c.mp4"}])
    plan = plan_reload(old, new)
    assert plan.cameras_changed and plan.ignored == ("batch", "mqtt", "device_id")
    assert set(RESTART_SETTINGS) >= set(plan.ignored)
    assert plan.thresholds == {"a": (3.0, 2.7)}  # b is gone from the file: it keeps its settings; c is not added
    assert plan.config is not None
    assert [c.name for c in plan.config.cameras] == ["a", "b"] and plan.config.cameras[0].threshold == 3.0
    assert plan.config.device_id == "line1" and plan.config.mqtt.port == 1883  # not applied


def test_reload_keeps_the_running_roi():
    # at start-up camera a took the bundle's roi (EdgeApp._apply_bundle_roi); the re-read file has none
    run = config()
    run = run.model_copy(update={"cameras": [run.cameras[0].model_copy(update={"roi": (40, 20, 128, 128)}),
                                             run.cameras[1]]})
    new = config(cameras=[{"name": "a", "source": "a.mp4", "threshold": 2.0}, {"name": "b", "source": "b.mp4"}])
    plan = plan_reload(run, new)
    assert plan.error is None and plan.camera_settings == ()
    assert plan.config is not None and plan.config.cameras[0].threshold == 2.0
    assert [c.roi for c in plan.config.cameras] == [(40, 20, 128, 128), None]
    # a roi (or source) set in the file is the frames' crop only after a restart: named, the running one kept
    new = config(cameras=[{"name": "a", "source": "a.mp4", "roi": [0, 0, 64, 64]},
                          {"name": "b", "source": "b2.mp4", "roi": [1, 2, 30, 40], "threshold": 3.0}])
    plan = plan_reload(run, new)
    assert plan.camera_settings == ("a.roi", "b.source", "b.roi") and plan.ignored == ()
    assert plan.config is not None
    assert [c.roi for c in plan.config.cameras] == [(40, 20, 128, 128), None]
    assert plan.config.cameras[1].source == "b.mp4" and plan.config.cameras[1].threshold == 3.0


def test_reload_with_a_bad_policy_applies_nothing(monkeypatch):
    old, new = config(), config(alarm={"threshold": 2.0, "clear_threshold": 1.0})
    from algan.edge.alarm import AlarmPolicy

    def broken(self):
        raise ValueError("need 0 < clear_threshold <= threshold")

    monkeypatch.setattr(AlarmPolicy, "check", broken)
    plan = plan_reload(old, new)
    assert plan.error == "need 0 < clear_threshold <= threshold"
    assert plan.policies == {} and plan.config is None
