"""The development environment the tests run against (deploy/dev.env, as `make test` exports)."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _load_dev_env() -> None:
    """deploy/dev.env into os.environ; a variable already set wins."""
    for line in (REPO / "deploy" / "dev.env").read_text().splitlines():
        name, separator, value = line.partition("=")
        if separator and not name.startswith("#"):
            os.environ.setdefault(name.strip(), value.strip())


_load_dev_env()
# The tests' own Kafka clients, and settings built in tests, act as the admin principal.
os.environ.setdefault("IKD_KAFKA_CA_FILE", str(REPO / ".run" / "dev" / "kafka" / "ca.pem"))
os.environ.setdefault("IKD_KAFKA_USERNAME", "admin")
os.environ.setdefault(
    "IKD_KAFKA_PASSWORD", f"@{REPO / '.run' / 'dev' / 'kafka' / 'admin.password'}"
)
PG_HOST = os.environ.get("IKD_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ["PG_PORT"])
PG_SUPERUSER_PASSWORD = os.environ["IKD_PG_SUPERUSER_PASSWORD"]
KAFKA_BOOTSTRAP = os.environ["IKD_KAFKA_BOOTSTRAP_SERVERS"]
