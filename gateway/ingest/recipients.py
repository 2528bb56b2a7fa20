"""Recipient policy: which of the gateway's addresses a recipient is, with its +tag."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from gateway.errors import UnknownRecipient

POSTMASTER = "postmaster"


class Role(enum.StrEnum):
    CODES = "codes"
    SUBMIT = "submit"
    STATUS = "status"
    TELETRANSMISSION = "teletransmission"
    """depot@ as the submission port resolves it: filed by an authenticated software."""
    POSTMASTER = "postmaster"
    """RFC 5321 4.5.1: forwarded to the operator, without sender authentication."""


@dataclass(frozen=True, slots=True)
class Recipient:
    role: Role
    tag: str
    """The sub-address after '+', as given (e.g. a code), or ''."""


class RecipientPolicy:
    """Maps addresses under gateway.domain to roles; everything else is refused (no relay).

    A role missing from `local_parts` has no address: postmaster@ is there
    only when an operator address is configured to forward it to.
    """

    def __init__(self, domain: str, local_parts: dict[Role, str]) -> None:
        self.domain = domain.lower().rstrip(".")
        self._roles = {local.lower(): role for role, local in local_parts.items()}

    def resolve(self, address: str) -> Recipient:
        text = address.strip().strip("<>")
        local, sep, domain = text.rpartition("@")
        if not sep and text.lower() == POSTMASTER and Role.POSTMASTER in self._roles.values():
            # RFC 5321 4.1.1.3: "Postmaster" without a domain must be accepted.
            return Recipient(Role.POSTMASTER, "")
        if not sep or domain.lower().rstrip(".") != self.domain:
            raise UnknownRecipient("no such user here")
        base, _, tag = local.partition("+")
        role = self._roles.get(base.lower())
        if role is None or len(tag) > 64:
            raise UnknownRecipient("no such user here")
        return Recipient(role, tag)
