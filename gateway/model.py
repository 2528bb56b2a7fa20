"""Value types and their normalisation: court codes, measure numbers, mailboxes, kinds."""

from __future__ import annotations

import enum
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from gateway.errors import InvalidAddress, InvalidCourtCode, InvalidKind, InvalidMeasure

Clock = Callable[[], datetime]
"""The time source every service takes as a seam (tests pass their own)."""

_COURT_RE = re.compile(r"[A-Z0-9][A-Z0-9-]{1,15}")
_MEASURE_RE = re.compile(r"[A-Za-z0-9/._ -]{1,40}")
# RFC 5322 atext, the characters of a dot-atom local part.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LOCAL_RE = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*")
_LABEL_RE = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


def court_code(raw: str) -> str:
    """Return the stored (upper-case) form of a court code, or raise."""
    code = raw.strip().upper()
    if not _COURT_RE.fullmatch(code):
        raise InvalidCourtCode(
            f"invalid court code {raw!r}: 2-16 of A-Z, 0-9 and '-', not starting with '-'"
        )
    return code


def measure_number(raw: str) -> str:
    """Trim, fold runs of spaces and upper-case a measure number, or raise."""
    folded = re.sub(r" +", " ", raw.strip()).upper()
    if not _MEASURE_RE.fullmatch(folded):
        raise InvalidMeasure(
            f"invalid measure number {raw!r}: 1-40 of A-Z a-z 0-9 / . _ - and space"
        )
    return folded


def _idna_domain(raw: str, whole: str) -> str:
    domain = raw.strip().rstrip(".")
    try:
        ascii_domain = domain.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise InvalidAddress(f"invalid address {whole!r}: bad domain") from None
    labels = ascii_domain.split(".")
    if (
        len(ascii_domain) > 253
        or len(labels) < 2
        or not all(_LABEL_RE.fullmatch(x) for x in labels)
    ):
        raise InvalidAddress(f"invalid address {whole!r}: bad domain")
    return ascii_domain


@dataclass(frozen=True, slots=True)
class Mailbox:
    """An RFC 5321 mailbox: local part as given, domain lower-case IDNA."""

    local: str
    domain: str

    @classmethod
    def parse(cls, raw: str) -> Mailbox:
        text = raw.strip()
        if text.startswith("<") and text.endswith(">"):
            text = text[1:-1]
        local, sep, domain = text.rpartition("@")
        if not sep or not local or not domain:
            raise InvalidAddress(f"invalid address {raw!r}: expected local@domain")
        if len(local) > 64 or not _LOCAL_RE.fullmatch(local):
            raise InvalidAddress(f"invalid address {raw!r}: bad local part")
        return cls(local, _idna_domain(domain, raw))

    def __str__(self) -> str:
        return f"{self.local}@{self.domain}"

    @property
    def key(self) -> str:
        """The comparison form: local parts compare case-insensitively."""
        return f"{self.local.lower()}@{self.domain}"


def fold_accents(text: str) -> str:
    """`Clôture` -> `Cloture`, `requête` -> `requete`: what guardians type vs our keywords."""
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


class RequestKind(enum.StrEnum):
    REQUETE = "requete"
    COMPTE = "compte"
    INVENTAIRE = "inventaire"

    @classmethod
    def parse(cls, raw: str | None) -> RequestKind:
        if raw is None or raw == "":
            return cls.REQUETE
        try:
            return cls(fold_accents(raw.strip().lower()))
        except ValueError:
            raise InvalidKind(
                f"invalid request kind {raw!r}: one of requete, compte, inventaire"
            ) from None


class RequestStatus(enum.StrEnum):
    OPEN = "open"
    SEALED = "sealed"
    RECEIVED = "received"
    ACCEPTED = "accepted"
    REJECTED = "rejected"


class RegistrationStatus(enum.StrEnum):
    ACTIVE = "active"
    REVOKED = "revoked"


class Channel(enum.StrEnum):
    SMTP = "smtp"
    IMAP = "imap"
    TELETRANSMISSION = "teletransmission"
