"""Applies the Alembic migrations that ship inside the package; says whether a schema exists."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect
from sqlalchemy.exc import OperationalError

from gateway.errors import StorageUnavailable
from gateway.storage.db import Database, make_engine, sqlite_file

VERSION_TABLE = "alembic_version"

MIGRATIONS = Path(__file__).parent / "migrations"


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def upgrade(db: Database) -> None:
    """Bring the schema to the newest revision (idempotent)."""
    config = _config()
    database = db.engine.url.database
    if db.is_sqlite and database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)  # SQLite makes no folder
    with db.engine.connect() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
        connection.commit()


def is_current(db: Database) -> bool:
    """True when the database is at the newest revision."""
    head = ScriptDirectory.from_config(_config()).get_current_head()
    with db.engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision() == head


def has_schema(url: str) -> bool:
    """Whether the database at `url` holds a schema (Alembic's version table), creating nothing.

    A SQLite file that does not exist is not opened (opening would create
    it).  A database that cannot be reached raises StorageUnavailable.
    """
    path = sqlite_file(url)
    if path is not None and not path.is_file():
        return False
    # A plain engine for SQLite: the probe reads, it sets no journal mode on the file.
    engine = create_engine(url) if path is not None else make_engine(url)
    try:
        with engine.connect() as connection:
            return inspect(connection).has_table(VERSION_TABLE)
    except OperationalError as exc:
        raise StorageUnavailable("database unavailable") from exc
    finally:
        engine.dispose()
