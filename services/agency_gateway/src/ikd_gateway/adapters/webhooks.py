"""Webhook plumbing: target URL checks, Standard Webhooks signing, the HTTP sender."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import ipaddress
import secrets
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
from standardwebhooks import Webhook

# Names that resolve to cloud metadata services or the host itself whatever DNS says.
BLOCKED_HOSTNAMES = frozenset(
    {
        "localhost",
        "localhost.localdomain",
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
    }
)
METADATA_ADDRESSES = frozenset(
    {
        ipaddress.ip_address("169.254.169.254"),
        ipaddress.ip_address("169.254.170.2"),
        ipaddress.ip_address("100.100.100.200"),
        ipaddress.ip_address("fd00:ec2::254"),
    }
)


class UnsafeTarget(ValueError):
    """A webhook URL the gateway refuses to call; the message says why."""


def generate_secret() -> str:
    """A Standard Webhooks secret: `whsec_` + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def _address_problem(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    checks = (
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("private", address.is_private),
        ("multicast", address.is_multicast),
        ("unspecified", address.is_unspecified),
        ("reserved", address.is_reserved),
        (
            "shared (CGNAT)",
            isinstance(address, ipaddress.IPv4Address)
            and address in ipaddress.ip_network("100.64.0.0/10"),
        ),
    )
    for name, hit in checks:
        if hit:
            return f"a {name} address"
    return None


async def check_target(url: str, *, allow_private: bool) -> str:
    """The URL if the gateway may call it; UnsafeTarget otherwise.

    Outside development only public https targets pass. The host is resolved and every address
    checked, here and again before each delivery (a name can be re-pointed after registration).
    """
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http"):
        raise UnsafeTarget("the URL scheme must be https")
    if parts.scheme == "http" and not allow_private:
        raise UnsafeTarget("the URL scheme must be https")
    if parts.username or parts.password:
        raise UnsafeTarget("the URL must not carry credentials")
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise UnsafeTarget("the URL has no host")
    if allow_private:
        return url
    if host in BLOCKED_HOSTNAMES or host.endswith((".localhost", ".internal", ".local")):
        raise UnsafeTarget(f"host {host} is a local or metadata name")
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, parts.port or 443, type=socket.SOCK_STREAM
            )
        except OSError:
            raise UnsafeTarget(f"host {host} does not resolve") from None
        addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    for address in addresses:
        problem = _address_problem(address)
        if problem:
            raise UnsafeTarget(f"host {host} resolves to {problem} ({address})")
    return url


@dataclass(frozen=True, slots=True)
class SignedRequest:
    headers: dict[str, str]
    body: bytes


def sign(secret: str, message_id: str, timestamp: dt.datetime, body: bytes) -> SignedRequest:
    """Standard Webhooks headers for one delivery attempt."""
    signature = Webhook(secret).sign(message_id, timestamp, body.decode())
    return SignedRequest(
        headers={
            "webhook-id": message_id,
            "webhook-timestamp": str(int(timestamp.timestamp())),
            "webhook-signature": signature,
            "content-type": "application/json",
            "user-agent": "ikd-agency-gateway",
        },
        body=body,
    )


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    status_code: int | None
    error: str | None
    duration_ms: float
    disclosed: bool = True
    """Whether the body may have reached the receiver: False only when no connection opened."""

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


# No connection opened (name not resolved, refused, connect timeout, TLS handshake failed, no
# free connection): the body was never sent. A timeout or error later may follow a sent body.
NOT_CONNECTED = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


class HttpSender:
    """POSTs signed requests; never follows redirects (a redirect could point anywhere)."""

    def __init__(self, timeout: float = 10.0, transport: httpx.AsyncBaseTransport | None = None):
        self.client = httpx.AsyncClient(
            timeout=timeout, follow_redirects=False, transport=transport
        )

    async def post(self, url: str, request: SignedRequest) -> DeliveryResult:
        started = time.perf_counter()
        try:
            response = await self.client.post(url, content=request.body, headers=request.headers)
        except httpx.HTTPError as error:
            return DeliveryResult(
                None,
                f"{type(error).__name__}: {error}"[:500],
                (time.perf_counter() - started) * 1000,
                disclosed=not isinstance(error, NOT_CONNECTED),
            )
        return DeliveryResult(response.status_code, None, (time.perf_counter() - started) * 1000)

    async def close(self) -> None:
        await self.client.aclose()
