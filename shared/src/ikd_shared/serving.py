"""Serving a service's HTTP API with uvicorn, with the same server settings for every service."""

from __future__ import annotations

from typing import Any

import uvicorn
from starlette.types import ASGIApp

WORKER_HEALTHCHECK_SECONDS = 60
"""A worker process answers its supervisor's ping only once it has imported the app. On a busy
machine that takes longer than uvicorn's 5 s, and the workers would be killed and restarted
forever."""

SERVER_OPTIONS: dict[str, Any] = {
    # Named, not "auto": a missing one fails the start instead of silently falling back to the
    # pure-Python loop and parser.
    "loop": "uvloop",
    "http": "httptools",
    # The services log as JSON themselves (ikd_shared.logs) and count requests in their metrics.
    "log_config": None,
    "access_log": False,
    # No proxy in front is trusted to say who the client is.
    "proxy_headers": False,
    "server_header": False,
}


def serve(app: ASGIApp, *, host: str, port: int) -> None:
    """Serve `app` in this process until SIGTERM/SIGINT."""
    uvicorn.run(app, host=host, port=port, **SERVER_OPTIONS)


def serve_workers(factory: str, *, host: str, port: int, workers: int) -> None:
    """Serve the app built by `factory` ("module:function") from `workers` processes on one
    port; with one worker, in this process."""
    uvicorn.run(
        factory,
        factory=True,
        workers=workers,
        host=host,
        port=port,
        timeout_worker_healthcheck=WORKER_HEALTHCHECK_SECONDS,
        **SERVER_OPTIONS,
    )
