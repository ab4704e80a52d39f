"""Webhook registration outside development's switch, on the real database: only hosts on the
agency's policy list, at most the configured number of enabled endpoints, and delivery checks the
list again."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import yaml

from ikd_gateway.adapters.webhooks import HostNotAllowed
from ikd_gateway.entrypoints.api import create_app
from ikd_shared.policy import DEFAULT_POLICY
from tests.support.gateway import running_gateway
from tests.support.gateway_factories import Tokens

AGENCY = "dinsos-cirebon"
SERVICE = "social-assistance"


def policy_file(tmp_path: Path, hosts: list[str]) -> Path:
    document = yaml.safe_load(DEFAULT_POLICY.read_text(encoding="utf-8"))
    for agency in document["agencies"]:
        if agency["code"] == AGENCY:
            agency["webhook_hosts"] = hosts
    path = tmp_path / f"policy-{len(hosts)}.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


def production_like(tmp_path: Path, hosts: list[str], cap: int) -> dict[str, Any]:
    return {
        "policy_file": policy_file(tmp_path, hosts),
        "webhook_allow_private_targets": False,
        "webhook_max_endpoints": cap,
    }


async def test_hosts_off_the_list_are_refused_and_endpoints_are_capped(
    gateway_db: Any, db: asyncpg.Connection, topic_prefix: str, tokens: Tokens, tmp_path: Path
) -> None:
    manage = {"authorization": f"Bearer {tokens.for_agency(AGENCY, {'gateway:webhooks'})}"}
    # IP addresses on the list: registration resolves nothing, so no DNS is needed here
    configure = production_like(tmp_path, ["93.184.215.14", "9.9.9.9"], cap=2)
    async with (
        running_gateway(
            AGENCY, gateway_db, topic_prefix, tokens, tmp_path, configure=configure
        ) as gateway,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(gateway.settings, runtime=gateway)),
            base_url="http://gw",
        ) as client,
    ):

        async def register(url: str) -> httpx.Response:
            return await client.post(
                "/v1/webhooks/endpoints", headers=manage, json={"url": url, "service": SERVICE}
            )

        off_list = await register("https://1.1.1.1/hook")
        assert (off_list.status_code, off_list.json()["code"]) == (403, "webhook_host_not_allowed")
        loopback = await register("http://127.0.0.1:18200/webhooks/ikd")
        assert (loopback.status_code, loopback.json()["code"]) == (400, "webhook_url_not_allowed")

        # two at once for the last places: the cap holds under concurrency
        first, second, third = await asyncio.gather(
            register("https://93.184.215.14/a"),
            register("https://9.9.9.9/b"),
            register("https://93.184.215.14/c"),
        )
        statuses = sorted([first.status_code, second.status_code, third.status_code])
        assert statuses == [201, 201, 409]
        refused = next(r for r in (first, second, third) if r.status_code == 409)
        assert refused.json()["code"] == "webhook_endpoint_limit"
        assert await db.fetchval("SELECT count(*) FROM webhook_endpoints") == 2

        # a disabled endpoint frees its place
        endpoint_id = next(r for r in (first, second, third) if r.status_code == 201).json()["id"]
        disabled = await client.delete(f"/v1/webhooks/endpoints/{endpoint_id}", headers=manage)
        assert disabled.status_code in (200, 204)
        assert (await register("https://9.9.9.9/d")).status_code == 201
        assert (await register("https://9.9.9.9/e")).status_code == 409

    # the policy no longer lists 9.9.9.9: delivery's check refuses it before any connection
    narrower = production_like(tmp_path, ["93.184.215.14"], cap=2)
    async with running_gateway(
        AGENCY, gateway_db, topic_prefix, tokens, tmp_path, configure=narrower
    ) as gateway:
        with pytest.raises(HostNotAllowed):
            await gateway.dispatcher.check("https://9.9.9.9/d")
        assert await gateway.dispatcher.check("https://93.184.215.14/a")
