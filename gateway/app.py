"""Composition root: builds the gateway's services from settings and hands them out."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from gateway.admin import Admin
from gateway.errors import ConfigError
from gateway.settings import Settings
from gateway.storage import migrate
from gateway.storage.crypto import GpgKeyring
from gateway.storage.db import Database

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def read_secret(path: Path) -> bytes:
    """The server secret for keyed hashes (hex in a 0600 file)."""
    try:
        secret = bytes.fromhex(path.read_text(encoding="ascii").strip())
    except FileNotFoundError:
        raise ConfigError(f"server secret {path} is missing (run `gateway init`)") from None
    except (ValueError, OSError):
        raise ConfigError(f"server secret {path} is unreadable") from None
    if len(secret) < 32:
        raise ConfigError(f"server secret {path} is shorter than 32 bytes")
    return secret


class Services:
    """Everything a command or the server needs, built once from the settings."""

    def __init__(self, settings: Settings, clock: Clock = utc_now) -> None:
        self.settings = settings
        self.clock = clock

    @functools.cached_property
    def db(self) -> Database:
        return Database.from_url(self.settings.database.url.get_secret_value())

    @functools.cached_property
    def keyring(self) -> GpgKeyring:
        return GpgKeyring(self.settings.data_dir / "gnupg")

    @functools.cached_property
    def server_secret(self) -> bytes:
        return read_secret(self.settings.secret_file)

    @functools.cached_property
    def admin(self) -> Admin:
        return Admin(self.db, self.clock, import_key=self.keyring.import_public)

    def upgrade_database(self) -> None:
        migrate.upgrade(self.db)

    def close(self) -> None:
        if "db" in self.__dict__:
            self.db.dispose()
