"""Offline verification of an exported log, proof bundles, filters and cursors."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ikd_audit.domain.errors import BadCursor, BadFilter, PageTooLarge
from ikd_audit.domain.search import CursorCodec, SearchFilter, build_filter, check_limit
from ikd_shared import merkle, transparency
from ikd_shared.pseudonym import pseudonymize
from ikd_shared.transparency import Entry, TreeHead

KEY = Ed25519PrivateKey.generate()
T0 = dt.datetime(2025, 3, 1, 8, 0, tzinfo=dt.UTC)


def entry(position: int) -> Entry:
    return Entry(
        position=position,
        access_id=uuid.uuid4(),
        occurred_at=T0 + dt.timedelta(seconds=position),
        recorded_at=T0 + dt.timedelta(seconds=position, microseconds=123),
        agency="bpjs-kesehatan",
        service="daftar-peserta",
        pseudonym="a" * 64,
        fields=("full_name", "address.street"),
        purpose="enrolment",
        legal_basis="legal_obligation",
        channel="prefill",
        outcome="served",
        reason=None,
    )


def export(n: int, head_sizes: tuple[int, ...]) -> list[dict[str, Any]]:
    entries = [entry(i) for i in range(n)]
    tree, heads = merkle.CompactRange(), {}
    for e in entries:
        tree.append(e.leaf_hash())
        if tree.size in head_sizes:
            heads[tree.size] = TreeHead.sign(KEY, tree.size, tree.root(), T0)
    records: list[dict[str, Any]] = [{"type": "tree_head", **h.document()} for h in heads.values()]
    records += [
        {"type": "entry", **e.document(), "leaf_hash": e.leaf_hash().hex()} for e in entries
    ]
    return records


def test_an_untouched_export_verifies() -> None:
    report = transparency.verify_log(export(40, (10, 25, 40)), KEY.public_key())
    assert report.ok, report.problems
    assert (report.entries, report.tree_heads_checked, report.verified_size) == (40, 3, 40)


def test_altered_entry_is_named() -> None:
    records = export(40, (40,))
    records[1 + 17]["purpose"] = "marketing"
    report = transparency.verify_log(records, KEY.public_key())
    assert not report.ok
    assert report.first_bad_position == 17


def test_altered_entry_with_recomputed_hash_fails_at_the_signed_root() -> None:
    records = export(40, (10, 40))
    row = records[2 + 23]
    row["purpose"] = "marketing"
    row["leaf_hash"] = Entry.from_document(row).leaf_hash().hex()
    report = transparency.verify_log(records, KEY.public_key())
    assert not report.ok
    assert report.first_bad_position == 10  # the earliest position the signed heads allow


def test_deleted_and_reordered_rows_are_named() -> None:
    records = export(30, (30,))
    deleted = records[: 1 + 12] + records[1 + 13 :]
    assert transparency.verify_log(deleted, KEY.public_key()).first_bad_position == 12
    swapped = list(records)
    swapped[1 + 4], swapped[1 + 9] = swapped[1 + 9], swapped[1 + 4]
    assert transparency.verify_log(swapped, KEY.public_key()).first_bad_position == 4


def test_truncated_log_names_the_first_missing_position() -> None:
    report = transparency.verify_log(export(30, (30,))[:-5], KEY.public_key())
    assert report.first_bad_position == 25


def test_a_tree_head_signed_by_another_key_is_not_trusted() -> None:
    records = export(5, (5,))
    report = transparency.verify_log(records, Ed25519PrivateKey.generate().public_key())
    assert not report.ok


def inclusion_bundle(n: int, index: int) -> dict[str, Any]:
    entries = [entry(i) for i in range(n)]
    tree, nodes = merkle.CompactRange(), {}
    for e in entries:
        nodes[(0, e.position)] = e.leaf_hash()
        nodes.update(dict(tree.append(e.leaf_hash())))
    head = TreeHead.sign(KEY, n, tree.root(), T0)
    path = [merkle.range_hash(r, nodes).hex() for r in merkle.inclusion_ranges(index, n)]
    return {
        "entry": entries[index].document(),
        "leaf_index": index,
        "tree_size": n,
        "leaf_hash": entries[index].leaf_hash().hex(),
        "audit_path": path,
        "tree_head": head.document(),
    }


def test_inclusion_bundle_binds_size_index_and_entry_to_the_signed_head() -> None:
    bundle = inclusion_bundle(13, 5)
    assert transparency.verify_inclusion_bundle(bundle, KEY.public_key()).startswith("OK")
    for change in (
        {"tree_size": 14},
        {"leaf_index": 4},
        {"entry": {**bundle["entry"], "agency": "other"}},
        {"audit_path": bundle["audit_path"][:-1]},
    ):
        with pytest.raises(merkle.ProofError):
            transparency.verify_inclusion_bundle({**bundle, **change}, KEY.public_key())


def test_filters_validate_and_turn_a_nik_into_its_pseudonym() -> None:
    nik = "3209014501900001"
    got = build_filter(pseudonym_key=b"k", nik=nik, channel="prefill", since="2025-01-01T00:00Z")
    assert got.pseudonym == pseudonymize(nik, b"k")
    bad = [
        {"nik": "12345"},
        {"nik": "9909014501900001"},
        {"pseudonym": "xyz"},
        {"channel": "fax"},
        {"outcome": "maybe"},
        {"agency": "Not A Code!"},
        {"since": "yesterday"},
        {"since": "2025-02-01T00:00Z", "until": "2025-01-01T00:00Z"},
    ]
    for values in bad:
        with pytest.raises(BadFilter):
            build_filter(pseudonym_key=b"k", **values)


def test_page_size_cap() -> None:
    assert check_limit(None, default=50, cap=500) == 50
    for wrong in (0, 501):
        with pytest.raises(PageTooLarge):
            check_limit(wrong, default=50, cap=500)


def test_cursors_are_opaque_and_tamper_checked() -> None:
    codec = CursorCodec(b"secret")
    search = SearchFilter(agency="bpjs-kesehatan")
    cursor = codec.encode(1234, search)
    assert codec.decode(cursor, search) == 1234
    for forged in (
        cursor[:-2] + "AA",
        "not-a-cursor!",
        "",
        cursor + "x",
        CursorCodec(b"other").encode(1234, search),
    ):
        with pytest.raises(BadCursor):
            codec.decode(forged, search)
    with pytest.raises(BadCursor):
        codec.decode(cursor, SearchFilter(agency="dukcapil"))
