"""What every doctor check shares: the finding type, the deployment it looks at, DNS helpers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol, TypeVar

from gateway.errors import DnsTemporaryFailure
from gateway.settings import Settings
from gateway.storage.blobstore import BlobStorage
from gateway.storage.db import Database

# A certificate or a court key that lapses sooner than this needs attention now.
WINDOW = timedelta(days=30)
_T = TypeVar("_T")


class Status(StrEnum):
    OK = "ok"
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True)
class Finding:
    """One line of the report: which check, how bad, what was found and what to do."""

    check: str
    status: Status
    message: str

    def line(self) -> str:
        return f"{self.status.value:<7} {self.check}: {self.message}"

    def as_dict(self) -> dict[str, str]:
        return {"check": self.check, "status": self.status.value, "message": self.message}


def ok(check: str, message: str) -> Finding:
    return Finding(check, Status.OK, message)


def warning(check: str, message: str) -> Finding:
    return Finding(check, Status.WARNING, message)


def error(check: str, message: str) -> Finding:
    return Finding(check, Status.ERROR, message)


class DnsLookups(Protocol):
    """What the checks ask of DNS (`gateway.ingest.dns.TxtResolver` provides it)."""

    def lookup_txt(self, name: str) -> list[bytes] | None: ...

    def lookup_mx(self, name: str) -> list[tuple[int, str]] | None: ...

    def lookup_addresses(self, name: str) -> list[str]: ...


@dataclass(frozen=True)
class Deployment:
    """What the checks look at; every outside dependency is a field, so tests pass their own."""

    settings: Settings
    resolver: DnsLookups
    db: Database
    blobs: BlobStorage
    now: datetime


Check = Callable[[Deployment], list[Finding]]


class Unanswered(Exception):
    """A DNS lookup got no answer: the check it belongs to ends with one error finding."""

    def __init__(self, name: str, rdtype: str, reason: str) -> None:
        super().__init__(name)
        self.name, self.rdtype, self.reason = name, rdtype, reason


def ask(lookup: Callable[[str], _T], name: str, rdtype: str) -> _T:
    """Call a resolver method; a temporary DNS failure becomes `Unanswered` naming the query."""
    try:
        return lookup(name)
    except DnsTemporaryFailure as exc:
        raise Unanswered(name, rdtype, exc.message) from None


def smtp_hostname(settings: Settings) -> str:
    """The name the SMTP listener greets with: `smtp.hostname`, else `gateway.domain`."""
    return (settings.smtp.hostname or settings.gateway.domain).strip().rstrip(".").lower()
