"""In-process daemon against a real broker: a camera that dies comes back while the other never stops; metrics."""

from __future__ import annotations

import json
import shutil
import threading
import time
import urllib.request

import pytest
from edgekit import BRIGHT, DARK, edge_config, make_folder, make_video

from algan.edge.app import EdgeApp
from algan.edge.config import parse_config
from algan.edge.publish.outbox import Outbox

pytestmark = pytest.mark.broker


def frames_of(col, suffix):
    return [json.loads(m.payload)["frame"] for m in col.on(suffix)]


def start(cfg):
    app = EdgeApp(parse_config(cfg))
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("rc", app.run()), daemon=True)
    t.start()
    return app, t, result


def test_dead_camera_reopened_while_the_other_never_stops(tmp_path, tiny_model, mqtt_broker, mqtt_collector,
                                                           unused_port):
    inbox = make_folder(tmp_path / "inbox", [DARK] * 3)
    video = make_video(tmp_path / "steady.mp4", [DARK] * 10)
    col = mqtt_collector()
    cams = [
        {"name": "inbox", "source": str(inbox), "watch": True, "settle_s": 0.2, "reconnect_interval_s": 0.1,
         "reconnect_max_s": 0.2},
        {"name": "steady", "source": str(video), "loop": True, "replay_fps": 40},
    ]
    port = unused_port
    cfg = edge_config(tiny_model, mqtt_broker, cams, metrics={"port": port},
                      mqtt={"outbox": {"path": str(tmp_path / "outbox.sqlite")}})  # not in the working directory
    app, thread, result = start(cfg)
    try:
        assert col.wait_for(lambda ms: len(frames_of(col, "inbox/score")) == 3, timeout=15)
        shutil.rmtree(inbox)  # the camera dies
        assert col.wait_for(lambda ms: [m.payload for m in col.on("inbox/state")][-1:] == ["offline"], timeout=10)
        steady_at_death = len(col.on("steady/score"))
        time.sleep(0.5)  # stays dead for a while (several failed reopen attempts)
        make_folder(tmp_path / "inbox", [BRIGHT] * 2)  # ... and comes back with new files
        assert col.wait_for(lambda ms: len(frames_of(col, "inbox/score")) == 5, timeout=15)
        assert [m.payload for m in col.on("inbox/state")] == ["normal", "offline", "normal"]
        assert frames_of(col, "inbox/score") == [0, 1, 2, 3, 4]
        steady = col.on("steady/score")
        assert len(steady) - steady_at_death >= 10, "the other camera kept flowing during the outage"
        ts = [json.loads(m.payload)["ts"] for m in steady]
        assert ts == sorted(ts)
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert 'algan_frames_scored_total{camera="inbox",device="line1"} 5.0' in body
        assert 'algan_camera_up{camera="steady",device="line1"} 1.0' in body
        assert "algan_latency_seconds_count" in body
        assert 'algan_outbox_depth{device="line1"}' in body
        assert app.readers[0].counters.reconnects >= 1
    finally:
        app.stop.set()
        thread.join(20)
    assert result.get("rc") == 0
    stats = json.loads(col.on("line1/stats")[-1].payload)
    assert stats["cameras"]["inbox"]["reconnects"] >= 1 and stats["cameras"]["steady"]["status"] == "online"
    assert stats["dropped"] == 0 and {"skipped", "backpressure", "batch_mean", "inference_ms"} <= set(stats)
    # the last stats message is written while the final camera states may still await their PUBACK: the depth is
    # at most those durable messages; after the clean exit the outbox on disk is empty (nothing left for a next run)
    durable = len(col.on("inbox/state")) + len(col.on("steady/state"))
    assert stats["outbox_dropped"] == 0 and type(stats["outbox_depth"]) is int
    assert 0 <= stats["outbox_depth"] <= durable, (stats["outbox_depth"], durable)
    outbox = Outbox(tmp_path / "outbox.sqlite")
    try:
        assert len(outbox) == 0
    finally:
        outbox.close()


def test_metrics_port_without_prometheus_client_is_one_line(monkeypatch, tiny_model):
    import builtins

    from algan.runtime.errors import EdgeError

    real_import = builtins.__import__

    def no_prometheus(name, *args, **kwargs):
        if name.startswith("prometheus_client"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_prometheus)
    cfg = edge_config(tiny_model, ("127.0.0.1", 1), [{"name": "c", "source": "x.mp4"}], metrics={"port": 9100})
    with pytest.raises(EdgeError, match="pip install prometheus-client"):
        EdgeApp(parse_config(cfg))


@pytest.mark.parametrize("resume", [True, False])
def test_restart_goes_on_where_a_watched_folder_stopped(tmp_path, tiny_model, mqtt_broker, mqtt_collector, resume):
    """With the journal (resume, the default) a restarted daemon scores only the files that arrived meanwhile; with
    resume: false every file in the inbox is scored again."""
    inbox = make_folder(tmp_path / "inbox", [DARK] * 4)
    col = mqtt_collector()
    cams = [{"name": "inbox", "source": str(inbox), "watch": True, "settle_s": 0.1, "resume": resume}]
    cfg = edge_config(tiny_model, mqtt_broker, cams, mqtt={"outbox": {"path": str(tmp_path / "state" / "ob.sqlite")}})

    def run_until(n_scores: int) -> None:
        app, thread, result = start(cfg)
        try:
            assert col.wait_for(lambda ms: len(col.on("inbox/score")) >= n_scores, timeout=20)
            time.sleep(0.3)  # nothing more arrives
        finally:
            app.stop.set()
            thread.join(20)
        assert result.get("rc") == 0

    run_until(4)
    assert (tmp_path / "state" / "inbox.journal.sqlite").exists() == resume
    for i in (4, 5):  # two new parts arrive while the daemon is down
        make_folder(tmp_path / "new", [BRIGHT]).joinpath("000.png").rename(inbox / f"{i:03d}.png")
    run_until(6 if resume else 10)
    scores = [json.loads(m.payload)["score"] for m in col.on("inbox/score")]
    if resume:
        assert len(scores) == 6 and all(s < 0.9 for s in scores[:4]) and all(s >= 1.0 for s in scores[4:])
    else:
        assert len(scores) == 10 and sum(s >= 1.0 for s in scores[4:]) == 2  # the 4 old files again, the 2 new
