"""How fast the synthetic citizens generate (run: .venv/bin/python -m bench.synthetic [count]).

A timing, not a test: it was in the unit tier, where it only slowed the suite down.
"""

from __future__ import annotations

import sys
import time

from ikd_dev.synthetic import generate_citizens


def profiles_per_second(count: int = 50_000, seed: int = 3) -> float:
    started = time.perf_counter()
    generated = len(generate_citizens(count, seed=seed))
    return generated / (time.perf_counter() - started)


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    print(f"synthetic citizens: {profiles_per_second(count):,.0f} profiles/s")
