"""codes@: "CODE <court> <measure> [kind]" opens a request; its code goes to the registration."""

from __future__ import annotations

import logging
from datetime import datetime

from gateway.errors import BadCommand, GatewayError
from gateway.ingest.pipeline import Action, Context, Outcome
from gateway.model import Clock, RequestKind, court_code, fold_accents, measure_number
from gateway.otp.codes import format_code
from gateway.otp.service import CodeService
from gateway.outbox.templates import KIND_LABELS
from gateway.storage.audit import append_event, lock_head
from gateway.storage.courts import CourtRepository
from gateway.storage.db import Database, Session
from gateway.storage.models import Court, Registration
from gateway.storage.outbox import enqueue
from gateway.storage.registrations import RegistrationRepository

log = logging.getLogger("gateway.codes")
USAGE = "subject must be: CODE <court> <measure> [requete|compte|inventaire]"


def parse_code_request(subject: str) -> tuple[str, str, RequestKind]:
    """Split "CODE TJ-LYON 21/00123 A compte" into court, measure and kind."""
    return parse_filing_command(subject, "CODE", USAGE)


def parse_filing_command(subject: str, keyword: str, usage: str) -> tuple[str, str, RequestKind]:
    """Split "<KEYWORD> <court> <measure> [kind]" (CODE for codes@, DEPOT for teletransmission).

    The keyword is case- and accent-insensitive (`Dépôt`); the last word is
    the kind only if it is one and a measure precedes it.
    """
    words = subject.split()
    if len(words) < 3 or fold_accents(words[0]).upper() != keyword:
        raise BadCommand(usage)
    rest = words[2:]
    kind = RequestKind.REQUETE
    if len(rest) > 1 and fold_accents(rest[-1].lower()) in {k.value for k in RequestKind}:
        kind = RequestKind.parse(rest.pop())
    try:
        return court_code(words[1]), measure_number(" ".join(rest)), kind
    except GatewayError:
        raise BadCommand(usage) from None


class CodeIssuer:
    """Issues codes for administrators and for codes@ alike; mails go to the registration only."""

    def __init__(self, db: Database, codes: CodeService, clock: Clock) -> None:
        self.db = db
        self.codes = codes
        self.clock = clock

    def request(
        self, court: str, measure: str, address_key: str, kind: RequestKind, actor: str
    ) -> str | None:
        """Issue and mail a code if (court, measure, address) is registered; returns why not."""
        with self.db.transaction() as session:
            # The audit head first, as a group commit's batch takes it: a teletransmitted
            # filing opens its request (the counter row) in a batch, and two transactions
            # taking these two locks in opposite orders deadlock on PostgreSQL.
            lock_head(session)
            court_row = CourtRepository(session).by_code(court)
            registration = (
                RegistrationRepository(session).active(court_row.id, measure, address_key)
                if court_row
                else None
            )
            now = self.clock()
            if registration is None:
                reason = "no such registration"
            elif self.codes.recent_issues(session, registration.id, now) >= (
                self.codes.policy.max_requests_per_day
            ):
                reason = "too many code requests today"
            else:
                assert court_row is not None  # a registration implies its court
                self._issue(session, registration, court_row, kind, actor, now)
                return None
            append_event(
                session,
                now,
                "code.request_ignored",
                actor=actor,
                subject=f"court:{court}",
                data={"reason": reason},
            )
            return reason

    def _issue(
        self,
        session: Session,
        registration: Registration,
        court_row: Court,
        kind: RequestKind,
        actor: str,
        now: datetime,
    ) -> None:
        court = court_row.code
        issued = self.codes.issue(session, registration, court, kind, now)
        enqueue(
            session,
            kind="code",
            recipient=registration.address,
            values={
                "court": court,
                "court_name": court_row.name,
                "measure": registration.measure,
                "kind": KIND_LABELS.get(kind.value, kind.value),
                "reference": issued.request.reference,
                "code": format_code(issued.code),
                "expires_at": issued.expires_at.strftime("%d/%m/%Y %H:%M UTC"),
            },
            now=now,
            related_reference=issued.request.reference,
        )
        append_event(
            session,
            now,
            "code.issued",
            actor=actor,
            subject=issued.request.reference,
            data={"registration": registration.id, "kind": kind.value},
        )

    def handle(self, ctx: Context) -> Outcome:
        """The codes@ role: always the same outcome once the sender is authenticated."""
        court, measure, kind = parse_code_request(ctx.parsed.subject)
        reason = self.request(
            court,
            measure,
            ctx.verdict.from_address.key,
            kind,
            actor=f"{ctx.inbound.channel.value}:{ctx.verdict.from_address.key}",
        )
        if reason:
            log.info("code request not honoured: %s", reason)
        return Outcome(Action.CODE_REQUESTED)
