"""JSON logs: what a line carries, and what it never does (codes, subjects, filenames, bodies)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
import signal
import smtplib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import DnsTemporaryFailure, StorageUnavailable, Throttled
from gateway.ingest.pipeline import Inbound, Outcome
from gateway.ingest.recipients import RecipientPolicy, Role
from gateway.logs import JsonFormatter
from gateway.smtp.handler import GatewayHandler
from gateway.smtp.limits import ClientTracker, SmtpLimits
from gateway.smtp.listener import ListenerSpec, SmtpListener
from tests.conftest import CliRunner
from tests.fixtures.dkimkeys import DkimKey, generate_key, sign
from tests.fixtures.dnsserver import DnsServer
from tests.fixtures.gatewayserver import COURT, DOMAIN, GUARDIAN, MEASURE, SELECTOR, SENDER_DOMAIN
from tests.fixtures.gpgkeys import CourtKey
from tests.fixtures.pdfs import plain_pdf
from tests.fixtures.ports import free_port
from tests.fixtures.smtpsink import SmtpSink

SUBJECT_MARK = "Objet-tres-confidentiel-QW3"
FILENAME_MARK = "bilan-secret-PL8"
REFUSED_MARK = "outil-louche-MN5"
BODY_MARK = "Corps-du-message-prive-JH2"
CODE_RE = re.compile(rb"\b([0-9A-HJKMNP-TV-Z]{5}-[0-9A-HJKMNP-TV-Z]{5})\b")


class Sender:
    """Signs messages for the guardian's domain and sends them to one port."""

    def __init__(self, port: int, dns: DnsServer) -> None:
        self.port = port
        self.key: DkimKey = generate_key()
        dns.records[f"{SELECTOR}._domainkey.{SENDER_DOMAIN}"] = [self.key.txt_record]

    def send(
        self,
        subject: str,
        rcpt: str = f"depot@{DOMAIN}",
        attachments: list[tuple[str, str, bytes]] | None = None,
    ) -> tuple[int, str]:
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = GUARDIAN, rcpt, subject
        msg["Date"] = format_datetime(datetime.now(UTC))
        msg["Message-ID"] = make_msgid(domain=SENDER_DOMAIN)
        msg.set_content(f"Bonjour,\n{BODY_MARK}\n")
        for filename, mime, content in attachments or []:
            maintype, subtype = mime.split("/")
            msg.add_attachment(content, maintype=maintype, subtype=subtype, filename=filename)
        raw = msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))
        raw = sign(raw, SELECTOR.encode(), SENDER_DOMAIN.encode(), self.key.private_pem)
        with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as client:
            client.ehlo("client.test")
            client.mail(GUARDIAN)
            client.rcpt(rcpt)
            code, text = client.data(raw)
        return code, text.decode()


@pytest.fixture
def served(
    cli: CliRunner,
    gateway_config: Path,
    dns_server: DnsServer,
    smtp_sink: SmtpSink,
    court_key: CourtKey,
    tmp_path: Path,
) -> Iterator[tuple[subprocess.Popen[bytes], Sender]]:
    """`gateway serve` in its own process, JSON logs at DEBUG on its stderr."""
    key_file = tmp_path / "court.asc"
    key_file.write_text(court_key.armored_public)
    assert cli("courts", "add", COURT, "--name", "Tribunal judiciaire de Lyon").code == 0
    assert cli("courts", "add-key", COURT, str(key_file)).code == 0
    registered = cli("registrations", "add", "--court", COURT, "--measure", MEASURE,
                     "--address", GUARDIAN)  # fmt: skip
    assert registered.code == 0, registered.err
    port = free_port()
    env = {
        **os.environ,
        "GATEWAY__SMTP__LISTEN": f"127.0.0.1:{port}",
        "GATEWAY__HTTP__LISTEN": "127.0.0.1:0",
        "GATEWAY__DNS__NAMESERVERS": json.dumps([dns_server.address]),
        "GATEWAY__RELAY__MODE": "smtp",  # `init` writes "capture"; this test reads the sink
        "GATEWAY__RELAY__PORT": str(smtp_sink.port),
        "GATEWAY__LOGGING__FORMAT": "json",
        "GATEWAY__LOGGING__LEVEL": "DEBUG",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "--config", str(gateway_config), "serve"],
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(port, process)
        # The registration notice goes first (within the outbox's poll on SQLite):
        # the test's next mail must be the code, not that notice.
        smtp_sink.wait_for(1, timeout=30)
        yield process, Sender(port, dns_server)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("gateway serve did not listen")


def _code_from(sink: SmtpSink, before: int) -> str:
    mail = sink.wait_for(before + 1, timeout=30)[-1]
    message = message_from_bytes(mail[2], policy=default_policy)
    found = CODE_RE.search(str(message.get_content()).encode())
    assert found
    return found.group(1).decode()


