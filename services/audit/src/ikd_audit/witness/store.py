"""The witness's own storage: one SQLite file, nothing shared with the log it watches.

Per origin it keeps the latest cosigned checkpoint (replaced only inside the transaction that
checked the new one against it, so two submissions cannot roll it back), every cosignature it
made, and the alarms an operator reads with `ikd-audit witness alarms` or GET /v1/alarms.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from ikd_audit.witness.core import Cosigned

T = TypeVar("T")
SELECT_LATEST = (
    "SELECT size, root_hash, text, log_line, line, timestamp FROM latest WHERE origin = ?"
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS latest (
    origin     TEXT PRIMARY KEY,
    size       INTEGER NOT NULL,
    root_hash  BLOB NOT NULL,
    text       TEXT NOT NULL,
    log_line   TEXT NOT NULL,
    line       TEXT NOT NULL,
    timestamp  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS cosigned (
    origin     TEXT NOT NULL,
    size       INTEGER NOT NULL,
    root_hash  BLOB NOT NULL,
    text       TEXT NOT NULL,
    log_line   TEXT NOT NULL,
    line       TEXT NOT NULL,
    timestamp  INTEGER NOT NULL,
    PRIMARY KEY (origin, size, timestamp)
);
CREATE TABLE IF NOT EXISTS alarm (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    origin       TEXT NOT NULL,
    kind         TEXT NOT NULL,
    detail       TEXT NOT NULL,
    observed_at  TEXT NOT NULL,
    cosigned     TEXT,            -- the checkpoint we had cosigned, with our cosignature
    offered      TEXT NOT NULL,   -- what the log offered instead
    proof        TEXT NOT NULL DEFAULT ''
);
"""


@dataclass(frozen=True, slots=True)
class Alarm:
    id: int
    origin: str
    kind: str
    detail: str
    observed_at: str
    cosigned: str | None
    offered: str
    proof: str

    def document(self) -> dict[str, object]:
        return {
            "id": self.id,
            "origin": self.origin,
            "kind": self.kind,
            "detail": self.detail,
            "observed_at": self.observed_at,
            "cosigned": self.cosigned,
            "offered": self.offered,
            "proof": self.proof,
        }


class WitnessStore:
    def __init__(self, path: Path | str) -> None:
        self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")  # a cosignature outlives a power cut
        self._conn.executescript(SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._conn.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def latest(self, origin: str) -> Cosigned | None:
        with self._lock:
            row = self._conn.execute(
                SELECT_LATEST,
                (origin,),
            ).fetchone()
        return Cosigned(row[0], bytes(row[1]), *row[2:]) if row else None

    def advance(self, origin: str, decide: Callable[[Cosigned | None], Cosigned]) -> Cosigned:
        """Check and store in one transaction: `decide` sees the latest and returns the next
        (or raises, and nothing changes)."""
        with self._transaction() as conn:
            row = conn.execute(
                SELECT_LATEST,
                (origin,),
            ).fetchone()
            previous = Cosigned(row[0], bytes(row[1]), *row[2:]) if row else None
            new = decide(previous)
            values = (
                origin,
                new.size,
                new.root_hash,
                new.text,
                new.log_line,
                new.line,
                new.timestamp,
            )
            conn.execute("INSERT OR REPLACE INTO latest VALUES (?, ?, ?, ?, ?, ?, ?)", values)
            conn.execute("INSERT OR IGNORE INTO cosigned VALUES (?, ?, ?, ?, ?, ?, ?)", values)
        return new

    def add_alarm(
        self,
        origin: str,
        kind: str,
        detail: str,
        cosigned: str | None,
        offered: str,
        proof: str = "",
    ) -> bool:
        """Record an alarm; False if the same evidence was recorded before (polls repeat)."""
        with self._transaction() as conn:
            seen = conn.execute(
                "SELECT 1 FROM alarm WHERE origin = ? AND kind = ? AND offered = ?",
                (origin, kind, offered),
            ).fetchone()
            if seen:
                return False
            conn.execute(
                "INSERT INTO alarm (origin, kind, detail, observed_at, cosigned, offered, proof) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    origin,
                    kind,
                    detail,
                    dt.datetime.now(dt.UTC).isoformat(),
                    cosigned,
                    offered,
                    proof,
                ),
            )
        return True

    def alarms(self, origin: str | None = None) -> list[Alarm]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, origin, kind, detail, observed_at, cosigned, offered, proof "
                "FROM alarm WHERE ? IS NULL OR origin = ? ORDER BY id",
                (origin, origin),
            ).fetchall()
        return [Alarm(*row) for row in rows]
