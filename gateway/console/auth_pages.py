"""Logging in and out, and enrolling from the link `gateway users add` printed."""

from __future__ import annotations

import re

import segno
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from gateway.console import french
from gateway.console.pages import Pages
from gateway.console.security import (
    Clerk,
    Deps,
    client_of,
    end_session,
    flash,
    form_of,
    start_session,
)
from gateway.errors import GatewayError, InputError, NotFound, Throttled
from gateway.users import LoginRefused, PendingEnrolment

router = APIRouter()
_NEXT = re.compile(r"/[A-Za-z0-9/_.-]{0,200}(\?[A-Za-z0-9=&_.%-]{0,400})?")


def pages(request: Request) -> Pages:
    found = request.app.state.pages
    assert isinstance(found, Pages)
    return found


def safe_next(root: str, value: object) -> str:
    """Where to go after login: a console path only (never another site: no open redirect)."""
    text = str(value or "")
    # No dot segment either: "/console/../x" would leave the console once the browser resolves it.
    inside = text.startswith(root + "/") and not text.startswith("//") and ".." not in text
    if inside and _NEXT.fullmatch(text):
        return text
    return root + "/"


@router.get("/connexion")
def login_page(request: Request, suite: str = "") -> Response:
    return pages(request).render(request, "login.html", {"next": suite, "email": ""})


@router.post("/connexion")
def login(request: Request, deps: Deps) -> Response:
    form = form_of(request)
    email, password, code = (str(form.get(name, "")) for name in ("email", "password", "code"))
    root = request.scope.get("root_path", "")
    context = {"next": str(form.get("next", "")), "email": email[:320]}
    try:
        account = deps.users.login(email, password, code, client_of(request))
    except Throttled:
        context["error"] = "Trop de tentatives échouées : réessayez dans quelques minutes."
        return pages(request).render(request, "login.html", context, status=429)
    except LoginRefused:
        context["error"] = "Identifiant, mot de passe ou code à usage unique incorrect."
        return pages(request).render(request, "login.html", context, status=401)
    start_session(request, account, deps.clock().timestamp())
    return RedirectResponse(safe_next(root, form.get("next")), status_code=303)


@router.post("/deconnexion")
def logout(request: Request, deps: Deps, account: Clerk) -> Response:
    deps.users.logout(account, client_of(request))
    end_session(request)
    flash(request, "info", "Vous êtes déconnecté.")
    return RedirectResponse(request.scope.get("root_path", "") + "/connexion", status_code=303)


@router.get("/inscription/{token}")
def enrol_page(request: Request, deps: Deps, token: str) -> Response:
    pending = deps.users.pending(token)
    return _enrol_form(request, pending, token)


@router.post("/inscription/{token}")
def enrol(request: Request, deps: Deps, token: str) -> Response:
    form = form_of(request)
    password, confirm, code = (str(form.get(name, "")) for name in ("password", "confirm", "code"))
    try:
        deps.users.enrol(token, password, confirm, code)
    except NotFound:
        raise
    except InputError as exc:
        return _enrol_form(request, deps.users.pending(token), token, french.message(exc), 422)
    except GatewayError as exc:
        return _enrol_form(request, deps.users.pending(token), token, french.message(exc), 409)
    flash(request, "ok", "Votre compte est actif : connectez-vous avec votre mot de passe et "
          "un code de votre application d'authentification.")  # fmt: skip
    return RedirectResponse(request.scope.get("root_path", "") + "/connexion", status_code=303)


def _enrol_form(
    request: Request, pending: PendingEnrolment, token: str, error: str = "", status: int = 200
) -> Response:
    qr = segno.make(pending.provisioning_uri, error="m")
    grouped = " ".join(pending.secret[i : i + 4] for i in range(0, len(pending.secret), 4))
    context = {
        "email": pending.email,
        "qr": qr.svg_data_uri(scale=5, border=2),
        "secret": grouped,
        "token": token,
        "error": error,
    }
    return pages(request).render(request, "enrol.html", context, status=status)
