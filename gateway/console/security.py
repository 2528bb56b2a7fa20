"""The console's defences: session accounts, idle timeout, the CSRF check, security headers.

A session is a cookie signed with a key derived from the server secret
(Starlette's `SessionMiddleware`, itsdangerous), HttpOnly, SameSite=Strict,
Secure under HTTPS, scoped to /console.  It names the account and the
account's session generation: logging out or disabling the account bumps
the generation, so a copied cookie dies with it.  Each session carries a
random CSRF token that every POST must echo in its `csrf` field; the form
is read (and the token checked) before any route runs.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated, Any

from fastapi import Depends, Request
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.console.context import ConsoleDeps
from gateway.errors import GatewayError, NotPermitted
from gateway.users import Account

CSP = (
    "default-src 'self'; script-src 'self'; object-src 'none'; frame-ancestors 'none'; "
    "img-src 'self' data: blob:; frame-src blob:; base-uri 'none'; form-action 'self'"
)
"""No inline script or style anywhere; decrypted documents are shown from blob: URLs."""
HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=()",
}
CSRF_FIELD = "csrf"


class LoginRequired(GatewayError):
    """No session, or one that expired: the console answers with the login page."""


class CsrfRefused(NotPermitted):
    """A form posted without this session's CSRF token."""


class SecurityHeaders:
    """ASGI middleware: the CSP and friends on every console response; pages never cached."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS.items():
                    headers[name] = value
                if not str(scope.get("path", "")).startswith(_static_prefix(scope)):
                    headers["cache-control"] = "no-store"
            await send(message)

        await self.app(scope, receive, with_headers)


def _static_prefix(scope: Scope) -> str:
    return str(scope.get("root_path", "")) + "/static/"


def get_deps(request: Request) -> ConsoleDeps:
    deps = request.app.state.console
    assert isinstance(deps, ConsoleDeps)
    return deps


Deps = Annotated[ConsoleDeps, Depends(get_deps)]


def csrf_token(request: Request) -> str:
    """This session's CSRF token (drawn on first use)."""
    token = request.session.get(CSRF_FIELD)
    if not isinstance(token, str) or len(token) < 32:
        token = secrets.token_urlsafe(32)
        request.session[CSRF_FIELD] = token
    return token


async def csrf_guard(request: Request) -> None:
    """Every POST: read the form and refuse it unless it carries the session's token."""
    if request.method != "POST":
        return
    form = await request.form()
    request.state.form = form
    sent = form.get(CSRF_FIELD)
    expected = request.session.get(CSRF_FIELD)
    if not (isinstance(sent, str) and isinstance(expected, str) and expected):
        raise CsrfRefused("form without its security token")
    if not hmac.compare_digest(sent.encode(), expected.encode()):
        raise CsrfRefused("form with a wrong security token")


def form_of(request: Request) -> Any:
    """The form `csrf_guard` read (a Starlette FormData)."""
    return request.state.form


def client_of(request: Request) -> str:
    # The socket's peer: forwarded-for headers are never trusted for throttling.
    return request.client.host if request.client else "unknown"


def signed_in(request: Request, deps: Deps) -> Account:
    """The session's account; LoginRequired when there is none, or it went idle or stale."""
    session = request.session
    user_id, generation = session.get("uid"), session.get("gen")
    if not isinstance(user_id, int) or not isinstance(generation, int):
        raise LoginRequired("login required")
    now = deps.clock().timestamp()
    config = deps.config
    seen, since = float(session.get("seen", 0)), float(session.get("login_at", 0))
    expired = now - seen > config.idle_timeout.total_seconds() or (
        now - since > config.session_lifetime.total_seconds()
    )
    account = None if expired else deps.users.session_account(user_id, generation)
    if account is None:
        end_session(request)
        flash(request, "info", "Votre session a pris fin : reconnectez-vous.")
        raise LoginRequired("session expired")
    session["seen"] = now
    return account


def admin_only(account: Annotated[Account, Depends(signed_in)]) -> Account:
    if not account.is_admin:
        raise NotPermitted("réservé aux administrateurs")
    return account


Clerk = Annotated[Account, Depends(signed_in)]
AdminUser = Annotated[Account, Depends(admin_only)]


def start_session(request: Request, account: Account, now: float) -> None:
    """A fresh session for the account: a new CSRF token, nothing kept from before login."""
    request.session.clear()
    request.session.update(
        {"uid": account.id, "gen": account.generation, "login_at": now, "seen": now,
         CSRF_FIELD: secrets.token_urlsafe(32)}
    )  # fmt: skip


def end_session(request: Request) -> None:
    request.session.clear()
    csrf_token(request)


def flash(request: Request, level: str, text: str) -> None:
    """A short message for the next page (kept in the cookie: never a secret)."""
    messages = list(request.session.get("flash", []))[-4:]
    messages.append([level, text[:300]])
    request.session["flash"] = messages


def take_flashes(request: Request) -> list[tuple[str, str]]:
    messages = request.session.pop("flash", [])
    return [(str(level), str(text)) for level, text in messages]
