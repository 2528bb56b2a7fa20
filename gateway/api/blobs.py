"""How an encrypted blob goes out: the stored OpenPGP bytes, named, with their SHA-256."""

from __future__ import annotations

import base64
from typing import Any

from fastapi import Response

from gateway.api.problems import documented
from gateway.records import StoredBytes

MEDIA_TYPE = "application/octet-stream"
BLOB_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "A binary OpenPGP message encrypted to the court's keys",
        "content": {MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
        "headers": {
            "Repr-Digest": {
                "description": "sha-256 of these bytes (RFC 9530)",
                "schema": {"type": "string"},
            }
        },
    },
    **documented(404),
}


def blob_response(stored: StoredBytes) -> Response:
    digest = base64.b64encode(bytes.fromhex(stored.sha256)).decode("ascii")
    return Response(
        stored.data,
        media_type=MEDIA_TYPE,
        headers={
            "Content-Disposition": f'attachment; filename="{stored.filename}"',
            "Repr-Digest": f"sha-256=:{digest}:",
        },
    )
