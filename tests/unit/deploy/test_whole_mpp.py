"""`make up` with IKD_DEMO_AGENCIES=all: every agency of the policy gets its own ports, database,
Kafka principal and identity client, and PostgreSQL's max_connections holds every pool."""

from __future__ import annotations

import os
import subprocess
from functools import cache

from ikd_shared.policy import DEFAULT_POLICY, load_policy
from tests.support.deploy import AGENCIES, LOCAL_PORTS
from tests.support.environment import REPO

SCRIPT = """
source deploy/scripts/env.sh
source deploy/scripts/services.sh
for agency in $IKD_DEMO_AGENCIES; do echo "gateway $agency $(gateway_env "$agency")"; done
echo "budget $PG_GATEWAY_CONNECTIONS $GATEWAY_DB_POOL_MAX \
$(PG_GATEWAY_AGENCIES="$IKD_DEMO_AGENCIES" bash deploy/scripts/postgres.sh max-connections)"
"""
CORE_CONNECTIONS = 100  # postgres.sh's PG_CORE_CONNECTIONS
RESERVED_CONNECTIONS = 3  # its superuser_reserved_connections


@cache
def expansion(agencies: str) -> tuple[dict[str, dict[str, str]], tuple[int, int, int]]:
    """Each gateway's environment from services.sh, and (per-gateway connections, pool size,
    max_connections)."""
    # Only the defaults of dev.env and the scripts: none of the caller's settings.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IKD_", "PG_"))}
    out = subprocess.run(  # noqa: S603
        ["bash", "-c", SCRIPT],  # noqa: S607
        cwd=REPO,
        env={**env, "IKD_DEMO_AGENCIES": agencies},
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    gateways: dict[str, dict[str, str]] = {}
    budget = (0, 0, 0)
    for line in out.splitlines():
        kind, _, rest = line.partition(" ")
        if kind == "gateway":
            code, _, variables = rest.partition(" ")
            assert code not in gateways, f"{code} twice"
            gateways[code] = dict(word.split("=", 1) for word in variables.split())
        elif kind == "budget":
            per_gateway, pool, limit = (int(word) for word in rest.split())
            budget = (per_gateway, pool, limit)
    return gateways, budget


def test_all_is_every_agency_of_the_policy_with_the_small_demo_first() -> None:
    gateways, _ = expansion("all")
    codes = [agency.code for agency in load_policy(DEFAULT_POLICY).agencies]
    assert len(codes) == 37
    assert sorted(gateways) == sorted(codes)
    # the small demo's agencies keep their ports, which the walkthrough knows
    assert list(gateways)[: len(AGENCIES)] == AGENCIES


def test_each_gateway_has_its_own_ports_database_principal_and_client() -> None:
    gateways, _ = expansion("all")
    for variable in (
        "IKD_GATEWAY_PORT",
        "IKD_GATEWAY_WORKER_METRICS_PORT",
        "IKD_GATEWAY_DATABASE_URL",
        "IKD_KAFKA_USERNAME",
        "IKD_KAFKA_PASSWORD",
        "IKD_GATEWAY_IDENTITY_CLIENT_ID",
        "IKD_GATEWAY_IDENTITY_CLIENT_SECRET",
    ):
        values = [env[variable] for env in gateways.values()]
        assert len(set(values)) == len(gateways), f"{variable} shared between gateways"
    for code, env in gateways.items():
        assert env["IKD_GATEWAY_AGENCY"] == code
        assert env["IKD_KAFKA_USERNAME"] == f"gateway-{code}"
        assert f"/ikd_gateway_{code.replace('-', '_')}" in env["IKD_GATEWAY_DATABASE_URL"]
    ports = [
        int(env[v])
        for env in gateways.values()
        for v in ("IKD_GATEWAY_PORT", "IKD_GATEWAY_WORKER_METRICS_PORT")
    ]
    core = {int(port) for name, port in LOCAL_PORTS.items() if name != "GATEWAY_BASE_PORT"}
    assert len(set(ports)) == len(ports)
    assert not core & set(ports), "a gateway on a core service's port"


def test_postgres_holds_every_pool_of_the_whole_mpp() -> None:
    gateways, (per_gateway, pool, limit) = expansion("all")
    assert all(env["IKD_GATEWAY_DB_POOL_MAX"] == str(pool) for env in gateways.values())
    # API and worker: a pool and the agency-topic relay's own connection each
    assert per_gateway == 2 * (pool + 1)
    needed = len(gateways) * per_gateway + CORE_CONNECTIONS + RESERVED_CONNECTIONS
    assert needed <= limit, f"{needed} connections wanted, max_connections {limit}"
    # and a PostgreSQL backend per connection stays affordable on the 24 GB machine
    assert limit <= 600


def test_the_small_demo_keeps_its_pools_and_limit() -> None:
    gateways, (_, pool, limit) = expansion(" ".join(AGENCIES))
    assert list(gateways) == AGENCIES
    assert pool == 10
    assert limit == 200


def test_every_gateway_and_audit_fetch_the_token_keys_from_identitys_jwks_url() -> None:
    gateways, _ = expansion(" ".join(AGENCIES))
    identity = f"http://127.0.0.1:{LOCAL_PORTS['IDENTITY_PORT']}"
    url = f"{identity}/.well-known/jwks.json"
    for env in gateways.values():
        assert env["IKD_GATEWAY_TOKEN_JWKS_URL"] == url
        assert "IKD_GATEWAY_TOKEN_JWKS" not in env  # exactly one key source
    script = "source deploy/scripts/env.sh && source deploy/scripts/services.sh && audit_env"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IKD_", "PG_"))}
    out = subprocess.run(  # noqa: S603
        ["bash", "-c", script],  # noqa: S607
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    audit = dict(word.split("=", 1) for word in out.split() if "=" in word)
    assert audit["IKD_AUDIT_TOKEN_JWKS_URL"] == url
    assert "IKD_AUDIT_TOKEN_JWKS" not in audit
