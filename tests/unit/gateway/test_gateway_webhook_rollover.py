"""A webhook secret rollover: a delivery signed with the old and the new secret verifies at a
receiver holding either (Standard Webhooks' several signatures), and at no other."""

from __future__ import annotations

import datetime as dt

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from ikd_gateway.adapters.webhooks import generate_secret, sign

BODY = b'{"type":"citizen.profile.updated","data":{"fields":{"full_name":"Warga"}}}'


def test_a_delivery_during_a_rollover_verifies_with_either_secret() -> None:
    old, new = generate_secret(), generate_secret()
    request = sign(new, "msg_roll", dt.datetime.now(dt.UTC), BODY, old)
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        assert Webhook(secret).verify(BODY, request.headers) == {
            "type": "citizen.profile.updated",
            "data": {"fields": {"full_name": "Warga"}},
        }
    with pytest.raises(WebhookVerificationError):
        Webhook(generate_secret()).verify(BODY, request.headers)
    single = sign(new, "msg_roll", dt.datetime.now(dt.UTC), BODY)
    assert " " not in single.headers["webhook-signature"]
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(BODY, single.headers)
