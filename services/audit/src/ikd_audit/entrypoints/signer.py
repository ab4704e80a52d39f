"""`ikd-audit signer`: the one process that holds the tree-head key.

It signs the log every `interval_seconds`, as soon as `max_entries` are unsigned, and at once
when the service asks for a head it cannot sign itself (a NOTIFY on the signer's channel, for
a proof or trail no head covers yet). It connects as the signer role, which may read the log
and add tree heads and nothing else, and serves only /healthz, /readyz and /metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator, Callable

from fastapi import FastAPI

from ikd_audit.adapters.repository import SignRequests
from ikd_audit.bootstrap import SignerRuntime, bootstrap_signer
from ikd_audit.config import SignerSettings
from ikd_audit.entrypoints.observability import (
    SIGNED_TREE_SIZE,
    TREE_HEAD_AGE,
    TREE_HEADS_SIGNED,
    TREE_SIZE,
)
from ikd_audit.service_layer.checkpoints import CheckpointSigner
from ikd_shared.api import Check, operations_router
from ikd_shared.supervise import supervise

log = logging.getLogger("ikd_audit.signer")


class ListenerLost(ConnectionError):
    """The connection that LISTENs for requests closed: listen again on a new one."""


async def run_signer(
    signer: CheckpointSigner,
    requested: asyncio.Event,
    *,
    interval: float,
    max_entries: int,
    listening: Callable[[], bool] = lambda: True,
) -> None:
    """Sign when due, when `max_entries` are unsigned, or when `requested` is set."""
    loop = asyncio.get_running_loop()
    last_signed = loop.time()
    while True:
        if not listening():
            raise ListenerLost("the connection listening for signing requests closed")
        asked = requested.is_set()
        requested.clear()  # a request arriving while this round signs is seen by the next one
        try:
            unsigned = await signer.unsigned_entries()
            due = loop.time() - last_signed >= interval
            if unsigned > 0 and (asked or due or unsigned >= max_entries):
                head = await signer.sign()
                last_signed = loop.time()
                TREE_HEADS_SIGNED.inc()
                SIGNED_TREE_SIZE.set(head.tree_size)
                log.info(
                    "tree head signed",
                    extra={
                        "fields": {"tree_size": head.tree_size, "root_hash": head.root_hash.hex()}
                    },
                )
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("signing a tree head failed; will retry")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(requested.wait(), timeout=min(interval, 1.0))


def create_signer_app(settings: SignerSettings) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with bootstrap_signer(settings) as runtime:
            app.state.runtime = runtime
            app.state.listener = None

            async def listen_and_sign() -> None:
                requested = asyncio.Event()
                listener = await SignRequests.listen(settings.database_url, requested.set)
                app.state.listener = listener
                try:
                    await run_signer(
                        runtime.signer,
                        requested,
                        interval=settings.interval_seconds,
                        max_entries=settings.max_entries,
                        listening=lambda: listener.alive,
                    )
                finally:
                    await listener.close()

            stop = asyncio.Event()
            task = asyncio.create_task(
                supervise(
                    listen_and_sign, name="tree-head signer", stop=stop, trace=True, logger=log
                )
            )
            try:
                yield
            finally:
                stop.set()
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    app = FastAPI(
        title="IKD MPP audit log signer",
        description="Signs the audit log's tree heads and checkpoints; health and metrics only.",
        version="1.0.0",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    def runtime() -> SignerRuntime:
        found: SignerRuntime = app.state.runtime
        return found

    async def listening() -> None:
        listener: SignRequests | None = app.state.listener
        if listener is None or not listener.alive:
            raise RuntimeError("not listening for signing requests")

    def checks() -> dict[str, Check]:
        return {"postgresql": lambda: runtime().ping(), "requests": listening}

    async def refresh_tree() -> None:
        async with runtime().uow(snapshot=True) as uow:
            size, head = await uow.log.size(), await uow.log.latest_tree_head()
        TREE_SIZE.set(size)
        if head is not None:
            SIGNED_TREE_SIZE.set(head.tree_size)
            TREE_HEAD_AGE.set((dt.datetime.now(dt.UTC) - head.timestamp).total_seconds())

    app.include_router(operations_router(checks=checks, refresh=[refresh_tree]))
    return app
