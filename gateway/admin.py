"""Administration: courts, court keys and registrations, each change audited.

Adding or revoking a registration also mails the address a notice through the
outbox, in the same transaction (`registration` and `registration_revoked`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway.errors import Conflict, GatewayError, ImportRefused, InputError, KeyRefused, NotFound
from gateway.model import Clock, Mailbox, court_code, measure_number
from gateway.storage.audit import append_event
from gateway.storage.courts import CourtRepository
from gateway.storage.db import Database, Session
from gateway.storage.keys import inspect_public_key
from gateway.storage.models import Court, CourtKey, Registration
from gateway.storage.outbox import enqueue
from gateway.storage.registrations import RegistrationRepository

Progress = Callable[[int], None]

IMPORT_MAX_BYTES = 50 * 1024 * 1024
IMPORT_COLUMNS = ("court", "measure", "address")


@dataclass(frozen=True, slots=True)
class KeyAdded:
    court: str
    fingerprint: str
    user_ids: list[str]


@dataclass(frozen=True, slots=True)
class KeyRetired:
    court: str
    fingerprint: str
    active_keys_left: int


@dataclass(frozen=True, slots=True)
class RegistrationRow:
    court: str
    measure: str
    address: Mailbox


class Admin:
    """Operations an administrator performs, shared by the CLI and the HTTP API."""

    def __init__(self, db: Database, clock: Clock, *, import_key: Callable[[str], str]) -> None:
        self.db = db
        self.clock = clock
        self._import_key = import_key

    # -- courts -----------------------------------------------------------
    def add_court(self, code: str, name: str, actor: str) -> Court:
        code = court_code(code)
        name = name.strip()
        if not name or len(name) > 200:
            raise InputError("court name must be 1-200 characters")
        with self.db.transaction() as session:
            courts = CourtRepository(session)
            if courts.by_code(code):
                raise Conflict(f"court {code} already exists")
            court = courts.add(code, name, self.clock())
            append_event(
                session, self.clock(), "court.added", actor=actor, subject=code, data={"name": name}
            )
            return court

    def add_court_key(self, code: str, data: bytes, actor: str) -> KeyAdded:
        code = court_code(code)
        info = inspect_public_key(data)
        if not info.can_encrypt:
            raise KeyRefused("key cannot encrypt")
        with self.db.transaction() as session:
            courts = CourtRepository(session)
            court = self._court(courts, code)
            known = courts.key(court.id, info.fingerprint)
            if known and known.status != "active":
                raise Conflict(
                    f"key {info.fingerprint} was retired from court {code}: a retired key is "
                    "not taken back (the greffe makes a new one)"
                )
            if known:
                raise Conflict(f"key {info.fingerprint} is already registered for court {code}")
            imported = self._import_key(info.armored)
            if imported.upper() != info.fingerprint.upper():
                raise KeyRefused("the keyring did not accept the key")
            courts.add_key(
                CourtKey(
                    court_id=court.id,
                    fingerprint=info.fingerprint,
                    armored=info.armored,
                    user_ids="\n".join(info.user_ids),
                    status="active",
                    expires_at=info.expires_at,
                    created_at=self.clock(),
                )
            )
            append_event(
                session,
                self.clock(),
                "court.key_added",
                actor=actor,
                subject=code,
                data={"fingerprint": info.fingerprint},
            )
        return KeyAdded(code, info.fingerprint, info.user_ids)

    def retire_court_key(
        self, code: str, fingerprint: str, actor: str, *, last: bool = False
    ) -> KeyRetired:
        """Stop encrypting the court's new data to a key; what is stored stays as it was.

        The court's only active key is kept unless `last`: without a key, its
        filings are refused with 451 until one is added.
        """
        code = court_code(code)
        wanted = _fingerprint(fingerprint)
        with self.db.transaction() as session:
            courts = CourtRepository(session)
            # Locked: two administrators retiring a court's last two keys at once must
            # not both see the other's key still active (PostgreSQL reads committed rows).
            court = self._court(courts, code, for_update=True)
            every = courts.keys(court.id, active_only=False)
            key = next((k for k in every if k.fingerprint.upper() == wanted), None)
            if key is None:
                raise NotFound(f"court {code} has no key {wanted}")
            if key.status != "active":
                raise Conflict(f"key {key.fingerprint} of court {code} is already retired")
            remaining = [k for k in courts.keys(court.id) if k.id != key.id]
            if not remaining and not last:
                raise Conflict(
                    f"key {key.fingerprint} is court {code}'s only active key: add its "
                    "successor first, or retire it anyway and the court's filings are "
                    "refused with 451 until a key is added"
                )
            key.status = "retired"
            append_event(
                session,
                self.clock(),
                "court.key_retired",
                actor=actor,
                subject=code,
                data={"fingerprint": key.fingerprint, "active_keys_left": len(remaining)},
            )
            return KeyRetired(code, key.fingerprint, len(remaining))

    def list_courts(self) -> list[dict[str, Any]]:
        with self.db.reading() as session:
            courts = CourtRepository(session)
            return [
                {
                    "code": court.code,
                    "name": court.name,
                    "created_at": court.created_at.isoformat(),
                    "keys": [
                        {"fingerprint": key.fingerprint, "status": key.status}
                        for key in courts.keys(court.id, active_only=False)
                    ],
                }
                for court in courts.all()
            ]

    # -- registrations ----------------------------------------------------
    def add_registration(self, court: str, measure: str, address: str, actor: str) -> Registration:
        row = RegistrationRow(court_code(court), measure_number(measure), Mailbox.parse(address))
        with self.db.transaction() as session:
            return self._register(session, row, actor)

    def revoke_registration(self, court: str, measure: str, address: str, actor: str) -> None:
        code, measure_n, mailbox = (
            court_code(court),
            measure_number(measure),
            Mailbox.parse(address),
        )
        with self.db.transaction() as session:
            court_row = self._court(CourtRepository(session), code)
            registration = RegistrationRepository(session).active(
                court_row.id, measure_n, mailbox.key
            )
            if registration is None:
                raise NotFound(f"no active registration of {mailbox} for {code} {measure_n}")
            now = self.clock()
            registration.status, registration.revoked_at = "revoked", now
            registration.revoked_by = actor
            _queue_notice(session, "registration_revoked", registration, court_row, now)
            append_event(
                session,
                now,
                "registration.revoked",
                actor=actor,
                subject=f"registration:{registration.id}",
                data={"court": code, "measure": measure_n},
            )

    def revoke_registration_id(self, registration_id: int, actor: str) -> dict[str, Any]:
        """Revoke an active registration named by its id (the API's handle on one)."""
        with self.db.transaction() as session:
            registration = RegistrationRepository(session).get(registration_id)
            if registration is None:
                raise NotFound(f"unknown registration {registration_id}")
            court = CourtRepository(session).get(registration.court_id)
            assert court is not None
            if registration.status != "active":
                raise Conflict(f"registration {registration_id} is already revoked")
            now = self.clock()
            registration.status, registration.revoked_at = "revoked", now
            registration.revoked_by = actor
            append_event(
                session,
                now,
                "registration.revoked",
                actor=actor,
                subject=f"registration:{registration.id}",
                data={"court": court.code, "measure": registration.measure},
            )
            return _registration_dict(registration, court.code)

    def registrations_page(
        self, courts: Collection[str] | None, status: str | None, after: int, limit: int
    ) -> tuple[list[dict[str, Any]], int | None]:
        """Registrations with ids above `after`, in id order; and the next page's cursor."""
        with self.db.reading() as session:
            rows = RegistrationRepository(session).page(courts, status, after, limit + 1)
            items = [_registration_dict(reg, code) for reg, code in rows[:limit]]
            return items, (rows[limit - 1][0].id if len(rows) > limit else None)

    def list_registrations(
        self, court: str | None = None, *, include_revoked: bool = True
    ) -> list[dict[str, Any]]:
        with self.db.reading() as session:
            court_id = None
            if court is not None:
                court_id = self._court(CourtRepository(session), court_code(court)).id
            rows = RegistrationRepository(session).listing(
                court_id, include_revoked=include_revoked
            )
            return [_registration_dict(reg, code) for reg, code in rows]

    def import_registrations(
        self,
        data: bytes,
        actor: str,
        progress: Progress | None = None,
        *,
        notify: bool = True,
        courts: Collection[str] | None = None,
    ) -> int:
        """All-or-nothing CSV import; the refusal names every bad line.

        Each imported address gets its registration notice, unless `notify` is
        False (registrations moved from another system, already announced).
        `courts` limits the import to those courts (a clerk's): a line of any
        other court is refused as an unknown court.
        """
        rows, problems = _parse_csv(data)
        with self.db.transaction() as session:
            problems += self._check_rows(session, rows, courts)
            if problems:
                problems.sort()
                raise ImportRefused(problems)
            for count, (_, row) in enumerate(rows, 1):
                self._register(session, row, actor, notify=notify)
                if progress and count % 100 == 0:
                    progress(100)
            if progress:
                progress(len(rows) % 100)
            append_event(
                session,
                self.clock(),
                "registration.imported",
                actor=actor,
                data={"count": len(rows), "notified": notify},
            )
        return len(rows)

    def export_registrations(self, court: str | None = None) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([*IMPORT_COLUMNS, "registered_at", "registered_by"])
        for reg in self.list_registrations(court, include_revoked=False):
            writer.writerow(
                [
                    reg["court"],
                    reg["measure"],
                    reg["address"],
                    reg["registered_at"],
                    reg["registered_by"],
                ]
            )
        return out.getvalue()

    # -- helpers ----------------------------------------------------------
    @staticmethod
    def _court(courts: CourtRepository, code: str, *, for_update: bool = False) -> Court:
        court = courts.by_code(code, for_update=for_update)
        if court is None:
            raise NotFound(f"unknown court {code}")
        return court

    def _register(
        self, session: Any, row: RegistrationRow, actor: str, *, notify: bool = True
    ) -> Registration:
        court = self._court(CourtRepository(session), row.court)
        registrations = RegistrationRepository(session)
        if registrations.active(court.id, row.measure, row.address.key):
            raise Conflict(f"{row.address} is already registered for {row.court} {row.measure}")
        now = self.clock()
        registration = registrations.add(
            Registration(
                court_id=court.id,
                measure=row.measure,
                address=str(row.address),
                address_key=row.address.key,
                status="active",
                registered_by=actor,
                registered_at=now,
            )
        )
        if notify:
            _queue_notice(session, "registration", registration, court, now)
        append_event(
            session,
            now,
            "registration.added",
            actor=actor,
            subject=f"registration:{registration.id}",
            data={"court": row.court, "measure": row.measure},
        )
        return registration

    def _check_rows(
        self,
        session: Any,
        rows: Sequence[tuple[int, RegistrationRow]],
        scope: Collection[str] | None = None,
    ) -> list[tuple[int, str]]:
        courts, registrations = CourtRepository(session), RegistrationRepository(session)
        known: dict[str, Court | None] = {}
        seen: dict[tuple[str, str, str], int] = {}
        problems: list[tuple[int, str]] = []
        for line, row in rows:
            if row.court not in known:
                outside = scope is not None and row.court not in scope
                known[row.court] = None if outside else courts.by_code(row.court)
            court = known[row.court]
            key = (row.court, row.measure, row.address.key)
            if court is None:
                problems.append((line, f"unknown court {row.court}"))
            elif key in seen:
                problems.append((line, f"duplicate of line {seen[key]}"))
            elif registrations.active(court.id, row.measure, row.address.key):
                problems.append(
                    (line, f"{row.address} is already registered for {row.court} {row.measure}")
                )
            seen.setdefault(key, line)
        return problems


def _fingerprint(text: str) -> str:
    """A fingerprint as an administrator may type it: any case, spaces or colons between groups."""
    wanted = "".join(text.split()).replace(":", "").upper()
    if len(wanted) not in (40, 64) or any(c not in "0123456789ABCDEF" for c in wanted):
        raise InputError(f"not a key fingerprint: {text[:80]!r} (40 or 64 hexadecimal digits)")
    return wanted


def _queue_notice(
    session: Session, kind: str, registration: Registration, court: Court, now: datetime
) -> None:
    """Tell the address it was registered (what it can now do) or that it no longer is."""
    enqueue(
        session,
        kind=kind,
        recipient=registration.address,
        values={
            "court": court.code,
            "court_name": court.name,
            "measure": registration.measure,
            "address": registration.address,
            "code_request": f"CODE {court.code} {registration.measure}",
        },
        now=now,
        related_reference=f"registration:{registration.id}",
    )


def _registration_dict(reg: Registration, court: str) -> dict[str, Any]:
    return {
        "id": reg.id,
        "court": court,
        "measure": reg.measure,
        "address": reg.address,
        "status": reg.status,
        "registered_by": reg.registered_by,
        "registered_at": reg.registered_at.isoformat(),
        "revoked_at": reg.revoked_at.isoformat() if reg.revoked_at else None,
    }


def _parse_csv(data: bytes) -> tuple[list[tuple[int, RegistrationRow]], list[tuple[int, str]]]:
    if len(data) > IMPORT_MAX_BYTES:
        raise InputError(f"file larger than {IMPORT_MAX_BYTES} bytes")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError("file is not UTF-8 text") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    header = [h.strip().lower() for h in next(reader, [])]
    missing = [c for c in IMPORT_COLUMNS if c not in header]
    if missing:
        raise InputError(
            f"line 1: header must name court,measure,address (missing {', '.join(missing)})"
        )
    index = {c: header.index(c) for c in IMPORT_COLUMNS}
    rows: list[tuple[int, RegistrationRow]] = []
    problems: list[tuple[int, str]] = []
    for line, record in _numbered(reader):
        if not any(cell.strip() for cell in record):
            continue
        try:
            if len(record) < len(header):
                raise InputError(f"expected {len(header)} fields, found {len(record)}")
            rows.append(
                (
                    line,
                    RegistrationRow(
                        court_code(record[index["court"]]),
                        measure_number(record[index["measure"]]),
                        Mailbox.parse(record[index["address"]]),
                    ),
                )
            )
        except GatewayError as exc:
            problems.append((line, exc.message))
    if not rows and not problems:
        raise InputError("file holds no registration")
    return rows, problems


def _numbered(reader: Iterable[list[str]]) -> Iterable[tuple[int, list[str]]]:
    # csv's line_num counts physical lines, so quoted newlines keep line numbers true.
    line = 1
    iterator = iter(reader)
    while True:
        try:
            record = next(iterator)
        except StopIteration:
            return
        except csv.Error as exc:
            raise InputError(f"line {line + 1}: {exc}") from None
        line = getattr(reader, "line_num", line + 1)
        yield line, record
