"""Captured mail (relay.mode = "capture") through a real serve; `gateway outbox list|show|retry`.

The gateway runs in a thread with capture mode; the CLI runs in-process on
the same configuration, as an operator's shell would.  The smtp-mode tests
relay to the sink and show what the outbox says of mail it does not keep.
"""

from __future__ import annotations

import json
import logging
import re
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dkim
import pytest

from gateway.outbox.maildir import captured_files
from gateway.storage.audit import AuditRepository
from tests.conftest import CliRunner
from tests.fixtures.gatewayserver import (
    COURT,
    DOMAIN,
    GUARDIAN,
    MEASURE,
    GatewayFactory,
    GatewayUnderTest,
    World,
)
from tests.fixtures.gpgkeys import CourtKey
from tests.fixtures.pdfs import plain_pdf

pytestmark = pytest.mark.gpg

CODE = re.compile(r"\b([0-9A-HJKMNP-TV-Z]{5}-[0-9A-HJKMNP-TV-Z]{5})\b")
CAPTURE = {"GATEWAY__RELAY__MODE": "capture"}


def start_captured(gateway_factory: GatewayFactory, court_key: CourtKey) -> GatewayUnderTest:
    gw = gateway_factory(CAPTURE)
    admin = gw.services.admin
    admin.add_court(COURT, "Tribunal judiciaire de Lyon", "test")
    admin.add_court_key(COURT, court_key.armored_public.encode(), "test")
    # No registration notice: the outbox ids these tests name start with the code's mail.
    csv = f"court,measure,address\n{COURT},{MEASURE},{GUARDIAN}\n".encode()
    admin.import_registrations(csv, "test", notify=False)
    return gw


def ask_code(gw: GatewayUnderTest) -> None:
    raw = gw.message(to=f"codes@{DOMAIN}", subject=f"CODE {COURT} {MEASURE}")
    code, text = gw.send(raw, rcpt=f"codes@{DOMAIN}")
    assert code == 250, text


