"""The front door through a real SMTP server: recipients, sender authentication, codes."""

from __future__ import annotations

import time

from sqlalchemy import func, select

from gateway.storage.models import AuditEvent, Outbox
from tests.fixtures.gatewayserver import COURT, DOMAIN, GUARDIAN, MEASURE, World
from tests.fixtures.pdfs import plain_pdf

PDF = plain_pdf()


def outbox_rows(world: World) -> int:
    with world.gw.services.db.transaction() as session:
        return session.scalar(select(func.count(Outbox.id))) or 0


def test_unknown_recipient_and_relay_refused(world: World) -> None:
    raw = world.gw.message(to="x@example.org")
    for rcpt in (f"nobody@{DOMAIN}", "someone@example.org", f"depot@sub.{DOMAIN}"):
        code, text = world.gw.send(raw, rcpt=rcpt)
        assert (code, text[:5]) == (550, "5.1.1"), rcpt


def test_code_request_mails_the_registered_address_only(world: World) -> None:
    code = world.request_code("compte")
    assert len(code) == 11
    _mail_from, rcpts, raw = world.sink.messages[-1]
    assert b"compte de gestion" in raw.replace(b"=\r\n", b"")  # the kind, in French
    assert rcpts == [GUARDIAN]
    assert b"DKIM-Signature:" in raw
    with world.gw.services.db.transaction() as session:
        actions = session.scalars(select(AuditEvent.action)).all()
        assert "code.issued" in actions
        # The code itself is never in the audit trail.
        for event in session.scalars(select(AuditEvent)).all():
            assert code.replace("-", "") not in str(event.data)


def test_code_request_enumeration_same_reply_nothing_mailed(world: World) -> None:
    before = outbox_rows(world)
    for subject in (f"CODE {COURT} 99/99999", f"CODE TJ-NOPE {MEASURE}"):
        raw = world.gw.message(to=f"codes@{DOMAIN}", subject=subject)
        code, text = world.gw.send(raw, rcpt=f"codes@{DOMAIN}")
        assert (code, text) == (250, "2.0.0 Message accepted")
    assert outbox_rows(world) == before


def test_code_request_bad_subject(world: World) -> None:
    raw = world.gw.message(to=f"codes@{DOMAIN}", subject="Bonjour")
    code, text = world.gw.send(raw, rcpt=f"codes@{DOMAIN}")
    assert code == 554 and "CODE <court> <measure>" in text


def test_missing_signature_refused(world: World) -> None:
    raw = world.gw.message(sign_domain=None, subject="x")
    code, text = world.gw.send(raw)
    assert code == 550 and text.startswith("5.7.1")
    assert "dkim" in text.lower() and "signature" in text.lower()


def test_unaligned_signature_refused(world: World) -> None:
    raw = world.gw.message(sign_domain="autre.example")
    code, text = world.gw.send(raw)
    assert code == 550 and text.startswith("5.7.1") and "aligned" in text


def test_broken_signature_refused(world: World) -> None:
    raw = world.gw.message(subject="x", body="original body\n")
    tampered = raw.replace(b"original body", b"tampered body")
    code, text = world.gw.send(tampered)
    assert code == 550 and text.startswith("5.7.1") and "verif" in text


def test_unregistered_sender_refused(world: World) -> None:
    raw = world.gw.message(sender="inconnu@exemple.fr")
    code, text = world.gw.send(raw, mail_from="inconnu@exemple.fr")
    assert code == 550 and text.startswith("5.7.1") and "registered" in text


def test_revoked_registration_refused(world: World) -> None:
    world.gw.services.admin.revoke_registration(COURT, MEASURE, GUARDIAN, "test")
    raw = world.gw.message(to=f"codes@{DOMAIN}", subject=f"CODE {COURT} {MEASURE}")
    code, text = world.gw.send(raw, rcpt=f"codes@{DOMAIN}")
    assert code == 550 and "registered" in text


def test_dns_timeout_is_temporary(world: World) -> None:
    raw = world.gw.message(subject="x")
    world.gw.dns.blackhole = True
    started = time.monotonic()
    code, text = world.gw.send(raw)
    world.gw.dns.blackhole = False
    assert (code, text[:5]) == (451, "4.4.3")
    assert time.monotonic() - started < 15


def test_submission_accepted_and_numbered(world: World) -> None:
    code = world.request_code()
    raw1 = world.gw.message(
        subject=f"Requête [{code}]", attachments=[("a.pdf", "application/pdf", PDF)]
    )
    assert world.gw.send(raw1) == (250, f"2.0.0 Accepted {COURT}-{_year(world)}-000001/1")
    raw2 = world.gw.message(subject="suite", attachments=[("b.pdf", "application/pdf", PDF)])
    compact = code.replace("-", "").lower()
    reply = world.gw.send(raw2, rcpt=f"depot+{compact}@{DOMAIN}")
    assert reply == (250, f"2.0.0 Accepted {COURT}-{_year(world)}-000001/2")
    # A retry of the same bytes after a lost reply: same reference, nothing new stored.
    assert world.gw.send(raw1) == (250, f"2.0.0 Accepted {COURT}-{_year(world)}-000001/1")


def _year(world: World) -> int:
    return world.gw.clock().year
