"""Webhook plumbing: target URL checks, Standard Webhooks signing, the HTTP sender that connects
only to the addresses it vetted."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import ipaddress
import secrets
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import certifi
import httpcore
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


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]
"""Host name and port -> the addresses it resolves to (tests replace the system's resolver)."""


class UnsafeTarget(ValueError):
    """A webhook URL the gateway refuses to call; the message says why."""

    code = "webhook_url_not_allowed"


class HostNotAllowed(UnsafeTarget):
    """The URL's host is not on the agency's `webhook_hosts` in the policy."""

    code = "webhook_host_not_allowed"


async def system_resolver(host: str, port: int) -> list[IPAddress]:
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        raise UnsafeTarget(f"host {host} does not resolve") from None
    return [ipaddress.ip_address(info[4][0]) for info in infos]


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


async def vetted_addresses(
    host: str, port: int, resolver: Resolver = system_resolver
) -> list[IPAddress]:
    """The addresses `host` resolves to, once; UnsafeTarget unless every one of them is public."""
    host = host.strip("[]").rstrip(".").lower()
    if host in BLOCKED_HOSTNAMES or host.endswith((".localhost", ".internal", ".local")):
        raise UnsafeTarget(f"host {host} is a local or metadata name")
    try:
        addresses: list[IPAddress] = [ipaddress.ip_address(host)]
    except ValueError:
        addresses = await resolver(host, port)
    if not addresses:
        raise UnsafeTarget(f"host {host} does not resolve")
    for address in addresses:
        problem = _address_problem(address)
        if problem:
            raise UnsafeTarget(f"host {host} resolves to {problem} ({address})")
    return addresses


async def check_target(
    url: str,
    *,
    allow_private: bool,
    allowed: Callable[[str], bool] = lambda _: False,
    resolver: Resolver = system_resolver,
    resolve: bool = True,
) -> str:
    """The URL if the gateway may call it; UnsafeTarget (HostNotAllowed) otherwise.

    Outside development only https targets on a host the agency's policy lists (`allowed`) pass,
    and (with `resolve`) only while the host resolves to public addresses. Delivery checks again
    and then connects through `VettingBackend`, which resolves and vets once more and connects
    to exactly the addresses it vetted. `allow_private` (development's switch) skips all of it.
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
    if not allowed(host):
        raise HostNotAllowed(f"host {host} is not on the agency's webhook hosts in the policy")
    if resolve:
        await vetted_addresses(host, parts.port or 443, resolver)
    return url


class VettingBackend(httpcore.AsyncNetworkBackend):
    """Connects a webhook only to addresses it has just vetted, never to a name.

    A check that resolves the host and a connection that resolves it again can get different
    answers (DNS rebinding: public when checked, loopback when connected). Here one resolution
    is checked and the connection goes to exactly those addresses. The request keeps the host
    name: httpcore sends it in Host and starts TLS with it as server_hostname, so SNI and the
    certificate check still see the name, not the address.
    """

    def __init__(
        self,
        resolver: Resolver = system_resolver,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self.resolver = resolver
        self.inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's backend interface
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            addresses = await vetted_addresses(host, port, self.resolver)
        except UnsafeTarget as unsafe:
            raise httpcore.ConnectError(f"unsafe target: {unsafe}") from None
        failure: Exception | None = None
        for address in addresses:
            try:
                return await self.inner.connect_tcp(
                    str(address),
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as error:
                failure = error
        assert failure is not None
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's backend interface
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("webhooks never go to a unix socket")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class VettedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport on a connection pool that connects through `VettingBackend`."""

    def __init__(self, backend: httpcore.AsyncNetworkBackend) -> None:
        super().__init__(trust_env=False)
        # httpx takes no network backend, httpcore's pool does: replace the pool it built.
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=20)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl.create_default_context(cafile=certifi.where()),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=5.0,
            network_backend=backend,
        )


@dataclass(frozen=True, slots=True)
class SignedRequest:
    headers: dict[str, str]
    body: bytes


def sign(
    secret: str, message_id: str, timestamp: dt.datetime, body: bytes, *rolling: str
) -> SignedRequest:
    """Standard Webhooks headers for one delivery attempt.

    `rolling`: further secrets during a secret rollover. Standard Webhooks lets the signature
    header carry several space-separated signatures, and a receiver accepts the request if any
    matches a secret it holds, so it can switch secrets without missing a delivery."""
    signature = " ".join(
        Webhook(each).sign(message_id, timestamp, body.decode()) for each in (secret, *rolling)
    )
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
    """POSTs signed requests; never follows redirects (a redirect could point anywhere).

    Connections go through `VettingBackend` (only to vetted public addresses) unless
    `allow_private` (development) or a `transport` (tests) says otherwise. No proxy from the
    environment: a proxy would connect to the target on the gateway's behalf, unvetted.
    """

    def __init__(
        self,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        allow_private: bool = False,
        resolver: Resolver = system_resolver,
    ):
        if transport is None:
            transport = (
                httpx.AsyncHTTPTransport(trust_env=False)
                if allow_private
                else VettedTransport(VettingBackend(resolver))
            )
        self.client = httpx.AsyncClient(
            timeout=timeout, follow_redirects=False, transport=transport, trust_env=False
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
