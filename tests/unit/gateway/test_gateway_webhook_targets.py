"""Webhook targets: the sender connects only to the addresses it vetted (no DNS rebinding), keeps
the host name for Host, SNI and the certificate, and only hosts on the agency's policy list pass.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
from collections.abc import AsyncIterator, Iterable
from typing import Any

import httpcore
import pytest

from ikd_gateway.adapters.webhooks import (
    HostNotAllowed,
    HttpSender,
    IPAddress,
    UnsafeTarget,
    VettedTransport,
    VettingBackend,
    check_target,
    sign,
)
from ikd_shared.events.access_v1 import Channel
from ikd_shared.policy import DEFAULT_POLICY, PolicyError, load_policy, parse_policy

PUBLIC = ipaddress.ip_address("93.184.215.14")
OTHER_PUBLIC = ipaddress.ip_address("9.9.9.9")
LOOPBACK = ipaddress.ip_address("127.0.0.1")
HOST = "hooks.bank.example"


class Rebinding:
    """A resolver that answers a public address first and loopback from then on."""

    def __init__(self, first: IPAddress = PUBLIC, then: IPAddress = LOOPBACK) -> None:
        self.answers = [first]
        self.then = then
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> list[IPAddress]:
        self.asked.append(host)
        return [self.answers.pop(0) if self.answers else self.then]


@pytest.fixture
async def listener() -> AsyncIterator[tuple[int, list[str]]]:
    """A TCP server on loopback that records every connection it gets."""
    connections: list[str] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer.get_extra_info("peername")[0])
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port, connections
    finally:
        server.close()
        await server.wait_closed()


def signed() -> Any:
    return sign("whsec_" + "A" * 44, "msg-1", dt.datetime.now(dt.UTC), b"{}")


async def test_a_name_rebound_to_loopback_after_the_check_is_never_connected_to(
    listener: tuple[int, list[str]],
) -> None:
    port, connections = listener
    resolver = Rebinding()
    url = f"https://{HOST}:{port}/hook"
    # registration: the name answers a public address and the host is on the list
    assert await check_target(
        url, allow_private=False, allowed={HOST}.__contains__, resolver=resolver
    )
    sender = HttpSender(timeout=5, resolver=resolver)
    try:
        result = await sender.post(url, signed())
    finally:
        await sender.close()
    assert result.status_code is None
    assert "loopback" in (result.error or "")
    assert not result.disclosed  # no connection opened, nothing sent
    assert connections == []
    assert resolver.asked == [HOST, HOST]  # delivery resolved once and connected to nothing


async def test_the_listener_does_count_connections_that_are_allowed(
    listener: tuple[int, list[str]],
) -> None:
    """The negative above could pass vacuously; development's switch does reach the listener."""
    port, connections = listener
    sender = HttpSender(timeout=5, allow_private=True)
    try:
        result = await sender.post(f"http://127.0.0.1:{port}/hook", signed())
    finally:
        await sender.close()
    assert result.status_code == 204
    assert connections == ["127.0.0.1"]


