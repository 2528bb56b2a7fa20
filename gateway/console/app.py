"""The console's application, mounted under /console/ on the API's server.

Its own FastAPI application so that it has its own middlewares (signed
session cookies, security headers) and answers errors as French HTML pages
rather than the API's problem details.  No OpenAPI document: these are
pages, not an API.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from pathlib import Path
from urllib.parse import quote

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.middleware.sessions import SessionMiddleware

from gateway.api.problems import problem_type_for
from gateway.console import admin_pages, auth_pages, french, queue_pages, registration_pages
from gateway.console.context import ConsoleDeps
from gateway.console.pages import Pages
from gateway.console.security import CsrfRefused, LoginRequired, SecurityHeaders, csrf_guard
from gateway.errors import GatewayError, NotFound, NotPermitted, Throttled
from gateway.logs import current_correlation_id

log = logging.getLogger("gateway.console")
STATIC = Path(__file__).parent / "static"
COOKIE = "greffe_console"


def session_key(server_secret: bytes) -> bytes:
    """The cookie-signing key: the server secret's, domain-separated from its other uses."""
    return hmac.new(server_secret, b"greffe-console-session", hashlib.sha256).digest()


def create_console(deps: ConsoleDeps) -> FastAPI:
    app = FastAPI(
        openapi_url=None, docs_url=None, redoc_url=None, dependencies=[Depends(csrf_guard)]
    )
    app.state.console = deps
    app.state.pages = Pages(deps.config.templates_dir)
    for module in (auth_pages, queue_pages, registration_pages, admin_pages):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_exception_handler(GatewayError, on_domain_error)
    app.add_exception_handler(HTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(Exception, on_fault)
    app.add_middleware(
        SessionMiddleware,
        secret_key=deps.config.session_key.hex(),
        session_cookie=COOKIE,
        max_age=int(deps.config.session_lifetime.total_seconds()),
        path="/console",
        same_site="strict",
        https_only=deps.config.secure_cookies,
    )
    app.add_middleware(SecurityHeaders)  # outermost: every answer carries the headers
    return app


def _error_page(request: Request, status: int, heading: str, text: str) -> Response:
    pages = request.app.state.pages
    assert isinstance(pages, Pages)
    context = {"status": status, "heading": heading, "text": text}
    return pages.render(request, "error.html", context, status=status)


async def on_domain_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    root = request.scope.get("root_path", "")
    if isinstance(exc, LoginRequired):
        wanted = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        suite = f"?suite={quote(wanted)}" if request.method == "GET" else ""
        return RedirectResponse(f"{root}/connexion{suite}", status_code=303)
    if isinstance(exc, CsrfRefused):
        return _error_page(request, 403, "Formulaire refusé",
                           "Ce formulaire a expiré ou ne vient pas de cette page. Revenez en "
                           "arrière, rechargez la page et recommencez.")  # fmt: skip
    if isinstance(exc, NotPermitted):
        return _error_page(request, 403, "Accès refusé", "Cette page est réservée aux "
                           "administrateurs.")  # fmt: skip
    if isinstance(exc, NotFound):
        return _error_page(request, 404, "Introuvable", french.message(exc))
    if isinstance(exc, Throttled):
        return _error_page(request, 429, "Trop de tentatives", "Réessayez plus tard.")
    kind = problem_type_for(exc)
    if kind is None or kind.status >= 500:
        return await on_fault(request, exc)
    return _error_page(request, kind.status, french.title(exc), french.message(exc))


async def on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return _error_page(request, 404, "Introuvable", "Cette page n'existe pas.")
    if exc.status_code == 405:
        return _error_page(request, 405, "Méthode refusée", "Cette adresse ne s'utilise pas ainsi.")
    return _error_page(request, exc.status_code, "Demande refusée", "La demande est invalide.")


async def on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    # A malformed reference in the path reads like an unknown one: nothing to probe.
    if any(error.get("loc", ("",))[0] == "path" for error in exc.errors()):
        return _error_page(request, 404, "Introuvable", "Cette page n'existe pas.")
    return _error_page(request, 400, "Demande invalide", "Un paramètre de l'adresse est invalide.")


async def on_fault(request: Request, exc: Exception) -> Response:
    """Our own fault: a French page naming the correlation id (the traceback is logged)."""
    ref = current_correlation_id() or "?"
    if isinstance(exc, GatewayError):
        if problem_type_for(exc) is not None:  # temporary: the database or the disk
            log.warning("console: %s in %s", exc.message, request.url.path, exc_info=exc)
            return _error_page(request, 503, french.title(exc), "Réessayez dans un instant.")
        # Handled here and never re-raised: logged here.
        log.error("console: internal error in %s", request.url.path, exc_info=exc)
    # Any other exception is re-raised after this page and logged by the API's InternalFaults.
    return _error_page(
        request,
        503,
        "Erreur interne",
        f"Une erreur interne est survenue ; réessayez plus tard (réf. {ref}).",
    )
