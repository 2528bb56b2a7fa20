"""The HTTP server as a running part: uvicorn in a thread of its own, on a socket bound at start.

Its own thread (and event loop) rather than the gateway's: the parent of
`serve --workers` has no event loop to lend it, and uvicorn installs signal
handlers only when it runs in the main thread, so SIGTERM stays the
gateway's.  The socket is bound in `start`, so a port in use fails `serve`
there and port 0 reports the real port.  `stop` asks uvicorn to finish the
requests in flight within the grace, then forces it.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from starlette.types import ASGIApp

from gateway.errors import ConfigError

log = logging.getLogger("gateway.http")
START_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class TlsFiles:
    cert: Path
    key: Path


class ApiServer:
    """Serves the API app on `host:port` (HTTPS with `tls`); a running part (port 0 allowed)."""

    name = "http"

    def __init__(
        self, app: ASGIApp, host: str, port: int, *, tls: TlsFiles | None, grace: float
    ) -> None:
        self.app = app
        self.host = host
        self.requested_port = port
        self.tls = tls
        self.grace = grace
        self.port: int | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    async def start(self) -> None:
        # uvicorn's start/stop lines carry terminal colour codes as extras: keep its warnings only.
        logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
        sock = _bind(self.host, self.requested_port)
        try:
            server = uvicorn.Server(self._config())
        except BaseException:
            sock.close()
            raise
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="http", daemon=True
        )
        self._server, self._thread = server, thread
        self.port = int(sock.getsockname()[1])
        thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self.close()
                sock.close()
                raise ConfigError(f"http.listen: the HTTP server did not start on {self.host}")
            await asyncio.sleep(0.01)

    def _config(self) -> uvicorn.Config:
        config = uvicorn.Config(
            self.app,
            loop="asyncio",
            http="h11",
            ws="none",
            lifespan="off",
            log_config=None,  # the gateway's logging, not uvicorn's
            access_log=False,
            server_header=False,
            proxy_headers=False,  # the peer address is the socket's (throttling relies on it)
            timeout_keep_alive=5,
            timeout_graceful_shutdown=max(int(self.grace), 1),
            ssl_certfile=str(self.tls.cert) if self.tls else None,
            ssl_keyfile=str(self.tls.key) if self.tls else None,
        )
        try:
            config.load()  # reads the certificate now: a bad one fails `serve` at start
        except (OSError, ssl.SSLError):
            raise ConfigError("http.tls_cert/http.tls_key: cannot load the certificate") from None
        if config.ssl is not None:
            config.ssl.minimum_version = ssl.TLSVersion.TLSv1_2
        return config

    async def stop(self, grace: float) -> None:
        await asyncio.to_thread(self._finish, grace)

    def close(self) -> None:
        """Stop from a thread with no event loop (the parent of `serve --workers`)."""
        self._finish(self.grace)

    def _finish(self, grace: float) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.should_exit = True
        thread.join(timeout=max(grace, 0.5) + 1)
        if thread.is_alive():
            log.warning("HTTP server did not stop within %.0fs; closing connections", grace)
            server.force_exit = True
            thread.join(timeout=5)
        self._server = self._thread = None


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host, port), family=family, backlog=128)
    except OSError as exc:
        raise ConfigError(f"http.listen: cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.setblocking(False)
    return sock
