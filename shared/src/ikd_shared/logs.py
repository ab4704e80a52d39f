"""One log format for every process: a JSON object per line on stderr.

Each line carries the correlation id (`request_id`) and W3C trace context (`trace_id`,
`span_id`) that `ikd_shared.tracing.bound` made current, whenever they are known.
"""

from __future__ import annotations

import datetime as dt
import logging
import logging.config
from typing import Any

import orjson

from ikd_shared.tracing import current_request_id, current_trace

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
_DROPPED = {"color_message"}  # uvicorn's coloured copy of the message


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, correlation, extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = current_request_id()
        if request_id is not None:
            entry["request_id"] = request_id
        context = current_trace()
        if context is not None:
            entry["trace_id"] = context.trace_id_hex
            entry["span_id"] = context.span_id_hex
        for name, value in vars(record).items():
            if name in _STANDARD or name in _DROPPED:
                continue
            if name == "fields" and isinstance(value, dict):
                entry.update(value)  # extra={"fields": {...}}
            else:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(entry, default=str).decode()


def logging_config(level: str | int = "INFO") -> dict[str, Any]:
    """A `logging.config.dictConfig` for JSON logs on stderr (also given to faust's worker)."""
    if isinstance(level, str):
        level = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "json",
                "filters": ["kafka_outage"],
            }
        },
        "filters": {"kafka_outage": {"()": "ikd_shared.kafka_logs.KafkaOutageFilter"}},
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {"aiokafka": {"level": "WARNING"}},
    }


def configure_logging(level: str | int = "INFO") -> None:
    """JSON logs on stderr for the whole process (call once at start)."""
    logging.config.dictConfig(logging_config(level))
