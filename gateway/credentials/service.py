"""Homologated software and teletransmission credentials, as an administrator manages them.

Annexe III: the administrator keeps the list of software the ministry
homologated; only those can be named on a credential, and withdrawing one
revokes every credential issued for it.  Annexe II: a credential is issued
for one address and one software, valid `credentials.validity`; its secret
is shown once and only its argon2id hash is stored.  Each change is audited.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from gateway.credentials.tokens import CredentialHasher, RandBytes, new_secret
from gateway.errors import Conflict, InputError, NotFound
from gateway.ingest.manifest import rfc3339
from gateway.model import Clock, Mailbox
from gateway.storage.audit import append_event
from gateway.storage.credentials import CredentialRepository, SoftwareRepository
from gateway.storage.db import Database
from gateway.storage.models import Credential, Software

_TEXT = re.compile(r"[^\x00-\x1f\x7f]{1,200}")


def software_name(raw: str) -> str:
    """A software's name as stored: trimmed, 1-200 printable characters."""
    name = " ".join(raw.split())
    if not _TEXT.fullmatch(name):
        raise InputError("software name must be 1-200 printable characters")
    return name


@dataclass(frozen=True, slots=True)
class IssuedCredential:
    """What `credentials issue` prints: the secret only this once."""

    id: int
    address: str
    software: str
    expires_at: datetime
    secret: str = field(repr=False)


def credential_status(credential: Credential, now: datetime) -> str:
    if credential.revoked_at is not None:
        return "revoked"
    if credential.expires_at <= now:
        return "expired"
    return "active"


class CredentialAdmin:
    """Software and credentials: add, list, revoke, issue; shared by the CLI and the console."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        hasher: CredentialHasher,
        validity: timedelta,
        randbytes: RandBytes | None = None,
    ) -> None:
        self.db = db
        self.clock = clock
        self.hasher = hasher
        self.validity = validity
        self._randbytes = randbytes

    # -- software (Annexe III) ------------------------------------------------
    def add_software(self, name: str, publisher: str, actor: str) -> Software:
        """Homologate a software; a withdrawn one may be homologated again (new date)."""
        name, publisher = software_name(name), " ".join(publisher.split())
        if len(publisher) > 200:
            raise InputError("publisher must be at most 200 characters")
        now = self.clock()
        with self.db.transaction() as session:
            repository = SoftwareRepository(session)
            software = repository.by_name(name)
            if software is not None and software.revoked_at is None:
                raise Conflict(f"software {name!r} is already homologated")
            if software is None:
                software = repository.add(
                    Software(name=name, publisher=publisher, homologated_at=now,
                             homologated_by=actor)
                )  # fmt: skip
            else:
                software.publisher = publisher or software.publisher
                software.homologated_at, software.homologated_by = now, actor
                software.revoked_at = software.revoked_by = None
            append_event(
                session, now, "software.added", actor=actor, subject=f"software:{software.id}",
                data={"name": name, "publisher": software.publisher},
            )  # fmt: skip
            return software

    def list_software(self) -> list[dict[str, Any]]:
        with self.db.reading() as session:
            return [
                {
                    "name": sw.name,
                    "publisher": sw.publisher,
                    "status": "revoked" if sw.revoked_at else "homologated",
                    "homologated_at": rfc3339(sw.homologated_at),
                    "revoked_at": rfc3339(sw.revoked_at) if sw.revoked_at else None,
                }
                for sw in SoftwareRepository(session).listing()
            ]

    def revoke_software(self, name: str, actor: str) -> int:
        """Withdraw a homologation and revoke its credentials; returns how many."""
        name = software_name(name)
        now = self.clock()
        with self.db.transaction() as session:
            software = SoftwareRepository(session).by_name(name)
            if software is None or software.revoked_at is not None:
                raise NotFound(f"no homologated software named {name!r}")
            software.revoked_at, software.revoked_by = now, actor
            revoked = CredentialRepository(session).revoke_for_software(name, actor, now)
            append_event(
                session, now, "software.revoked", actor=actor, subject=f"software:{software.id}",
                data={"name": name, "credentials_revoked": revoked},
            )  # fmt: skip
            return len(revoked)

    # -- credentials (Annexe II) ----------------------------------------------
    def issue(self, address: str, software: str, actor: str) -> IssuedCredential:
        """A new credential; the secret is in the result and nowhere else."""
        mailbox, name = Mailbox.parse(address), software_name(software)
        secret = new_secret() if self._randbytes is None else new_secret(self._randbytes)
        digest = self.hasher.hash(secret.text)  # slow: before the transaction, not in it
        now = self.clock()
        with self.db.transaction() as session:
            found = SoftwareRepository(session).by_name(name)
            if found is None or found.revoked_at is not None:
                raise NotFound(f"{name!r} is not a homologated software (see `software list`)")
            credential = CredentialRepository(session).add(
                Credential(
                    address_key=mailbox.key, software=name, lookup_id=secret.lookup_id,
                    secret_hash=digest, created_at=now, expires_at=now + self.validity,
                    issued_by=actor,
                )
            )  # fmt: skip
            append_event(
                session, now, "credential.issued", actor=actor,
                subject=f"credential:{credential.id}",
                data={"address": mailbox.key, "software": name,
                      "expires_at": rfc3339(credential.expires_at)},
            )  # fmt: skip
            return IssuedCredential(
                credential.id, mailbox.key, name, credential.expires_at, secret.text
            )

    def list_credentials(self) -> list[dict[str, Any]]:
        now = self.clock()
        with self.db.reading() as session:
            return [
                {
                    "id": cred.id,
                    "address": cred.address_key,
                    "software": cred.software,
                    "issued_at": rfc3339(cred.created_at),
                    "expires_at": rfc3339(cred.expires_at),
                    "last_used_at": rfc3339(cred.last_used_at) if cred.last_used_at else None,
                    "status": credential_status(cred, now),
                }
                for cred in CredentialRepository(session).listing()
            ]

    def revoke(self, credential_id: int, actor: str) -> None:
        now = self.clock()
        with self.db.transaction() as session:
            credential = CredentialRepository(session).get(credential_id)
            if credential is None or credential.revoked_at is not None:
                raise NotFound(f"no credential {credential_id} that is not revoked already")
            credential.revoked_at, credential.revoked_by = now, actor
            append_event(
                session, now, "credential.revoked", actor=actor,
                subject=f"credential:{credential.id}",
                data={"address": credential.address_key, "software": credential.software},
            )  # fmt: skip
