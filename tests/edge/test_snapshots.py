"""Snapshots: the retention policy (pure) and the store (JPEG written atomically, pruned, only its own files)."""

from __future__ import annotations

import os
import time

import cv2
import numpy as np
import pytest

from algan.edge.publish.snapshots import SnapshotStore, expired, snapshot_name

DAY = 86400.0


@pytest.mark.parametrize(("files", "count", "age", "want"), [
    ([("a", 1.0), ("b", 2.0), ("c", 3.0)], 10, None, []),
    ([("a", 1.0), ("b", 2.0), ("c", 3.0)], 2, None, ["a"]),
    ([("c", 3.0), ("a", 1.0), ("b", 2.0)], 0, None, ["a", "b", "c"]),
    ([("a", 1.0), ("b", 50.0), ("c", 99.0)], 10, 60.0, ["a"]),  # now = 100: a is 99 s old
    ([("a", 1.0), ("b", 50.0), ("c", 99.0), ("d", 99.5)], 2, 60.0, ["a", "b"]),  # age first, then count
    ([("b", 5.0), ("a", 5.0)], 1, None, ["a"]),  # equal times: by name
])
def test_expired(files, count, age, want):
    assert expired(files, 100.0, count, age) == want


def test_snapshot_name():
    assert snapshot_name("cam1", 1796000523.456, "abc") == "cam1__20261130T010203.456Z__abc.jpg"


def test_store_writes_prunes_and_keeps_foreign_files(tmp_path):
    now = [time.time()]
    store = SnapshotStore(tmp_path / "snaps", max_count=2, max_age_s=DAY, jpeg_quality=80, clock=lambda: now[0])
    img = np.full((32, 32, 3), 200, np.uint8)
    (tmp_path / "snaps").mkdir()
    (tmp_path / "snaps" / "holiday.jpg").write_bytes(b"not ours")
    paths = []
    for i in range(3):
        paths.append(store.save(snapshot_name("cam1", 1000.0 + i, f"id{i}"), img))
        os.utime(paths[-1], (now[0] - 100 + i, now[0] - 100 + i))  # distinct, increasing mtimes
    left = sorted(p.name for p in (tmp_path / "snaps").iterdir())
    assert left == sorted(["holiday.jpg", os.path.basename(paths[1]), os.path.basename(paths[2])])
    back = cv2.imread(paths[2])
    assert back.shape == (32, 32, 3) and abs(int(back.mean()) - 200) <= 2
    now[0] += 2 * DAY  # everything is older than a day now
    assert store.prune() == [os.path.basename(p) for p in paths[1:]]
    assert [p.name for p in (tmp_path / "snaps").iterdir()] == ["holiday.jpg"]


def test_store_rewrites_same_name(tmp_path):
    store = SnapshotStore(tmp_path)
    name = snapshot_name("c", 0.0, "x")
    p1 = store.save(name, np.zeros((8, 8, 3), np.uint8))
    p2 = store.save(name, np.full((8, 8, 3), 255, np.uint8))
    assert p1 == p2 and cv2.imread(p2).mean() > 250
    assert [p.name for p in tmp_path.iterdir()] == [name], "no temporary file left behind"


def test_store_unwritable_dir_logs_once_and_returns_none(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    store = SnapshotStore(blocker / "snaps")
    img = np.zeros((8, 8, 3), np.uint8)
    assert store.save("c__20260101T000000.000Z__a.jpg", img) is None
    assert store.save("c__20260101T000000.000Z__b.jpg", img) is None
    assert store.failures == 2
    assert len([r for r in caplog.records if "cannot write alarm snapshot" in r.getMessage()]) == 1
