"""How the tests reach the secured bus: the tests' own clients act as the admin principal.

`make setup` writes the development CA and passwords under .run/dev/kafka; a variable already
exported (IKD_KAFKA_*) wins, as with deploy/dev.env.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from ikd_shared.kafka import KafkaConnection
from ikd_shared.settings import KafkaClientSettings

SECRETS = Path(__file__).resolve().parent.parent / ".run" / "dev" / "kafka"


def use_admin_credentials() -> None:
    """Default IKD_KAFKA_* to the admin principal, so settings built in tests connect."""
    os.environ.setdefault("IKD_KAFKA_CA_FILE", str(SECRETS / "ca.pem"))
    os.environ.setdefault("IKD_KAFKA_USERNAME", "admin")
    os.environ.setdefault("IKD_KAFKA_PASSWORD", f"@{SECRETS / 'admin.password'}")


def password(principal: str) -> str:
    return (SECRETS / f"{principal}.password").read_text().strip()


def kafka_connection(bootstrap: str | None = None) -> KafkaConnection:
    """The admin principal's connection (to `bootstrap` if given)."""
    conn = KafkaConnection.from_settings(KafkaClientSettings())
    return conn if bootstrap is None else dataclasses.replace(conn, bootstrap_servers=bootstrap)
