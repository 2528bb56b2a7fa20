"""The greffe's review end to end: a real gateway, real gpg, the relay sink, SQLite and PostgreSQL.

Each notice is read as the relay received it and verified twice: DKIM with the
key `gateway init` published, and the PGP/MIME signature with the gateway's
public signing key in a GnuPG home of its own.
"""

from __future__ import annotations

import email
import hashlib
import json
import threading
from collections.abc import Iterator
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path

import dkim
import pytest
from sqlalchemy import select

from gateway.errors import Conflict, InputError, NotFound, WrongStatus
from gateway.review import RequestView
from gateway.storage.crypto import GpgKeyring, ReceiptSigner
from gateway.storage.models import AuditEvent, Code, Outbox, Request
from gateway.storage.requests import RequestRepository
from tests.conftest import CliRunner
from tests.fixtures.gatewayserver import (
    COURT,
    COURT_NAME,
    DOMAIN,
    GUARDIAN,
    MEASURE,
    World,
    mail_subject,
)
from tests.fixtures.pdfs import plain_pdf
from tests.fixtures.smtpsink import Message

PDF = plain_pdf(filler=3000)
OTHER_PDF = plain_pdf(filler=4000)
CLERK = "test:greffier.dupont"
GREFFE = f"Greffe du {COURT_NAME}"


@pytest.fixture
def keyring(world: World, tmp_path: Path) -> Iterator[GpgKeyring]:
    """A GnuPG home holding only the gateway's public signing key, as a guardian would."""
    ring = GpgKeyring(tmp_path / "guardian-gnupg")
    ring.import_public(world.gw.services.settings.signing_pub_file.read_text("ascii"))
    yield ring
    ring.close()


def submit(world: World, code: str, *pdfs: bytes) -> str:
    """One message with the code and these PDFs; returns its submission reference."""
    attachments = [(f"piece {n}.pdf", "application/pdf", pdf) for n, pdf in enumerate(pdfs, 1)]
    raw = world.gw.message(subject=f"Compte [{code}]", attachments=attachments)
    status, reply = world.gw.send(raw)
    assert status == 250, reply
    return reply.split()[-1]


def filed_request(world: World, *submissions: tuple[bytes, ...]) -> str:
    """A request with these submissions (each a tuple of PDFs); returns its reference."""
    code = world.request_code("compte")
    references = [submit(world, code, *pdfs) for pdfs in submissions]
    return references[0].split("/")[0]


def wait_for_subject(world: World, prefix: str, start: int = 0) -> Message:
    return world.sink.wait_for_mail(
        lambda mail: mail_subject(mail).startswith(prefix), start=start, timeout=20
    )


def parse(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=default_policy)
    assert isinstance(message, EmailMessage)
    return message


def verified_text(world: World, raw: bytes, keyring: GpgKeyring) -> str:
    """The notice's text, once its DKIM and OpenPGP signatures are both checked."""
    settings = world.gw.services.settings
    assert dkim_verifies(world, raw)
    message = parse(raw)
    assert message.get_content_type() == "multipart/signed"
    assert message.get_param("protocol") == "application/pgp-signature"
    part, signature = signed_part(raw, message)
    fingerprint = ReceiptSigner(settings.signing_key_file.read_text("ascii")).fingerprint
    assert keyring.verify_detached(part, signature, fingerprint=fingerprint)
    assert not keyring.verify_detached(part.replace(COURT.encode(), b"TJ-PARIS"), signature)
    text = parse(part).get_content()
    assert isinstance(text, str)
    return text.replace("\r\n", "\n")


def signed_part(raw: bytes, message: EmailMessage) -> tuple[bytes, str]:
    """The first part's exact bytes, cut as a verifier cuts them (RFC 3156), and the signature."""
    boundary = message.get_param("boundary")
    assert isinstance(boundary, str)
    body = raw.split(b"\r\n\r\n", 1)[1]
    first = body.index(b"--" + boundary.encode() + b"\r\n") + len(boundary) + 4
    end = body.index(b"\r\n--" + boundary.encode(), first)
    signature = list(message.iter_parts())[1].get_content()
    return body[first:end], signature.decode("ascii")


