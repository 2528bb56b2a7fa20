"""Homologated software and teletransmission credentials: every query about them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from gateway.storage.models import Credential, Software, table_of

CREDENTIALS = table_of(Credential)


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
