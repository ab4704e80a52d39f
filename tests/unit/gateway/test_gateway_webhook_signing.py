"""Standard Webhooks: our signatures verify from the spec; the example receiver's refusals."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac

import httpx
import pytest

from ikd_gateway.adapters.webhooks import UnsafeTarget, check_target, generate_secret, sign
from ikd_gateway.entrypoints.receiver import create_receiver_app


def spec_verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """Standard Webhooks verification written from the spec, independent of any library:
    HMAC-SHA256 over `{webhook-id}.{webhook-timestamp}.{body}` with the base64-decoded secret
    (after `whsec_`), base64-encoded, one of the space-separated `v1,<sig>` values."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    for candidate in headers["webhook-signature"].split(" "):
        version, _, signature = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(signature, expected):
            return True
    return False


def test_gateway_signatures_verify_with_an_independent_implementation() -> None:
    secret = generate_secret()
    body = b'{"type":"citizen.profile.updated","data":{"fields":{"full_name":"Warga"}}}'
    request = sign(secret, "msg_2b1c", dt.datetime.now(dt.UTC), body)
    assert set(request.headers) >= {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert spec_verify(secret, request.headers, body)
    assert not spec_verify(secret, request.headers, body.replace(b"Warga", b"Wargo"))
    assert not spec_verify(generate_secret(), request.headers, body)


@pytest.fixture
async def receiver() -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_receiver_app(SECRET)), base_url="http://receiver"
    )


SECRET = generate_secret()
BODY = b'{"type":"citizen.profile.updated","timestamp":"2025-06-01T09:00:00Z","data":{}}'


async def post(client: httpx.AsyncClient, request: object) -> httpx.Response:
    return await client.post(
        "/webhooks/ikd",
        content=request.body,  # type: ignore[attr-defined]
        headers=request.headers,
    )  # type: ignore[attr-defined]


async def test_receiver_accepts_then_deduplicates_retries_and_rejects_replays(
    receiver: httpx.AsyncClient,
) -> None:
    now = dt.datetime.now(dt.UTC)
    first = sign(SECRET, "msg_1", now, BODY)
    response = await post(receiver, first)
    assert (response.status_code, response.json()["status"]) == (200, "accepted")
    replay = await post(receiver, first)
    assert (replay.status_code, replay.json()["code"]) == (409, "replayed")
    retry = await post(receiver, sign(SECRET, "msg_1", now + dt.timedelta(seconds=5), BODY))
    assert (retry.status_code, retry.json()["status"]) == (200, "duplicate")
    state = receiver._transport.app.state.receiver  # type: ignore[attr-defined]
    assert len(state.processed) == 1


async def test_receiver_rejects_tampering_wrong_secrets_and_stale_timestamps(
    receiver: httpx.AsyncClient,
) -> None:
    now = dt.datetime.now(dt.UTC)
    tampered = sign(SECRET, "msg_t", now, BODY)
    response = await receiver.post(
        "/webhooks/ikd", content=BODY.replace(b"{}", b'{"x":1}'), headers=tampered.headers
    )
    assert (response.status_code, response.json()["code"]) == (400, "invalid_signature")
    wrong = await post(receiver, sign(generate_secret(), "msg_w", now, BODY))
    assert (wrong.status_code, wrong.json()["code"]) == (400, "invalid_signature")
    stale = await post(receiver, sign(SECRET, "msg_s", now - dt.timedelta(minutes=6), BODY))
    assert (stale.status_code, stale.json()["code"]) == (400, "stale_timestamp")
    future = await post(receiver, sign(SECRET, "msg_f", now + dt.timedelta(minutes=6), BODY))
    assert (future.status_code, future.json()["code"]) == (400, "stale_timestamp")
    unsigned = await receiver.post("/webhooks/ikd", content=BODY)
    assert unsigned.status_code == 400


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://example.com/hook", "scheme must be https"),
        ("https://127.0.0.1/hook", "loopback"),
        ("https://localhost/hook", "local or metadata name"),
        ("https://10.1.2.3/hook", "private"),
        ("https://192.168.0.10/hook", "private"),
        ("https://169.254.169.254/latest/meta-data", "metadata"),
        ("https://169.254.10.10/hook", "link-local"),
        ("https://[::1]/hook", "loopback"),
        ("https://[fe80::1]/hook", "link-local"),
        ("https://[::ffff:10.0.0.1]/hook", "private"),
        ("https://metadata.google.internal/x", "local or metadata name"),
        ("https://user:pw@example.com/hook", "credentials"),
    ],
)
async def test_unsafe_webhook_targets_are_refused(url: str, why: str) -> None:
    with pytest.raises(UnsafeTarget, match=why):  # even on a host the policy would allow
        await check_target(url, allow_private=False, allowed=lambda _: True)


async def test_public_targets_pass_and_development_may_allow_private_ones() -> None:
    assert await check_target(
        "https://93.184.215.14/hook", allow_private=False, allowed=lambda _: True
    )
    assert await check_target("http://127.0.0.1:18200/webhooks/ikd", allow_private=True)
