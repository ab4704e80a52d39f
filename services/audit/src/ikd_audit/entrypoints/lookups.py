"""Auditors are audited: a query that names a citizen is appended to the log before it is
answered, as an access by that auditor, so the citizen's own trail shows who looked them up."""

from __future__ import annotations

from ikd_audit.bootstrap import AuditRuntime
from ikd_audit.domain.model import LookupAction, NewEntry


async def looked_up(
    runtime: AuditRuntime, auditor: str, action: LookupAction, pseudonym: str | None
) -> None:
    """Record the look-up (nothing when the query names no citizen)."""
    if pseudonym is None:
        return
    entry = NewEntry.lookup(auditor, pseudonym, action, runtime.log.clock())
    await runtime.log.append([entry])
