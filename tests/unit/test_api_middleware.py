"""The API's two ASGI middlewares on a tiny app: internal faults as 503, the body limit."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.api.bodylimit import BodyLimit
from gateway.api.problems import InternalFaults
from gateway.logs import current_correlation_id

SEEN: list[str | None] = []


async def boom(scope: Scope, receive: Receive, send: Send) -> None:
    SEEN.append(current_correlation_id())  # what every line logged for this request carries
    raise RuntimeError("/secret/path/of/the/server exploded")


async def echo_size(scope: Scope, receive: Receive, send: Send) -> None:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(len(body)).encode()})


def client(app: ASGIApp) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def test_unhandled_exception_is_503_with_correlation_id_and_no_text(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR):
        async with client(InternalFaults(boom)) as http:
            answer = await http.get("/x")
    assert answer.status_code == 503
    assert answer.headers["content-type"] == "application/problem+json"
    assert "secret" not in answer.text and "RuntimeError" not in answer.text
    ref = answer.json()["correlation_id"]
    assert SEEN[-1] == ref  # the request's own id, not one made up for the reply
    assert any(getattr(r, "correlation_id", None) == ref and r.exc_info for r in caplog.records)


async def test_body_limit_refuses_declared_and_streamed_bodies() -> None:
    async with client(InternalFaults(BodyLimit(echo_size, max_bytes=1000))) as http:
        assert (await http.post("/", content=b"x" * 1000)).text == "1000"
        declared = await http.post("/", content=b"x" * 1001)
        assert declared.status_code == 413 and "1000 bytes" in declared.json()["detail"]

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(20):
                yield b"y" * 100

        streamed = await http.post("/", content=chunks())
        assert streamed.status_code == 413
        small = await http.post("/", content=_few())  # chunked, under the limit
        assert small.text == "300"


async def _few() -> AsyncIterator[bytes]:
    for _ in range(3):
        yield b"z" * 100
