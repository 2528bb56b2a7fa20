"""The administrators' pages: courts and keys, users, API keys, teletransmission, the outbox, audit.

Secrets made here (an enrolment link, an API key, a credential) are shown once, in the
answer to the form that made them, and never kept in the session cookie.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import RedirectResponse, Response
from starlette.datastructures import UploadFile

from gateway.console import french
from gateway.console.auth_pages import pages
from gateway.console.security import AdminUser, Deps, flash, form_of
from gateway.credentials.service import IssuedCredential
from gateway.errors import GatewayError
from gateway.outbox.operator import STATUSES, list_outbox, retry_now
from gateway.users import Account, Enrolment

router = APIRouter(prefix="/admin")
Id = Annotated[int, Path(ge=1, le=2**31 - 1)]
PAGE = 50


def _to(request: Request, where: str) -> Response:
    return RedirectResponse(f"{request.scope.get('root_path', '')}/admin/{where}", status_code=303)


def _form_text(request: Request, name: str) -> str:
    return str(form_of(request).get(name, "")).strip()


# -- courts and keys ------------------------------------------------------------------
@router.get("/tribunaux")
def courts(request: Request, deps: Deps, account: AdminUser) -> Response:
    context = {"courts": deps.records.courts(None)}
    return pages(request).render(request, "admin_courts.html", context, account=account)


@router.post("/tribunaux")
def add_court(request: Request, deps: Deps, account: AdminUser) -> Response:
    code, name = _form_text(request, "code"), _form_text(request, "name")
    try:
        court = deps.admin.add_court(code, name, account.actor)
        flash(request, "ok", f"Tribunal {court.code} ajouté : déposez maintenant sa clé publique.")
    except GatewayError as exc:
        flash(request, "error", french.message(exc))
    return _to(request, "tribunaux")


@router.post("/tribunaux/{code}/cles")
def add_key(request: Request, deps: Deps, account: AdminUser, code: str) -> Response:
    form = form_of(request)
    upload = form.get("keyfile")
    data = upload.file.read() if isinstance(upload, UploadFile) else b""
    data = data or str(form.get("armored", "")).encode("utf-8")
    try:
        if not data.strip():
            raise GatewayError("no key given")
        added = deps.admin.add_court_key(code, data, account.actor)
        flash(request, "ok", f"Clé {added.fingerprint} ajoutée au tribunal {added.court}.")
    except GatewayError as exc:
        text = "aucune clé fournie" if exc.message == "no key given" else french.message(exc)
        flash(request, "error", f"Clé refusée pour {code[:16]} — {text}")
    return _to(request, "tribunaux")


@router.post("/tribunaux/{code}/cles/{fingerprint}/retirer")
def retire_key(
    request: Request, deps: Deps, account: AdminUser, code: str, fingerprint: str
) -> Response:
    last = _form_text(request, "last") == "oui"
    try:
        retired = deps.admin.retire_court_key(code, fingerprint, account.actor, last=last)
    except GatewayError as exc:
        flash(request, "error", f"Clé non retirée — {french.message(exc)}")
        return _to(request, "tribunaux")
    if retired.active_keys_left:
        flash(
            request,
            "ok",
            f"Clé {retired.fingerprint} retirée du tribunal {retired.court} : les nouveaux "
            "envois ne lui sont plus chiffrés. Gardez sa clé privée tant que des données "
            "chiffrées pour elle sont conservées.",
        )
    else:
        flash(
            request,
            "error",
            f"Clé {retired.fingerprint} retirée : le tribunal {retired.court} n'a plus de clé "
            "active, ses envois sont refusés jusqu'à l'ajout d'une clé.",
        )
    return _to(request, "tribunaux")


# -- users ------------------------------------------------------------------------------
def _users_page(
    request: Request, deps: Any, account: Account, enrolment: Enrolment | None = None
) -> Response:
    link = None
    if enrolment is not None:
        link = f"{deps.config.public_url}{request.scope.get('root_path', '')}/inscription/" + (
            enrolment.token
        )
    context = {
        "users": deps.users.accounts(),
        "courts": deps.records.courts(None),
        "enrolment": enrolment,
        "link": link,
    }
    return pages(request).render(request, "admin_users.html", context, account=account)


@router.get("/utilisateurs")
def users(request: Request, deps: Deps, account: AdminUser) -> Response:
    return _users_page(request, deps, account)


@router.post("/utilisateurs")
def add_user(request: Request, deps: Deps, account: AdminUser) -> Response:
    form = form_of(request)
    role = _form_text(request, "role")
    chosen = [str(code) for code in form.getlist("courts")] if role == "greffe" else []
    try:
        enrolment = deps.users.add(_form_text(request, "email"), role, chosen, account.actor)
    except GatewayError as exc:
        flash(request, "error", french.message(exc))
        return _to(request, "utilisateurs")
    return _users_page(request, deps, account, enrolment)


@router.post("/utilisateurs/{user_id}/desactiver")
def disable_user(request: Request, deps: Deps, account: AdminUser, user_id: Id) -> Response:
    try:
        deps.users.disable(user_id, account.actor)
        flash(request, "ok", f"Compte {user_id} désactivé ; ses sessions sont closes.")
    except GatewayError as exc:
        flash(request, "error", french.message(exc))
    return _to(request, "utilisateurs")


@router.post("/utilisateurs/{user_id}/reinitialiser")
def reset_user(request: Request, deps: Deps, account: AdminUser, user_id: Id) -> Response:
    try:
        enrolment = deps.users.reset(user_id, account.actor)
    except GatewayError as exc:
        flash(request, "error", french.message(exc))
        return _to(request, "utilisateurs")
    return _users_page(request, deps, account, enrolment)


# -- API keys ---------------------------------------------------------------------------
def _keys_page(request: Request, deps: Any, account: Account, issued: Any = None) -> Response:
    context = {"keys": deps.api_keys.list(), "courts": deps.records.courts(None), "issued": issued}
    return pages(request).render(request, "admin_apikeys.html", context, account=account)


@router.get("/cles-api")
def api_keys(request: Request, deps: Deps, account: AdminUser) -> Response:
    return _keys_page(request, deps, account)


@router.post("/cles-api")
def create_key(request: Request, deps: Deps, account: AdminUser) -> Response:
    form = form_of(request)
    role = _form_text(request, "role")
    chosen = [str(code) for code in form.getlist("courts")] if role == "greffe" else []
    try:
        issued = deps.api_keys.create(role, chosen, _form_text(request, "name"), account.actor)
    except GatewayError as exc:
        flash(request, "error", french.message(exc))
        return _to(request, "cles-api")
    return _keys_page(request, deps, account, issued)


@router.post("/cles-api/{key_id}/revoquer")
def revoke_key(request: Request, deps: Deps, account: AdminUser, key_id: Id) -> Response:
    try:
        deps.api_keys.revoke(key_id, account.actor)
        flash(request, "ok", f"Clé d'API {key_id} révoquée.")
    except GatewayError as exc:
        flash(request, "error", french.message(exc))
    return _to(request, "cles-api")


# -- teletransmission: homologated software and credentials ---------------------------
def _teletransmission_page(
    request: Request, deps: Any, account: Account, issued: IssuedCredential | None = None
) -> Response:
    software = deps.credentials.list_software()
    context = {
        "software": software,
        "homologated": [row["name"] for row in software if row["status"] == "homologated"],
        "credentials": list(reversed(deps.credentials.list_credentials())),  # newest first
        "issued": issued,
    }
    return pages(request).render(request, "admin_teletransmission.html", context, account=account)


@router.get("/teletransmission")
def teletransmission(request: Request, deps: Deps, account: AdminUser) -> Response:
    return _teletransmission_page(request, deps, account)


@router.post("/teletransmission/logiciels")
def add_software(request: Request, deps: Deps, account: AdminUser) -> Response:
    name, publisher = _form_text(request, "name"), _form_text(request, "publisher")
    try:
        added = deps.credentials.add_software(name, publisher, account.actor)
        flash(request, "ok", f"Logiciel « {added.name} » homologué.")
    except GatewayError as exc:
        flash(request, "error", french.message(exc))
    return _to(request, "teletransmission")


@router.post("/teletransmission/logiciels/retirer")
def revoke_software(request: Request, deps: Deps, account: AdminUser) -> Response:
    name = _form_text(request, "name")
    try:
        count = deps.credentials.revoke_software(name, account.actor)
        flash(
            request,
            "ok",
            f"Homologation de « {name} » retirée ; identifiants révoqués avec elle : {count}.",
        )
    except GatewayError as exc:
        flash(request, "error", french.message(exc))
    return _to(request, "teletransmission")


@router.post("/teletransmission/identifiants")
def issue_credential(request: Request, deps: Deps, account: AdminUser) -> Response:
    address, software = _form_text(request, "address"), _form_text(request, "software")
    try:
        issued = deps.credentials.issue(address, software, account.actor)
    except GatewayError as exc:
        flash(request, "error", f"Identifiant non délivré — {french.message(exc)}")
        return _to(request, "teletransmission")
    return _teletransmission_page(request, deps, account, issued)


@router.post("/teletransmission/identifiants/{credential_id}/revoquer")
def revoke_credential(
    request: Request, deps: Deps, account: AdminUser, credential_id: Id
) -> Response:
    try:
        deps.credentials.revoke(credential_id, account.actor)
        flash(request, "ok", f"Identifiant {credential_id} révoqué : le logiciel ne peut plus "
              "s'en servir.")  # fmt: skip
    except GatewayError as exc:
        flash(request, "error", french.message(exc))
    return _to(request, "teletransmission")


# -- outbox -----------------------------------------------------------------------------
@router.get("/courriers")
def outbox(
    request: Request, deps: Deps, account: AdminUser, statut: str = "",
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> Response:  # fmt: skip
    status = statut if statut in STATUSES else None
    rows = list(reversed(list_outbox(deps.db, status)))  # newest first
    pages_count = max(1, -(-len(rows) // PAGE))
    context = {
        "rows": rows[(page - 1) * PAGE : page * PAGE], "statut": status or "", "page": page,
        "pages": pages_count, "total": len(rows),
    }  # fmt: skip
    return pages(request).render(request, "admin_outbox.html", context, account=account)


@router.post("/courriers/{outbox_id}/relancer")
def retry(request: Request, deps: Deps, account: AdminUser, outbox_id: Id) -> Response:
    try:
        retry_now(deps.db, outbox_id, deps.clock(), account.actor)
        flash(request, "ok", f"Courrier {outbox_id} relancé : il part au prochain passage.")
    except GatewayError as exc:
        flash(request, "error", french.message(exc))
    return _to(request, "courriers")


# -- audit ------------------------------------------------------------------------------
@router.get("/journal")
def audit(
    request: Request, deps: Deps, account: AdminUser,
    action: Annotated[str, Query(pattern=r"^[a-z0-9_.]{0,64}$")] = "",
    apres: Annotated[int, Query(ge=0)] = 0, verifier: str = "",
) -> Response:  # fmt: skip
    found = deps.records.audit_events(apres, PAGE, action or None)
    context = {
        "events": found.items, "after": found.after, "action": action,
        "verified": deps.records.verify_audit() if verifier else None,
        "emails": {f"user:{row['id']}": row["email"] for row in deps.users.accounts()},
    }  # fmt: skip
    return pages(request).render(request, "admin_audit.html", context, account=account)
