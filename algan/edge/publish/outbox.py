"""Persistent outbox: MQTT messages that must survive broker outages and daemon restarts (stdlib sqlite3, WAL).

Every alarm event and camera state change is appended here *before* it is handed to the MQTT client, and deleted
only when the broker acknowledged it (QoS1 PUBACK / QoS2 PUBCOMP). Rows carry an increasing sequence number; they
are delivered in that order. After a crash (even SIGKILL) the rows still here are delivered by the next run.

The file is opened in WAL mode with ``synchronous=FULL``: a committed row survives a process kill and a power cut.
All methods are thread-safe (one connection behind a lock; the MQTT network thread acknowledges rows while the
main loop appends).

Bounded: at ``max_rows`` the oldest row is dropped to make room, with a warning (first drop, then every 1000).

Dead letters: a row the broker keeps rejecting (it closes the connection each time the row is sent, or the topic is
one no broker accepts) is moved to the ``dead_letter`` table with the reason, so that the rows after it are
delivered; ``algan-edge outbox list|retry|drop`` shows and handles them.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from algan.edge.state import make_private_file
from algan.runtime.errors import EdgeError

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    topic   TEXT    NOT NULL,
    payload BLOB    NOT NULL,
    qos     INTEGER NOT NULL,
    retain  INTEGER NOT NULL,
    created REAL    NOT NULL,
    tries   INTEGER NOT NULL DEFAULT 0
)
"""

#: messages the broker kept rejecting, kept for ``algan-edge outbox list|retry|drop``
_DEAD_LETTER = """
CREATE TABLE IF NOT EXISTS dead_letter (
    seq     INTEGER PRIMARY KEY,
    topic   TEXT    NOT NULL,
    payload BLOB    NOT NULL,
    qos     INTEGER NOT NULL,
    retain  INTEGER NOT NULL,
    created REAL    NOT NULL,
    tries   INTEGER NOT NULL,
    reason  TEXT    NOT NULL,
    failed  REAL    NOT NULL
)
"""


#: alarms raised and not yet cleared, one row per device and camera (the raised event's JSON): after a crash the
#: next start closes them with a ``cleared`` event (``reason: restart``), see :meth:`Outbox.open_alarms`
_OPEN_ALARMS = ("CREATE TABLE IF NOT EXISTS open_alarms (device TEXT NOT NULL, camera TEXT NOT NULL, "
                "payload BLOB NOT NULL, PRIMARY KEY (device, camera))")


#: the columns of a queued message, in :class:`OutboxRow`'s field order (the outbox and dead-letter tables share them)
_ROW_COLUMNS = "seq, topic, payload, qos, retain, created, tries"


class OutboxError(EdgeError):
    """The outbox file cannot be opened or written."""


@dataclass(frozen=True)
class OutboxRow:
    """One queued message.

    Attributes:
        seq: sequence number (delivery order, increasing across restarts).
        topic: MQTT topic.
        payload: message bytes.
        qos: MQTT QoS (1 or 2).
        retain: MQTT retain flag.
        created: time it was queued (Unix seconds).
    """

    seq: int
    topic: str
    payload: bytes
    qos: int
    retain: bool
    created: float
    tries: int = 0

    @staticmethod
    def sql_fields(r: tuple) -> tuple:
        """The fields of a row selected as :data:`_ROW_COLUMNS` (SQLite gives the payload as bytes or memoryview,
        retain as 0/1)."""
        return r[0], r[1], bytes(r[2]), r[3], bool(r[4]), r[5], r[6]


@dataclass(frozen=True, kw_only=True)
class DeadLetter(OutboxRow):
    """A message moved out of the delivery queue because the broker kept rejecting it.

    Attributes:
        seq, topic, payload, qos, retain, created: as in :class:`OutboxRow`.
        tries: times it was sent before it was moved.
        reason: why (one line).
        failed: time it was moved (Unix seconds).
    """

    reason: str
    failed: float