def test_logs_json_never_carry_code_subject_filename_or_body(
    served: tuple[subprocess.Popen[bytes], Sender], smtp_sink: SmtpSink
) -> None:
    process, sender = served
    before = len(smtp_sink.messages)
    assert sender.send(f"CODE {COURT} {MEASURE}", rcpt=f"codes@{DOMAIN}")[0] == 250
    code = _code_from(smtp_sink, before)
    pdf = (f"{FILENAME_MARK}.pdf", "application/pdf", plain_pdf())
    accepted = sender.send(f"{SUBJECT_MARK} [{code}]", attachments=[pdf])
    assert accepted[0] == 250, accepted
    exe = (f"{REFUSED_MARK}.exe", "application/octet-stream", b"MZ\x90\x00" + b"\0" * 200)
    refused = sender.send(f"{SUBJECT_MARK} [{code}]", attachments=[exe])
    assert refused[0] == 554 and REFUSED_MARK in refused[1]  # the reply names it; logs must not
    assert sender.send(f"{SUBJECT_MARK} [AAAAA-BBBBB]")[0] == 550
    assert sender.send(f"[{code}]", rcpt=f"etat@{DOMAIN}")[0] == 250
    smtp_sink.wait_for(before + 3, timeout=30)  # the receipt and the state reply went out
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0
    log = process.stderr.read().decode() if process.stderr else ""

    for secret in (code, code.replace("-", ""), SUBJECT_MARK, FILENAME_MARK, REFUSED_MARK,
                   BODY_MARK):  # fmt: skip
        assert secret not in log, f"{secret} reached the log"
    lines = [json.loads(line) for line in log.splitlines() if line.strip()]
    assert {"time", "level", "logger", "event"} <= set(lines[0])
    transactions = [line for line in lines if line["event"] == "smtp transaction"]
    assert [(t["outcome"], t["reply"]) for t in transactions] == [
        ("accepted", "250 2.0.0"),
        ("accepted", "250 2.0.0"),
        ("refused", "554 5.6.0"),
        ("refused", "550 5.7.0"),
        ("accepted", "250 2.0.0"),
    ]
    ids = [t["correlation_id"] for t in transactions]
    assert len(set(ids)) == len(ids) and all(re.fullmatch(r"[0-9a-f]{12}", i) for i in ids)


LIMITS = SmtpLimits(
    max_message_bytes=100_000, max_recipients=5, max_connections=10,
    max_connections_per_client=10, max_messages_per_client=100, client_window=60.0,
    max_commands=50, idle_timeout=10.0, min_data_rate=1000,
)  # fmt: skip


class FailingPipeline:
    """A pipeline whose ingest fails: a down store, a throttle, or a bug of ours."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def ingest(self, inbound: Inbound) -> Outcome:
        logging.getLogger("gateway.ingest").info("ingesting")
        raise self.error


@pytest.mark.parametrize(
    ("error", "code", "event"),
    [
        (StorageUnavailable("encryption failed"), 451, "smtp temporary failure: encryption failed"),
        (DnsTemporaryFailure("DNS timed out"), 451, "smtp temporary failure: DNS timed out"),
        (Throttled("too many messages"), 450, None),
    ],
    ids=["storage", "dns", "throttled"],
)
async def test_logs_temporary_failure_reply_names_the_correlation_id_of_its_warning(
    error: Exception, code: int, event: str | None
) -> None:
    reply, lines = await _one_transaction(FailingPipeline(error))
    assert int(reply[:3]) == code, reply
    by_event = {line["event"]: line for line in lines}
    ref = re.search(r" \(ref ([0-9a-f]{12})\)$", reply)
    if event is None:  # a throttle is the sender's doing: nothing for the operator to trace
        assert ref is None, reply
        assert not any(e.startswith("smtp temporary failure") for e in by_event)
        return
    assert ref, reply
    assert by_event[event]["correlation_id"] == ref.group(1)
    assert by_event["smtp transaction"]["correlation_id"] == ref.group(1)
    assert by_event["smtp transaction"]["outcome"] == "tempfail"


async def _one_transaction(pipeline: Any) -> tuple[str, list[dict[str, Any]]]:
    """One message through a listener whose pipeline is ``pipeline``: the reply, the JSON logs."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.INFO)
    tracker = ClientTracker(LIMITS)
    roles = {Role.SUBMIT: "depot", Role.CODES: "codes", Role.STATUS: "etat"}
    policy = RecipientPolicy(DOMAIN, roles)
    hooks = GatewayHandler(pipeline, policy, tracker, lambda: datetime.now(UTC))
    listener = SmtpListener(ListenerSpec("inbound", "127.0.0.1", 0, DOMAIN), hooks, tracker, LIMITS)
    await listener.start()
    try:
        assert listener.port is not None
        code, reply = await asyncio.to_thread(_send_plain, listener.port)
    finally:
        await listener.stop(1)
        root.removeHandler(handler)
        root.setLevel(old_level)
    return f"{code} {reply}", [json.loads(line) for line in stream.getvalue().splitlines()]


async def test_logs_internal_error_451_names_the_correlation_id_of_its_log_lines() -> None:
    reply, lines = await _one_transaction(FailingPipeline(RuntimeError("a bug")))
    assert reply.startswith("451 "), reply
    ref = re.search(r"\(ref ([0-9a-f]{12})\)", reply)
    assert ref, reply
    by_event = {line["event"]: line for line in lines}
    for event in ("ingesting", "internal error in DATA", "smtp transaction"):
        assert by_event[event]["correlation_id"] == ref.group(1), event
    assert "RuntimeError" in by_event["internal error in DATA"]["exc"]
    assert by_event["smtp transaction"]["outcome"] == "error"


def _send_plain(port: int) -> tuple[int, str]:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("client.test")
        client.mail(GUARDIAN)
        client.rcpt(f"depot@{DOMAIN}")
        code, text = client.data(b"From: " + GUARDIAN.encode() + b"\r\nSubject: x\r\n\r\nhi\r\n")
    return code, text.decode()
