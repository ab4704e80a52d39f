"""The batch-consumer step: every record applied or dead-lettered before the batch is done."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from tenacity import wait_none

from ikd_shared.consumer import Poison, SourceRecord, consume_batch


class Outage(ConnectionError):
    pass


def batch(*values: bytes) -> list[SourceRecord]:
    return [SourceRecord("t", 0, offset, b"k", value) for offset, value in enumerate(values)]


def decode(source: SourceRecord) -> str:
    assert source.value is not None
    if source.value.startswith(b"poison"):
        raise Poison("not an event")
    return source.value.decode()


async def test_poison_and_unappliable_records_are_dead_lettered_the_others_applied(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    applied: list[str] = []
    dead: list[tuple[int, str]] = []
    outages = iter([True, True])  # the first two transactions meet an outage

    async def apply(records: Sequence[str]) -> list[str]:
        if next(outages, False):
            raise Outage("database down")
        if "bad" in records:
            raise ValueError("cannot store")
        applied.extend(records)
        return [f"ok {record}" for record in records]

    async def dead_letter(source: SourceRecord, reason: str) -> None:
        dead.append((source.offset, reason))

    monkeypatch.setattr("ikd_shared.supervise.backoff", lambda *_: wait_none())
    result = await consume_batch(
        batch(b"one", b"poison", b"bad", b"two", b"three"),
        decode=decode,
        apply=apply,
        dead_letter=dead_letter,
        transient=(Outage,),
    )
    assert applied == ["one", "two", "three"]
    assert result == [("one", "ok one"), ("two", "ok two"), ("three", "ok three")]
    assert dead == [(1, "not an event"), (2, "apply: ValueError: cannot store")]


async def test_a_failing_dead_letter_write_is_retried_not_skipped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent: list[int] = []
    failures = iter([True, True])

    async def dead_letter(source: SourceRecord, reason: str) -> None:
        if next(failures, False):
            raise OSError("broker down")
        sent.append(source.offset)

    async def apply(records: Sequence[str]) -> list[str]:
        return list(records)

    monkeypatch.setattr("ikd_shared.supervise.backoff", lambda *_: wait_none())
    await consume_batch(
        batch(b"poison"), decode=decode, apply=apply, dead_letter=dead_letter, transient=()
    )
    assert sent == [0]
