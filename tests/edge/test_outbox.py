"""Outbox: order, acknowledgement, bound, persistence across reopen (and a killed writer), its depth in the stats."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading

import pytest

from algan.edge.publish.outbox import Outbox, OutboxError


def test_order_and_ack(tmp_path):
    ob = Outbox(tmp_path / "o.sqlite")
    seqs = [ob.add(f"t/{i}", f"p{i}", 1, i % 2 == 0, now=100.0 + i) for i in range(5)]
    assert seqs == sorted(seqs) and len(ob) == 5
    rows = ob.after(0)
    assert [r.topic for r in rows] == [f"t/{i}" for i in range(5)]
    assert rows[0].payload == b"p0" and rows[0].retain and not rows[1].retain and rows[0].created == 100.0
    assert [r.seq for r in ob.after(seqs[1], limit=2)] == seqs[2:4]
    assert ob.ack(seqs[2]) and not ob.ack(seqs[2]), "a second ack of the same row is a no-op"
    assert [r.seq for r in ob.after(0)] == [seqs[0], seqs[1], seqs[3], seqs[4]]


def test_survives_reopen_and_sequence_keeps_growing(tmp_path):
    path = tmp_path / "sub" / "o.sqlite"  # parent directory is created
    ob = Outbox(path)
    first = ob.add("a", "1", 1, False)
    ob.ack(ob.add("b", "2", 1, False))
    ob.close()
    ob = Outbox(path)
    assert [(r.seq, r.topic) for r in ob.after(0)] == [(first, "a")]
    assert ob.add("c", "3", 1, False) > first + 1, "AUTOINCREMENT never reuses an acknowledged sequence number"
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_committed_rows_survive_sigkill_of_the_writer(tmp_path):
    path = tmp_path / "o.sqlite"
    code = (f"import os, signal\nfrom algan.edge.publish.outbox import Outbox\nob = Outbox({str(path)!r})\n"
            "for i in range(20): ob.add('t', str(i), 1, False)\nos.kill(os.getpid(), signal.SIGKILL)\n")
    res = subprocess.run([sys.executable, "-c", code], timeout=60, check=False)
    assert res.returncode == -9
    assert [r.payload for r in Outbox(path).after(0)] == [str(i).encode() for i in range(20)]


def test_bounded_drops_oldest_with_one_warning(tmp_path, caplog):
    ob = Outbox(tmp_path / "o.sqlite", max_rows=3)
    for i in range(6):
        ob.add("t", str(i), 1, False)
    assert [r.payload for r in ob.after(0)] == [b"3", b"4", b"5"] and ob.dropped == 3
    warnings = [r.message for r in caplog.records if "is full" in r.getMessage()]
    assert len(warnings) == 1


def test_concurrent_add_and_ack(tmp_path):
    ob = Outbox(tmp_path / "o.sqlite")
    seqs: list[int] = []

    def writer():
        for i in range(200):
            seqs.append(ob.add("t", str(i), 1, False))

    th = threading.Thread(target=writer)
    th.start()
    acked = 0
    while th.is_alive() or acked < 200:
        for row in ob.after(0, limit=50):
            acked += ob.ack(row.seq)
    th.join()
    assert acked == 200 and len(ob) == 0


def test_unwritable_location_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutboxError) as info:
        Outbox(blocker / "o.sqlite")
    assert "mqtt.outbox.path" in str(info.value) and "\n" not in str(info.value)


def test_stats_message_reports_the_queued_outbox(tmp_path):
    """The daemon's stats message gives the outbox's real depth: rows queued while the broker is away, minus the
    acknowledged ones, and the rows the bounded outbox dropped."""
    import json
    from types import SimpleNamespace

    from edgekit import edge_config

    from algan.edge.app import EdgeApp
    from algan.edge.config import parse_config

    ob = Outbox(tmp_path / "o.sqlite", max_rows=4)
    seqs = [ob.add("algan/line1/cam1/alarm", f'{{"n": {i}}}', 1, False) for i in range(6)]  # 2 oldest dropped
    ob.ack(seqs[-1])  # the broker confirmed one
    sent: list[tuple[str, str]] = []
    pub = SimpleNamespace(lost=0, outbox=ob, publish=lambda topic, payload, **kw: sent.append((topic, payload)))
    app = EdgeApp(parse_config(edge_config(tmp_path / "model", ("127.0.0.1", 1), [{"name": "cam1",
                                                                                   "source": str(tmp_path)}])))
    app._publish_stats(SimpleNamespace(backend="standin", model_id="m1"), pub)
    (topic, payload), = sent
    stats = json.loads(payload)
    assert topic == "algan/line1/stats" and (stats["outbox_depth"], stats["outbox_dropped"]) == (3, 2)
    assert app.last_stats["outbox_depth"] == len(ob) == 3
    ob.close()
