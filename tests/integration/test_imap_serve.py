"""`gateway serve` watching a real Dovecot mailbox: IDLE wakes the puller on a new message."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from sqlalchemy import select

from gateway.imap.stub import STUB_HEADER
from gateway.storage.models import ImapCursor
from tests.fixtures.dovecot import Dovecot, carries_document, submission_message, submissions
from tests.fixtures.gatewayserver import COURT, GUARDIAN, MEASURE, GatewayFactory, World
from tests.fixtures.gpgkeys import CourtKey
from tests.fixtures.smtpsink import SmtpSink

pytestmark = pytest.mark.dovecot


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_imap_idle_wakes_serve_on_new_message(
    gateway_factory: GatewayFactory, smtp_sink: SmtpSink, court_key: CourtKey, dovecot: Dovecot
) -> None:
    # A poll interval far beyond the test's patience: only IDLE can explain a quick pull.
    mailboxes = (
        f'[{{name = "intake", host = "127.0.0.1", port = {dovecot.port}, tls = "none", '
        f'username = "{dovecot.user}", password = "{dovecot.password}", '
        'poll_interval = "1h"}]'
    )
    gw = gateway_factory(
        {
            "GATEWAY__RELAY__HOST": "127.0.0.1",
            "GATEWAY__RELAY__PORT": str(smtp_sink.port),
            "GATEWAY__IMAP__MAILBOXES": mailboxes,
        }
    )
    gw.services.admin.add_court(COURT, "Tribunal judiciaire de Lyon", "test")
    gw.services.admin.add_court_key(COURT, court_key.armored_public.encode(), "test")
    gw.services.admin.add_registration(COURT, MEASURE, GUARDIAN, "test")
    world = World(gw, smtp_sink, court_key)
    raw = submission_message(world, world.request_code())

    def first_pass_done() -> bool:
        with gw.services.db.transaction() as session:
            return session.scalar(select(ImapCursor.mailbox)) is not None

    _wait(first_pass_done, 20, "the first pass")
    time.sleep(0.5)  # let the watcher settle into IDLE
    dovecot.append(raw)

    def stripped() -> bool:
        found = dovecot.messages()
        return len(found) == 1 and STUB_HEADER.encode() in found[0][2]

    started = time.monotonic()
    _wait(stripped, 20, "the stub")
    assert time.monotonic() - started < 15
    [(_uid, _head, stub)] = dovecot.messages()
    assert not carries_document(stub)
    [(reference, channel)] = submissions(gw.services)
    assert channel == "imap" and reference.encode() in stub
