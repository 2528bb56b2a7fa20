"""IMAP pull against a real Dovecot: stubs, quarantine, crash recovery, UIDVALIDITY, scrub."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from gateway.imap import puller as puller_module
from gateway.imap.stub import STUB_HEADER
from gateway.ingest import pipeline as pipeline_module
from gateway.storage.models import Outbox, Submission
from tests.fixtures.dovecot import (
    PDF,
    PDF_SHA256,
    Crash,
    Dovecot,
    audit_events,
    carries_document,
    count,
    crash_at,
    runner,
    states,
    submission_message,
    submissions,
)
from tests.fixtures.gatewayserver import World
from tests.fixtures.pdfs import plain_pdf

pytestmark = pytest.mark.dovecot


async def test_imap_accepted_message_becomes_stub_without_documents(
    world: World, dovecot: Dovecot
) -> None:
    raw = submission_message(world, world.request_code("compte"))
    dovecot.append(raw, flags="\\Seen \\Flagged")

    summary = await runner(world.gw.services, dovecot).pull_once()

    assert (summary.examined, summary.stored, summary.stripped) == (1, 1, 1)
    [(reference, channel)] = submissions(world.gw.services)
    assert channel == "imap"
    [(_uid, head, stub)] = dovecot.messages()
    assert b"\\Seen" in head and b"\\Flagged" in head  # the original's flags
    assert reference.encode() in stub and PDF_SHA256.encode() in stub
    assert b"compte 2024.pdf" in stub
    assert not carries_document(stub) and carries_document(raw)
    assert b"Subject: Compte de gestion 2024" in stub and STUB_HEADER.encode() in stub
    assert b"multipart" not in stub.lower()
    assert states(world.gw.services) == ["stripped"]
    [event] = audit_events(world.gw.services, "imap.stripped")
    assert event.subject == reference and event.data["documents"] == 1

    again = await runner(world.gw.services, dovecot).pull_once()
    assert (again.examined, again.skipped) == (0, 1)  # the stub is never pulled
    assert len(dovecot.messages()) == 1


async def test_imap_accepted_message_is_parsed_once_for_the_pipeline_and_its_stub(
    world: World, dovecot: Dovecot, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = submission_message(world, world.request_code("compte"))
    dovecot.append(raw)
    parsed: list[int] = []

    def counting(module: object) -> None:
        original = module.parse_message  # type: ignore[attr-defined]

        def parse(data: bytes, *args: object, **kwargs: object) -> object:
            parsed.append(len(data))
            return original(data, *args, **kwargs)

        monkeypatch.setattr(module, "parse_message", parse)

    counting(pipeline_module)
    counting(puller_module)
    summary = await runner(world.gw.services, dovecot).pull_once()

    assert (summary.stored, summary.stripped) == (1, 1)
    assert parsed == [len(raw)]  # the stub is built from the pipeline's own parse
    [(_uid, _head, stub)] = dovecot.messages()
    assert b"compte 2024.pdf" in stub and not carries_document(stub)


async def test_imap_refused_message_moved_to_quarantine_unchanged(
    world: World, dovecot: Dovecot
) -> None:
    raw = world.gw.message(sign_domain=None, subject="pas de signature")
    dovecot.append(raw)

    summary = await runner(world.gw.services, dovecot).pull_once()

    assert (summary.quarantined, summary.stored) == (1, 0)
    assert dovecot.messages() == []
    [(_uid, _head, kept)] = dovecot.messages("Quarantine")
    assert kept == raw
    assert count(world.gw.services, Submission) == 0
    [event] = audit_events(world.gw.services, "imap.quarantined")
    assert event.data["reason"] == "NoSignature"
    assert states(world.gw.services) == ["quarantined"]


async def test_imap_quarantine_audit_never_keeps_the_senders_filename(
    world: World, dovecot: Dovecot
) -> None:
    """SPEC §5: no filename in clear in the database, an audit line of a refusal included."""
    code = world.request_code()
    raw = world.gw.message(
        to=f"depot+{code.replace('-', '')}@greffe.example",
        attachments=[("dossier-secret-Dupont.exe", "application/octet-stream", b"MZ" + b"\0" * 64)],
    )
    dovecot.append(raw)

    summary = await runner(world.gw.services, dovecot).pull_once()

    assert summary.quarantined == 1
    [event] = audit_events(world.gw.services, "imap.quarantined")
    assert event.data["reason"] == "DocumentRefused"
    assert "Dupont" not in repr(event.data)


async def test_imap_crash_between_store_and_strip_strips_without_storing_again(
    world: World, dovecot: Dovecot
) -> None:
    raw = submission_message(world, world.request_code())
    dovecot.append(raw)
    services = world.gw.services
    receipts_before = _receipts(world)

    with pytest.raises(Crash):
        await runner(services, dovecot, crash_at("stored")).pull_once()
    assert states(services) == ["stored"]
    [(_uid, _head, still_there)] = dovecot.messages()
    assert still_there == raw
    [(reference, _channel)] = submissions(services)

    summary = await runner(services, dovecot).pull_once()

    assert (summary.stored, summary.stripped) == (0, 1)
    assert submissions(services) == [(reference, "imap")]
    assert _receipts(world) == receipts_before + 1  # one receipt, not two
    [(_uid, _head, stub)] = dovecot.messages()
    assert reference.encode() in stub and not carries_document(stub)


async def test_imap_crash_after_fetch_dedupes_on_message_id_and_hash(
    world: World, dovecot: Dovecot
) -> None:
    """Stopped after the pipeline committed but before 'stored' was written."""
    raw = submission_message(world, world.request_code())
    dovecot.append(raw)
    services = world.gw.services

    with pytest.raises(Crash):
        await runner(services, dovecot, crash_at("fetched")).pull_once()
    assert states(services) == ["fetched"] and submissions(services) == []

    summary = await runner(services, dovecot).pull_once()
    assert (summary.stored, summary.stripped) == (1, 1)
    assert len(submissions(services)) == 1


async def test_imap_uidvalidity_reset_rereads_folder_without_double_storage(
    world: World, dovecot: Dovecot
) -> None:
    services = world.gw.services
    code = world.request_code()
    first = submission_message(world, code, body="premier\n")
    second = submission_message(world, code, body="second\n")
    dovecot.append(first)
    dovecot.append(second)
    with pytest.raises(Crash):  # first stripped; second stored, then the process dies
        await runner(services, dovecot, crash_at("stored", uid=2)).pull_once()
    assert states(services) == ["stripped", "stored"]
    old_validity = _uidvalidity(dovecot)

    dovecot.reset_uidvalidity()
    dovecot.append(submission_message(world, code, body="troisième\n"))
    assert _uidvalidity(dovecot) != old_validity

    summary = await runner(services, dovecot).pull_once()

    assert (summary.stored, summary.stripped, summary.skipped) == (1, 2, 1)
    assert len(submissions(services)) == 3
    stubs = [raw for _uid, _head, raw in dovecot.messages()]
    assert len(stubs) == 3 and not any(carries_document(s) for s in stubs)
    assert all(STUB_HEADER.encode() in s for s in stubs)


async def test_imap_scrub_strips_documents_already_held(world: World, dovecot: Dovecot) -> None:
    services = world.gw.services
    code = world.request_code()
    held = submission_message(world, code)
    code_status, text = world.gw.send(held, rcpt=f"depot+{code.replace('-', '')}@greffe.example")
    assert code_status == 250, text
    other = world.gw.message(
        to="depot@greffe.example",
        attachments=[("autre.pdf", "application/pdf", plain_pdf(filler=10))],
    )
    not_ours = world.gw.message(
        to="ami@exemple.fr", attachments=[("compte 2024.pdf", "application/pdf", PDF)]
    )
    for raw in (held, other, not_ours):
        dovecot.append(raw, folder="Sent")

    summary = await runner(services, dovecot, mode="scrub", folders=["Sent"]).pull_once()

    assert (summary.scrubbed, summary.skipped, summary.stored) == (1, 2, 0)
    assert len(submissions(services)) == 1
    found = [raw for _uid, _head, raw in dovecot.messages("Sent")]
    assert other in found and not_ours in found
    [stub] = [raw for raw in found if STUB_HEADER.encode() in raw]
    assert PDF_SHA256.encode() in stub and not carries_document(stub)
    assert len(audit_events(services, "imap.scrubbed")) == 1
    assert "Quarantine" not in dovecot.folders()  # scrub never quarantines


def _receipts(world: World) -> int:
    with world.gw.services.db.transaction() as session:
        query = select(func.count()).select_from(Outbox).where(Outbox.kind == "receipt")
        return session.scalar(query) or 0


def _uidvalidity(dovecot: Dovecot) -> int:
    with dovecot.client() as client:
        return int(client.response("UIDVALIDITY")[1][0])
