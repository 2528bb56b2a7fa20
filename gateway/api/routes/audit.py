"""/api/v1/audit: the hash-chained audit trail, listed in chain order, and verified (admin keys)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from gateway.api.auth import AdminKey
from gateway.api.context import Deps
from gateway.api.paging import DEFAULT_LIMIT, Cursor, Limit, decode_cursor, encode_cursor
from gateway.api.problems import API_STATUSES, documented
from gateway.api.schemas import AuditPage, AuditVerified

router = APIRouter(prefix="/api/v1/audit", tags=["audit"], responses=documented(*API_STATUSES))


@router.get("", response_model=AuditPage)
def list_events(
    deps: Deps,
    who: AdminKey,
    action: Annotated[
        str | None, Query(pattern=r"^[a-z0-9_.]{1,64}$", description="e.g. code.issued")
    ] = None,
    cursor: Cursor = None,
    limit: Limit = DEFAULT_LIMIT,
) -> dict[str, Any]:
    page = deps.records.audit_events(decode_cursor(cursor), limit, action)
    return {"items": page.items, "next_cursor": encode_cursor(page.after)}


@router.get("/verify", response_model=AuditVerified)
def verify(deps: Deps, who: AdminKey) -> dict[str, Any]:
    """Walk the whole chain; `broken_seq` names the first event whose hash or link is wrong."""
    report = deps.records.verify_audit()
    return {
        "ok": report.ok,
        "events": report.events,
        "broken_seq": report.broken_seq,
        "reason": report.reason,
    }
