"""Bearer API keys on every /api/v1 route: who is asking, and may an admin-only route answer."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from gateway.api.context import Deps
from gateway.apikeys import Principal
from gateway.errors import NotPermitted

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="apiKey",
    description="An API key from `gateway api-keys create`: `Authorization: Bearer gk_…`.",
)


def authenticated(
    request: Request,
    deps: Deps,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    """The key's principal; 401 without a valid key, 429 once the address is locked out."""
    # The socket's peer: forwarded-for headers are never trusted for throttling.
    client = request.client.host if request.client else "unknown"
    return deps.api_keys.authenticate(credentials.credentials if credentials else None, client)


def admin_only(principal: Annotated[Principal, Depends(authenticated)]) -> Principal:
    if not principal.is_admin:
        raise NotPermitted("this needs an admin key")
    return principal


AnyKey = Annotated[Principal, Depends(authenticated)]
AdminKey = Annotated[Principal, Depends(admin_only)]
