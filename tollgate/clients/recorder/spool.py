"""The durable spool: a local SQLite file holding events until the server has answered for them."""

from __future__ import annotations

import sqlite3
import time

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spool_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS spooled_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    payload BLOB NOT NULL,
    spooled_at REAL NOT NULL
);
"""


class SpoolMismatch(ValueError):
    """The spool file belongs to another tenant."""


class Spool:
    """Serialized UsageEvents in insertion order; one connection, used by one thread at a time."""

    def __init__(self, path: str, *, tenant_id: str):
        # check_same_thread=False: the recorder opens the spool on the caller's thread and then
        # hands it to its background thread, which is its only user from then on.
        self._db = sqlite3.connect(path, timeout=10.0, isolation_level=None, check_same_thread=False)
        # WAL + synchronous=NORMAL: a committed group survives the process being killed at any
        # instant; only an operating-system crash or power loss may lose the last commits.
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._claim(tenant_id)

    def _claim(self, tenant_id: str) -> None:
        with self._transaction():
            self._db.execute("INSERT OR IGNORE INTO spool_meta (key, value) VALUES ('tenant_id', ?)", (tenant_id,))
            (owner,) = self._db.execute("SELECT value FROM spool_meta WHERE key = 'tenant_id'").fetchone()
        if owner != tenant_id:
            raise SpoolMismatch(f"spool holds events of tenant {owner!r}, not {tenant_id!r}")

    def _transaction(self):
        return _Transaction(self._db)

    def append(self, rows: list[tuple[str, bytes]]) -> None:
        """Store (event_id, payload) rows in one commit."""
        now = time.time()
        with self._transaction():
            self._db.executemany(
                "INSERT INTO spooled_events (event_id, payload, spooled_at) VALUES (?, ?, ?)",
                [(event_id, payload, now) for event_id, payload in rows],
            )

    def peek(self, limit: int) -> list[tuple[int, bytes]]:
        """The oldest `limit` rows as (seq, payload)."""
        return self._db.execute("SELECT seq, payload FROM spooled_events ORDER BY seq LIMIT ?", (limit,)).fetchall()

    def delete(self, seqs: list[int]) -> None:
        """Forget rows the server has answered for."""
        with self._transaction():
            self._db.executemany("DELETE FROM spooled_events WHERE seq = ?", [(seq,) for seq in seqs])

    def count(self) -> int:
        return self._db.execute("SELECT count(*) FROM spooled_events").fetchone()[0]

    def close(self) -> None:
        self._db.close()


class _Transaction:
    """BEGIN IMMEDIATE … COMMIT, rolled back on error (sqlite3's own context manager does not begin)."""

    def __init__(self, db: sqlite3.Connection):
        self._db = db

    def __enter__(self):
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb):
        self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")
        return False
