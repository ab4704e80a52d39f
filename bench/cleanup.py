"""Delete the topics of one bench run (every topic whose name starts with the run's prefix)."""

from __future__ import annotations

import argparse
import asyncio
import os

from ikd_shared.kafka import KafkaConnection, delete_prefixed_topics
from ikd_shared.settings import KafkaClientSettings, load_settings


def _kafka(bootstrap: str) -> KafkaConnection:
    """The bench's own clients connect as the operator's principal (IKD_KAFKA_*)."""
    settings = load_settings(KafkaClientSettings)
    return KafkaConnection.from_settings(
        settings.model_copy(update={"kafka_bootstrap_servers": bootstrap})
    )


async def delete_topics(bootstrap: str, prefix: str) -> list[str]:
    if not prefix.startswith("bench-"):
        raise SystemExit("refusing to delete topics outside a bench- prefix")
    return await delete_prefixed_topics(_kafka(bootstrap), prefix)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prefix", required=True)
    parser.add_argument(
        "--bootstrap", default=os.environ.get("IKD_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092")
    )
    args = parser.parse_args()
    names = asyncio.run(delete_topics(args.bootstrap, args.prefix))
    print(f"bench: deleted {len(names)} topics with prefix {args.prefix}")


if __name__ == "__main__":
    main()
