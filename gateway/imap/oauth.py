"""OAuth2 access tokens for IMAP: the refresh-token grant or a command, cached; the SASL responses.

A mailbox with `auth = "xoauth2"` or `"oauthbearer"` logs in with an access
token instead of a password.  The token comes from a `TokenSource`:

* `RefreshTokenSource` runs the refresh-token grant (RFC 6749 section 6)
  against the configured token endpoint, keeps the access token until
  `margin` before it expires, and writes a rotated refresh token back to its
  file atomically (temporary file in the same directory, fsync, rename,
  mode 0600), since a provider that rotates may stop honouring the old one;
* `CommandTokenSource` runs an operator's program (argv, no shell, bounded
  in time and output) and takes the first line it prints.

`token(refresh=True)` is asked for when the server refused the last token:
the source gets a new one whatever its clock says.  No token, refresh token
or client secret is ever logged or put in an error message.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from gateway.errors import ConfigError, ImapUnavailable
from gateway.settings import ImapMailbox, mailbox_auth_problem

if TYPE_CHECKING:  # httpx is imported by the grant, not by every mailbox's start
    import httpx

log = logging.getLogger("gateway.imap")
DEFAULT_MARGIN = 120.0
"""Seconds before expiry at which a cached access token is replaced (capped at a quarter
of its lifetime, so a short-lived token is not refreshed on every use)."""
MAX_COMMAND_OUTPUT = 64 * 1024
# RFC 6750 section 2.1 b64token: what a bearer token may hold.  Anything else (a
# space, a control character) could split the SASL message or the IMAP line.
_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_ERROR_CODE = re.compile(r"[a-z_]{1,40}")


class TokenSource(Protocol):
    """Where a mailbox's access tokens come from."""

    async def token(self, *, refresh: bool = False) -> str:
        """An access token; with refresh, a new one (the server refused the last)."""
        ...


# -- SASL initial client responses ------------------------------------------------------
def xoauth2_response(user: str, token: str) -> str:
    """base64("user=" user ^A "auth=Bearer " token ^A ^A), Google's and Microsoft's XOAUTH2."""
    _check_sasl_value(user)
    return _b64(f"user={user}\x01auth=Bearer {_checked_token(token)}\x01\x01")


def oauthbearer_response(user: str, token: str, host: str, port: int) -> str:
    """The OAUTHBEARER initial response of RFC 7628 section 3.1 (GS2 header with authzid)."""
    _check_sasl_value(user)
    saslname = user.replace("=", "=3D").replace(",", "=2C")  # RFC 5801 section 4
    return _b64(
        f"n,a={saslname},\x01host={host}\x01port={port}\x01"
        f"auth=Bearer {_checked_token(token)}\x01\x01"
    )


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


SASL_ABORT = {"XOAUTH2": "", "OAUTHBEARER": _b64("\x01")}
"""What to answer the server's error challenge with, so it ends the exchange with NO:
XOAUTH2 an empty response (Google's XOAUTH2 protocol page), OAUTHBEARER a single
%x01 (RFC 7628 section 3.2.3)."""


def _check_sasl_value(value: str) -> None:
    if not value or any(ord(char) < 0x20 for char in value):
        raise ConfigError("invalid configuration: imap username holds a control character")


def _checked_token(token: str) -> str:
    if not _TOKEN.fullmatch(token):
        raise ImapUnavailable("the token source returned a malformed access token")
    return token


# -- the refresh-token grant ----------------------------------------------------------------
class RefreshTokenSource:
    """The refresh-token grant over HTTPS, its access token cached until `margin` before expiry."""

    def __init__(
        self,
        mailbox: ImapMailbox,
        *,
        margin: float = DEFAULT_MARGIN,
        clock: Callable[[], float] = time.monotonic,
        http: Callable[[], httpx.AsyncClient] | None = None,
    ) -> None:
        if mailbox.refresh_token_file is None:
            raise ConfigError(f"imap.mailboxes[{mailbox.name}]: refresh_token_file is required")
        self.name = mailbox.name
        self._mailbox = mailbox
        self._file = mailbox.refresh_token_file
        self._margin, self._clock = margin, clock
        self._http = http or self._default_http
        self._lock = asyncio.Lock()
        self._access: str | None = None
        self._renew_at = 0.0
        self._refresh_token: str | None = None  # one that could not be written back
        self.grants = 0
        """Grants run so far (for the metrics and tests)."""

    def __repr__(self) -> str:
        return f"RefreshTokenSource({self.name!r})"

    async def token(self, *, refresh: bool = False) -> str:
        async with self._lock:  # one grant at a time: a rotated refresh token is single-use
            if self._access is not None and not refresh and self._clock() < self._renew_at:
                return self._access
            return await self._grant()

    async def _grant(self) -> str:
        started = self._clock()
        current = self._refresh_token
        if current is None:
            current = await asyncio.to_thread(self._read_refresh_token)
        body = await self._post(self._form(current))
        access = body.get("access_token")
        if not isinstance(access, str) or not access:
            raise ImapUnavailable(
                f"imap {self.name}: the token endpoint answered without an access token"
            )
        self._access = _checked_token(access)
        self._renew_at = started + _renew_after(body.get("expires_in"), self._margin)
        self.grants += 1
        rotated = body.get("refresh_token")
        if isinstance(rotated, str) and rotated and rotated != current:
            await self._keep(rotated)
        log.info("imap access token obtained", extra={"mailbox": self.name})
        return self._access

    def _form(self, refresh_token: str) -> dict[str, str]:
        form = {
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": self._mailbox.client_id,
        }
        secret = self._client_secret()
        if secret:
            form["client_secret"] = secret
        if self._mailbox.scope:
            form["scope"] = self._mailbox.scope
        return form

    async def _post(self, form: dict[str, str]) -> dict[str, Any]:
        import httpx

        try:
            async with self._http() as client:
                response = await client.post(
                    self._mailbox.token_endpoint,
                    data=form,
                    headers={"Accept": "application/json"},
                )
        except httpx.HTTPError as exc:
            raise ImapUnavailable(
                f"imap {self.name}: token endpoint unreachable ({type(exc).__name__})"
            ) from None
        body = _json_object(response)
        if response.status_code != 200:
            code = body.get("error")
            why = code if isinstance(code, str) and _ERROR_CODE.fullmatch(code) else ""
            raise ImapUnavailable(
                f"imap {self.name}: the token endpoint refused the grant "
                f"(HTTP {response.status_code}{', ' + why if why else ''})"
            )
        return body

    async def _keep(self, rotated: str) -> None:
        """Write the rotated refresh token back; if that fails, keep it for the next grant."""
        try:
            await asyncio.to_thread(write_secret, self._file, rotated + "\n")
            self._refresh_token = None
        except OSError as exc:
            self._refresh_token = rotated
            log.error(
                "imap rotated refresh token not written back; kept in memory",
                extra={"mailbox": self.name, "error": type(exc).__name__},
            )

    def _default_http(self) -> httpx.AsyncClient:
        import httpx

        return httpx.AsyncClient(
            timeout=self._mailbox.token_timeout.total_seconds(), follow_redirects=False
        )

    def _read_refresh_token(self) -> str:
        return _first_line(self.name, "refresh_token_file", self._file)

    def _client_secret(self) -> str:
        if self._mailbox.client_secret_file is not None:
            return _first_line(self.name, "client_secret_file", self._mailbox.client_secret_file)
        return self._mailbox.client_secret.get_secret_value()


