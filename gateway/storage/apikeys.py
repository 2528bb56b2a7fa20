"""API keys: every query about them (the secret itself is never stored, only its keyed hash)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.storage.models import ApiKey


class ApiKeyRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, key: ApiKey) -> ApiKey:
        self.session.add(key)
        self.session.flush()
        return key

    def get(self, key_id: int, *, for_update: bool = False) -> ApiKey | None:
        return self.session.get(ApiKey, key_id, with_for_update=for_update)

    def by_lookup(self, lookup_id: str) -> ApiKey | None:
        return self.session.scalars(
            select(ApiKey).where(ApiKey.lookup_id == lookup_id)
        ).one_or_none()

    def all(self) -> Sequence[ApiKey]:
        return self.session.scalars(select(ApiKey).order_by(ApiKey.id)).all()
