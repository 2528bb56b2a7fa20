"""Console accounts: every query about them (passwords and tokens only as hashes).

The changes that two requests could race for are one conditional UPDATE
each, checked by their row count: an enrolment link is used once, a TOTP
step is accepted once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from gateway.storage.models import ConsoleUser, table_of

USERS = table_of(ConsoleUser)


class UserRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, user: ConsoleUser) -> ConsoleUser:
        self.session.add(user)
        self.session.flush()
        return user

    def get(self, user_id: int, *, for_update: bool = False) -> ConsoleUser | None:
        return self.session.get(ConsoleUser, user_id, with_for_update=for_update)

    def by_email(self, email: str) -> ConsoleUser | None:
        return self.session.scalars(
            select(ConsoleUser).where(ConsoleUser.email == email)
        ).one_or_none()

    def by_enrolment_hash(self, token_hash: str) -> ConsoleUser | None:
        return self.session.scalars(
            select(ConsoleUser).where(ConsoleUser.enrolment_hash == token_hash)
        ).one_or_none()

    def all(self) -> Sequence[ConsoleUser]:
        return self.session.scalars(select(ConsoleUser).order_by(ConsoleUser.id)).all()

    def emails(self, user_ids: Sequence[int]) -> dict[int, str]:
        """The login of each user id (for naming who did what)."""
        if not user_ids:
            return {}
        rows = self.session.execute(
            select(ConsoleUser.id, ConsoleUser.email).where(ConsoleUser.id.in_(list(user_ids)))
        ).all()
        return {int(row.id): str(row.email) for row in rows}

    def set_pending_totp(self, user_id: int, sealed_secret: str) -> bool:
        """Keep the TOTP secret an enrolment page shows, if the account has none yet."""
        result = self.session.connection().execute(
            update(USERS)
            .where(USERS.c.id == user_id, USERS.c.totp_secret.is_(None))
            .values(totp_secret=sealed_secret)
        )
        return bool(result.rowcount == 1)

    def complete_enrolment(
        self, user_id: int, token_hash: str, password_hash: str, step: int, now: datetime
    ) -> bool:
        """Set the password and spend the link, only if the link is still the live one."""
        result = self.session.connection().execute(
            update(USERS)
            .where(
                USERS.c.id == user_id,
                USERS.c.enrolment_hash == token_hash,
                USERS.c.enrolment_expires_at > now,
                USERS.c.disabled_at.is_(None),
            )
            .values(
                password_hash=password_hash,
                enrolment_hash=None,
                enrolment_expires_at=None,
                enrolled_at=now,
                totp_last_step=step,
            )
        )
        return bool(result.rowcount == 1)

    def claim_totp_step(self, user_id: int, step: int) -> bool:
        """Accept the code of `step` once: False if that step (or a later one) was used."""
        result = self.session.connection().execute(
            update(USERS)
            .where(
                USERS.c.id == user_id,
                or_(USERS.c.totp_last_step.is_(None), USERS.c.totp_last_step < step),
            )
            .values(totp_last_step=step)
        )
        return bool(result.rowcount == 1)

    def end_sessions(self, user_id: int) -> None:
        """Every session cookie of this user made so far stops counting."""
        self.session.connection().execute(
            update(USERS)
            .where(USERS.c.id == user_id)
            .values(session_generation=USERS.c.session_generation + 1)
        )
