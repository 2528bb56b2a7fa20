"""Homologated software and teletransmission credentials: every query about them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from gateway.storage.db import Reads
from gateway.storage.models import Credential, Software, table_of

CREDENTIALS, SOFTWARE = table_of(Credential), table_of(Software)
# Built once: every teletransmitted filing re-checks its credential.
CREDENTIAL_STATE = (
    select(
        CREDENTIALS.c.software, CREDENTIALS.c.expires_at, CREDENTIALS.c.revoked_at,
        SOFTWARE.c.id, SOFTWARE.c.revoked_at,
    )
    .outerjoin(SOFTWARE, SOFTWARE.c.name == CREDENTIALS.c.software)
    .where(CREDENTIALS.c.id == bindparam("credential_id"))
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class CredentialState:
    """A credential as a filing re-checks it, with whether its software is still homologated."""

    software: str
    expires_at: datetime
    revoked_at: datetime | None
    software_live: bool


def credential_state(reads: Reads, credential_id: int) -> CredentialState | None:
    """The credential's state and its software's, in one read (None: no such credential)."""
    row = reads.first(CREDENTIAL_STATE, {"credential_id": credential_id})
    if row is None:
        return None
    software, expires_at, revoked_at, software_id, software_revoked_at = row
    live = software_id is not None and software_revoked_at is None
    return CredentialState(software, expires_at, revoked_at, live)


class SoftwareRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def by_name(self, name: str) -> Software | None:
        return self.session.scalars(select(Software).where(Software.name == name)).one_or_none()

    def add(self, software: Software) -> Software:
        self.session.add(software)
        self.session.flush()
        return software

    def listing(self) -> Sequence[Software]:
        return self.session.scalars(select(Software).order_by(Software.name)).all()


class CredentialRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, credential_id: int) -> Credential | None:
        return self.session.get(Credential, credential_id)

    def by_lookup_id(self, lookup_id: str) -> Credential | None:
        return self.session.scalars(
            select(Credential).where(Credential.lookup_id == lookup_id)
        ).one_or_none()

    def add(self, credential: Credential) -> Credential:
        self.session.add(credential)
        self.session.flush()
        return credential

    def listing(self) -> Sequence[Credential]:
        return self.session.scalars(select(Credential).order_by(Credential.id)).all()

    def revoke_for_software(self, name: str, actor: str, now: datetime) -> list[int]:
        """Revoke every credential of `name` not revoked yet; returns their ids."""
        ids = list(
            self.session.scalars(
                select(Credential.id).where(
                    Credential.software == name, Credential.revoked_at.is_(None)
                )
            ).all()
        )
        if ids:
            self.session.execute(
                update(CREDENTIALS)
                .where(CREDENTIALS.c.id.in_(ids))
                .values(revoked_at=now, revoked_by=actor),
                execution_options={"synchronize_session": False},
            )
        return ids

    def record_use(self, credential_id: int, now: datetime, new_hash: str | None) -> None:
        """A successful AUTH: its time, and the hash redone when the parameters changed."""
        values: dict[str, object] = {"last_used_at": now}
        if new_hash is not None:
            values["secret_hash"] = new_hash
        self.session.execute(
            update(CREDENTIALS).where(CREDENTIALS.c.id == credential_id).values(**values),
            execution_options={"synchronize_session": False},
        )

    def due_for_notice(self, now: datetime, before: datetime, limit: int = 200) -> Sequence[int]:
        """Live credentials expiring before `before` whose expiry notice was never queued."""
        return self.session.scalars(
            select(Credential.id)
            .where(
                Credential.revoked_at.is_(None),
                Credential.expiry_notice_sent_at.is_(None),
                Credential.expires_at > now,
                Credential.expires_at <= before,
            )
            .order_by(Credential.expires_at)
            .limit(limit)
        ).all()

    def claim_notice(self, credential_id: int, now: datetime) -> bool:
        """Mark the notice as queued, only if nobody did: one conditional UPDATE."""
        result = self.session.execute(
            update(CREDENTIALS)
            .where(
                CREDENTIALS.c.id == credential_id,
                CREDENTIALS.c.expiry_notice_sent_at.is_(None),
            )
            .values(expiry_notice_sent_at=now),
            execution_options={"synchronize_session": False},
        )
        return bool(getattr(result, "rowcount", 0) == 1)
