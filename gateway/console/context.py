"""What the console is handed: the services it calls and its settings, built by `gateway.app`."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from gateway.admin import Admin
from gateway.apikeys import ApiKeys
from gateway.console.worklist import Worklist
from gateway.credentials.service import CredentialAdmin
from gateway.model import Clock
from gateway.records import Records
from gateway.review import ReviewDesk
from gateway.storage.db import Database
from gateway.users import Users


@dataclass(frozen=True)
class ConsoleConfig:
    session_key: bytes = field(repr=False)
    """Signs the session cookies (derived from the server secret)."""
    idle_timeout: timedelta
    session_lifetime: timedelta
    secure_cookies: bool
    """Mark cookies Secure: the listener speaks HTTPS, or `http.public_url` is https (a proxy)."""
    templates_dir: Path
    """Operator overrides of the console's templates (a file here wins over the packaged one)."""
    public_url: str
    """The base URL printed in enrolment links made from the console."""


@dataclass(frozen=True)
class ConsoleDeps:
    users: Users
    worklist: Worklist
    review: ReviewDesk
    admin: Admin
    records: Records
    api_keys: ApiKeys
    credentials: CredentialAdmin
    """Homologated software and teletransmission credentials (CLI: `software`, `credentials`)."""
    db: Database
    """For the outbox operator's functions (`gateway.outbox.operator`), which take it."""
    clock: Clock
    config: ConsoleConfig
