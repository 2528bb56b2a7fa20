"""The demo's stage: its folder and config, `serve` in a thread, SMTP transcripts, captured mail.

Everything runs on loopback in this process: the real `run_gateway` (the
same code `gateway serve` runs) in a thread of its own with relay.mode =
"capture", so the demo reads what the gateway mails from the maildir, and a
plain SMTP client (smtplib) for the guardian.
"""

from __future__ import annotations

import asyncio
import smtplib
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from gateway.app import Running, Services, run_gateway
from gateway.errors import GatewayError
from gateway.outbox.operator import captured_mail, list_outbox

DEMO_CONFIG = """\
# A throwaway gateway made by `gateway demo`: everything on loopback.
[gateway]
domain = "greffe.example"
data_dir = "var"
name = "Passerelle du greffe (demo)"

[database]
url = "sqlite:///var/gateway.db"

[smtp]
listen = "127.0.0.1:0"               # any free port: `serve` says which
submission_listen = "127.0.0.1:0"    # the teletransmission port, likewise
shutdown_grace = "5s"

[http]
listen = "127.0.0.1:0"

[relay]
# !!! CAPTURE MODE: outgoing mail is NOT sent; it is kept in the maildir var/mail
# !!! (`gateway outbox list`, `gateway outbox show ID`).
mode = "capture"

[limits]
disk_reserve_bytes = 10485760        # 10 MiB: a demo in a nearly full /tmp still runs

[logging]
level = "WARNING"
"""


class StepFailed(GatewayError):
    """A step of the demo did not hold (the message says what was seen)."""


@dataclass(frozen=True, slots=True)
class Exchange:
    """One SMTP command of the guardian's client and the gateway's reply."""

    command: str
    code: int
    reply: str

    def lines(self) -> list[str]:
        return [f"C: {self.command}", f"S: {self.code} {self.reply}"]


def smtp_transaction(
    port: int, mail_from: str, recipient: str, raw: bytes, helo: str
) -> list[Exchange]:
    """One mail transaction with the gateway on loopback, every reply kept.

    Stops at the first refusal, as a client does; the last exchange is the
    one that decided.
    """
    exchanges: list[Exchange] = []
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        code, text = client.ehlo(helo)
        exchanges.append(Exchange(f"EHLO {helo}", code, _first_line(text)))
        code, text = client.mail(mail_from)
        exchanges.append(Exchange(f"MAIL FROM:<{mail_from}>", code, _joined(text)))
        if code >= 400:
            return exchanges
        code, text = client.rcpt(recipient)
        exchanges.append(Exchange(f"RCPT TO:<{recipient}>", code, _joined(text)))
        if code >= 400:
            return exchanges
        code, text = client.data(raw)
        exchanges.append(Exchange(f"DATA … . ({len(raw)} bytes)", code, _joined(text)))
    return exchanges


def _first_line(text: bytes) -> str:
    return text.decode("utf-8", "replace").splitlines()[0] if text else ""


def _joined(text: bytes) -> str:
    return " ".join(text.decode("utf-8", "replace").split())


class GatewayThread:
    """`gateway serve` (gateway.app.run_gateway) in a thread of this process."""

    def __init__(self, services: Services) -> None:
        self._services = services
        self._ready = threading.Event()
        self._running: Running | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="gateway-serve", daemon=True)

    def start(self, timeout: float) -> Running:
        """Start it and wait until it listens; its ports."""
        self._thread.start()
        if not self._ready.wait(timeout):
            raise StepFailed(f"the gateway did not start within {timeout:.0f} s")
        if self._error is not None or self._running is None:
            reason = self._error.message if isinstance(self._error, GatewayError) else "see the log"
            raise StepFailed(f"the gateway did not start: {reason}")
        return self._running

    def stop(self) -> None:
        """SIGTERM's way: stop taking mail, finish what is in flight, stop the workers."""
        if self._loop is not None and self._running is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._running.stop.set)
        if self._thread.is_alive():
            self._thread.join(timeout=60)

    def _main(self) -> None:
        try:
            asyncio.run(run_gateway(self._services, self._on_ready))
        except BaseException as exc:  # reported by start(), or after the fact by stop()
            self._error = exc
        finally:
            self._ready.set()

    def _on_ready(self, running: Running) -> None:
        self._running = running
        self._loop = asyncio.get_running_loop()
        self._ready.set()


@dataclass(frozen=True, slots=True)
class CapturedMail:
    outbox_id: int
    raw: bytes


def wait_for_captured(
    services: Services, kind: str, recipient: str, timeout: float
) -> CapturedMail:
    """The first outgoing mail of `kind` to `recipient`, once the outbox worker has captured it."""
    deadline = time.monotonic() + timeout
    last = "not queued"
    while time.monotonic() < deadline:
        rows = [
            row
            for row in list_outbox(services.db)
            if row["kind"] == kind and row["recipient"] == recipient
        ]
        if rows:
            row = rows[0]
            if row["status"] == "sent":
                raw = captured_mail(services.db, services.settings.mail_dir, row["id"])
                return CapturedMail(row["id"], raw)
            if row["status"] == "failed":
                raise StepFailed(f"the {kind} mail was given up: {row['last_error']}")
            last = f"outbox {row['id']} {row['status']}, last error: {row['last_error'] or 'none'}"
        time.sleep(0.1)
    raise StepFailed(f"no {kind} mail captured within {timeout:.0f} s ({last})")


def write_config(folder: Path) -> Path:
    """The demo's configuration file (capture mode, loopback, ports chosen by the system)."""
    config = folder / "gateway.toml"
    config.write_text(DEMO_CONFIG, encoding="utf-8")
    return config
