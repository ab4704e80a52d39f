"""`ikd-gateway serve` with the real broker and database: SIGKILL its worker; the API keeps
answering all along and `serve` starts a new worker by itself."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support.environment import REPO
from tests.support.gateway import gateway_env
from tests.support.gateway_factories import Tokens

AGENCY = "polres-cirebon"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def children(pid: int) -> dict[str, int]:
    """The child processes of `pid` by role (the `ikd_gateway` subcommand they run)."""
    found: dict[str, int] = {}
    raw = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    for child in map(int, raw):
        try:
            argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        except FileNotFoundError:
            continue
        if b"ikd_gateway" in argv:
            found[argv[argv.index(b"ikd_gateway") + 1].decode()] = child
    return found


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def wait_until(probe: Any, timeout: float, what: str, log: Path) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := probe():
            return result
        time.sleep(0.1)
    raise AssertionError(f"{what} not within {timeout} s; log:\n{log.read_text()[-4000:]}")


async def test_a_killed_worker_is_restarted_while_the_api_keeps_answering(
    gateway_db: Any, topic_prefix: str, tokens: Tokens, tmp_path: Path
) -> None:
    api_port, metrics_port = free_port(), free_port()
    env = gateway_env(
        AGENCY,
        gateway_db,
        topic_prefix,
        tokens,
        tmp_path,
        IKD_GATEWAY_PORT=api_port,
        IKD_GATEWAY_WORKER_METRICS_PORT=metrics_port,
    )
    check_serve(env, tmp_path / "serve.log", api_port, metrics_port)


def check_serve(env: dict[str, str], log: Path, api_port: int, metrics_port: int) -> None:
    with log.open("ab") as out:
        serve = subprocess.Popen(
            [sys.executable, "-m", "ikd_gateway", "serve"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    health = f"http://127.0.0.1:{api_port}/healthz"
    worker_up = f"http://127.0.0.1:{metrics_port}/metrics"
    seen: set[int] = set()
    try:
        wait_until(lambda: answers(health) and answers(worker_up), 180, "API and worker up", log)
        first = children(serve.pid)
        assert set(first) == {"api", "worker"}
        seen.update(first.values())

        os.kill(first["worker"], signal.SIGKILL)
        deadline = time.monotonic() + 90  # generous: a loaded CI machine starts Python slowly
        while True:
            assert answers(health), "the API stopped answering while the worker was down"
            now = children(serve.pid)
            seen.update(now.values())
            if now.get("worker") not in (None, first["worker"]) and answers(worker_up):
                break
            assert time.monotonic() < deadline, f"no new worker in 90 s:\n{log.read_text()}"
            time.sleep(0.2)
        assert now["api"] == first["api"]  # the API was never restarted
        assert serve.poll() is None
    finally:
        serve.terminate()
        code = serve.wait(timeout=40)
    assert code == 0
    left = [pid for pid in seen if Path(f"/proc/{pid}").exists()]
    assert not left, f"children outlived serve: {left}"
    assert b"gateway worker" in log.read_bytes()  # the restart is logged
