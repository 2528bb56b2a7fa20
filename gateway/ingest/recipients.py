"""Recipient policy: which of the gateway's addresses a recipient is, with its +tag."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from gateway.errors import UnknownRecipient


class Role(enum.StrEnum):
    CODES = "codes"
    SUBMIT = "submit"
    STATUS = "status"
    TELETRANSMISSION = "teletransmission"
    """depot@ as the submission port resolves it: filed by an authenticated software."""


@dataclass(frozen=True, slots=True)
class Recipient:
    role: Role
    tag: str
    """The sub-address after '+', as given (e.g. a code), or ''."""


class RecipientPolicy:
    """Maps addresses under gateway.domain to roles; everything else is refused (no relay)."""

    def __init__(self, domain: str, local_parts: dict[Role, str]) -> None:
        self.domain = domain.lower().rstrip(".")
        self._roles = {local.lower(): role for role, local in local_parts.items()}

    def resolve(self, address: str) -> Recipient:
        local, sep, domain = address.strip().strip("<>").rpartition("@")
        if not sep or domain.lower().rstrip(".") != self.domain:
            raise UnknownRecipient("no such user here")
        base, _, tag = local.partition("+")
        role = self._roles.get(base.lower())
        if role is None or len(tag) > 64:
            raise UnknownRecipient("no such user here")
        return Recipient(role, tag)
