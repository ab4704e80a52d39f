"""Receive the gateway's webhooks in Python: verify the Standard Webhooks signature first.

    pip install standardwebhooks
    WEBHOOK_SECRET=whsec_... python verify_webhook.py      # listens on 127.0.0.1:8080

`verify` is all a receiver needs; the server around it is the smallest one the standard
library offers. Answer 2xx quickly (the gateway retries anything else), and deduplicate on
`webhook-id`: a retry or a redelivery carries the same id.
"""

from __future__ import annotations

import json
import os
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, ClassVar

from standardwebhooks import Webhook, WebhookVerificationError


def verify(secret: str, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    """The event, if the signature is the gateway's and the timestamp is recent (5 minutes);
    WebhookVerificationError otherwise. `body` must be the raw bytes as received."""
    event: dict[str, Any] = Webhook(secret).verify(body, headers)
    return event


class Receiver(BaseHTTPRequestHandler):
    seen: ClassVar[set[str]] = set()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        headers = {name.lower(): value for name, value in self.headers.items()}
        try:
            event = verify(os.environ["WEBHOOK_SECRET"], headers, body)
        except WebhookVerificationError:
            self.send_response(400)
            self.end_headers()
            return
        if headers["webhook-id"] not in self.seen:  # a real receiver keeps this in its database
            self.seen.add(headers["webhook-id"])
            print(json.dumps(event, indent=2))
        self.send_response(204)
        self.end_headers()


if __name__ == "__main__":
    HTTPServer(("127.0.0.1", int(os.environ.get("PORT", "8080"))), Receiver).serve_forever()
