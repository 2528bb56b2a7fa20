"""The API's JSON shapes in one place: request bodies (unknown fields refused) and responses."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from gateway.model import RequestKind

TEXT = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"
"""Free text: any character but the control ones (PostgreSQL refuses NUL in text)."""
Note = Annotated[str, Field(min_length=1, max_length=1000, pattern=TEXT)]
NoteKey = Annotated[str, StringConstraints(pattern=r"^\s*[0-9]{1,6}\s*/\s*[0-9]{1,5}\s*$")]
"""`<submission number>/<document index>`, as receipts number them: `2/1`."""


class Body(BaseModel):
    """A request body: unknown fields are refused (422 naming them)."""

    model_config = ConfigDict(extra="forbid")


class Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- problems -------------------------------------------------------------------------
class Problem(BaseModel):
    """RFC 9457 problem details; some problems add `problems`, `errors`, `checks` or an id."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    correlation_id: str | None = Field(
        default=None, description="On 503 internal errors: the id the server logged it under."
    )
    problems: list[ImportProblem] | None = Field(
        default=None, description="On a refused CSV import: every bad line."
    )
    errors: list[FieldError] | None = Field(
        default=None, description="On a request that does not validate: what, where."
    )
    checks: dict[str, str] | None = Field(
        default=None, description="On /readyz: each check, `ok` or what is wrong."
    )


class ImportProblem(Out):
    line: int
    problem: str


class FieldError(Out):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    in_: str = Field(alias="in", description="path, query, header or body")
    field: str
    problem: str


# -- health ---------------------------------------------------------------------------
class Health(Out):
    status: str


class Ready(Out):
    status: str
    checks: dict[str, str]


# -- courts ---------------------------------------------------------------------------
class CourtIn(Body):
    code: str = Field(max_length=64, description="2-16 of A-Z, 0-9 and '-' (upper-cased)")
    name: str = Field(max_length=400, pattern=TEXT)


class CourtKeyOut(Out):
    fingerprint: str
    status: str
    expires_at: datetime | None


class Court(Out):
    code: str
    name: str
    created_at: datetime
    keys: list[CourtKeyOut]


class CourtKeyIn(Body):
    armored: str = Field(max_length=1_048_576, description="An armoured OpenPGP public key")


class KeyAdded(Out):
    court: str
    fingerprint: str
    user_ids: list[str]


# -- registrations --------------------------------------------------------------------
class RegistrationIn(Body):
    court: str = Field(max_length=64)
    measure: str = Field(max_length=200)
    address: str = Field(max_length=400)


class Registration(Out):
    id: int
    court: str
    measure: str
    address: str
    status: str
    registered_by: str
    registered_at: datetime
    revoked_at: datetime | None


class RegistrationPage(Out):
    items: list[Registration]
    next_cursor: str | None


class Imported(Out):
    imported: int


# -- codes ----------------------------------------------------------------------------
class CodeRequestIn(Body):
    court: str = Field(max_length=64)
    measure: str = Field(max_length=200)
    address: str = Field(max_length=400)
    kind: RequestKind = RequestKind.REQUETE


class CodeAccepted(Out):
    status: str = Field(description="Always `accepted`: whether a code went out is not said.")


# -- requests and submissions -----------------------------------------------------------
class Document(Out):
    index: int
    detected_type: str
    size: int
    sha256: str
    warnings: list[str] = Field(description="Active content found and accepted (machine words).")


class Submission(Out):
    reference: str
    number: int
    channel: str
    received_at: datetime
    size: int
    raw_sha256: str
    auth_results: dict[str, Any]
    documents: list[Document]


class RequestSummary(Out):
    reference: str
    court: str
    measure: str
    kind: str
    channel: str
    status: str
    status_reason: str | None
    submissions_count: int
    opened_at: datetime
    sealed_at: datetime | None
    updated_at: datetime
    held: bool = Field(description="Kept from the retention purge (`gateway requests hold`).")


class RequestDetail(RequestSummary):
    submissions: list[Submission]


class RequestPage(Out):
    items: list[RequestSummary]
    next_cursor: str | None


class RequestStatusView(Out):
    reference: str
    court: str
    status: str
    status_reason: str | None


class RejectIn(Body):
    reason: str = Field(
        min_length=1, max_length=2000, pattern=TEXT, description="Mailed to the guardian."
    )
    notes: dict[NoteKey, Note] | None = Field(
        default=None,
        description="Per-document notes, keyed `<submission>/<document>` (`2/1`: document 1 "
        "of submission 2), mailed with the reason.",
    )


# -- audit ----------------------------------------------------------------------------
class AuditEvent(Out):
    seq: int
    at: datetime
    action: str
    actor: str
    subject: str
    data: dict[str, Any]
    prev_sha256: str
    sha256: str


class AuditPage(Out):
    items: list[AuditEvent]
    next_cursor: str | None


class AuditVerified(Out):
    ok: bool
    events: int
    broken_seq: int | None
    reason: str


Problem.model_rebuild()
