"""`migrate.upgrade` on a current database reads its revision and nothing more (no Alembic);
on an older or empty one it migrates, on SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sqlalchemy import text

from gateway.storage import migrate
from gateway.storage.db import Database

_UPGRADE_AND_REPORT = """
import sys
from gateway.storage import migrate
from gateway.storage.db import Database
db = Database.from_url(sys.argv[1])
migrate.upgrade(db)
print("alembic" in sys.modules)
"""


def _upgrade_in_a_new_process(url: str) -> bool:
    """Whether upgrading `url` in a fresh interpreter imported Alembic."""
    done = subprocess.run(
        [sys.executable, "-c", _UPGRADE_AND_REPORT, url], capture_output=True, text=True,
        check=True, cwd=Path(migrate.__file__).parents[2],
    )
    return done.stdout.strip() == "True"


def test_a_new_database_is_migrated_and_a_current_one_only_read(db_url: str) -> None:
    db = Database.from_url(db_url)
    try:
        assert not migrate.is_current(db)  # no schema yet: not current, and no error

        assert _upgrade_in_a_new_process(db_url)  # a new database: Alembic migrates it

        assert migrate.is_current(db)
        assert not _upgrade_in_a_new_process(db_url)  # current: one row read, no Alembic
    finally:
        db.dispose()


def test_an_older_revision_is_not_current(db: Database) -> None:
    with db.engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '20261202_0007'"))

    assert not migrate.is_current(db)
