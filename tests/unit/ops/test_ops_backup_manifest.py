"""A backup is restored only when every dump matches the checksum its manifest records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ikd_ops import backup


def write_backup(folder: Path) -> None:
    dump = folder / "ikd_audit.dump"
    dump.write_bytes(b"PGDMP fake dump")
    manifest = {
        "format": backup.FORMAT,
        "started_at": "2026-11-30T02:00:00+00:00",
        "databases": [
            {
                "name": "ikd_audit",
                "file": dump.name,
                "sha256": backup.sha256(dump),
                "owner": "ikd_audit_owner",
                "connect": ["ikd_audit_app", "ikd_audit_signer"],
            }
        ],
    }
    (folder / backup.MANIFEST).write_text(json.dumps(manifest))


def test_an_intact_backup_is_read(tmp_path: Path) -> None:
    write_backup(tmp_path)
    assert backup.read_manifest(tmp_path)["databases"][0]["name"] == "ikd_audit"


def test_a_changed_or_missing_dump_is_refused(tmp_path: Path) -> None:
    write_backup(tmp_path)
    (tmp_path / "ikd_audit.dump").write_bytes(b"PGDMP fake dumq")
    with pytest.raises(backup.BackupError, match="checksum"):
        backup.read_manifest(tmp_path)
    (tmp_path / "ikd_audit.dump").unlink()
    with pytest.raises(backup.BackupError, match="missing"):
        backup.read_manifest(tmp_path)


def test_the_default_databases_are_named_as_the_server_script_names_them() -> None:
    assert backup.default_databases(["bank-bjb"]) == [
        "ikd_identity",
        "ikd_audit",
        "ikd_gateway_bank_bjb",
    ]