def audit(world: World, action: str) -> list[tuple[str, str, dict[str, object]]]:
    with world.gw.services.db.reading() as session:
        rows = session.scalars(select(AuditEvent).where(AuditEvent.action == action)).all()
        return [(row.actor, row.subject, dict(row.data)) for row in rows]


def outbox_kinds(world: World, reference: str) -> list[str]:
    with world.gw.services.db.reading() as session:
        query = select(Outbox.kind).where(Outbox.related_reference == reference)
        return list(session.scalars(query.order_by(Outbox.id)).all())


def request_row(world: World, reference: str) -> Request:
    with world.gw.services.db.reading() as session:
        row = session.scalars(select(Request).where(Request.reference == reference)).one()
        session.expunge(row)
        return row


def test_acknowledge_mails_a_signed_avis_d_enregistrement(
    world: World, keyring: GpgKeyring
) -> None:
    reference = filed_request(world, (PDF, OTHER_PDF))
    world.sink.wait_for(2, timeout=20)  # the code and the receipt

    view = world.gw.services.review.acknowledge(reference.lower(), CLERK)

    assert view == RequestView(reference, COURT, "received", None)
    mail_from, rcpts, raw = wait_for_subject(world, "Avis d'enregistrement")
    assert (mail_from, rcpts) == (f"noreply@{DOMAIN}", [GUARDIAN])
    [sender] = parse(raw)["From"].addresses
    assert (sender.display_name, sender.addr_spec) == (GREFFE, f"noreply@{DOMAIN}")
    assert mail_subject((mail_from, rcpts, raw)) == f"Avis d'enregistrement – requête {reference}"
    text = verified_text(world, raw, keyring)
    assert f"{reference}/1" in text and MEASURE in text and COURT_NAME in text
    assert "compte de gestion" in text
    for pdf in (PDF, OTHER_PDF):
        assert hashlib.sha256(pdf).hexdigest() in text
    assert "document 2 (application/pdf)" in text
    assert audit(world, "request.acknowledged") == [
        (CLERK, reference, {"from": "open", "notice": audit_notice_id(world, reference)})
    ]
    assert request_row(world, reference).sealed_at is not None


def audit_notice_id(world: World, reference: str) -> int:
    with world.gw.services.db.reading() as session:
        query = select(Outbox.id).where(
            Outbox.related_reference == reference, Outbox.kind == "acknowledgement"
        )
        return int(session.scalars(query).one())


def test_acknowledge_closes_an_open_requests_code(world: World) -> None:
    code = world.request_code()
    reference = submit(world, code, PDF).split("/")[0]

    world.gw.services.review.acknowledge(reference, CLERK)

    raw = world.gw.message(
        subject=f"Encore [{code}]", attachments=[("b.pdf", "application/pdf", OTHER_PDF)]
    )
    status, reply = world.gw.send(raw)
    assert status == 550 and "closed" in reply
    with world.gw.services.db.reading() as session:
        assert session.scalars(select(Code.closed_at)).one() is not None
    assert request_row(world, reference).submission_count == 1


def test_accept_after_acknowledge_is_audited_and_mails_nothing(world: World) -> None:
    reference = filed_request(world, (PDF,))
    review = world.gw.services.review
    review.acknowledge(reference, CLERK)

    view = review.accept(reference, "api:key-7")

    assert view == RequestView(reference, COURT, "accepted", None)
    assert request_row(world, reference).status == "accepted"
    assert [(actor, subject) for actor, subject, _ in audit(world, "request.accepted")] == [
        ("api:key-7", reference)
    ]
    assert outbox_kinds(world, reference) == ["code", "acknowledgement"]


