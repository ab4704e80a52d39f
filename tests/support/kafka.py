"""How the tests reach the secured bus: the tests' own clients act as the admin principal.

`make setup` writes the development CA and passwords under .run/dev/kafka; a variable already
exported (IKD_KAFKA_*) wins, as with deploy/dev.env.
"""

from __future__ import annotations

import dataclasses

from ikd_shared.kafka import KafkaConnection
from ikd_shared.settings import KafkaClientSettings
from tests.support.environment import REPO  # importing it sets the admin's IKD_KAFKA_*

SECRETS = REPO / ".run" / "dev" / "kafka"


def password(principal: str) -> str:
    return (SECRETS / f"{principal}.password").read_text().strip()


def kafka_connection(bootstrap: str | None = None) -> KafkaConnection:
    """The admin principal's connection (to `bootstrap` if given)."""
    conn = KafkaConnection.from_settings(KafkaClientSettings())
    return conn if bootstrap is None else dataclasses.replace(conn, bootstrap_servers=bootstrap)
