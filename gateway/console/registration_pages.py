"""Registrations of the clerk's courts: list, add, revoke, import a CSV (all or nothing), export.

Each goes through `gateway.admin.Admin`, so the guardian is mailed the
registration (or revocation) notice as from the command line.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import RedirectResponse, Response
from starlette.datastructures import UploadFile

from gateway.console import french
from gateway.console.auth_pages import pages
from gateway.console.security import Clerk, Deps, flash, form_of
from gateway.errors import GatewayError, ImportRefused, NotFound
from gateway.model import court_code
from gateway.users import Account

router = APIRouter()
PAGE = 50


def _courts(deps: Any, account: Account) -> list[dict[str, Any]]:
    courts: list[dict[str, Any]] = deps.records.courts(account.scope)
    return courts


def _in_scope(account: Account, court: str) -> str:
    """The court's code if the user may manage it; NotFound otherwise (as if it did not exist)."""
    try:
        code = court_code(court)
    except GatewayError:
        raise NotFound(f"unknown court {court[:20]}") from None
    if account.scope is not None and code not in account.scope:
        raise NotFound(f"unknown court {code}")
    return code


def _listing(
    request: Request, deps: Any, account: Account, court: str, status: str, after: int,
    extra: dict[str, Any] | None = None, http_status: int = 200,
) -> Response:  # fmt: skip
    scope = [_in_scope(account, court)] if court else account.scope
    items, next_after = deps.admin.registrations_page(scope, status or None, after, PAGE)
    context = {
        "courts": _courts(deps, account), "items": items, "next_after": next_after,
        "filters": {"tribunal": court, "statut": status}, "report": None, **(extra or {}),
    }  # fmt: skip
    return pages(request).render(
        request, "registrations.html", context, account=account, status=http_status
    )


@router.get("/inscriptions")
def registrations(
    request: Request, deps: Deps, account: Clerk, tribunal: str = "", statut: str = "",
    apres: int = 0,
) -> Response:  # fmt: skip
    status = statut if statut in ("active", "revoked") else ""
    return _listing(request, deps, account, tribunal, status, max(apres, 0))


def _back(request: Request) -> Response:
    return RedirectResponse(request.scope.get("root_path", "") + "/inscriptions", status_code=303)


@router.post("/inscriptions")
def add(request: Request, deps: Deps, account: Clerk) -> Response:
    form = form_of(request)
    court = _in_scope(account, str(form.get("court", "")))
    measure, address = str(form.get("measure", "")), str(form.get("address", ""))
    try:
        row = deps.admin.add_registration(court, measure, address, account.actor)
    except GatewayError as exc:
        flash(request, "error", french.message(exc))
        return _back(request)
    flash(request, "ok", f"{row.address} est inscrite pour {court} {row.measure} ; l'avis "
          "d'inscription lui part par courriel.")  # fmt: skip
    return _back(request)


@router.post("/inscriptions/{registration_id}/revoquer")
def revoke(
    request: Request, deps: Deps, account: Clerk,
    registration_id: Annotated[int, Path(ge=1, le=2**31 - 1)],
) -> Response:  # fmt: skip
    courts = sorted(account.scope) if account.scope is not None else [None]
    found = next(
        (row for court in courts for row in deps.admin.list_registrations(court)
         if row["id"] == registration_id),
        None,
    )  # fmt: skip
    if found is None:
        raise NotFound(f"unknown registration {registration_id}")
    try:
        deps.admin.revoke_registration(
            found["court"], found["measure"], found["address"], account.actor
        )
    except GatewayError as exc:
        flash(request, "error", french.message(exc))
        return _back(request)
    flash(request, "ok", f"Inscription de {found['address']} révoquée ; l'avis de révocation "
          "lui part par courriel.")  # fmt: skip
    return _back(request)


@router.post("/inscriptions/import")
def import_csv(request: Request, deps: Deps, account: Clerk) -> Response:
    upload = form_of(request).get("file")
    data = upload.file.read() if isinstance(upload, UploadFile) else b""
    report: dict[str, Any] = {"ok": False, "lines": [(0, "choisissez un fichier CSV")]}
    status = 422
    try:
        if data:
            count = deps.admin.import_registrations(data, account.actor, courts=account.scope)
            report, status = {"ok": True, "count": count}, 200
    except ImportRefused as exc:
        lines = [(line, french.message(GatewayError(text))) for line, text in exc.problems]
        report = {"ok": False, "lines": lines}
    except GatewayError as exc:
        report = {"ok": False, "lines": [(0, french.message(exc))]}
    return _listing(request, deps, account, "", "", 0, {"report": report}, status)


@router.get("/inscriptions/export")
def export_csv(deps: Deps, account: Clerk, tribunal: str = "") -> Response:
    """The active registrations as CSV (court,measure,address,…): the import's format."""
    if tribunal or account.scope is None:
        codes: list[str | None] = [_in_scope(account, tribunal) if tribunal else None]
    else:
        codes = list(sorted(account.scope))
    parts = [deps.admin.export_registrations(code) for code in codes]
    text = parts[0] + "".join(part.split("\n", 1)[1] for part in parts[1:])
    name = f"inscriptions-{codes[0] if tribunal else 'toutes'}.csv"
    return Response(
        text.encode("utf-8"),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
