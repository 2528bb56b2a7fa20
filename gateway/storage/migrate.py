"""Applies the Alembic migrations that ship inside the package; says whether a schema exists."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import DBAPIError, OperationalError

from gateway.errors import StorageUnavailable
from gateway.storage.db import Database, make_engine, sqlite_file

if TYPE_CHECKING:  # Alembic is imported where it is used: most commands never migrate
    from alembic.config import Config

VERSION_TABLE = "alembic_version"
HEAD = "20261202_0008"
"""The newest revision in `migrations/versions` (a unit test holds the two equal): a start on
a current database reads one row and never imports Alembic."""

_READ_VERSION = text(f"SELECT version_num FROM {VERSION_TABLE}")  # noqa: S608 (a constant)

MIGRATIONS = Path(__file__).parent / "migrations"


def _config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def upgrade(db: Database) -> None:
    """Bring the schema to the newest revision (idempotent; a current one is only read)."""
    database = db.engine.url.database
    if db.is_sqlite and database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)  # SQLite makes no folder
    if is_current(db):
        return
    from alembic import command

    config = _config()
    with db.engine.connect() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
        connection.commit()


def is_current(db: Database) -> bool:
    """True when the database is at `HEAD`; False when it is older, has no schema, or the
    question fails (Alembic, run next, then says what is wrong)."""
    try:
        with db.engine.connect() as connection:
            versions = connection.execute(_READ_VERSION)
            return [row[0] for row in versions] == [HEAD]
    except DBAPIError:
        return False


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
