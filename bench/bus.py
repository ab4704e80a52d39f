"""Release the bench run's ACLs at its end (`ikdctl kafka acls apply` granted them).

Only the run's own grants go: those on its prefixed topics and its audit group. The gateway
groups and cluster grants are shared with later runs and stay.
"""

from __future__ import annotations

import argparse
import asyncio
import os

from bench.cleanup import _kafka
from ikd_ops import kafka_security


async def release(bootstrap: str, prefix: str, agencies: list[str], audit_group: str) -> int:
    own = [
        grant
        for grant in kafka_security.grants(agencies, prefix=prefix, audit_group=audit_group)
        if grant.name.startswith(prefix) or grant.name == audit_group
    ]
    await kafka_security.delete_acls(_kafka(bootstrap), own)
    return len(own)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("command", choices=("release",))
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--agencies", required=True)
    parser.add_argument("--audit-group", required=True)
    parser.add_argument(
        "--bootstrap", default=os.environ.get("IKD_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092")
    )
    args = parser.parse_args()
    if not args.prefix.startswith("bench-"):
        raise SystemExit("refusing to touch the bus outside a bench- prefix")
    count = asyncio.run(
        release(args.bootstrap, args.prefix, args.agencies.split(), args.audit_group)
    )
    print(f"bench: released {count} ACLs of prefix {args.prefix}")


if __name__ == "__main__":
    main()
