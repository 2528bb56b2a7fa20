"""The queue, a request's page, the review actions on it, and its encrypted blobs for the browser.

The blobs are the stored OpenPGP bytes, exactly as the API hands them to
`gateway greffe sync`: the page decrypts them in the clerk's browser with
the court's key file, which never leaves the clerk's machine.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import RedirectResponse, Response

from gateway.api.blobs import blob_response
from gateway.console import french
from gateway.console.auth_pages import pages
from gateway.console.pages import PARIS
from gateway.console.security import Clerk, Deps, flash, form_of
from gateway.errors import GatewayError, InputError, NotFound
from gateway.model import RequestKind, RequestStatus
from gateway.storage.queue import QueueFilter
from gateway.users import Account

router = APIRouter()
Reference = Annotated[str, Path(pattern=r"^[A-Za-z0-9-]{1,40}$")]
Number = Annotated[int, Path(ge=1, le=1_000_000)]
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
_NOTE = re.compile(r"note-(\d{1,6})-(\d{1,5})")


def _day(text: str, what: str) -> datetime | None:
    """Midnight in Paris of a `YYYY-MM-DD` day (None for an empty field)."""
    if not text:
        return None
    try:
        if not _DAY.fullmatch(text):
            raise ValueError
        return datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=PARIS)
    except ValueError:
        raise InputError(f"{what} : date attendue au format AAAA-MM-JJ") from None


@router.get("/")
def queue(
    request: Request,
    deps: Deps,
    account: Clerk,
    statut: str = "",
    type: str = "",
    du: str = "",
    au: str = "",
    moi: str = "",
    page: int = 1,
) -> Response:
    wanted_status = statut if statut in {s.value for s in RequestStatus} else None
    wanted_kind = type if type in {k.value for k in RequestKind} else None
    error = ""
    try:
        start, end = _day(du, "du"), _day(au, "au")
    except InputError as exc:
        start = end = None
        error = exc.message
    wanted = QueueFilter(
        courts=account.scope, status=wanted_status, kind=wanted_kind, received_from=start,
        received_before=end + timedelta(days=1) if end else None,
        assigned_to=account.id if moi else None,
    )  # fmt: skip
    found = deps.worklist.queue(wanted, account.id, min(max(page, 1), 100_000))
    filters = {"statut": wanted_status or "", "type": wanted_kind or "", "du": du, "au": au,
               "moi": "1" if moi else ""}  # fmt: skip
    context = {"queue": found, "filters": filters, "error": error}
    return pages(request).render(request, "queue.html", context, account=account)


@router.get("/requetes/{reference}")
def request_page(request: Request, deps: Deps, account: Clerk, reference: Reference) -> Response:
    desk = deps.worklist.open(reference, account.scope, account.id)
    detail = deps.records.request(reference, account.scope)
    context = {
        "request": detail,
        "desk": desk,
        "assignable": _assignable(deps, account, desk.court),
    }
    return pages(request).render(request, "request.html", context, account=account)


def _assignable(deps: Any, account: Account, court: str) -> list[tuple[int, str]]:
    """Whom the request may be given to: the court's clerks, and the viewer themself."""
    people = dict(deps.users.colleagues(court))
    people.setdefault(account.id, account.email)
    return sorted(people.items(), key=lambda item: (item[0] != account.id, item[1]))


def _back(request: Request, reference: str) -> Response:
    root = request.scope.get("root_path", "")
    return RedirectResponse(f"{root}/requetes/{reference.upper()}", status_code=303)


@router.post("/requetes/{reference}/attribuer")
def assign(request: Request, deps: Deps, account: Clerk, reference: Reference) -> Response:
    form = form_of(request)
    court = deps.worklist.court_of(reference, account.scope)
    allowed = dict(_assignable(deps, account, court))
    chosen = str(form.get("assignee", ""))
    assignee = int(chosen) if chosen.isdigit() else -1
    try:
        deps.worklist.assign(reference, account.scope, assignee, allowed, account.actor)
    except NotFound:
        raise
    except GatewayError as exc:
        flash(request, "error", french.message(exc) if not isinstance(exc, InputError)
              else "Cette personne n'est pas greffier de ce tribunal.")  # fmt: skip
        return _back(request, reference)
    who = "vous" if assignee == account.id else allowed[assignee]
    flash(request, "ok", f"Requête attribuée à {who}.")
    return _back(request, reference)


@router.post("/requetes/{reference}/enregistrer")
def acknowledge(request: Request, deps: Deps, account: Clerk, reference: Reference) -> Response:
    return _review(request, reference, "Requête enregistrée ; l'avis d'enregistrement part "
                   "au tuteur.", lambda: deps.review.acknowledge(
                       reference, account.actor, courts=account.scope))  # fmt: skip


@router.post("/requetes/{reference}/accepter")
def accept(request: Request, deps: Deps, account: Clerk, reference: Reference) -> Response:
    return _review(
        request,
        reference,
        "Requête acceptée.",
        lambda: deps.review.accept(reference, account.actor, courts=account.scope),
    )


@router.post("/requetes/{reference}/rejeter")
def reject(request: Request, deps: Deps, account: Clerk, reference: Reference) -> Response:
    form = form_of(request)
    notes = {}
    for name, value in form.multi_items():
        found = _NOTE.fullmatch(str(name))
        if found and isinstance(value, str) and value.strip():
            notes[f"{found[1]}/{found[2]}"] = value
    reason = str(form.get("reason", ""))
    return _review(request, reference, "Requête rejetée ; l'avis de rejet part au tuteur.",
                   lambda: deps.review.reject(reference, account.actor, reason, notes=notes,
                                              courts=account.scope))  # fmt: skip


def _review(request: Request, reference: str, done: str, action: Any) -> Response:
    try:
        action()
    except NotFound:
        raise
    except GatewayError as exc:
        flash(request, "error", french.message(exc))
        return _back(request, reference)
    flash(request, "ok", done)
    return _back(request, reference)


@router.get("/requetes/{reference}/envois/{number}/manifeste")
def manifest_blob(deps: Deps, account: Clerk, reference: Reference, number: Number) -> Response:
    """The submission's manifest, encrypted (filenames, subject and text are in it)."""
    stored = deps.records.submission_blob(f"{reference}/{number}", "manifest", account.scope)
    return blob_response(stored)


@router.get("/requetes/{reference}/envois/{number}/documents/{index}")
def document_blob(
    deps: Deps,
    account: Clerk,
    reference: Reference,
    number: Number,
    index: Annotated[int, Path(ge=0, le=10_000)],
) -> Response:
    """One document, encrypted."""
    stored = deps.records.document_blob(f"{reference}/{number}", index, account.scope)
    return blob_response(stored)
