"""The greffe's review of a request: acknowledge, accept, reject (STAND-IN, see below).

This is a minimal stand-in with the interface the HTTP API calls, written so
the API and its tests run; another branch builds the real `ReviewDesk`
(with the rejection notice mailed to the guardian), which replaces this
module whole.  Here: open|sealed -> received -> accepted|rejected, each
move audited, no mail.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from gateway.errors import InputError, NotFound, WrongStatus
from gateway.model import Clock, RequestStatus
from gateway.storage.audit import append_event
from gateway.storage.db import Database
from gateway.storage.requests import CodeRepository, RequestRepository

MAX_REASON = 2000


@dataclass(frozen=True, slots=True)
class RequestView:
    reference: str
    court: str
    status: str
    status_reason: str | None


class ReviewDesk:
    """Moves requests through the greffe's statuses, within the caller's courts."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    def acknowledge(
        self, reference: str, actor: str, *, courts: Collection[str] | None = None
    ) -> RequestView:
        return self._move(
            reference, actor, courts,
            (RequestStatus.OPEN, RequestStatus.SEALED), RequestStatus.RECEIVED, None, {},
        )  # fmt: skip

    def accept(
        self, reference: str, actor: str, *, courts: Collection[str] | None = None
    ) -> RequestView:
        return self._move(
            reference, actor, courts, (RequestStatus.RECEIVED,), RequestStatus.ACCEPTED, None, {}
        )

    def reject(
        self,
        reference: str,
        actor: str,
        reason: str,
        *,
        notes: Mapping[int, str] | None = None,
        courts: Collection[str] | None = None,
    ) -> RequestView:
        reason = reason.strip()
        if not reason or len(reason) > MAX_REASON:
            raise InputError(f"a rejection needs a reason of 1-{MAX_REASON} characters")
        return self._move(
            reference, actor, courts, (RequestStatus.RECEIVED,), RequestStatus.REJECTED, reason,
            {"notes": len(notes or {})},
        )  # fmt: skip

    def _move(
        self,
        reference: str,
        actor: str,
        courts: Collection[str] | None,
        sources: tuple[RequestStatus, ...],
        target: RequestStatus,
        reason: str | None,
        data: dict[str, int],
    ) -> RequestView:
        reference = reference.strip().upper()
        with self.db.transaction() as session:
            requests = RequestRepository(session)
            found = requests.scoped(reference, courts)
            if found is None:
                raise NotFound(f"unknown request {reference}")
            request = requests.get(found[0].id, for_update=True)
            assert request is not None
            if request.status not in {source.value for source in sources}:
                raise WrongStatus(
                    f"request {reference} is {request.status}; it cannot become {target}"
                )
            now = self.clock()
            if request.status == RequestStatus.OPEN.value:
                code = CodeRepository(session).for_request(request.id)
                if code is not None:  # no more submissions once the greffe has it
                    code.closed_at = code.closed_at or now
                request.sealed_at = now
            request.status, request.status_reason, request.updated_at = target.value, reason, now
            append_event(
                session, now, f"request.{target.value}", actor=actor, subject=reference, data=data
            )
            return RequestView(reference, found[1], request.status, request.status_reason)
