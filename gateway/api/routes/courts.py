"""/api/v1/courts: courts and their OpenPGP keys (a greffe key sees its own courts only)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, status

from gateway.api.auth import AdminKey, AnyKey
from gateway.api.context import Deps
from gateway.api.problems import API_STATUSES, documented
from gateway.api.schemas import Court, CourtIn, CourtKeyIn, KeyAdded
from gateway.model import court_code

router = APIRouter(prefix="/api/v1/courts", tags=["courts"], responses=documented(*API_STATUSES))
CourtCode = Path(max_length=64, description="Court code, e.g. TJ-LYON")
Fingerprint = Path(
    max_length=200, description="The key's fingerprint: 40 or 64 hex digits, spaces or colons"
)


@router.get("", response_model=list[Court])
def list_courts(deps: Deps, who: AnyKey) -> list[dict[str, Any]]:
    return deps.records.courts(who.scope)


@router.post("", response_model=Court, status_code=status.HTTP_201_CREATED)
def add_court(body: CourtIn, deps: Deps, who: AdminKey) -> dict[str, Any]:
    court = deps.admin.add_court(body.code, body.name, who.actor)
    return deps.records.court(court.code, None)


@router.get("/{code}", response_model=Court)
def get_court(deps: Deps, who: AnyKey, code: str = CourtCode) -> dict[str, Any]:
    return deps.records.court(court_code(code), who.scope)


@router.post("/{code}/keys", response_model=KeyAdded, status_code=status.HTTP_201_CREATED)
def add_court_key(
    body: CourtKeyIn, deps: Deps, who: AdminKey, code: str = CourtCode
) -> dict[str, Any]:
    """Add an armoured public key that the court's stored data will be encrypted to."""
    added = deps.admin.add_court_key(code, body.armored.encode("utf-8"), who.actor)
    return {"court": added.court, "fingerprint": added.fingerprint, "user_ids": added.user_ids}


@router.post("/{code}/keys/{fingerprint}/retire", response_model=Court)
def retire_court_key(
    deps: Deps,
    who: AdminKey,
    force: Annotated[
        bool,
        Query(description="Retire the court's only active key anyway (its filings then get 451)"),
    ] = False,
    code: str = CourtCode,
    fingerprint: str = Fingerprint,
) -> dict[str, Any]:
    """Stop encrypting the court's new data to a key; stored data stays encrypted to it.

    Retiring the only active key is refused with 409 unless `force`.
    """
    retired = deps.admin.retire_court_key(code, fingerprint, who.actor, last=force)
    return deps.records.court(retired.court, None)
