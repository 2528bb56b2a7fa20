"""/api/v1/submissions/{request ref}/{n}/…: a submission's encrypted message, manifest, documents.

Each is the stored OpenPGP bytes, which only the court's private key opens
(`gateway submissions export` does that on the greffe's side).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from gateway.api.auth import AnyKey
from gateway.api.blobs import BLOB_RESPONSE, blob_response
from gateway.api.context import Deps
from gateway.api.problems import API_STATUSES, documented

router = APIRouter(
    prefix="/api/v1/submissions/{reference}/{number}",
    tags=["submissions"],
    responses=documented(*API_STATUSES),
)
Reference = Annotated[
    str, Path(pattern=r"^[A-Za-z0-9-]{1,40}$", description="The request's reference")
]
Number = Annotated[int, Path(ge=1, le=1_000_000, description="The submission's number")]


@router.get("/message", response_class=Response, responses=BLOB_RESPONSE)
def get_message(reference: Reference, number: Number, deps: Deps, who: AnyKey) -> Response:
    """The raw message as received, encrypted."""
    return blob_response(
        deps.records.submission_blob(f"{reference}/{number}", "message", who.scope)
    )


@router.get("/manifest", response_class=Response, responses=BLOB_RESPONSE)
def get_manifest(reference: Reference, number: Number, deps: Deps, who: AnyKey) -> Response:
    """The normalised submission (gateway.submission/1), encrypted."""
    return blob_response(
        deps.records.submission_blob(f"{reference}/{number}", "manifest", who.scope)
    )


@router.get("/documents/{index}", response_class=Response, responses=BLOB_RESPONSE)
def get_document(
    reference: Reference,
    number: Number,
    index: Annotated[int, Path(ge=0, le=10_000)],
    deps: Deps,
    who: AnyKey,
) -> Response:
    """One document, encrypted (its index is the manifest's `index`)."""
    return blob_response(deps.records.document_blob(f"{reference}/{number}", index, who.scope))
