"""/healthz (the process answers), /readyz (it can take work) and /metrics (Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.api.context import Deps
from gateway.api.problems import NOT_READY, documented, problem
from gateway.api.schemas import Health, Ready
from gateway.readiness import run_checks

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
def healthz() -> dict[str, str]:
    """The process answers (nothing else is checked)."""
    return {"status": "ok"}


@router.get("/readyz", response_model=Ready, responses=documented(503))
def readyz(deps: Deps) -> Response | dict[str, object]:
    """Database reachable, blob store writable, free disk above the reserve, keys loaded."""
    checks = run_checks(deps.readiness)
    failing = sorted(name for name, result in checks.items() if result != "ok")
    if failing:
        return problem(NOT_READY, "failing: " + ", ".join(failing), {"checks": checks})
    return {"status": "ready", "checks": checks}


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
def metrics(deps: Deps) -> Response:
    """Prometheus text exposition."""
    return Response(generate_latest(deps.metrics), media_type=CONTENT_TYPE_LATEST)
