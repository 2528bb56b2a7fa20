"""/api/v1/requests: list (filtered, paged), one request, its manifest, and the greffe's review.

A greffe key sees its own courts only: any other court's request answers
404, exactly like a reference that does not exist.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import AwareDatetime

from gateway.api.auth import AnyKey
from gateway.api.context import Deps
from gateway.api.paging import DEFAULT_LIMIT, Cursor, Limit, decode_cursor, encode_cursor
from gateway.api.problems import API_STATUSES, documented
from gateway.api.schemas import RejectIn, RequestDetail, RequestPage, RequestStatusView
from gateway.errors import InputError
from gateway.model import RequestKind, RequestStatus, court_code
from gateway.review import RequestView
from gateway.storage.requests import RequestFilter

router = APIRouter(
    prefix="/api/v1/requests", tags=["requests"], responses=documented(*API_STATUSES)
)
Reference = Annotated[
    str, Path(pattern=r"^[A-Za-z0-9-]{1,40}$", description="e.g. TJ-LYON-2026-000001")
]


@router.get("", response_model=RequestPage)
def list_requests(
    deps: Deps,
    who: AnyKey,
    court: Annotated[str | None, Query(max_length=64)] = None,
    status: RequestStatus | None = None,
    kind: RequestKind | None = None,
    since: Annotated[
        AwareDatetime | None, Query(description="Changed at or after (RFC 3339, with offset)")
    ] = None,
    cursor: Cursor = None,
    limit: Limit = DEFAULT_LIMIT,
) -> dict[str, Any]:
    wanted = RequestFilter(
        courts=who.scope,
        court=court_code(court) if court else None,
        status=status.value if status else None,
        kind=kind.value if kind else None,
        since=_utc(since) if since else None,
    )
    page = deps.records.requests(wanted, decode_cursor(cursor), limit)
    return {"items": page.items, "next_cursor": encode_cursor(page.after)}


@router.get("/{reference}", response_model=RequestDetail)
def get_request(reference: Reference, deps: Deps, who: AnyKey) -> dict[str, Any]:
    """The request, its submissions and their documents as the database holds them in clear."""
    return deps.records.request(reference, who.scope)


@router.get("/{reference}/manifest", response_model=dict[str, Any])
def get_request_manifest(reference: Reference, deps: Deps, who: AnyKey) -> dict[str, Any]:
    """The request's manifest (gateway.request/1, nothing a sender wrote): its submissions.

    Each submission's manifest, with the sender's text, is the encrypted
    `/api/v1/submissions/{reference}/{number}/manifest`.
    """
    return deps.records.request_manifest(reference, who.scope)


@router.post("/{reference}/acknowledge", response_model=RequestStatusView)
def acknowledge(reference: Reference, deps: Deps, who: AnyKey) -> dict[str, Any]:
    """open or sealed -> received: mails the guardian an avis d'enregistrement."""
    return _view(deps.review.acknowledge(reference, who.actor, courts=who.scope))


@router.post("/{reference}/accept", response_model=RequestStatusView)
def accept(reference: Reference, deps: Deps, who: AnyKey) -> dict[str, Any]:
    """received -> accepted."""
    return _view(deps.review.accept(reference, who.actor, courts=who.scope))


@router.post("/{reference}/reject", response_model=RequestStatusView)
def reject(reference: Reference, body: RejectIn, deps: Deps, who: AnyKey) -> dict[str, Any]:
    """open, sealed or received -> rejected: the reason and per-document notes are mailed."""
    view = deps.review.reject(reference, who.actor, body.reason, notes=body.notes, courts=who.scope)
    return _view(view)


def _utc(moment: datetime) -> datetime:
    try:
        return moment.astimezone(UTC)
    except (OverflowError, ValueError):  # year 9999 with a negative offset, say
        raise InputError("since: out of range") from None


def _view(view: RequestView) -> dict[str, Any]:
    return {
        "reference": view.reference,
        "court": view.court,
        "status": view.status,
        "status_reason": view.status_reason,
    }
