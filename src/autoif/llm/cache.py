"""Response cache in SQLite (WAL): one row per sample, written the moment the sample arrives.

Safe for several threads and several processes at once (WAL + busy timeout + INSERT OR IGNORE on a
primary key, so a sample written twice is stored once). A kill -9 loses at most the samples that
were in flight: every finished one is committed.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path
from typing import Protocol

_CHUNK = 500  # SQLite's default limit on bound parameters is 999 on old builds


class Cache(Protocol):
    """What a backend uses of its cache: a `ResponseCache`, or a proxy to one in another process
    (the Ray executor's `RemoteCache`)."""

    def get_many(self, keys: list[str]) -> dict[str, str]: ...

    def put(self, key: str, value: str) -> None: ...

    def close(self) -> None: ...


class ResponseCache:
    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, timeout=60, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL is durable against a killed process (not against power loss), and much faster.
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA busy_timeout=60000")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, value TEXT NOT NULL,"
            " created REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0))"
        )

    def get_many(self, keys: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        with self._lock:
            for start in range(0, len(keys), _CHUNK):
                chunk = keys[start : start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                for key, value in self._conn.execute(f"SELECT key, value FROM responses WHERE key IN ({marks})", chunk):
                    out[key] = value
        return out

    def put(self, key: str, value: str) -> None:
        with self._lock:
            self._conn.execute("INSERT OR IGNORE INTO responses (key, value) VALUES (?, ?)", (key, value))

    def __len__(self) -> int:
        with self._lock:
            return self._conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._conn.close()
