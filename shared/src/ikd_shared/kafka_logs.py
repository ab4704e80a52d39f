"""A bounded log while Kafka is unreachable.

While the broker is down, aiokafka retries without pause and logs every failed attempt
("Unable connect to node with id 1: ...", thousands of lines a second). `KafkaOutageFilter`,
installed on the log handler, lets the first record of each kind through, counts the repeats
instead of writing them, and writes one line when the outage starts, a summary every
`summary_every` seconds while it lasts, and one line when the clients have been quiet for
`recovered_after` seconds: they reconnected (or, in an idle producer, stopped trying until it
next has something to send).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable

# Loggers of the Kafka clients (aiokafka directly and through faust).
KAFKA_LOGGERS = ("aiokafka", "faust.transport")

log = logging.getLogger(__name__)


def _is_kafka(name: str) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in KAFKA_LOGGERS)


def _utc(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat(timespec="seconds")


class KafkaOutageFilter(logging.Filter):
    """Deduplicate the Kafka clients' warnings and errors during an outage (see the module)."""

    def __init__(
        self,
        *,
        summary_every: float = 30.0,
        recovered_after: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        watch: bool = True,
    ) -> None:
        super().__init__()
        self.summary_every = summary_every
        self.recovered_after = recovered_after
        self.clock = clock
        self.wall_clock = wall_clock
        self._watch = watch
        self._lock = threading.Lock()
        self._wakeup = threading.Event()
        self._since: float | None = None  # clock() at the first error of the outage
        self._since_wall = 0.0
        self._last_error = 0.0
        self._last_summary = 0.0
        self._seen: set[tuple[str, object]] = set()
        self._total = 0
        self._suppressed: Counter[str] = Counter()

    @property
    def in_outage(self) -> bool:
        return self._since is not None

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or not _is_kafka(record.name):
            return True
        now = self.clock()
        started = False
        with self._lock:
            if self._since is None:
                started = True
                self._since, self._since_wall = now, self.wall_clock()
                self._last_summary = now
                self._seen.clear()
                self._total = 0
                self._suppressed.clear()
            self._last_error = now
            self._total += 1
            kind = (record.name, record.msg)
            first_of_kind = kind not in self._seen
            self._seen.add(kind)
            if not first_of_kind:
                self._suppressed[str(record.msg)] += 1
        if started:
            log.warning(
                "Kafka clients report errors since %s: the first of each kind is logged, "
                "repeats are counted and summarised every %.0f s until they stop",
                _utc(self._since_wall),
                self.summary_every,
            )
            if self._watch:
                threading.Thread(target=self._watcher, name="kafka-outage-log", daemon=True).start()
        return first_of_kind

    def tick(self) -> float | None:
        """Write the summary or the recovery line when due; the seconds until the next check,
        or None once recovered (the watcher thread calls this; tests call it with a fake clock).
        """
        now = self.clock()
        with self._lock:
            if self._since is None:
                return None
            lasted = now - self._since
            if now - self._last_error >= self.recovered_after:
                total, since = self._total, self._since_wall
                lasted = self._last_error - self._since
                self._since = None
                recovered: tuple[float, int, str] | None = (lasted, total, _utc(since))
                summary = None
            else:
                recovered = None
                summary = None
                if now - self._last_summary >= self.summary_every:
                    self._last_summary = now
                    summary = (lasted, self._total, dict(self._suppressed))
                    self._suppressed.clear()
                wait = min(
                    self._last_summary + self.summary_every - now,
                    self._last_error + self.recovered_after - now,
                )
        if recovered is not None:
            log.warning(
                "Kafka clients recovered (no error for %.0f s): the errors began at %s and "
                "went on for %.0f s, %d in all",
                self.recovered_after,
                recovered[2],
                recovered[0],
                recovered[1],
            )
            return None
        if summary is not None:
            counts = "; ".join(f"{n} x {msg!r}" for msg, n in sorted(summary[2].items()))
            log.warning(
                "Kafka clients still failing after %.0f s (%d errors so far); not logged in "
                "the last %.0f s: %s",
                summary[0],
                summary[1],
                self.summary_every,
                counts or "none",
            )
        return max(wait, 0.05)

    def _watcher(self) -> None:
        while (wait := self.tick()) is not None:
            self._wakeup.wait(wait)
