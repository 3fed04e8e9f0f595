"""The read journal of a watched folder: which image files were already scored, kept on disk (SQLite).

A watched folder is an inbox that upstream software fills and often never empties. Without a journal a restart of
the daemon would score every file still there again (duplicate scores, duplicate alarms). The journal records a file
once its score has been handed to the MQTT publisher (and its alarm event, if any, to the outbox), keyed by name,
size and modification time: a file that is rewritten under the same name counts as new. At-least-once: a file read
but not yet scored when the daemon stops is scored again after the restart, never skipped.

Thread safety: the camera's reader thread asks :meth:`FolderJournal.done_before`, the daemon's main thread calls
:meth:`FolderJournal.add`; both go through one lock.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path

from algan.edge.errors import SourceError
from algan.edge.state import make_private_file

log = logging.getLogger(__name__)

_SCHEMA = "CREATE TABLE IF NOT EXISTS scored (name TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL)"


class FolderJournal:
    """SQLite file of the files of one watched folder that were scored.

    Args:
        path: the SQLite file (created with its parent directory).

    Raises:
        SourceError: the file cannot be created or opened (one line, with the path and how to fix it).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            make_private_file(self.path)  # 0600 in a 0700 directory when created here
            db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=10.0)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(_SCHEMA)
            rows = db.execute("SELECT name, size, mtime_ns FROM scored").fetchall()
        except (OSError, sqlite3.Error) as e:
            raise SourceError(f"cannot open the folder journal {self.path} ({e}); make its directory writable, set "
                              "the camera's journal path, or set resume: false") from None
        self._db = db
        self._done: dict[str, tuple[int, int]] = {name: (size, mtime) for name, size, mtime in rows}

    def __len__(self) -> int:
        with self._lock:
            return len(self._done)

    def done_before(self, name: str, size: int, mtime_ns: int) -> bool:
        """True when this file (same name, size in bytes and mtime in ns) was scored by an earlier run or this one."""
        with self._lock:
            return self._done.get(name) == (size, mtime_ns)

    def add(self, name: str, size: int, mtime_ns: int) -> None:
        """Record a scored file. A failed write is logged, not raised: the file is then scored again after a
        restart (at-least-once), and the camera keeps running."""
        with self._lock:
            self._done[name] = (size, mtime_ns)
            try:
                self._db.execute("INSERT OR REPLACE INTO scored (name, size, mtime_ns) VALUES (?, ?, ?)",
                                 (name, int(size), int(mtime_ns)))
            except sqlite3.Error as e:
                log.error("cannot write the folder journal %s (%s): %s will be scored again after a restart",
                          self.path, e, name)

    def keep_only(self, names: Iterable[str]) -> int:
        """Forget files that are no longer in the folder (bounded size); returns how many were forgotten."""
        present = set(names)
        with self._lock:
            gone = [n for n in self._done if n not in present]
            for n in gone:
                del self._done[n]
            if gone:
                try:
                    self._db.executemany("DELETE FROM scored WHERE name = ?", [(n,) for n in gone])
                except sqlite3.Error as e:
                    log.error("cannot prune the folder journal %s: %s", self.path, e)
            return len(gone)

    def close(self) -> None:
        """Close the database (idempotent)."""
        with self._lock:
            self._db.close()
