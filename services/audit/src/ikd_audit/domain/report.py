"""An agency's periodic report: its accesses in a period, counted from a checkpointed log.

The report is a signed note (c2sp.org/signed-note) signed by the report key, whose text names
the checkpoint (tree size and root hash) its counts were taken from: only entries below that
size are counted. Shipped with that checkpoint (signed by the log's key, cosigned by
witnesses), anyone can check offline that the report was signed by the report key and refers
to a tree the log committed to; with an export of the log they can recount it.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from ikd_audit.domain.patterns import ReportRow, sorted_rows
from ikd_shared import checkpoint
from ikd_shared.transparency import format_time, parse_time

HEADER = "ikd-audit agency report v1"
NONE = "-"


class ReportError(ValueError):
    """The report is malformed, unsigned, or does not match its checkpoint or the log."""


@dataclass(frozen=True, slots=True)
class AgencyReport:
    origin: str  # the log's origin (its checkpoints' first line)
    agency: str
    start: dt.datetime
    end: dt.datetime
    tree_size: int
    root_hash: bytes
    rows: tuple[ReportRow, ...]

    @property
    def total(self) -> int:
        return sum(r.count for r in self.rows)

    def text(self) -> str:
        lines = [
            HEADER,
            f"log {self.origin}",
            f"agency {self.agency}",
            f"from {format_time(self.start)}",
            f"to {format_time(self.end)}",
            f"tree {self.tree_size} {base64.b64encode(self.root_hash).decode()}",
            f"total {self.total}",
        ]
        for r in sorted_rows(self.rows):
            lines.append(
                f"count {r.count} {r.service or NONE} {r.channel} "
                f"{r.legal_basis or NONE} {r.outcome}"
            )
        return "\n".join(lines) + "\n"

    @classmethod
    def parse(cls, text: str) -> AgencyReport:
        lines = text.rstrip("\n").split("\n")
        try:
            if lines[0] != HEADER:
                raise ReportError(f"not an agency report (first line {lines[0]!r})")
            fields = [line.split(" ") for line in lines[1:7]]
            names = [f[0] for f in fields]
            if names != ["log", "agency", "from", "to", "tree", "total"]:
                raise ReportError("the report's header lines are not in order")
            rows = []
            for line in lines[7:]:
                tag, count, service, channel, basis, outcome = line.split(" ")
                if tag != "count":
                    raise ReportError(f"unexpected line {line!r}")
                rows.append(
                    ReportRow(
                        None if service == NONE else service,
                        channel,
                        None if basis == NONE else basis,
                        outcome,
                        int(count),
                    )
                )
            report = cls(
                origin=fields[0][1],
                agency=fields[1][1],
                start=parse_time(fields[2][1]),
                end=parse_time(fields[3][1]),
                tree_size=int(fields[4][1]),
                root_hash=base64.b64decode(fields[4][2], validate=True),
                rows=tuple(rows),
            )
            if report.total != int(fields[5][1]):
                raise ReportError("the total is not the sum of the counts")
        except (IndexError, ValueError, binascii.Error) as error:
            if isinstance(error, ReportError):
                raise
            raise ReportError(f"malformed report: {error}") from None
        return report


@dataclass(frozen=True, slots=True)
class VerifiedReport:
    report: AgencyReport
    checkpoint: checkpoint.SignedCheckpoint


def sign(report: AgencyReport, signer: checkpoint.Signer) -> str:
    return signer.sign(report.text())


def verify(
    signed_report: str,
    signed_checkpoint: str,
    *,
    report_key: checkpoint.Verifier,
    log_key: checkpoint.Verifier,
    witnesses: Sequence[checkpoint.Verifier] = (),
) -> VerifiedReport:
    """The report's signature, its checkpoint's signature, and that they name the same tree."""
    try:
        note, _ = checkpoint.open_note(signed_report, [report_key])
        opened = checkpoint.open_checkpoint(signed_checkpoint, log_key, witnesses)
    except checkpoint.NoteError as error:
        raise ReportError(str(error)) from None
    report = AgencyReport.parse(note.text)
    tree = opened.checkpoint
    if report.origin != tree.origin:
        raise ReportError(
            f"the report is of log {report.origin!r}, the checkpoint of {tree.origin!r}"
        )
    if (report.tree_size, report.root_hash) != (tree.size, tree.root_hash):
        raise ReportError(
            f"the report counts tree {report.tree_size}, the checkpoint is of tree {tree.size} "
            "(or another root)"
        )
    return VerifiedReport(report, opened)
