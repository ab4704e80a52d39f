"""Identity's verification path alone: CPU seconds per verification and verifications/s.

Not part of `make bench`. Drives `POST /v1/verifications` of an identity started elsewhere
(e.g. `ikd-identity serve`) with pre-minted credentials of new citizens, closed loop at a
fixed concurrency, and reads the CPU time of identity's processes (the given pid and its
children) from /proc before and after. CPU per verification is the figure to compare on a
shared machine; the rate depends on what else runs.

    .venv/bin/python -m bench.identity_cpu --url http://127.0.0.1:18000 --pid PID \
        --client-id counter --client-secret-file FILE --agency polres-cirebon
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import time
from pathlib import Path
from typing import Any

import aiohttp
from cryptography.hazmat.primitives import serialization

from bench.cpu import TICKS
from ikd_dev.issuer import mint_credential
from ikd_dev.synthetic import iter_citizens
from ikd_shared import codec
from ikd_shared.credentials import Purpose
from ikd_shared.policy import DEFAULT_POLICY, load_policy

ISSUER = "https://dukcapil.kemendagri.go.id/ikd"
KID = "dev-dukcapil-1"


def _tree_cpu(pid: int) -> float:
    """utime + stime of `pid` and its live children, in seconds."""
    total = 0.0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    for p in pids:
        try:
            rest = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(rest[11]) + int(rest[12])) / TICKS
    return total


async def main(args: argparse.Namespace) -> None:
    key: Any = serialization.load_pem_private_key(args.issuer_key.read_bytes(), None)
    services = [s.code for s in load_policy(DEFAULT_POLICY).agency(args.agency).services][:1]
    if args.services:
        services = args.services.split(",")
    bodies = [
        codec.dumps(
            {
                "credential": mint_credential(
                    key,
                    kid=KID,
                    issuer=ISSUER,
                    purpose=Purpose.VERIFICATION,
                    profile=profile,
                    lifetime=dt.timedelta(minutes=30),
                ),
                "services": services,
            }
        )
        for profile in iter_citizens(args.n, seed=args.seed, start=args.start)
    ]
    secret = args.client_secret_file.read_text().strip()
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{args.url}/oauth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": args.client_id,
                "client_secret": secret,
            },
        ) as response,
    ):
        token = (await response.json())["access_token"]
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    statuses: dict[int, int] = {}
    latencies: list[float] = []
    queue = iter(range(args.n))
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as http:

        async def client() -> None:
            for i in queue:
                sent = time.perf_counter()
                async with http.post(f"{args.url}/v1/verifications", data=bodies[i]) as r:
                    await r.read()
                    statuses[r.status] = statuses.get(r.status, 0) + 1
                latencies.append(time.perf_counter() - sent)

        cpu_before, wall_before = _tree_cpu(args.pid), time.perf_counter()
        await asyncio.gather(*(client() for _ in range(args.concurrency)))
        wall = time.perf_counter() - wall_before
        cpu = _tree_cpu(args.pid) - cpu_before
    latencies.sort()
    ok = statuses.get(200, 0)
    print(
        codec.dumps(
            {
                "n": args.n,
                "concurrency": args.concurrency,
                "statuses": {str(k): v for k, v in statuses.items()},
                "per_second": round(ok / wall, 1),
                "cpu_ms_per_verification": round(1000 * cpu / max(ok, 1), 3),
                "cpu_cores": round(cpu / wall, 2),
                "p50_ms": round(1000 * latencies[len(latencies) // 2], 1),
                "p99_ms": round(1000 * latencies[int(len(latencies) * 0.99)], 1),
            }
        ).decode()
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--pid", type=int, required=True, help="identity's (parent) process")
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--client-secret-file", type=Path, required=True)
    parser.add_argument("--agency", default="polres-cirebon")
    parser.add_argument("--services", default="", help="comma-separated; default: one")
    parser.add_argument("--issuer-key", type=Path, default=Path(".run/dev/dukcapil-issuer.pem"))
    parser.add_argument("-n", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--start", type=int, default=0, help="first synthetic citizen")
    asyncio.run(main(parser.parse_args()))
