"""The one table from domain errors to HTTP statuses, and RFC 9457 problem details for each.

Every error the API answers is ``application/problem+json``: ``type`` (a URN
naming the kind of problem), ``title``, ``status`` and ``detail`` (the domain
error's message, which is safe to show), plus ``problems`` for a refused
CSV import and ``errors`` for a request that does not validate.  Our own
faults (an exception that is not a domain error) answer ``503`` with a
correlation id that is logged with the traceback, never the exception's text,
like ``451 4.3.0 … (ref …)`` on SMTP.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import errors
from gateway.api.schemas import Problem
from gateway.logs import CORRELATION_FIELD, correlation, current_correlation_id, new_correlation_id

log = logging.getLogger("gateway.api")
MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:greffe-gateway:problem:"


@dataclass(frozen=True, slots=True)
class ProblemType:
    status: int
    slug: str
    title: str


INTERNAL = ProblemType(503, "internal", "Temporary internal error")
NOT_READY = ProblemType(503, "not-ready", "Not ready")
MALFORMED_JSON = ProblemType(400, "malformed-json", "Malformed JSON body")
INVALID_REQUEST = ProblemType(422, "invalid-request", "Request does not validate")

# Order matters: the first class that matches wins, so subclasses come first.
_TABLE: list[tuple[type[errors.GatewayError], ProblemType]] = [
    (errors.ImportRefused, ProblemType(422, "import-refused", "CSV import refused")),
    (errors.BodyTooLarge, ProblemType(413, "body-too-large", "Request body too large")),
    (errors.InputError, ProblemType(422, "invalid-input", "Invalid input")),
    (errors.KeyRefused, ProblemType(422, "key-refused", "OpenPGP key refused")),
    (errors.NotFound, ProblemType(404, "not-found", "Not found")),
    (errors.WrongStatus, ProblemType(409, "wrong-status", "Request not in a status for this")),
    (errors.Conflict, ProblemType(409, "conflict", "Conflict")),
    (errors.Unauthenticated, ProblemType(401, "unauthenticated", "Authentication required")),
    (errors.NotPermitted, ProblemType(403, "forbidden", "Not permitted for this key's role")),
    (errors.Throttled, ProblemType(429, "throttled", "Too many requests")),
    (errors.DiskFull, ProblemType(503, "insufficient-storage", "Insufficient storage")),
    (errors.TemporaryFailure, ProblemType(503, "unavailable", "Temporarily unavailable")),
]
_HEADERS: dict[int, dict[str, str]] = {
    401: {"WWW-Authenticate": 'Bearer realm="greffe-gateway"'},
    429: {"Retry-After": "60"},
    503: {"Retry-After": "30"},
}
# Starlette's own HTTP errors (no such route, wrong method …) by status.
_HTTP_SLUGS = {404: "not-found", 405: "method-not-allowed", 406: "not-acceptable",
               415: "unsupported-media-type"}  # fmt: skip
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


_DESCRIPTIONS = {
    400: "Malformed JSON body or bad request",
    401: "No API key, or an unknown, revoked or wrong one",
    403: "The key's role may not do this",
    404: "Not found (or outside the key's courts)",
    409: "Conflict with the current state",
    413: "Request body too large",
    415: "Unsupported media type",
    422: "The request does not validate",
    429: "Too many failed authentications from this address",
    503: "Temporarily unavailable (internal errors carry a correlation id)",
}
API_STATUSES = (400, 401, 403, 404, 409, 413, 422, 429, 503)


def documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for problem statuses (the app serves them as problem+json)."""
    return {status: {"model": Problem, "description": _DESCRIPTIONS[status]} for status in statuses}


class ProblemResponse(JSONResponse):
    media_type = MEDIA_TYPE


def problem(
    kind: ProblemType,
    detail: str,
    extra: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> ProblemResponse:
    body = {
        "type": TYPE_PREFIX + kind.slug,
        "title": kind.title,
        "status": kind.status,
        "detail": _CONTROL.sub("?", detail)[:1000],
        **(extra or {}),
    }
    return ProblemResponse(
        body, status_code=kind.status, headers={**_HEADERS.get(kind.status, {}), **(headers or {})}
    )


def problem_type_for(error: errors.GatewayError) -> ProblemType | None:
    """The problem type of a domain error, or None for one that is our own fault."""
    for cls, kind in _TABLE:
        if isinstance(error, cls):
            return kind
    return None


def internal_problem(where: str, exc: BaseException) -> ProblemResponse:
    """Log the fault under the request's correlation id and answer 503 naming only that id."""
    ref = current_correlation_id() or new_correlation_id()
    log.error("internal error in %s", where, exc_info=exc, extra={CORRELATION_FIELD: ref})
    return problem(
        INTERNAL, f"temporary internal error, try again later (ref {ref})", {"correlation_id": ref}
    )


def domain_response(error: errors.GatewayError, where: str) -> ProblemResponse:
    kind = problem_type_for(error)
    if kind is None:
        return internal_problem(where, error)
    extra: dict[str, Any] = {}
    if isinstance(error, errors.ImportRefused):
        extra["problems"] = [{"line": line, "problem": text} for line, text in error.problems]
    return problem(kind, error.message, extra)


async def on_domain_error(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, errors.GatewayError)
    return domain_response(exc, request.url.path)


async def on_validation_error(request: Request, exc: Exception) -> ProblemResponse:
    """A request that does not validate: malformed JSON is 400, anything else 422 by field."""
    assert isinstance(exc, RequestValidationError)
    found = list(exc.errors())
    if any(error.get("type") == "json_invalid" for error in found):
        return problem(MALFORMED_JSON, "the request body is not well-formed JSON")
    described = [_describe(error) for error in found]
    detail = "; ".join(f"{item['field']}: {item['problem']}" for item in described[:5])
    return problem(INVALID_REQUEST, detail or "request does not validate", {"errors": described})


def _describe(error: Mapping[str, Any]) -> dict[str, str]:
    # The input itself is never echoed: it may be large, or something the client mistyped.
    location = [str(part) for part in error.get("loc", ())]
    where = location[0] if location else "request"
    field = ".".join(location[1:]) or where
    kind = error.get("type")
    if kind == "extra_forbidden":
        message = "unknown field"
    elif location == ["body"] and kind in ("dict_type", "model_attributes_type"):
        message = "expected a JSON object (Content-Type: application/json)"
    else:
        message = str(error.get("msg"))
    return {"in": where, "field": field, "problem": message}


async def on_http_error(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, HTTPException)
    slug = _HTTP_SLUGS.get(exc.status_code, "http-error")
    title = {404: "Not found", 405: "Method not allowed"}.get(exc.status_code, "Request refused")
    detail = "no such endpoint" if exc.status_code == 404 else str(exc.detail)
    return problem(ProblemType(exc.status_code, slug, title), detail, headers=exc.headers)


class InternalFaults:
    """ASGI middleware: each request's correlation id, and a 503 problem for what nobody handled.

    Every line logged while a request runs (worker threads included) carries
    its correlation id (`gateway.logs.correlation`).  Starlette's own last
    resort answers 500 (with the text in debug mode) and re-raises; this one
    answers 503 naming the id, and stops there.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        with correlation():
            try:
                await self.app(scope, receive, tracking_send)
            except Exception as exc:
                response = internal_problem(str(scope.get("path", "?")), exc)
                if not started:  # else the client sees a cut-off response: nothing else to do
                    await response(scope, receive, send)