def test_reject_mails_reason_notes_and_what_to_do_signed(world: World, keyring: GpgKeyring) -> None:
    reference = filed_request(world, (PDF,), (OTHER_PDF, PDF))
    reason = "Le compte de gestion n'est pas signé.\n\n\n  Merci de le signer\x1b[31m. "
    notes = {" 2 / 1 ": "La page 3 est illisible.\nScannez-la de nouveau.", "1/1": "Incomplet."}

    view = world.gw.services.review.reject(reference, CLERK, reason, notes=notes)

    cleaned = "Le compte de gestion n'est pas signé.\n\nMerci de le signer[31m."
    assert view == RequestView(reference, COURT, "rejected", cleaned)
    _from, rcpts, raw = wait_for_subject(world, f"Requête {reference} rejetée")
    assert rcpts == [GUARDIAN]
    assert parse(raw)["From"].addresses[0].display_name == GREFFE
    text = verified_text(world, raw, keyring)
    assert "    Le compte de gestion n'est pas signé.\n\n    Merci de le signer[31m.\n" in text
    assert (
        f"    Envoi {reference}/2, document 1 (application/pdf)\n"
        f"      SHA-256 : {hashlib.sha256(OTHER_PDF).hexdigest()}\n"
        "      La page 3 est illisible.\n      Scannez-la de nouveau.\n"
    ) in text
    assert text.index(f"{reference}/1, document 1") < text.index(f"{reference}/2, document 1")
    assert f"{reference}/2, document 2" not in text  # no note on it
    assert f"CODE {COURT} {MEASURE} compte" in text and f"codes@{DOMAIN}" in text
    row = request_row(world, reference)
    assert row.status_reason == cleaned
    assert row.status_notes == {"1/1": "Incomplet.", "2/1": notes[" 2 / 1 "]}
    [(actor, subject, data)] = audit(world, "request.rejected")
    assert (actor, subject, data["from"], data["notes"]) == (
        CLERK,
        reference,
        "open",
        ["1/1", "2/1"],
    )
    assert data["reason_sha256"] == hashlib.sha256(cleaned.encode()).hexdigest()
    assert "signé" not in str(data)  # the free text stays out of the append-only trail


def test_reject_without_notes_has_no_observations(world: World, keyring: GpgKeyring) -> None:
    reference = filed_request(world, (PDF,))
    world.gw.services.review.acknowledge(reference, CLERK)

    world.gw.services.review.reject(reference, CLERK, "Hors délai.")

    text = verified_text(world, wait_for_subject(world, f"Requête {reference}")[2], keyring)
    assert "Observations" not in text
    assert "    Hors délai.\n\nCe que vous pouvez faire" in text
    [(_actor, _subject, data)] = audit(world, "request.rejected")
    assert data["from"] == "received"


def test_wrong_transitions_raise_wrong_status_naming_it(world: World) -> None:
    reference = filed_request(world, (PDF,))
    review = world.gw.services.review

    with pytest.raises(WrongStatus, match=rf"^request {reference} is open; accept applies"):
        review.accept(reference, CLERK)
    review.acknowledge(reference, CLERK)
    with pytest.raises(
        WrongStatus,
        match=r" is received; acknowledge applies to a request "
        r"that is open or sealed$",
    ) as caught:
        review.acknowledge(reference, CLERK)
    assert caught.value.status == "received"
    assert isinstance(caught.value, Conflict)
    review.reject(reference, CLERK, "Pièces manquantes.")
    for action in (review.accept, review.acknowledge):
        with pytest.raises(WrongStatus, match=" is rejected; "):
            action(reference, CLERK)
    with pytest.raises(WrongStatus, match=" is rejected; "):
        review.reject(reference, CLERK, "Encore.")
    assert outbox_kinds(world, reference) == ["code", "acknowledgement", "rejection"]
    assert request_row(world, reference).status_reason == "Pièces manquantes."


def test_other_courts_reference_is_not_found(world: World) -> None:
    reference = filed_request(world, (PDF,))
    review = world.gw.services.review

    with pytest.raises(NotFound) as outside:
        review.acknowledge(reference, CLERK, courts={"TJ-X"})
    with pytest.raises(NotFound) as unknown:
        review.acknowledge(f"{COURT}-2026-999999", CLERK, courts={"TJ-X"})
    with pytest.raises(NotFound):
        review.reject(reference, CLERK, "x", courts=set())
    assert str(outside.value) == f"unknown request {reference}"
    assert type(outside.value) is type(unknown.value) is NotFound
    assert request_row(world, reference).status == "open"
    assert review.acknowledge(reference, CLERK, courts={"tj-lyon", "TJ-X"}).status == "received"


