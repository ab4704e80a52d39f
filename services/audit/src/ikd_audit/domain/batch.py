"""A batch of entries column by column, its leaves and the tree nodes they complete.

The append path's per-entry work: no Entry object, no leaf dict sorted per entry and one time
formatted per batch (recorded_at is the batch's). The bytes hashed are exactly
`transparency.Entry.leaf_data()`'s (tests/unit/audit/test_audit_batch.py holds them equal); the
nodes exactly `merkle.CompactRange.append`'s.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson

from ikd_audit.domain.model import NewEntry
from ikd_shared import merkle
from ikd_shared.events.access_v1 import AccessRecorded
from ikd_shared.transparency import LEAF_VERSION, Entry, format_time

_JSON = orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC  # codec.dumps's options
_sha256 = hashlib.sha256
_LEAF = merkle.LEAF_PREFIX
_NODE = merkle.NODE_PREFIX


def utc_text(value: dt.datetime) -> str:
    """`transparency.format_time(value)`: one C call for a time whose offset is zero."""
    text = value.isoformat(timespec="microseconds")
    if text.endswith("+00:00") and value.year >= 1000:
        return text[:-6] + "Z"
    return format_time(value)  # naive (raises), another offset, or a year below 1000


@dataclass(slots=True)
class EntryBatch:
    """Entries at positions first, first + 1, ... all recorded at `recorded_at`.

    Enum members stand for their values (they are str; orjson writes their value).
    """

    first: int
    recorded_at: dt.datetime
    access_ids: list[uuid.UUID] = field(default_factory=list)
    occurred_at: list[dt.datetime] = field(default_factory=list)
    agencies: list[str] = field(default_factory=list)
    services: list[str | None] = field(default_factory=list)
    pseudonyms: list[str | None] = field(default_factory=list)
    fields: list[Sequence[str]] = field(default_factory=list)
    purposes: list[str | None] = field(default_factory=list)
    legal_bases: list[str | None] = field(default_factory=list)
    channels: list[str] = field(default_factory=list)
    outcomes: list[str] = field(default_factory=list)
    reasons: list[str | None] = field(default_factory=list)
    leaves: list[bytes] = field(default_factory=list)
    fields_json: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.access_ids)

    @property
    def positions(self) -> range:
        return range(self.first, self.first + len(self.access_ids))

    @classmethod
    def of_entries(
        cls, entries: Sequence[AccessRecorded | NewEntry], first: int, recorded_at: dt.datetime
    ) -> EntryBatch:
        """Access events (their schema checked them once) or entries, leaves hashed."""
        batch = cls(first, recorded_at)
        add = batch._add
        recorded = utc_text(recorded_at)
        for position, e in enumerate(entries, first):
            add(
                position, recorded, e.access_id, e.occurred_at, e.agency, e.service,
                e.pseudonym, e.fields, e.purpose, e.legal_basis, e.channel, e.outcome, e.reason,
            )  # fmt: skip
        return batch

    def _add(
        self,
        position: int,
        recorded: str,
        access_id: uuid.UUID,
        occurred_at: dt.datetime,
        agency: str,
        service: str | None,
        pseudonym: str | None,
        fields: Sequence[str],
        purpose: str | None,
        legal_basis: str | None,
        channel: str,
        outcome: str,
        reason: str | None,
    ) -> None:
        fields_json = orjson.dumps(fields).decode()
        # Keys in sorted order: the same bytes as Entry.leaf_data()'s sort_keys, unsorted.
        data = orjson.dumps(
            {
                "access_id": access_id,  # orjson writes str(uuid)'s form
                "agency": agency,
                "channel": channel,
                "fields": fields,
                "legal_basis": legal_basis,
                "occurred_at": utc_text(occurred_at),
                "outcome": outcome,
                "position": position,
                "pseudonym": pseudonym,
                "purpose": purpose,
                "reason": reason,
                "recorded_at": recorded,
                "service": service,
                "v": LEAF_VERSION,
            },
            option=_JSON,
        )
        self.access_ids.append(access_id)
        self.occurred_at.append(occurred_at)
        self.agencies.append(agency)
        self.services.append(service)
        self.pseudonyms.append(pseudonym)
        self.fields.append(fields)
        self.fields_json.append(fields_json)
        self.purposes.append(purpose)
        self.legal_bases.append(legal_basis)
        self.channels.append(channel)
        self.outcomes.append(outcome)
        self.reasons.append(reason)
        self.leaves.append(_sha256(_LEAF + data).digest())

    def entries(self) -> list[Entry]:
        """The batch as Entry objects (what a reader of the log gets back)."""
        return [
            Entry(
                position=position,
                access_id=self.access_ids[i],
                occurred_at=self.occurred_at[i],
                recorded_at=self.recorded_at,
                agency=self.agencies[i],
                service=self.services[i],
                pseudonym=self.pseudonyms[i],
                fields=tuple(self.fields[i]),
                purpose=_plain(self.purposes[i]),
                legal_basis=_plain(self.legal_bases[i]),
                channel=str(_plain(self.channels[i])),
                outcome=str(_plain(self.outcomes[i])),
                reason=self.reasons[i],
            )
            for i, position in enumerate(self.positions)
        ]


def _plain(value: str | None) -> str | None:
    return None if value is None else str.__str__(value)


@dataclass(slots=True)
class NewNodes:
    """Perfect subtrees completed by an append, column by column (level >= 1)."""

    levels: list[int] = field(default_factory=list)
    idxs: list[int] = field(default_factory=list)
    hashes: list[bytes] = field(default_factory=list)

    def pairs(self) -> list[tuple[merkle.NodeId, bytes]]:
        return [((lv, i), h) for lv, i, h in zip(self.levels, self.idxs, self.hashes, strict=True)]


def extend_tree(tree: merkle.CompactRange, leaves: Sequence[bytes]) -> NewNodes:
    """Append `leaves` to `tree` (as `tree.append` each would) and return the completed nodes.

    One loop over plain hashes: the frontier's nodes follow from the size's bits, so no
    (node, hash) tuples are built per leaf.
    """
    nodes = NewNodes()
    levels, idxs, hashes = nodes.levels, nodes.idxs, nodes.hashes
    stack = [value for _, value in tree.frontier]
    push, pop = stack.append, stack.pop
    size = tree.size
    for position, value in enumerate(leaves, size):
        level = 0
        while (position >> level) & 1:  # a left sibling of this level waits on the frontier
            value = _sha256(_NODE + pop() + value).digest()
            level += 1
            levels.append(level)
            idxs.append(position >> level)
            hashes.append(value)
        push(value)
    size += len(leaves)
    # the frontier: one perfect subtree per set bit of the size, largest first
    frontier: list[tuple[merkle.NodeId, bytes]] = []
    start = 0
    for level, value in zip(
        [b for b in range(size.bit_length() - 1, -1, -1) if size >> b & 1], stack, strict=True
    ):
        frontier.append(((level, start >> level), value))
        start += 1 << level
    tree.size, tree.frontier = size, frontier
    return nodes
