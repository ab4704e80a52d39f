"""The Kafka outage log filter with a fake clock: a flood of client errors becomes a few lines."""

from __future__ import annotations

import logging
import logging.config

import pytest

from ikd_shared.kafka_logs import KafkaOutageFilter

UNABLE = "Unable connect to node with id %s: %s"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def record(name: str, msg: str, *args: object, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def outage(clock: Clock) -> KafkaOutageFilter:
    return KafkaOutageFilter(
        summary_every=30, recovered_after=15, clock=clock, wall_clock=lambda: 0.0, watch=False
    )


@pytest.fixture
def notes(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.WARNING, logger="ikd_shared.kafka_logs")
    return caplog


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "ikd_shared.kafka_logs"]


def test_other_records_pass_untouched(outage: KafkaOutageFilter) -> None:
    assert outage.filter(record("ikd_gateway.worker", "applied %s", 3))
    assert outage.filter(record("aiokafka.conn", "connected", level=logging.INFO))
    assert not outage.in_outage


def test_a_thirty_second_flood_logs_a_bounded_number_of_lines(
    outage: KafkaOutageFilter, clock: Clock, notes: pytest.LogCaptureFixture
) -> None:
    passed = 0
    for step in range(30_000):  # 1,000 errors a second for 30 s, two kinds
        clock.now = 1000.0 + step / 1000
        passed += outage.filter(record("aiokafka.client", UNABLE, 1, "refused"))
        if step % 100 == 0:
            passed += outage.filter(record("aiokafka", "Unable to update metadata from %s", [1]))
        if step % 1000 == 0:
            outage.tick()
    assert passed == 2  # the first of each kind
    clock.now = 1030.0
    outage.tick()
    notes_now = messages(notes)
    assert len(notes_now) == 2
    assert notes_now[0].startswith("Kafka clients report errors since 1970-01-01T00:00:00")
    assert "still failing after 30 s (30300 errors so far)" in notes_now[1]
    assert "29999 x 'Unable connect to node with id %s: %s'" in notes_now[1]
    assert "299 x 'Unable to update metadata from %s'" in notes_now[1]


def test_recovery_is_logged_once_the_errors_stop(
    outage: KafkaOutageFilter, clock: Clock, notes: pytest.LogCaptureFixture
) -> None:
    outage.filter(record("aiokafka.client", UNABLE, 1, "refused"))
    clock.now += 10
    assert not outage.filter(record("aiokafka.client", UNABLE, 1, "refused"))
    clock.now += 14.9
    assert outage.tick() == pytest.approx(0.1)  # not yet quiet for 15 s
    assert outage.in_outage
    clock.now += 0.1
    assert outage.tick() is None
    assert not outage.in_outage
    assert messages(notes)[-1] == (
        "Kafka clients recovered (no error for 15 s): the errors began at "
        "1970-01-01T00:00:00+00:00 and went on for 10 s, 2 in all"
    )
    # the next outage starts afresh: its first error is logged again
    clock.now += 100
    assert outage.filter(record("aiokafka.client", UNABLE, 1, "refused"))
    assert messages(notes)[-1].startswith("Kafka clients report errors since")


def test_faust_transport_warnings_count_too(outage: KafkaOutageFilter) -> None:
    warning = logging.WARNING
    assert outage.filter(
        record("faust.transport.drivers.aiokafka", "Heartbeat failed", level=warning)
    )
    assert not outage.filter(
        record("faust.transport.drivers.aiokafka", "Heartbeat failed", level=warning)
    )
    assert outage.filter(record("faust.transporter", "not a kafka logger", level=warning))


def test_the_services_logging_configuration_installs_it() -> None:
    from ikd_shared.logs import logging_config

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        logging.config.dictConfig(logging_config())
        filters = [f for h in root.handlers for f in h.filters]
        assert any(isinstance(f, KafkaOutageFilter) for f in filters)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