def test_bad_notes_and_reasons_change_nothing(world: World) -> None:
    reference = filed_request(world, (PDF,))
    review = world.gw.services.review

    with pytest.raises(InputError, match=r"has no document 1/2$"):
        review.reject(reference, CLERK, "Motif.", notes={"1/2": "absent"})
    with pytest.raises(InputError, match="expected <submission>/<document>"):
        review.reject(reference, CLERK, "Motif.", notes={"1": "quel envoi ?"})
    with pytest.raises(InputError, match="same document"):
        review.reject(reference, CLERK, "Motif.", notes={"1/1": "a", "01/1": "b"})
    with pytest.raises(InputError, match="reason must not be empty"):
        review.reject(reference, CLERK, " \n\x00 ")
    with pytest.raises(InputError, match="longer than 2000"):
        review.reject(reference, CLERK, "x" * 2001)
    assert request_row(world, reference).status == "open"
    assert outbox_kinds(world, reference) == ["code"]


def test_request_without_submission_cannot_be_reviewed(world: World) -> None:
    world.request_code()
    with world.gw.services.db.reading() as session:
        reference = session.scalars(select(Request.reference)).one()

    with pytest.raises(Conflict, match="has no submission") as caught:
        world.gw.services.review.acknowledge(reference, CLERK)
    assert not isinstance(caught.value, WrongStatus)


