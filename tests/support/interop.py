"""The Go checker of tests/interop/note-verify: built once per session, run on checkpoints."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.support.environment import REPO

NOTE_VERIFY = REPO / "tests" / "interop" / "note-verify"


def go_binary() -> str | None:
    return shutil.which("go") or next(
        (str(p) for p in (Path("/usr/local/go/bin/go"),) if p.is_file()), None
    )


def build_note_verify(out_dir: Path) -> Path:
    """`go build` the checker (its modules pinned by go.sum, fetched through the Go proxy)."""
    go = go_binary()
    assert go is not None
    binary = out_dir / "note-verify"
    env = {**os.environ, "GOFLAGS": "-mod=readonly", "CGO_ENABLED": "0"}
    subprocess.run(  # noqa: S603
        [go, "build", "-o", str(binary), "."],
        cwd=NOTE_VERIFY,
        env=env,
        check=True,
        capture_output=True,
        timeout=600,
    )
    return binary


@dataclass(frozen=True)
class Verdict:
    ok: bool
    lines: list[str]
    error: str


def note_verify(
    binary: Path,
    checkpoint: str,
    log_vkey: str,
    witness_vkeys: list[str] = [],  # noqa: B006 - read only
    *,
    old: Path | None = None,
    proof: Path | None = None,
) -> Verdict:
    args = [str(binary), "-log-vkey", log_vkey]
    for vkey in witness_vkeys:
        args += ["-witness-vkey", vkey]
    if old is not None:
        args += ["-old", str(old)]
    if proof is not None:
        args += ["-proof", str(proof)]
    done = subprocess.run(  # noqa: S603
        args, input=checkpoint, capture_output=True, text=True, timeout=60, check=False
    )
    return Verdict(done.returncode == 0, done.stdout.splitlines(), done.stderr.strip())