def wait_until(condition: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out")


def listed(cli: CliRunner, *args: str) -> list[dict[str, Any]]:
    result = cli("outbox", "list", "--json", *args)
    assert result.code == 0, result.err
    rows: list[dict[str, Any]] = json.loads(result.out)
    return rows


def test_capture_keeps_code_and_receipt_in_the_maildir_and_outbox_shows_them(
    gateway_factory: GatewayFactory,
    court_key: CourtKey,
    cli: CliRunner,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    gw = start_captured(gateway_factory, court_key)
    mail_dir = gw.services.settings.mail_dir
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("relay.mode is CAPTURE" in message for message in warnings)
    ask_code(gw)
    [code_file] = wait_until(lambda: captured_files(mail_dir))
    assert code_file.parent == mail_dir / "new"
    assert "_outbox-1." in code_file.name
    assert stat.S_IMODE(code_file.stat().st_mode) == 0o600
    assert list((mail_dir / "tmp").iterdir()) == []  # written there, renamed into new/
    rows = wait_until(lambda: [r for r in listed(cli) if r["status"] == "sent"])
    assert [(r["id"], r["kind"], r["recipient"], r["attempts"], r["last_error"], r["next_retry"])
            for r in rows] == [(1, "code", GUARDIAN, 1, None, None)]  # fmt: skip
    shown = cli("outbox", "show", "1")
    assert shown.code == 0, shown.err
    assert shown.out.startswith(
        "Return-Path: <noreply@greffe.example>\r\nX-Gateway-Outbox-Id: 1\r\n"
    )
    assert f"To: {GUARDIAN}" in shown.out
    found = CODE.search(shown.out)
    assert found, shown.out
    # The two headers on top are outside the gateway's DKIM signature, which still verifies.
    record = "v=DKIM1; k=rsa; p=" + gw.services.settings.dkim_pub_file.read_text().strip()
    assert dkim.verify(code_file.read_bytes(), dnsfunc=lambda name, timeout=5: record.encode())

    pdf = plain_pdf()
    raw = gw.message(subject=f"Compte [{found.group(1)}]",
                     attachments=[("compte.pdf", "application/pdf", pdf)])  # fmt: skip
    status, reply = gw.send(raw)
    assert status == 250, reply
    wait_until(lambda: len(captured_files(mail_dir)) == 2)
    receipt = cli("outbox", "show", "2")
    assert receipt.code == 0, receipt.err
    (tmp_path / "accuse.eml").write_text(receipt.out)
    (tmp_path / "compte.pdf").write_bytes(pdf)
    verified = cli("receipts", "verify", str(tmp_path / "accuse.eml"),
                   "--document", str(tmp_path / "compte.pdf"))  # fmt: skip
    assert verified.code == 0, verified.out + verified.err
    assert "receipted as document 1" in verified.out
    table = cli("outbox", "list")
    assert table.out.splitlines()[0].split() == [
        "ID", "KIND", "RECIPIENT", "STATUS", "ATTEMPTS", "LAST_ERROR", "NEXT_RETRY"
    ]  # fmt: skip
    check = cli("check")
    assert check.code == 0, check.err
    assert "warning: relay.mode is capture: outgoing mail is NOT sent" in check.err
    assert "mail_captured: 2" in check.out


def test_capture_write_failure_stays_pending_until_retry_delivers_it(
    gateway_factory: GatewayFactory, court_key: CourtKey, cli: CliRunner, gateway_config: Path
) -> None:
    mail_dir = gateway_config.parent / "var" / "mail"
    mail_dir.write_text("not a folder\n")  # the maildir cannot be made: every write fails
    gw = start_captured(gateway_factory, court_key)
    ask_code(gw)
    [row] = wait_until(lambda: [r for r in listed(cli) if r["attempts"] == 1])
    assert row["status"] == "pending"
    assert row["last_error"] == "could not write to the capture maildir (see the log)"
    assert row["next_retry"] is not None  # backed off: 30 s
    assert listed(cli, "--status", "pending") == [row]
    assert listed(cli, "--status", "sent") == []
    waiting = cli("outbox", "show", "1")
    assert waiting.code == 1
    assert waiting.err == "gateway: outbox 1 is pending: nothing captured yet\n"

    mail_dir.unlink()
    retried = cli("outbox", "retry", "1")
    assert retried.code == 0, retried.err
    assert retried.out.startswith(f"outbox 1 (code to {GUARDIAN}) is due now")
    wait_until(lambda: captured_files(mail_dir))  # the worker's next pass, within 5 s
    [sent] = wait_until(lambda: listed(cli, "--status", "sent"))
    assert (sent["attempts"], sent["last_error"], sent["next_retry"]) == (2, None, None)
    with gw.services.db.reading() as session:
        actions = [event.action for event in AuditRepository(session).events_after(0, 100)]
    assert "outbox.retried" in actions

    again = cli("outbox", "retry", "1")
    assert (again.code, again.err) == (1, "gateway: outbox 1 was already sent: nothing to retry\n")
    unknown = cli("outbox", "retry", "42")
    assert (unknown.code, unknown.err) == (1, "gateway: unknown outbox id 42\n")
    assert cli("outbox", "show", "42").code == 1
    assert cli("outbox", "retry", "0").code == 2  # usage: an id is a positive number
    assert cli("outbox", "list", "--status", "lost").code == 2


def test_smtp_mode_relays_and_show_says_nothing_is_kept(
    world: World, cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GATEWAY__RELAY__MODE", "smtp")  # the CLI's view; the gateway's is smtp
    world.request_code()
    [row] = wait_until(
        lambda: [r for r in listed(cli, "--status", "sent") if r["kind"] == "code"]
    )
    assert row["last_attempt"] == "250 accepted by the relay"
    shown = cli("outbox", "show", str(row["id"]))
    assert shown.code == 1
    assert "was sent (250 accepted by the relay), not captured" in shown.err
    assert not world.gw.services.settings.mail_dir.exists()
    check = cli("check")
    assert check.code == 0 and "relay.mode is capture" not in check.err


def test_relay_refusal_gives_up_and_retry_says_there_is_nothing_to_send(
    world: World, cli: CliRunner
) -> None:
    world.sink.refuse_with("550 5.7.1 refused by policy")
    raw = world.gw.message(to=f"codes@{DOMAIN}", subject=f"CODE {COURT} {MEASURE}")
    code, text = world.gw.send(raw, rcpt=f"codes@{DOMAIN}")
    assert code == 250, text  # a 451 once under the full suite's load: its text says why
    [row] = wait_until(lambda: listed(cli, "--status", "failed"))
    assert (row["kind"], row["attempts"]) == ("code", 1)
    assert row["last_error"] == "550 5.7.1 refused by policy"
    retried = cli("outbox", "retry", str(row["id"]))
    assert retried.code == 1
    assert retried.err == (
        f"gateway: outbox {row['id']} gave up after 1 attempt(s) (550 5.7.1 refused by "
        "policy); its content was cleared then: nothing to send again\n"
    )
    shown = cli("outbox", "show", str(row["id"]))
    assert shown.code == 1 and "gave up (550 5.7.1 refused by policy)" in shown.err
