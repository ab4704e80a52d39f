"""Structured JSON logs and Prometheus metrics."""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys

from prometheus_client import Counter, Gauge, Histogram

ENTRIES_APPENDED = Counter("ikd_audit_entries_appended_total", "Log entries appended")
DUPLICATES_SKIPPED = Counter(
    "ikd_audit_duplicate_events_total", "Redelivered access events that made no new entry"
)
DEAD_LETTERED = Counter("ikd_audit_dead_lettered_total", "Malformed events sent to dead letter")
BATCH_SECONDS = Histogram("ikd_audit_batch_seconds", "Time to make one consumed batch durable")
TREE_SIZE = Gauge("ikd_audit_tree_size", "Entries in the log")
TREE_HEADS_SIGNED = Counter("ikd_audit_tree_heads_signed_total", "Signed tree heads written")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            data.update(extra)
        if record.exc_info:
            data["error"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
