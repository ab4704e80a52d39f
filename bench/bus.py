"""The bench run's share of the secured bus, as onboarding and the operator would set it up.

prepare  create the bench agencies' topics under the run's prefix (a gateway may not create
         topics) and grant the run's ACLs (`ikdctl kafka acls apply` with the run's prefix)
release  delete the run's grants again (its topics' and its audit group's; the gateway
         groups and cluster grants are shared with later runs and stay)
"""

from __future__ import annotations

import argparse
import asyncio
import os

from bench.cleanup import _kafka
from ikd_ops import kafka_security
from ikd_shared.events import topics
from ikd_shared.kafka import ensure_topics


def _grants(args: argparse.Namespace) -> list[kafka_security.Grant]:
    return kafka_security.grants(
        args.agencies.split(), prefix=args.prefix, audit_group=args.audit_group
    )


async def prepare(args: argparse.Namespace) -> None:
    admin = _kafka(args.bootstrap)
    specs = [topics.agency_topic(agency) for agency in args.agencies.split()]
    await ensure_topics(admin, prefix=args.prefix, specs=specs)
    await kafka_security.apply_acls(admin, _grants(args))


async def release(args: argparse.Namespace) -> None:
    own = [
        grant
        for grant in _grants(args)
        if grant.name.startswith(args.prefix) or grant.name == args.audit_group
    ]
    await kafka_security.delete_acls(_kafka(args.bootstrap), own)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("command", choices=("prepare", "release"))
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--agencies", required=True)
    parser.add_argument("--audit-group", required=True)
    parser.add_argument(
        "--bootstrap", default=os.environ.get("IKD_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092")
    )
    args = parser.parse_args()
    if not args.prefix.startswith("bench-"):
        raise SystemExit("refusing to touch the bus outside a bench- prefix")
    asyncio.run(prepare(args) if args.command == "prepare" else release(args))
    print(f"bench: {args.command}d the bus for prefix {args.prefix}")


if __name__ == "__main__":
    main()
