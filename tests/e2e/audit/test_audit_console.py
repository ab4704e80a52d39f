"""The auditor console in a real headless Chromium against `ikd-audit serve` as a process,
with `ikd-audit signer` beside it (the service itself has no signing key).

Access events go through Kafka; the auditor signs in, searches by NIK, opens an entry and the
page's own JavaScript recomputes the inclusion proof with Web Crypto.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ikd_audit.cli import MIGRATIONS
from ikd_audit.service_layer.checkpoints import DEFAULT_ORIGIN
from ikd_dev.issuer import generate_issuer_key, public_jwk
from ikd_dev.synthetic import citizen
from ikd_shared import checkpoint
from ikd_shared.auth import TokenIssuer
from ikd_shared.events import to_cloudevent
from ikd_shared.events.access_v1 import AccessRecorded, Channel, Outcome
from ikd_shared.events.topics import ACCESS
from ikd_shared.kafka import send_event
from ikd_shared.legal import LegalBasis
from ikd_shared.pseudonym import pseudonymize
from tests.support.kafka import kafka_connection

CHROMIUM = os.environ.get("IKD_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
BIN = Path(sys.executable).parent
AUDITOR_ID, AUDITOR_SECRET = "auditor-e2e", "e2e-auditor-secret-0123456789"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def tail(log: Path) -> str:
    return log.read_text()[-3000:]


def chromium_or_fail() -> None:
    if not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists():
        pytest.fail(
            f"Chromium is not installed at {CHROMIUM}: the console test needs a real "
            "browser (apt-get install -y chromium)"
        )


def start_service(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Add the console's auditor with the CLI, then run `ikd-audit serve` as a process."""
    added = subprocess.run(  # noqa: S603 - our own console script
        [str(BIN / "ikd-audit"), "auditors", "add", "--id", AUDITOR_ID, "--secret-file", "-"],
        env=env,
        input=AUDITOR_SECRET,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert added.returncode == 0, added.stderr
    with log.open("wb") as out:
        return subprocess.Popen(  # noqa: S603 - our own console script
            [str(BIN / "ikd-audit"), "serve"], env=env, stdout=out, stderr=subprocess.STDOUT
        )


def start_signer(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`ikd-audit signer` as a process: the signer role, the key file, nothing else."""
    with log.open("wb") as out:
        return subprocess.Popen(  # noqa: S603 - our own console script
            [str(BIN / "ikd-audit"), "signer"], env=env, stdout=out, stderr=subprocess.STDOUT
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()


async def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    async with httpx.AsyncClient() as http:
        while True:
            if process.poll() is not None:
                raise AssertionError(f"{process.args} exited:\n{tail(log)}")
            try:
                if (await http.get(url)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if loop.time() > deadline:
                raise AssertionError(f"service not ready:\n{tail(log)}")
            await asyncio.sleep(0.2)


@pytest.fixture
async def audit_service(
    database_factory: Any, topic_prefix: str, tmp_path: Path
) -> AsyncIterator[dict[str, Any]]:
    chromium_or_fail()
    database = await database_factory("audit", Path(MIGRATIONS))
    tree_key = Ed25519PrivateKey.generate()
    key_file = tmp_path / "tree-head.pem"
    key_file.write_bytes(
        tree_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    tokens = TokenIssuer(Ed25519PrivateKey.generate(), kid="tok-e2e", issuer="ikd-identity")
    port, signer_port = free_port(), free_port()
    base_env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("IKD_AUDIT_", "IKD_SIGNER_"))
    }
    signer_env = {
        **base_env,
        "IKD_SIGNER_DATABASE_URL": str(database.signer_dsn),
        "IKD_SIGNER_SIGNING_KEY": f"@{key_file}",
        "IKD_SIGNER_INTERVAL_SECONDS": "1",
        "IKD_SIGNER_PORT": str(signer_port),
    }
    vkey = checkpoint.Signer(DEFAULT_ORIGIN, tree_key).verifier.vkey
    env = {
        **base_env,
        "IKD_ENVIRONMENT": "development",
        "IKD_KAFKA_TOPIC_PREFIX": topic_prefix,
        "IKD_AUDIT_DATABASE_URL": database.app_dsn,
        "IKD_AUDIT_LOG_VKEY": vkey,
        "IKD_AUDIT_TOKEN_JWKS": json.dumps(tokens.jwks()),
        "IKD_AUDIT_TRUST_JWKS": json.dumps(
            {"keys": [public_jwk(generate_issuer_key(), "dukcapil-e2e")]}
        ),
        "IKD_AUDIT_SESSION_SECRET": "dev-audit-session-secret-for-e2e-only",
        "IKD_AUDIT_PORT": str(port),
        "IKD_AUDIT_CONSUMER_GROUP": f"{topic_prefix}audit",
        # The detectors every second; open around the clock, so only the burst below alerts.
        "IKD_AUDIT_ANOMALY_INTERVAL_SECONDS": "1",
        "IKD_AUDIT_ANOMALY_NOT_FOUND_BURST": "5",
        "IKD_AUDIT_OPENING_HOURS": "mon-sun 00:00-24:00",
    }
    log, signer_log = tmp_path / "audit.log", tmp_path / "signer.log"
    signer = start_signer(signer_env, signer_log)
    try:
        process = start_service(env, log)
        try:
            base = f"http://127.0.0.1:{port}"
            await wait_ready(f"http://127.0.0.1:{signer_port}/readyz", signer, signer_log)
            await wait_ready(f"{base}/readyz", process, log)
            yield {"base": base, "tokens": tokens, "prefix": topic_prefix, "log": log}
        finally:
            stop(process)
    finally:
        stop(signer)


async def produce_accesses(bootstrap: str, prefix: str, niks: list[str]) -> None:
    key = os.environ["IKD_PSEUDONYM_KEY"].encode()
    events = []
    for i, nik in enumerate(niks * 3):
        events.append(
            AccessRecorded(
                access_id=uuid.uuid4(),
                occurred_at=dt.datetime.now(dt.UTC),
                agency=("bpjs-kesehatan", "dinas-kependudukan")[i % 2],
                service="daftar-peserta",
                pseudonym=pseudonymize(nik, key),
                fields=["full_name", "address.street"],
                purpose="enrolment",
                legal_basis=LegalBasis.LEGAL_OBLIGATION,
                channel=Channel.PREFILL,
                outcome=Outcome.DENIED if i == 4 else Outcome.SERVED,
                reason="not_in_policy" if i == 4 else None,
            )
        )
    await send_accesses(bootstrap, prefix, events)


async def send_accesses(bootstrap: str, prefix: str, events: list[AccessRecorded]) -> None:
    producer = kafka_connection(bootstrap).producer()
    await producer.start()
    try:
        for event in events:
            cloud = to_cloudevent(
                event,
                source="/ikd/gateway/e2e",
                key=event.pseudonym or "",
                event_id=str(event.access_id),
            )
            await send_event(producer, ACCESS.full_name(prefix), cloud)
    finally:
        await producer.stop()


async def test_auditor_signs_in_searches_and_sees_a_verified_proof(
    audit_service: dict[str, Any], kafka_bootstrap: str
) -> None:
    from playwright.async_api import async_playwright

    people = [citizen(11, i) for i in range(3)]
    await produce_accesses(kafka_bootstrap, audit_service["prefix"], [p.nik for p in people])
    base = audit_service["base"]
    token = audit_service["tokens"].issue("e2e", {"audit:read"}, ["ikd-audit"])
    async with httpx.AsyncClient(
        base_url=base, headers={"Authorization": f"Bearer {token}"}
    ) as http:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while (await http.get("/v1/log/tree-head")).json()["tree_size"] < 9:
            assert loop.time() < deadline, audit_service["log"].read_text()[-3000:]
            await asyncio.sleep(0.2)

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            page = await browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            await page.goto(f"{base}/console/search")
            assert page.url.endswith("/console/login")

            await page.fill("#client_id", AUDITOR_ID)
            await page.fill("#secret", "wrong-secret-entirely")
            await page.click("#sign-in")
            assert "wrong secret" in (await page.text_content("#login-error") or "")

            await page.fill("#client_id", AUDITOR_ID)
            await page.fill("#secret", AUDITOR_SECRET)
            await page.click("#sign-in")
            await page.wait_for_url(f"{base}/console/search")
            assert await page.text_content("#auditor-name") == AUDITOR_ID
            cookies = await page.context.cookies()
            session = next(c for c in cookies if c["name"] == "ikd_audit_session")
            assert session["httpOnly"]
            assert session["sameSite"] == "Strict"

            await page.fill("#nik", people[1].nik)
            await page.click("#search-button")
            await page.wait_for_selector("#results")
            rows = page.locator("#results .entry-row")
            assert await rows.count() == 3
            pseudonym = pseudonymize(people[1].nik, os.environ["IKD_PSEUDONYM_KEY"].encode())
            assert pseudonym[:12] in (await page.text_content("#results") or "")
            assert people[1].nik not in await page.content()
            assert people[1].nik not in page.url  # a NIK is posted, never put in a URL
            assert await page.locator("#agency-counts tbody tr").count() == 2

            await page.fill("#nik", "1234")
            await page.click("#search-button")
            assert "invalid_nik_length" in (await page.text_content("#search-error") or "")

            await page.fill("#nik", people[1].nik)
            await page.click("#search-button")
            await page.wait_for_selector("#results")
            await page.click("#results .entry-link >> nth=0")
            await page.wait_for_selector("#browser-verdict[data-status='verified']", timeout=10_000)
            verdict = await page.text_content("#browser-verdict")
            print(verdict)
            assert verdict is not None
            assert "Verified in your browser" in verdict
            assert await page.get_attribute("#server-verdict", "data-status") == "verified"
            assert await page.text_content("[data-field='pseudonym']") == pseudonym

            await page.goto(f"{base}/console/integrity")
            assert await page.get_attribute("#integrity-status", "data-status") == "ok"
            assert errors == []
        finally:
            await browser.close()


async def test_a_burst_of_lookups_without_a_relationship_is_charted_and_alerted(
    audit_service: dict[str, Any], kafka_bootstrap: str
) -> None:
    """Synthetic look-ups of citizens the agency has no relationship with, through Kafka:
    the service's own detector appends an alert to the log, and the console charts the
    accesses and denials and lists the alert, whose proof the browser verifies."""
    from playwright.async_api import async_playwright

    now = dt.datetime.now(dt.UTC)
    served = [
        AccessRecorded(
            access_id=uuid.uuid4(),
            occurred_at=now,
            agency="bank-bjb",
            service="kredit-usaha",
            pseudonym=pseudonymize(citizen(12, i).nik, os.environ["IKD_PSEUDONYM_KEY"].encode()),
            fields=["full_name"],
            purpose="credit",
            legal_basis=LegalBasis.CONSENT,
            channel=Channel.PREFILL,
            outcome=Outcome.SERVED,
        )
        for i in range(4)
    ]
    burst = [
        event.model_copy(
            update={
                "access_id": uuid.uuid4(),
                "pseudonym": None,
                "fields": [],
                "outcome": Outcome.DENIED,
                "reason": "citizen_not_found",
            }
        )
        for event in served * 2
    ]
    await send_accesses(kafka_bootstrap, audit_service["prefix"], served + burst)
    base = audit_service["base"]
    token = audit_service["tokens"].issue("e2e", {"audit:read"}, ["ikd-audit"])
    async with httpx.AsyncClient(
        base_url=base, headers={"Authorization": f"Bearer {token}"}
    ) as http:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while not (alerts := (await http.get("/v1/anomalies")).json()["items"]):
            assert loop.time() < deadline, audit_service["log"].read_text()[-3000:]
            await asyncio.sleep(0.3)
        metrics = (await http.get("/metrics")).text
    assert [(a["agency"], a["purpose"]) for a in alerts] == [("bank-bjb", "not_found_burst")]
    assert alerts[0]["reason"].startswith("8 in 15m")
    assert 'ikd_audit_anomalies_total{kind="not_found_burst"} 1.0' in metrics

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            page = await browser.new_page()
            problems: list[str] = []
            page.on("pageerror", lambda error: problems.append(str(error)))
            # A CSP refusal (an inline style, a script from elsewhere) shows as a console error.
            page.on(
                "console",
                lambda message: (
                    problems.append(message.text)
                    if message.type == "error" and "Failed to load resource" not in message.text
                    else None
                ),
            )
            page.on(
                "response",
                lambda response: (
                    problems.append(f"{response.status} {response.url}")
                    if response.status >= 400 and not response.url.endswith("/favicon.ico")
                    else None
                ),
            )
            await page.goto(f"{base}/console/login")
            await page.fill("#client_id", AUDITOR_ID)
            await page.fill("#secret", AUDITOR_SECRET)
            await page.click("#sign-in")
            await page.wait_for_url(f"{base}/console/search")
            await page.click("header nav >> text=Patterns")
            await page.wait_for_url(f"{base}/console/patterns")

            accesses = page.locator("#chart-accesses")
            assert await accesses.get_attribute("data-total") == "12"
            lines = page.locator("#chart-accesses polyline.series")
            assert await lines.count() == 1
            assert await lines.first.get_attribute("data-key") == "bank-bjb"
            assert await page.get_attribute("#chart-denials", "data-total") == "8"
            assert await page.locator("#chart-accesses .alert-marker").count() == 1
            box = await accesses.bounding_box()
            assert box is not None
            assert box["width"] > 300  # drawn, not an empty element

            row = page.locator("#alerts .alert-row")
            assert await row.count() == 1
            assert await row.get_attribute("data-kind") == "not_found_burst"
            assert await row.get_attribute("data-agency") == "bank-bjb"

            await page.select_option("#p-group-by", "outcome")
            await page.click("#patterns-button")
            await page.wait_for_selector("#chart-accesses polyline.series[data-key='denied']")
            keys = await page.locator("#chart-accesses polyline.series").evaluate_all(
                "lines => lines.map(l => l.dataset.key + ':' + l.dataset.total)"
            )
            assert sorted(keys) == ["denied:8", "served:4"]

            await page.click("#alerts .entry-link >> nth=0")
            await page.wait_for_selector("#browser-verdict[data-status='verified']", timeout=10_000)
            assert await page.text_content("[data-field='channel']") == "anomaly"
            assert problems == []
        finally:
            await browser.close()
