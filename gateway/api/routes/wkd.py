"""The gateway's signing key by Web Key Directory (`gateway.wkd`) under /.well-known/openpgpkey/."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from gateway.api.context import Deps
from gateway.api.problems import documented
from gateway.errors import NotFound
from gateway.wkd import WELL_KNOWN

router = APIRouter(tags=["wkd"])


@router.get(
    WELL_KNOWN + "{path:path}",
    response_class=Response,
    responses={
        200: {
            "description": "The binary public key (hu/…), or the empty policy file",
            "content": {"application/octet-stream": {}, "text/plain": {}},
        },
        **documented(404),
    },
)
def wkd(path: str, request: Request, deps: Deps) -> Response:
    """The direct method's paths: ``hu/<z-base-32 hash>?l=<local part>`` and ``policy``."""
    answer = deps.wkd.lookup(request.url.path, request.headers.get("host"))
    if answer is None:
        raise NotFound("no key published here")
    return Response(answer.body, media_type=answer.content_type, headers=dict(answer.headers))
