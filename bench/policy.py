"""Copy the MPP policy with some agencies under a `bench-` code (same services, fields, bases).

A gateway's consumer group is derived from its agency code; the bench's gateways must not join
the group of a demo running beside them, so they serve `bench-<code>`. One more difference:
polres-cirebon's `skck` (a legal obligation) takes registrations in the copy, so the bench can
relate its citizens to two agencies through their gateways (bench/relate.py) without a
verification per citizen.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

PREFIX = "bench-"
REGISTRABLE = {"skck", "social-assistance"}


def renamed_policy(source: Path, agencies: list[str]) -> dict[str, object]:
    document = yaml.safe_load(source.read_text())
    found = set()
    for agency in document["agencies"]:
        if agency["code"] in agencies:
            found.add(agency["code"])
            agency["code"] = PREFIX + agency["code"]
            for service in agency["services"]:
                if service["code"] in REGISTRABLE:
                    service["registration"] = True
    missing = sorted(set(agencies) - found)
    if missing:
        raise SystemExit(f"not in {source}: {', '.join(missing)}")
    return dict(document)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    parser.add_argument("--rename", required=True, help="space-separated agency codes")
    args = parser.parse_args()
    document = renamed_policy(args.source, args.rename.split())
    args.target.parent.mkdir(parents=True, exist_ok=True)
    args.target.write_text(yaml.safe_dump(document, sort_keys=False, allow_unicode=True))


if __name__ == "__main__":
    main()
