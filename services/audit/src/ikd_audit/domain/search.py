"""Auditor search: validated filters and opaque, tamper-checked pagination cursors."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import re
from dataclasses import asdict, dataclass

from ikd_audit.domain.errors import BadCursor, BadFilter, PageTooLarge
from ikd_audit.domain.model import AUDITOR_CHANNEL
from ikd_audit.domain.patterns import ALERT_OUTCOME, ANOMALY_CHANNEL
from ikd_shared import codec
from ikd_shared.events.access_v1 import Channel, Outcome
from ikd_shared.legal import CODE_PATTERN
from ikd_shared.nik import InvalidNik, parse_nik
from ikd_shared.pseudonym import is_pseudonym, pseudonymize

_CODE = re.compile(CODE_PATTERN)
# Besides agencies' channels and outcomes: auditors' look-ups and the log's own alerts.
CHANNELS = (*(c.value for c in Channel), AUDITOR_CHANNEL, ANOMALY_CHANNEL)
OUTCOMES = (*(o.value for o in Outcome), ALERT_OUTCOME)


@dataclass(frozen=True, slots=True)
class SearchFilter:
    pseudonym: str | None = None
    agency: str | None = None
    service: str | None = None
    channel: str | None = None
    outcome: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None

    def fingerprint(self) -> str:
        data = {
            k: (v.isoformat() if isinstance(v, dt.datetime) else v) for k, v in asdict(self).items()
        }
        return hashlib.sha256(codec.dumps(data, sort_keys=True)).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class AgencyCount:
    agency: str
    accesses: int
    denials: int


def _blank(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return value or None


def _time(name: str, value: str | None) -> dt.datetime | None:
    value = _blank(value)
    if value is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadFilter(f"{name} is not an ISO 8601 time", code="invalid_time") from None
    if parsed.tzinfo is None:
        raise BadFilter(f"{name} needs a timezone (e.g. Z or +07:00)", code="invalid_time")
    return parsed


def build_filter(
    *,
    pseudonym_key: bytes,
    nik: str | None = None,
    pseudonym: str | None = None,
    agency: str | None = None,
    service: str | None = None,
    channel: str | None = None,
    outcome: str | None = None,
    since: str | None = None,
    until: str | None = None,
) -> SearchFilter:
    """Validate raw query values; a NIK becomes its pseudonym here and goes no further."""
    nik, pseudonym = _blank(nik), _blank(pseudonym)
    if nik is not None:
        try:
            parse_nik(nik)
        except InvalidNik as error:
            raise BadFilter(str(error), code=f"invalid_nik_{error.reason.value}") from None
        from_nik = pseudonymize(nik, pseudonym_key)
        if pseudonym is not None and pseudonym != from_nik:
            raise BadFilter("nik and pseudonym name different citizens", code="conflicting_filters")
        pseudonym = from_nik
    if pseudonym is not None and not is_pseudonym(pseudonym):
        raise BadFilter("a pseudonym is 64 lower-case hex digits", code="invalid_pseudonym")
    codes = {"agency": _blank(agency), "service": _blank(service)}
    for name, value in codes.items():
        if value is not None and not _CODE.fullmatch(value):
            raise BadFilter(f"{name} is not a valid code", code=f"invalid_{name}")
    channel, outcome = _blank(channel), _blank(outcome)
    if channel is not None and channel not in CHANNELS:
        raise BadFilter(f"channel must be one of {list(CHANNELS)}", code="invalid_channel")
    if outcome is not None and outcome not in OUTCOMES:
        raise BadFilter(f"outcome must be one of {list(OUTCOMES)}", code="invalid_outcome")
    start, end = _time("from", since), _time("to", until)
    if start is not None and end is not None and start > end:
        raise BadFilter("from is after to", code="invalid_time_range")
    return SearchFilter(pseudonym, codes["agency"], codes["service"], channel, outcome, start, end)


def check_limit(limit: int | None, *, default: int, cap: int) -> int:
    if limit is None:
        return default
    if limit < 1:
        raise PageTooLarge("limit must be at least 1", code="invalid_page_size")
    if limit > cap:
        raise PageTooLarge(f"limit must be at most {cap}")
    return limit


class CursorCodec:
    """Cursor = base64url(JSON {before, filter fingerprint}) + HMAC; nothing to guess or edit."""

    def __init__(self, key: bytes) -> None:
        self._key = hashlib.sha256(b"ikd-audit cursor\x00" + key).digest()

    def encode(self, before_position: int, search: SearchFilter) -> str:
        body = codec.dumps({"b": before_position, "f": search.fingerprint()})
        mac = hmac.new(self._key, body, hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(body + mac).decode().rstrip("=")

    def decode(self, cursor: str, search: SearchFilter) -> int:
        if len(cursor) > 512:
            raise BadCursor("the cursor is malformed")
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        except (binascii.Error, ValueError):
            raise BadCursor("the cursor is malformed") from None
        body, mac = raw[:-16], raw[-16:]
        expected = hmac.new(self._key, body, hashlib.sha256).digest()[:16]
        if len(raw) <= 16 or not hmac.compare_digest(mac, expected):
            raise BadCursor("the cursor is malformed or was altered")
        data = codec.loads(body)
        if data.get("f") != search.fingerprint():
            raise BadCursor("the cursor belongs to another search", code="cursor_filter_mismatch")
        before = data.get("b")
        if not isinstance(before, int) or before < 0:
            raise BadCursor("the cursor is malformed")
        return before
