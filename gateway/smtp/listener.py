"""SMTP listeners: one spec per port (address, TLS, AUTH, channel), each a running part."""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import ssl
from dataclasses import dataclass
from typing import Any

from gateway.errors import ConfigError
from gateway.smtp.auth import CredentialAuthenticator, SubmissionSMTP
from gateway.smtp.handler import GatewayHandler
from gateway.smtp.limits import ClientTracker, SmtpLimits
from gateway.smtp.protocol import GatewaySMTP

log = logging.getLogger("gateway.smtp")


class TlsMode(enum.StrEnum):
    NONE = "none"
    """No TLS offered (no certificate configured)."""
    STARTTLS = "starttls"
    """STARTTLS offered in EHLO; `require_tls` makes it mandatory before mail (or AUTH)."""
    IMPLICIT = "implicit"
    """TLS from the first byte (submissions over port 465 style)."""


def make_tls_context(cert: str, key: str) -> ssl.SSLContext:
    """A server context for TLS 1.2 or newer only."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


@dataclass(frozen=True)
class ListenerSpec:
    """Everything that makes one listener different from another."""

    name: str
    """inbound | submission: names the part in logs and `Running.ports`."""
    host: str
    port: int
    hostname: str
    """The name announced in the greeting and EHLO."""
    tls: TlsMode = TlsMode.NONE
    tls_context: ssl.SSLContext | None = None
    require_tls: bool = False
    reuse_port: bool = False
    """Several `serve --workers` processes share the port (SO_REUSEPORT)."""
    authenticator: CredentialAuthenticator | None = None
    """SMTP AUTH (the submission port): only a listener with one offers AUTH, after TLS;
    without one AUTH is neither in EHLO nor in HELP, and answered 502 (the inbound port)."""

    def __post_init__(self) -> None:
        if (self.tls is TlsMode.NONE) != (self.tls_context is None):
            raise ValueError(f"listener {self.name}: a TLS mode needs a TLS context and back")
        if self.require_tls and self.tls is TlsMode.NONE:
            raise ValueError(f"listener {self.name}: TLS required but none configured")
        if self.authenticator is not None and not (
            self.tls is TlsMode.IMPLICIT or (self.tls is TlsMode.STARTTLS and self.require_tls)
        ):
            raise ValueError(f"listener {self.name}: AUTH needs TLS, required or implicit")


class SmtpListener:
    """One listening socket and its sessions; a running part that stops gracefully."""

    def __init__(
        self,
        spec: ListenerSpec,
        handler: GatewayHandler,
        tracker: ClientTracker,
        limits: SmtpLimits,
    ) -> None:
        self.spec = spec
        self.handler = handler
        self.tracker = tracker
        self.limits = limits
        self.sessions: set[GatewaySMTP] = set()
        self.server: asyncio.Server | None = None
        self.port: int | None = None

    @property
    def name(self) -> str:
        return f"smtp:{self.spec.name}"

    def _protocol(self) -> GatewaySMTP:
        spec, limits = self.spec, self.limits
        starttls = spec.tls_context if spec.tls is TlsMode.STARTTLS else None
        options: dict[str, Any] = {
            "tracker": self.tracker,
            "sessions": self.sessions,
            "data_timeout": limits.data_timeout,
            "data_size_limit": limits.max_message_bytes,
            "hostname": spec.hostname,
            "tls_context": starttls,
            "timeout": limits.idle_timeout,
            "bounds": limits.session_bounds,  # every command counts, not each verb apart
            "enable_SMTPUTF8": True,
            "decode_data": False,
        }
        if spec.authenticator is not None:
            return SubmissionSMTP(
                self.handler,
                authenticator=spec.authenticator,
                implicit_tls=spec.tls is TlsMode.IMPLICIT,
                **options,
            )
        return GatewaySMTP(
            self.handler, require_starttls=spec.require_tls and starttls is not None, **options
        )

    async def start(self) -> None:
        spec = self.spec
        implicit = spec.tls_context if spec.tls is TlsMode.IMPLICIT else None
        try:
            self.server = await asyncio.get_running_loop().create_server(
                self._protocol,
                spec.host,
                spec.port,
                ssl=implicit,
                reuse_port=spec.reuse_port or None,
            )
        except OSError as exc:  # the port is taken, or the address is not this host's
            setting = "smtp.listen" if spec.name == "inbound" else f"smtp.{spec.name}_listen"
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise ConfigError(
                f"{setting}: cannot listen on {spec.host}:{spec.port}: {reason}"
            ) from None
        self.port = int(self.server.sockets[0].getsockname()[1])
        log.info(
            "smtp listening",
            extra={"listener": spec.name, "address": f"{spec.host}:{self.port}", "tls": spec.tls},
        )

    def busy(self) -> bool:
        """A DATA is being processed, or a session is between MAIL and the end of DATA."""
        return self.handler.in_flight > 0 or any(s.in_transaction for s in self.sessions)

    async def stop(self, grace: float) -> None:
        """Stop accepting, let transactions in flight finish (bounded), then close sessions."""
        self.handler.accepting = False
        if self.server is not None:
            self.server.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self.busy() and loop.time() < deadline:
            await asyncio.sleep(0.05)
        if self.busy():
            log.warning(
                "shutdown grace period over with transactions in flight",
                extra={"in_flight": self.handler.in_flight, "sessions": len(self.sessions)},
            )
        for session in list(self.sessions):
            session.close_for_shutdown()
