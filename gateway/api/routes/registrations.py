"""/api/v1/registrations: register, revoke, list (paged) and import a CSV (admin keys only)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request, status
from starlette.concurrency import run_in_threadpool

from gateway.api.auth import AdminKey
from gateway.api.context import Deps
from gateway.api.paging import DEFAULT_LIMIT, Cursor, Limit, decode_cursor, encode_cursor
from gateway.api.problems import API_STATUSES, documented
from gateway.api.schemas import Imported, Registration, RegistrationIn, RegistrationPage
from gateway.model import court_code

router = APIRouter(
    prefix="/api/v1/registrations",
    tags=["registrations"],
    responses=documented(*API_STATUSES),
)
CSV_TYPES = ("text/csv", "application/csv")


@router.get("", response_model=RegistrationPage)
def list_registrations(
    deps: Deps,
    who: AdminKey,
    court: Annotated[str | None, Query(max_length=64)] = None,
    status: Literal["active", "revoked"] | None = None,
    cursor: Cursor = None,
    limit: Limit = DEFAULT_LIMIT,
) -> dict[str, Any]:
    courts = [court_code(court)] if court else None
    items, after = deps.admin.registrations_page(courts, status, decode_cursor(cursor), limit)
    return {"items": items, "next_cursor": encode_cursor(after)}


@router.post("", response_model=Registration, status_code=status.HTTP_201_CREATED)
def add_registration(body: RegistrationIn, deps: Deps, who: AdminKey) -> dict[str, Any]:
    row = deps.admin.add_registration(body.court, body.measure, body.address, who.actor)
    return {
        "id": row.id,
        "court": court_code(body.court),
        "measure": row.measure,
        "address": row.address,
        "status": row.status,
        "registered_by": row.registered_by,
        "registered_at": row.registered_at,
        "revoked_at": row.revoked_at,
    }


@router.post("/{registration_id}/revoke", response_model=Registration)
def revoke_registration(
    deps: Deps, who: AdminKey, registration_id: Annotated[int, Path(ge=1, le=2**31 - 1)]
) -> dict[str, Any]:
    return deps.admin.revoke_registration_id(registration_id, who.actor)


@router.post(
    "/import",
    response_model=Imported,
    status_code=status.HTTP_201_CREATED,
    responses=documented(415),
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "CSV with the header court,measure,address (UTF-8). All or nothing.",
            "content": {"text/csv": {"schema": {"type": "string"}}},
        }
    },
)
async def import_registrations(request: Request, deps: Deps, who: AdminKey) -> dict[str, int]:
    """All-or-nothing: a refusal (422) lists every bad line in `problems`; nothing is written."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in CSV_TYPES:
        raise HTTPException(415, "send the CSV with Content-Type: text/csv")
    data = await request.body()  # already bounded by http.max_body_bytes
    # The import is blocking database work: in a worker thread, off the event loop.
    count = await run_in_threadpool(deps.admin.import_registrations, data, who.actor)
    return {"imported": count}
