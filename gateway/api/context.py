"""What the API's routes are handed: the services they call, built by `gateway.app`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from prometheus_client import CollectorRegistry

from gateway.admin import Admin
from gateway.apikeys import ApiKeys
from gateway.console.context import ConsoleDeps
from gateway.ingest.codereq import CodeIssuer
from gateway.readiness import ReadinessCheck
from gateway.records import Records
from gateway.review import ReviewDesk
from gateway.wkd import WkdDirectory


@dataclass(frozen=True)
class ApiDeps:
    """The API's collaborators; the app factory keeps them in the app's state."""

    api_keys: ApiKeys
    admin: Admin
    codes: CodeIssuer
    review: ReviewDesk
    records: Records
    wkd: WkdDirectory
    metrics: CollectorRegistry
    """The registry /metrics exposes (under --workers: every process's, aggregated)."""
    readiness: Sequence[ReadinessCheck]
    max_body_bytes: int
    console: ConsoleDeps | None = None
    """The clerks' console, mounted under /console/ (None: no console on this server)."""


def get_deps(request: Request) -> ApiDeps:
    deps = request.app.state.deps
    assert isinstance(deps, ApiDeps)
    return deps


Deps = Annotated[ApiDeps, Depends(get_deps)]
