"""The app factory: the FastAPI application with its routes, error handling and body limit."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse
from starlette.exceptions import HTTPException

from gateway.api.bodylimit import BodyLimit
from gateway.api.context import ApiDeps
from gateway.api.problems import (
    MEDIA_TYPE,
    InternalFaults,
    on_domain_error,
    on_http_error,
    on_validation_error,
)
from gateway.api.routes import audit, codes, courts, health, registrations, requests, submissions
from gateway.api.routes import wkd as wkd_routes
from gateway.console.app import create_console
from gateway.errors import GatewayError

DESCRIPTION = """\
The greffe mail gateway's API. Authenticate with an API key from
`gateway api-keys create`: `Authorization: Bearer gk_…`. An `admin` key
manages courts, registrations, codes and the audit; a `greffe` key sees the
requests of its own courts only (any other court's answer 404). Errors are
RFC 9457 problem details. Listings are paged: pass the `next_cursor` of a page
as `cursor` to get the next one.
"""


class GatewayApi(FastAPI):
    """FastAPI with problem responses documented as ``application/problem+json``."""

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            schema = super().openapi()
            for path in schema.get("paths", {}).values():
                for operation in path.values():
                    _problem_media_type(operation.get("responses", {}))
        return super().openapi()


def _problem_media_type(responses: dict[str, Any]) -> None:
    # FastAPI files every documented model under the route's media type (application/json).
    for status, response in responses.items():
        content = response.get("content", {})
        if status[:1] in ("4", "5") and "application/json" in content:
            content[MEDIA_TYPE] = content.pop("application/json")


def create_app(deps: ApiDeps) -> FastAPI:
    app = GatewayApi(
        title="Greffe mail gateway",
        version=_version(),
        description=DESCRIPTION,
        openapi_url="/openapi.json",
        docs_url=None,  # the interactive pages load scripts from a CDN: not on this server
        redoc_url=None,
    )
    app.state.deps = deps
    for module in (health, wkd_routes, courts, registrations, codes, requests, submissions, audit):
        app.include_router(module.router)
    if deps.console is not None:
        app.mount("/console", create_console(deps.console))
        app.add_api_route("/", _to_console, include_in_schema=False)
    app.add_exception_handler(GatewayError, on_domain_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(HTTPException, on_http_error)
    # Added last, so outermost: every fault, the body limit's included, ends as a problem.
    app.add_middleware(BodyLimit, max_bytes=deps.max_body_bytes)
    app.add_middleware(InternalFaults)
    return app


def _to_console() -> RedirectResponse:
    """People who open the server's address land on the clerks' console."""
    return RedirectResponse("/console/", status_code=303)


def _version() -> str:
    try:
        return version("greffe-gateway")
    except PackageNotFoundError:
        return "0"
