"""What every use case of the gateway needs: the agency's policy, the pseudonym key, a clock."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ikd_gateway.service_layer.unit_of_work import UnitOfWork
from ikd_shared.events.access_v1 import AccessRecorded
from ikd_shared.policy import AgencyPolicy

UnitOfWorkFactory = Callable[[], UnitOfWork]
Clock = Callable[[], dt.datetime]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class GatewayContext:
    """What every handler needs: the agency's policy, the pseudonym key, a clock."""

    agency: AgencyPolicy
    pseudonym_key: bytes
    consumer: str
    clock: Clock = utcnow
    version_floor: dt.timedelta = dt.timedelta(days=7)
    """How long a purged citizen's version floor refuses older versions (`model.version_floor`):
    the profile topic's older versions of a key can be read again until compaction drops them,
    which Kafka's default segment roll (7 days) bounds; a relay's re-sent suffix comes sooner."""

    def access(self, **fields: Any) -> AccessRecorded:
        return AccessRecorded(
            access_id=uuid.uuid4(), occurred_at=self.clock(), agency=self.agency.code, **fields
        )