def _renew_after(expires_in: object, margin: float) -> float:
    """Seconds until a token must be replaced; a lifetime not given: until refused."""
    if isinstance(expires_in, str) and expires_in.isdigit():  # some providers send a string
        expires_in = int(expires_in)
    if not isinstance(expires_in, int | float) or isinstance(expires_in, bool):
        return float("inf")
    lifetime = max(float(expires_in), 0.0)
    return lifetime - min(margin, lifetime / 4)


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        body = json.loads(response.content or b"{}")
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _first_line(name: str, key: str, path: Path) -> str:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        raise ConfigError(f"imap.mailboxes[{name}]: {key} {path} is unreadable") from None
    if not lines or not lines[0].strip():
        raise ConfigError(f"imap.mailboxes[{name}]: {key} {path} is empty")
    return lines[0].strip()


def write_secret(path: Path, text: str) -> None:
    """Replace `path` atomically with `text`, mode 0600: a crash leaves the old or the new file."""
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(descriptor, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself must survive a crash
    finally:
        os.close(directory)


# -- a command -------------------------------------------------------------------------------
class CommandTokenSource:
    """An operator's program prints the access token; run for every new session.

    Such programs (a vault client, a provider's CLI) keep their own cache, so
    the gateway does not guess a lifetime: it asks each time it logs in.
    """

    def __init__(self, name: str, argv: Sequence[str], timeout: float) -> None:
        if not argv:
            raise ConfigError(f"imap.mailboxes[{name}]: token_command is empty")
        self.name, self.argv, self.timeout = name, list(argv), timeout

    def __repr__(self) -> str:
        return f"CommandTokenSource({self.name!r})"

    async def token(self, *, refresh: bool = False) -> str:
        try:
            process = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,  # it may echo secrets: never into our logs
                start_new_session=True,
            )
        except OSError:
            raise ConfigError(
                f"imap.mailboxes[{self.name}].token_command: cannot run {self.argv[0]}"
            ) from None
        try:
            output = await asyncio.wait_for(self._output(process), self.timeout)
        except TimeoutError:
            raise ImapUnavailable(f"imap {self.name}: token_command timed out") from None
        finally:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        lines = output.decode("utf-8", "replace").splitlines()
        if not lines or not lines[0].strip():
            raise ImapUnavailable(f"imap {self.name}: token_command printed no token")
        return _checked_token(lines[0].strip())

    async def _output(self, process: asyncio.subprocess.Process) -> bytes:
        """Its stdout, at most MAX_COMMAND_OUTPUT bytes, once it exited 0."""
        assert process.stdout is not None
        chunks: list[bytes] = []
        size = 0
        while chunk := await process.stdout.read(8192):
            size += len(chunk)
            if size > MAX_COMMAND_OUTPUT:
                raise ImapUnavailable(f"imap {self.name}: token_command printed too much")
            chunks.append(chunk)
        code = await process.wait()
        if code != 0:
            raise ImapUnavailable(f"imap {self.name}: token_command failed (exit {code})")
        return b"".join(chunks)


def token_source_for(mailbox: ImapMailbox) -> TokenSource:
    """The token source a mailbox's settings describe (ConfigError naming the key otherwise)."""
    problem = mailbox_auth_problem(mailbox)
    if problem or mailbox.auth == "password":
        raise ConfigError(
            f"invalid configuration: imap.mailboxes[{mailbox.name}]."
            + (problem or "auth: a password mailbox has no token source")
        )
    if mailbox.token_command:
        return CommandTokenSource(
            mailbox.name, mailbox.token_command, mailbox.token_timeout.total_seconds()
        )
    return RefreshTokenSource(mailbox)