class Outbox:
    """SQLite-backed FIFO of messages awaiting a broker acknowledgement.

    Args:
        path: SQLite file (created with its parent directory); ``":memory:"`` for a volatile one (tests).
        max_rows: most rows kept (>= 1); the oldest is dropped when full.

    Raises:
        OutboxError: the file cannot be created/opened (one line, with the path and how to fix it).
    """

    def __init__(self, path: str | Path, max_rows: int = 10_000) -> None:
        if max_rows < 1:
            raise ValueError(f"max_rows must be >= 1, got {max_rows}")
        self.path = str(path)
        self.max_rows = int(max_rows)
        self.dropped = 0
        self._lock = threading.Lock()
        try:
            if self.path != ":memory:":
                make_private_file(self.path)  # 0600 in a 0700 directory when created here
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10.0)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute(_SCHEMA)
            cols = {r[1] for r in db.execute("PRAGMA table_info(outbox)")}
            if "tries" not in cols:  # a file written before dead letters existed
                db.execute("ALTER TABLE outbox ADD COLUMN tries INTEGER NOT NULL DEFAULT 0")
            db.execute(_DEAD_LETTER)
            cols = {r[1] for r in db.execute("PRAGMA table_info(open_alarms)")}
            if cols and "device" not in cols:  # keyed by camera only: its rows are kept under device ''
                db.execute("ALTER TABLE open_alarms RENAME TO open_alarms_by_camera")
                db.execute(_OPEN_ALARMS)
                db.execute("INSERT INTO open_alarms (device, camera, payload) SELECT '', camera, payload "
                           "FROM open_alarms_by_camera")
                db.execute("DROP TABLE open_alarms_by_camera")
            db.execute(_OPEN_ALARMS)
        except (OSError, sqlite3.Error) as e:
            msg = (f"cannot open the MQTT outbox {self.path} ({e}); make its directory writable or set "
                   "mqtt.outbox.path")
            raise OutboxError(msg) from None
        self._db = db

    def add(self, topic: str, payload: str | bytes, qos: int, retain: bool, now: float | None = None) -> int:
        """Append a message (committed to disk when this returns) and return its sequence number.

        Raises:
            OutboxError: the row could not be written (disk full, file removed...).
        """
        data = payload.encode("utf-8") if isinstance(payload, str) else bytes(payload)
        created = time.time() if now is None else now
        with self._lock:
            try:
                n = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
                excess = n - self.max_rows + 1
                if excess > 0:
                    self._db.execute("DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox ORDER BY seq LIMIT ?)",
                                     (excess,))
                    self.dropped += excess
                    if self.dropped == excess or self.dropped % 1000 < excess:
                        log.warning("MQTT outbox %s is full (%d messages): dropped the oldest, %d dropped so far; the "
                                    "broker has not acknowledged anything for a long time (raise "
                                    "mqtt.outbox.max_events or fix the broker connection)", self.path, self.max_rows,
                                    self.dropped)
                cur = self._db.execute(
                    "INSERT INTO outbox (topic, payload, qos, retain, created) VALUES (?, ?, ?, ?, ?)",
                    (topic, data, int(qos), int(bool(retain)), created),
                )
            except sqlite3.Error as e:
                raise OutboxError(f"cannot write the MQTT outbox {self.path} ({e}); check the disk") from None
            return int(cur.lastrowid)

    def after(self, seq: int, limit: int = 100) -> list[OutboxRow]:
        """Up to ``limit`` rows with a sequence number greater than ``seq``, oldest first."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_ROW_COLUMNS} FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?", (int(seq), int(limit)),
            ).fetchall()
        return [OutboxRow(*OutboxRow.sql_fields(r)) for r in rows]

    def ack(self, seq: int) -> bool:
        """Delete an acknowledged row; ``False`` when it was not there (already acknowledged or dropped)."""
        with self._lock:
            try:
                return self._db.execute("DELETE FROM outbox WHERE seq = ?", (int(seq),)).rowcount > 0
            except sqlite3.Error as e:  # the broker has it; at worst it is sent again after a restart
                log.error("cannot delete acknowledged message %d from the MQTT outbox %s: %s", seq, self.path, e)
                return False

    def tried(self, seq: int) -> int:
        """Count one more try of row ``seq`` (the connection closed while it was unacknowledged).

        Returns:
            Its tries so far (0 when the row is gone or the count cannot be written).
        """
        with self._lock:
            try:
                self._db.execute("UPDATE outbox SET tries = tries + 1 WHERE seq = ?", (int(seq),))
                row = self._db.execute("SELECT tries FROM outbox WHERE seq = ?", (int(seq),)).fetchone()
            except sqlite3.Error:
                return 0
        return int(row[0]) if row else 0

    def dead_letter(self, seq: int, reason: str, now: float | None = None) -> str | None:
        """Move row ``seq`` to the dead-letter table with ``reason``.

        Returns:
            The row's topic; ``None`` when it was not in the queue.

        Raises:
            OutboxError: the file cannot be written.
        """
        failed = time.time() if now is None else now
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                row = self._db.execute("SELECT topic FROM outbox WHERE seq = ?", (int(seq),)).fetchone()
                self._db.execute(
                    f"INSERT OR REPLACE INTO dead_letter ({_ROW_COLUMNS}, reason, failed) SELECT {_ROW_COLUMNS}, ?, ? "
                    "FROM outbox WHERE seq = ?",
                    (reason, failed, int(seq)))
                self._db.execute("DELETE FROM outbox WHERE seq = ?", (int(seq),))
                self._db.execute("COMMIT")
            except sqlite3.Error as e:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise OutboxError(f"cannot move message {seq} to the dead letters of {self.path} ({e}); check the "
                                  "disk") from None
        return None if row is None else str(row[0])

    def dead_letters(self) -> list[DeadLetter]:
        """The dead-letter table, oldest first."""
        with self._lock:
            rows = self._db.execute(f"SELECT {_ROW_COLUMNS}, reason, failed FROM dead_letter ORDER BY seq").fetchall()
        return [DeadLetter(*OutboxRow.sql_fields(r), reason=r[7], failed=r[8]) for r in rows]

    def retry(self, seqs: list[int] | None = None) -> int:
        """Queue dead letters again (all, or those in ``seqs``), as new rows after the queued ones, tries reset.

        Returns:
            How many were queued again.
        """
        return self._take_dead(seqs, requeue=True)

    def drop(self, seqs: list[int] | None = None) -> int:
        """Delete dead letters (all, or those in ``seqs``). Returns how many were deleted."""
        return self._take_dead(seqs, requeue=False)

    def _take_dead(self, seqs: list[int] | None, requeue: bool) -> int:
        where, args = ("", ()) if seqs is None else (
            f" WHERE seq IN ({','.join('?' * len(seqs))})", tuple(int(s) for s in seqs))
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                if requeue:
                    self._db.execute("INSERT INTO outbox (topic, payload, qos, retain, created) SELECT topic, payload, "
                                     f"qos, retain, created FROM dead_letter{where} ORDER BY seq", args)
                n = self._db.execute(f"DELETE FROM dead_letter{where}", args).rowcount
                self._db.execute("COMMIT")
            except sqlite3.Error as e:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise OutboxError(f"cannot change the dead letters of {self.path} ({e}); check the disk") from None
        return int(n)

    def set_open_alarm(self, camera: str, payload: str | bytes | None, device: str = "") -> None:
        """Record the raised event of ``device``'s ``camera``'s open alarm (``None``: the alarm was cleared).

        Raises:
            OutboxError: the row could not be written (disk full...): the caller reports it (at worst an alarm is
                not closed after a crash).
        """
        with self._lock:
            try:
                if payload is None:
                    self._db.execute("DELETE FROM open_alarms WHERE device = ? AND camera = ?", (device, camera))
                else:
                    data = payload.encode("utf-8") if isinstance(payload, str) else bytes(payload)
                    self._db.execute("INSERT OR REPLACE INTO open_alarms (device, camera, payload) VALUES (?, ?, ?)",
                                     (device, camera, data))
            except sqlite3.Error as e:
                raise OutboxError(f"cannot record the open alarm of camera {camera} in {self.path} ({e}); check the "
                                  "disk") from None

    def open_alarms(self, device: str = "") -> dict[str, bytes]:
        """``{camera: raised event JSON}`` of ``device``'s alarms that were raised and never cleared (by an earlier
        run that stopped, crashed or was killed while they were open); rows of a file written before alarms were
        keyed by device (device ``''``) are included."""
        with self._lock:
            rows = self._db.execute("SELECT camera, payload FROM open_alarms WHERE device IN (?, '') ORDER BY "
                                    "device DESC, camera", (device,)).fetchall()
        out: dict[str, bytes] = {}
        for cam, payload in rows:
            out.setdefault(cam, bytes(payload))
        return out

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def close(self) -> None:
        """Close the database (idempotent)."""
        with self._lock:
            self._db.close()
