"""The greffe's client of the gateway API: the calls `greffe sync` makes, each error one line.

Every failure becomes a domain error whose message names what is wrong:
`GatewayUnreachable` (no connection, TLS, timeout) and `ApiRefused` (401,
403, 429: the key or the address) stop a run, since nothing else would
work either; `ApiAnswer` (any other status, a body that is not what the
API sends) concerns one call, and `greffe sync` reports it against the
request it was fetching and goes on with the others.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx

from gateway.errors import GatewayError

USER_AGENT = "greffe-gateway-sync/1"
PAGE_LIMIT = 500  # the API's largest page (api/paging.py MAX_LIMIT)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class GatewayUnreachable(GatewayError):
    """The gateway's API cannot be reached (connection, TLS or timeout); never an SMTP reply."""


class ApiRefused(GatewayError):
    """The gateway refused the API key or this address (401, 403, 429)."""


class ApiAnswer(GatewayError):
    """The gateway answered one call with an error or something that is not the API's."""

    def __init__(self, message: str, *, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class GreffeApi:
    """Bearer-authenticated calls to /api/v1 of one gateway."""

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        ca_file: Path | None = None,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._client = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {api_key}", "User-Agent": USER_AGENT},
            timeout=timeout,
            verify=str(ca_file) if ca_file else True,
            transport=transport,
            follow_redirects=False,
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> GreffeApi:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def requests(self, court: str | None, since: str | None) -> Iterator[dict[str, Any]]:
        """Every request the key sees (of `court` if given, changed at or after `since`)."""
        params: dict[str, str | int] = {"limit": PAGE_LIMIT}
        if court:
            params["court"] = court
        if since:
            params["since"] = since
        while True:
            page = self._json("GET", "/api/v1/requests", params)
            items, cursor = page.get("items"), page.get("next_cursor")
            if not isinstance(items, list) or not (cursor is None or isinstance(cursor, str)):
                raise ApiAnswer(f"{self.url} does not answer like the gateway API (requests)")
            yield from items
            if not cursor:
                return
            params["cursor"] = cursor

    def request(self, reference: str) -> dict[str, Any]:
        """One request with its submissions and their documents (index, type, size, SHA-256)."""
        return self._json("GET", f"/api/v1/requests/{reference}")

    def request_manifest(self, reference: str) -> dict[str, Any]:
        return self._json("GET", f"/api/v1/requests/{reference}/manifest")

    def acknowledge(self, reference: str) -> dict[str, Any]:
        return self._json("POST", f"/api/v1/requests/{reference}/acknowledge")

    def blob(self, path: str) -> bytes:
        """Stored OpenPGP bytes, checked against their Repr-Digest (RFC 9530) when it is given."""
        response = self._call("GET", path)
        data = response.content
        digest = _repr_digest(response.headers)
        if digest is not None and digest != hashlib.sha256(data).digest():
            raise ApiAnswer(f"{path}: the bytes received do not match their Repr-Digest")
        return data

    def _json(
        self, method: str, path: str, params: Mapping[str, str | int] | None = None
    ) -> dict[str, Any]:
        response = self._call(method, path, params)
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise ApiAnswer(f"{self.url} does not answer like the gateway API ({path})")
        return body

    def _call(
        self, method: str, path: str, params: Mapping[str, str | int] | None = None
    ) -> httpx.Response:
        try:
            response = self._client.request(method, path, params=params)
        except httpx.TimeoutException:
            raise GatewayUnreachable(f"cannot reach {self.url}: timed out") from None
        except httpx.HTTPError as exc:  # connection refused, DNS, TLS, protocol
            raise GatewayUnreachable(f"cannot reach {self.url}: {_reason(exc)}") from None
        if response.status_code < 300:
            return response
        raise _refusal(self.url, path, response)


def _refusal(url: str, path: str, response: httpx.Response) -> GatewayError:
    status = response.status_code
    if status == 401:
        return ApiRefused(f"API key refused by {url} (401): check the key file")
    if status == 403:
        return ApiRefused(f"API key may not do this on {url} (403): {_detail(response)}")
    if status == 429:
        return ApiRefused(f"{url} is throttling this address (429); try again later")
    return ApiAnswer(f"{path}: the gateway answered {status} ({_detail(response)})", status=status)


def _detail(response: httpx.Response) -> str:
    """The problem-details `detail` (RFC 9457), one short printable line; else the reason."""
    try:
        body = response.json()
    except ValueError:
        body = None
    text = body.get("detail") if isinstance(body, dict) else None
    if not isinstance(text, str) or not text:
        text = response.reason_phrase or "no detail"
    return _CONTROL.sub(" ", text)[:200]


def _reason(exc: httpx.HTTPError) -> str:
    text = str(exc) or type(exc).__name__
    lowered = text.lower()
    if "refused" in lowered:
        return "connection refused"
    if "certificate" in lowered:
        return "its TLS certificate is not trusted (see --ca-file)"
    if "name or service not known" in lowered or "nodename nor servname" in lowered:
        return "unknown host name"
    return _CONTROL.sub(" ", re.sub(r"^\[Errno -?\d+\]\s*", "", text))[:200]


def _repr_digest(headers: httpx.Headers) -> bytes | None:
    """The sha-256 of a `Repr-Digest: sha-256=:BASE64:` header, None when absent or unreadable."""
    found = re.search(r"sha-256=:([A-Za-z0-9+/=]+):", headers.get("repr-digest", ""))
    if found is None:
        return None
    try:
        return base64.b64decode(found.group(1), validate=True)
    except ValueError:
        return None