class Recorded(httpcore.AsyncNetworkStream):
    """A connection that records what was sent and answers 204."""

    def __init__(self, log: dict[str, Any]) -> None:
        self.log = log
        self.answer = b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        answer, self.answer = self.answer, b""
        return answer

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        self.log["sent"] = self.log.get("sent", b"") + buffer

    async def aclose(self) -> None:
        pass

    async def start_tls(
        self,
        ssl_context: Any,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> httpcore.AsyncNetworkStream:
        self.log["server_hostname"] = server_hostname
        return self

    def get_extra_info(self, info: str) -> Any:
        return None


class Recording(httpcore.AsyncNetworkBackend):
    def __init__(self) -> None:
        self.log: dict[str, Any] = {"connected": []}

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.log["connected"].append((host, port))
        return Recorded(self.log)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


async def test_the_connection_goes_to_the_vetted_address_and_keeps_the_name() -> None:
    resolver = Rebinding(first=OTHER_PUBLIC, then=LOOPBACK)
    wire = Recording()
    sender = HttpSender(transport=VettedTransport(VettingBackend(resolver, inner=wire)))
    try:
        result = await sender.post(f"https://{HOST}/hook", signed())
    finally:
        await sender.close()
    assert result.status_code == 204
    assert wire.log["connected"] == [(str(OTHER_PUBLIC), 443)]  # the address, never the name
    assert wire.log["server_hostname"] == HOST  # SNI and the certificate check use the name
    assert f"Host: {HOST}\r\n".encode() in wire.log["sent"]


async def test_a_name_with_any_private_address_is_refused_before_connecting() -> None:
    async def mixed(host: str, port: int) -> list[IPAddress]:
        return [PUBLIC, ipaddress.ip_address("10.0.0.5")]

    wire = Recording()
    sender = HttpSender(transport=VettedTransport(VettingBackend(mixed, inner=wire)))
    try:
        result = await sender.post(f"https://{HOST}/hook", signed())
    finally:
        await sender.close()
    assert result.status_code is None
    assert not result.disclosed
    assert "private" in (result.error or "")
    assert wire.log["connected"] == []


POLICY_TAIL = """
- code: bank-test
  name: Bank for tests
  kind: state_owned_company
  webhook_hosts: [{hosts}]
  services:
  - code: test-savings
    name: Test savings account
    fields: [full_name]
    purpose: {{code: test-savings, text: Open a savings account for tests}}
    legal_basis: contract
    legal_reference: Test account contract
    retention_days: 30
"""


def policy_with(hosts: str) -> Any:
    base = DEFAULT_POLICY.read_text(encoding="utf-8")
    return parse_policy(base + POLICY_TAIL.format(hosts=hosts)).agency("bank-test")


async def test_only_hosts_on_the_agencys_list_pass() -> None:
    agency = policy_with("'*.bjb.example', hooks.partner.example, 93.184.215.14")
    allowed = agency.webhook_host_allowed
    for url in (
        "https://hooks.bjb.example/x",
        "https://a.b.BJB.example./x",
        "https://hooks.partner.example/x",
        "https://93.184.215.14/x",
    ):
        assert await check_target(url, allow_private=False, allowed=allowed, resolve=False)
    for url in (
        "https://bjb.example/x",  # *.domain is what is under the domain, not the domain
        "https://evilbjb.example/x",
        "https://hooks.partner.example.evil.example/x",
        "https://93.184.215.15/x",
    ):
        with pytest.raises(HostNotAllowed) as refused:
            await check_target(url, allow_private=False, allowed=allowed, resolve=False)
        assert refused.value.code == "webhook_host_not_allowed"


async def test_no_list_means_no_webhooks_outside_development() -> None:
    agency = load_policy(DEFAULT_POLICY).agency("bank-bjb")
    assert agency.webhook_hosts == ()
    with pytest.raises(HostNotAllowed):
        await check_target(
            "https://hooks.bankbjb.co.id/x",
            allow_private=False,
            allowed=agency.webhook_host_allowed,
            resolve=False,
        )
    # development's switch (the demo's receiver on loopback) still needs no list
    assert await check_target(
        "http://127.0.0.1:18200/webhooks/ikd",
        allow_private=True,
        allowed=agency.webhook_host_allowed,
    )


async def test_an_allowed_host_must_still_resolve_to_public_addresses() -> None:
    with pytest.raises(UnsafeTarget, match="loopback"):
        await check_target(
            f"https://{HOST}/x",
            allow_private=False,
            allowed={HOST}.__contains__,
            resolver=Rebinding(first=LOOPBACK),
        )


@pytest.mark.parametrize("bad", ["https://hooks.example", "hooks.example:443", "*.", "a..b"])
def test_the_policy_refuses_what_is_not_a_host_pattern(bad: str) -> None:
    with pytest.raises(PolicyError, match="webhook_hosts"):
        policy_with(f"'{bad}'")


async def test_delivery_checks_again_and_sends_nothing_to_a_refused_host() -> None:
    from tests.unit.gateway.test_gateway_webhook_dispatch import setup

    store, dispatcher, sender, _, _, endpoint = await setup([204])

    async def no_longer_listed(url: str) -> str:
        raise HostNotAllowed("host polres.example is not on the agency's webhook hosts")

    dispatcher.check = no_longer_listed
    assert await dispatcher.run_once() == 1
    assert sender.calls == []  # nothing left the gateway
    attempt = store.attempts[-1]
    assert attempt.endpoint_id == endpoint.id
    assert attempt.status_code is None
    assert "unsafe target" in (attempt.error or "")
    # no webhook access recorded: nothing was disclosed
    assert [e for e in store.outbox if e.channel is Channel.WEBHOOK] == []