def test_two_clerks_acknowledging_at_once_move_it_once(world: World) -> None:
    reference = filed_request(world, (PDF,))
    review = world.gw.services.review
    results: list[object] = []
    start = threading.Barrier(2)

    def clerk(name: str) -> None:
        start.wait()
        try:
            results.append(review.acknowledge(reference, f"test:{name}"))
        except WrongStatus as exc:
            results.append(exc)

    threads = [threading.Thread(target=clerk, args=(n,)) for n in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(type(r).__name__ for r in results) == ["RequestView", "WrongStatus"]
    assert outbox_kinds(world, reference).count("acknowledgement") == 1
    assert len(audit(world, "request.acknowledged")) == 1


def test_move_is_conditional_on_the_expected_status(world: World) -> None:
    # The guard itself: a clerk whose read is stale cannot move the request.
    reference = filed_request(world, (PDF,))
    world.gw.services.review.acknowledge(reference, CLERK)
    request_id = request_row(world, reference).id
    now = world.gw.clock()

    with world.gw.services.db.transaction() as session:
        moved = RequestRepository(session).move(request_id, ["open", "sealed"], "received", now)
    assert moved is False


def test_cli_acknowledge_accept_reject(world: World, cli: CliRunner, keyring: GpgKeyring) -> None:
    first = filed_request(world, (PDF,))

    done = cli("requests", "acknowledge", first)
    assert (done.code, done.out) == (0, f"request {first} is now received\n"), done.err
    assert cli("requests", "accept", first).out == f"request {first} is now accepted\n"
    again = cli("requests", "accept", first)
    assert again.code == 1
    assert again.err == (
        f"gateway: request {first} is accepted; accept applies to a request that is received\n"
    )
    missing = cli("requests", "reject", first)
    assert missing.code == 2 and "--reason" in missing.err
    second = filed_request(world, (OTHER_PDF,))
    bad = cli("requests", "reject", second, "--reason", "x", "--note", "1/1")
    assert bad.code == 1 and "KEY=TEXT" in bad.err
    rejected = cli(
        "requests",
        "reject",
        second,
        "--reason",
        "Pièce illisible.",
        "--note",
        "1/1=Le scan est flou.",
    )
    assert rejected.code == 0, rejected.err
    for action in ("request.acknowledged", "request.accepted", "request.rejected"):
        [(actor, _, _)] = audit(world, action)
        assert actor.startswith("cli:"), action
    assert "Le scan est flou." in verified_text(
        world, wait_for_subject(world, f"Requête {second} rejetée")[2], keyring
    )
    assert f"{first}/1" in verified_text(
        world, wait_for_subject(world, "Avis d'enregistrement")[2], keyring
    )
    listed = cli("requests", "list", "--status", "rejected", "--json")
    assert second in listed.out and first not in listed.out
    [row] = json.loads(listed.out)
    assert (row["reference"], row["reason"]) == (second, "Pièce illisible.")
    table = cli("requests", "list").out.splitlines()
    assert table[0].split()[-1] == "REASON"
    [line] = [line for line in table if line.startswith(second)]
    assert line.endswith("rejected  1            False  Pièce illisible."), line
    [line] = [line for line in table if line.startswith(first)]
    assert line.split()[-2:] == ["1", "False"]  # accepted: no reason


def test_registration_notices_arrive_for_add_revoke_and_import(
    world: World, cli: CliRunner, keyring: GpgKeyring, tmp_path: Path
) -> None:
    # make_world registered the guardian before the gateway started: its notice came first.
    assert world.registration_notice is not None
    _from, rcpts, raw = world.registration_notice
    assert rcpts == [GUARDIAN]
    assert parse(raw)["From"].addresses[0].display_name == GREFFE
    text = dkim_text(world, raw)
    assert f"CODE {COURT} {MEASURE}" in text and COURT_NAME in text and GUARDIAN in text

    before = len(world.sink.messages)
    world.gw.services.admin.revoke_registration(COURT, MEASURE, GUARDIAN, "test")
    csv_file = tmp_path / "registrations.csv"
    csv_file.write_text(
        "court,measure,address\nTJ-LYON,22/1,a@exemple.fr\nTJ-LYON,22/2,b@exemple.fr\n"
    )
    assert cli("registrations", "import", str(csv_file)).code == 0
    quiet = tmp_path / "quiet.csv"
    quiet.write_text("court,measure,address\nTJ-LYON,22/3,c@exemple.fr\n")
    assert cli("registrations", "import", "--no-notices", str(quiet)).code == 0

    revoked = wait_for_subject(world, "Votre adresse n'est plus enregistrée", start=before)
    assert revoked[1] == [GUARDIAN]
    assert "ne sont plus valables" in dkim_text(world, revoked[2])
    world.sink.wait_for(before + 3, timeout=20)
    imported = [m for m in world.sink.messages[before:] if m is not revoked]
    assert sorted(m[1][0] for m in imported) == ["a@exemple.fr", "b@exemple.fr"]
    assert {mail_subject(m) for m in imported} == {
        "Votre adresse est enregistrée – mesure 22/1 (TJ-LYON)",
        "Votre adresse est enregistrée – mesure 22/2 (TJ-LYON)",
    }
    with world.gw.services.db.reading() as session:
        kinds = session.scalars(select(Outbox.kind).order_by(Outbox.id)).all()
    assert kinds == ["registration", "registration_revoked", "registration", "registration"]


def dkim_verifies(world: World, raw: bytes) -> bool:
    """Whether DKIM verifies with the key `gateway init` published for the gateway."""
    settings = world.gw.services.settings
    record = f"v=DKIM1; k=rsa; p={settings.dkim_pub_file.read_text('ascii').strip()}".encode()
    return bool(dkim.verify(raw, dnsfunc=lambda name, timeout=5: record))


def dkim_text(world: World, raw: bytes) -> str:
    """A plain (not OpenPGP-signed) notice's text, once its DKIM signature is checked."""
    assert dkim_verifies(world, raw)
    text = parse(raw).get_content()
    assert isinstance(text, str)
    return text.replace("\r\n", "\n")


def test_receipt_code_and_state_are_sent_in_the_courts_name(world: World) -> None:
    code = world.request_code()
    submit(world, code, PDF)
    raw = world.gw.message(to=f"etat@{DOMAIN}", subject=f"[{code}]")
    assert world.gw.send(raw, rcpt=f"etat@{DOMAIN}")[0] == 250

    mails = world.sink.wait_for(3, timeout=20)

    assert [mail_subject(mail).split()[0] for mail in mails] == ["Votre", "Accusé", "État"]
    for _mail_from, _rcpts, data in mails:
        [sender] = parse(data)["From"].addresses
        assert (sender.display_name, sender.addr_spec) == (GREFFE, f"noreply@{DOMAIN}")
        assert dkim_verifies(world, data)
