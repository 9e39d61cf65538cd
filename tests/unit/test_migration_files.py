from __future__ import annotations

from pathlib import Path

import pytest

from engine.db.migrations import SCHEMA_DIR, discover
from engine.errors import MigrationError, MigrationMissing

pytestmark = pytest.mark.unit


def test_repository_migrations_are_numbered_from_one() -> None:
    found = discover(SCHEMA_DIR)
    assert [m.version for m in found] == list(range(1, len(found) + 1))
    assert found[0].filename == "0001_core.sql"


def test_gap_in_numbering_is_a_missing_migration(tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("SELECT 1;")
    (tmp_path / "0003_c.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationMissing, match="0002"):
        discover(tmp_path)


def test_badly_named_or_duplicate_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("SELECT 1;")
    (tmp_path / "1_b.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="NNNN"):
        discover(tmp_path)
    (tmp_path / "1_b.sql").unlink()
    (tmp_path / "0001_b.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="share version 0001"):
        discover(tmp_path)


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(MigrationMissing, match="does not exist"):
        discover(tmp_path / "nope")
