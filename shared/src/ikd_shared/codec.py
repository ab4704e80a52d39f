"""JSON in and out with orjson (bytes, UTC datetimes, sorted keys for stable hashes)."""

from __future__ import annotations

from typing import Any

import orjson


def dumps(value: Any, *, sort_keys: bool = False) -> bytes:
    option = orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC
    if sort_keys:
        option |= orjson.OPT_SORT_KEYS
    return orjson.dumps(value, option=option)


def loads(data: bytes | str) -> Any:
    return orjson.loads(data)


JSONDecodeError = orjson.JSONDecodeError
