"""A gateway worker's per-record Python cost, without Kafka or PostgreSQL.

N ProfileVerified records of citizens related to the agency, as identity's relay puts them on
the profile topic, go through what the worker does with each batch: decode
(`read_profile_record`: envelope, validation, trace context) and apply (`apply_profiles`: the
fold over the row, the policy's projection, the access event and the agency-topic record),
here on the tests' in-memory unit of work, a fresh one per batch. Reported per CPU second of
this process, the figure to compare before and after a change on a busy machine.

`.venv/bin/python -m bench.worker_stage [-n 5000] [--agency polres-cirebon] [--repeats 5]`
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from dataclasses import replace
from typing import Any

from ikd_gateway.domain.model import SourcePosition
from ikd_gateway.entrypoints.worker import read_profile_record
from ikd_gateway.service_layer.stream import apply_profiles
from ikd_shared import tracing
from ikd_shared.events import to_cloudevent
from ikd_shared.events.envelope import to_kafka
from tests.support.gateway_factories import POLICY, context, profile, relationship, verified
from tests.support.gateway_fakes import FakeUnitOfWork, Store

BATCH = 500  # the worker's stream_batch_size
DEMO = ("polres-cirebon", "bank-bjb", "dinsos-cirebon", "disnaker-cirebon")


def records(
    n: int, agencies: tuple[str, ...] = DEMO
) -> list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]]:
    """The citizens came for the first service of each of `agencies` (as bench.verify's do)."""
    related = [relationship(a, POLICY.agency(a).services[0].code) for a in agencies]
    out = []
    for serial in range(1, n + 1):
        event = verified(profile(serial), relationships=related)
        cloud = to_cloudevent(
            event, source="/bench", key=event.pseudonym, event_id=str(uuid.uuid4())
        )
        kafka = to_kafka(cloud)
        out.append((kafka.key, kafka.value, list(kafka.headers)))
    return out


async def _apply(agency: str, decoded: list[Any]) -> None:
    ctx = context(agency)
    for i in range(0, len(decoded), BATCH):
        await apply_profiles(FakeUnitOfWork(Store()), ctx, decoded[i : i + BATCH])


def measure(raw: list[Any], agency: str, repeats: int) -> dict[str, Any]:
    decode_s, apply_s = [], []
    for _ in range(repeats):
        started = time.process_time()
        decoded = []
        for offset, (key, value, headers) in enumerate(raw):
            record = read_profile_record(key, value, headers, SourcePosition(0, offset))
            incoming = tracing.from_kafka_headers(headers)
            decoded.append(replace(record, trace=incoming.child() if incoming else None))
        middle = time.process_time()
        asyncio.run(_apply(agency, decoded))
        decode_s.append(middle - started)
        apply_s.append(time.process_time() - middle)
    n = len(raw)
    d, a = statistics.median(decode_s), statistics.median(apply_s)
    return {
        "records": n,
        "agency": agency,
        "decode_per_cpu_second": n / d,
        "apply_per_cpu_second": n / a,
        "per_cpu_second": n / (d + a),
        "microseconds_per_record": (d + a) / n * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=5000)
    parser.add_argument("--agency", default="polres-cirebon")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(json.dumps(measure(records(args.n), args.agency, args.repeats), indent=2))


if __name__ == "__main__":
    main()
