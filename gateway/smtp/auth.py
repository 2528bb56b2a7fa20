"""SMTP AUTH on the submission port: PLAIN and LOGIN after TLS, checked off the event loop.

The session (`SubmissionSMTP`) offers AUTH only over TLS (STARTTLS first,
or implicit TLS) and takes no mail before AUTH.  A login and password go
to `CredentialAuthenticator`, which runs the check (a database read and an
argon2id verification, `gateway.credentials.verify`) in a worker thread,
waits the growing delay a failure earns before answering it, and turns the
outcome into the reply.  A successful AUTH leaves the `Identity` in the
session's `auth_data`, where the handler finds it for MAIL and DATA.  The
password is never logged.
"""

from __future__ import annotations

import asyncio
import binascii
import logging
import uuid
from base64 import b64decode
from collections.abc import Awaitable, Callable
from typing import Any, AnyStr, ClassVar

from aiosmtpd.smtp import MISSING, AuthResult, Session

from gateway.adapters import aiosmtpd as adapter
from gateway.credentials.verify import Identity
from gateway.errors import (
    AuthRefused,
    CredentialInvalid,
    InvalidAddress,
    SenderNotAuthenticated,
    TemporaryFailure,
)
from gateway.model import Mailbox
from gateway.smtp import replies
from gateway.smtp.protocol import GatewaySMTP

log = logging.getLogger("gateway.smtp")

_OWN_REFUSALS = {
    adapter.OWN_STARTTLS_FIRST_REPLY: replies.R530_STARTTLS_FIRST,
    adapter.OWN_AUTH_REQUIRED_REPLY: replies.R530_AUTH_REQUIRED,
}
"""aiosmtpd's own replies on the submission port, and ours in their place."""

Verify = Callable[[str, str, str], Identity]
"""(login, password, client IP) -> Identity, or raises AuthRefused: blocking."""
Sleep = Callable[[float], Awaitable[None]]


def authenticated_identity(session: Session) -> Identity | None:
    """Who the session authenticated as, if it did (on the submission port only)."""
    identity = getattr(session, "auth_data", None)
    return identity if isinstance(identity, Identity) else None


def sender_refusal(session: Session, mail_from: str) -> str | None:
    """The reply refusing MAIL FROM when it is not the authenticated address (else None).

    A session that did not authenticate is not concerned: the inbound port
    has no AUTH, and the submission port takes no MAIL before it.
    """
    identity = authenticated_identity(session)
    if identity is None:
        return None
    try:
        same = Mailbox.parse(mail_from).key == identity.address_key
    except InvalidAddress:
        same = False
    if same:
        return None
    return replies.reply_for(SenderNotAuthenticated("MAIL FROM is not the authenticated address"))


class CredentialAuthenticator:
    """The submission port's check of a login and password; one per listener."""

    def __init__(self, verify: Verify, *, sleep: Sleep = asyncio.sleep) -> None:
        self._verify = verify
        self._sleep = sleep

    async def check(self, login: bytes, password: bytes, peer_ip: str) -> Identity | str:
        """The Identity, or the reply to send (535 after the failure's delay, or 454)."""
        try:
            login_text, password_text = login.decode("utf-8"), password.decode("utf-8")
        except UnicodeDecodeError:
            login_text, password_text = "", ""  # counted like any wrong credential
        try:
            identity = await asyncio.to_thread(self._verify, login_text, password_text, peer_ip)
        except AuthRefused as exc:
            if isinstance(exc, CredentialInvalid) and exc.delay > 0:
                await self._sleep(exc.delay)  # this session waits; the event loop does not
            reply = replies.reply_for(exc)
            log.info("smtp auth refused", extra={"peer": peer_ip, "reply": reply[:9]})
            return reply
        except TemporaryFailure:
            log.warning("smtp auth: credentials unavailable", extra={"peer": peer_ip})
            return replies.R454_AUTH_TEMPORARY
        except Exception:
            ref = uuid.uuid4().hex[:12]
            log.exception("internal error in AUTH", extra={"correlation_id": ref})
            return replies.R454_AUTH_TEMPORARY
        log.info(
            "smtp auth accepted",
            extra={"peer": peer_ip, "credential": identity.credential_id},
        )
        return identity


class SubmissionSMTP(GatewaySMTP):
    """A submission-port session: AUTH PLAIN and LOGIN after TLS, no mail before AUTH.

    With `implicit_tls` the transport is TLS from the first byte (the
    listener's socket wraps it), so AUTH needs no STARTTLS; otherwise
    STARTTLS is required before anything but EHLO, NOOP and QUIT.
    """

    offers_auth: ClassVar[bool] = True

    def __init__(
        self,
        handler: Any,
        *,
        authenticator: CredentialAuthenticator,
        implicit_tls: bool = False,
        **kwargs: Any,
    ) -> None:
        self._credentials = authenticator
        adapter.quiet_login_data_warning()
        options = {**kwargs, "auth_required": True, "auth_require_tls": not implicit_tls}
        if implicit_tls:
            with adapter.implicit_tls_auth():
                super().__init__(handler, **options)
        else:
            super().__init__(handler, require_starttls=True, **options)

    async def push(self, status: AnyStr) -> None:
        # aiosmtpd's refusals before STARTTLS (no enhanced status code) and before AUTH
        # are English only: ours say them in French first, like every refusal.
        ours = _OWN_REFUSALS.get(status) if isinstance(status, str) else None
        if ours is not None:
            await super().push(ours)
            return
        await super().push(status)

    # aiosmtpd calls auth_<MECHANISM>(self, args) for `AUTH <MECHANISM> [initial response]`
    # once TLS is up; these replace its built-in PLAIN and LOGIN, whose check is synchronous.
    async def auth_PLAIN(self, _: Any, args: list[str]) -> AuthResult:
        response = await self._response(args, "")
        if response is None:
            return AuthResult(success=False, handled=True)
        parts = response.split(b"\x00")
        if len(parts) != 3:
            await self.push(replies.R501_AUTH_SPLIT)
            return AuthResult(success=False, handled=True)
        authzid, login, password = parts
        if authzid and authzid != login:  # acting for another identity is not offered
            login = b""
        return await self._check(login, password)

    async def auth_LOGIN(self, _: Any, args: list[str]) -> AuthResult:
        login = await self._response(args, self.AuthLoginUsernameChallenge)
        if login is None:
            return AuthResult(success=False, handled=True)
        password = await self._challenge(self.AuthLoginPasswordChallenge)
        if password is None:
            return AuthResult(success=False, handled=True)
        return await self._check(login, password)

    async def _response(self, args: list[str], challenge: str) -> bytes | None:
        """The initial response given with AUTH, or the answer to `challenge`."""
        if len(args) == 1:
            return await self._challenge(challenge)
        try:
            return b64decode(args[1], validate=True)
        except (binascii.Error, ValueError):
            await self.push(replies.R501_AUTH_BASE64)
            return None

    async def _challenge(self, challenge: str) -> bytes | None:
        # challenge_auth answers a '*' or bad base64 itself (501) and returns MISSING.
        answer = await self.challenge_auth(challenge)
        return None if answer is MISSING else bytes(answer)

    async def _check(self, login: bytes, password: bytes) -> AuthResult:
        peer = self.session.peer if self.session is not None else None
        peer_ip = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        outcome = await self._credentials.check(login, password, peer_ip)
        if isinstance(outcome, Identity):
            return AuthResult(success=True, auth_data=outcome, message=replies.R235_AUTH_OK)
        return AuthResult(success=False, handled=False, message=outcome)
