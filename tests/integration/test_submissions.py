"""Submissions end to end: real SMTP, real gpg, the store, receipts, etat@ and the greffe export."""

from __future__ import annotations

import email
import hashlib
import json
import os
import re
import smtplib
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from email.policy import default as default_policy
from pathlib import Path

import dkim
import jsonschema
import pytest
from sqlalchemy import func, select

from gateway.greffe.export import Exporter, IntegrityFailure
from gateway.ingest.manifest import load_schema
from gateway.storage.crypto import GpgKeyring
from gateway.storage.models import Blob, Document, Registration, Request, Submission
from tests.fixtures.gatewayserver import COURT, DOMAIN, GUARDIAN, MEASURE, World, mail_subject
from tests.fixtures.pdfs import plain_pdf

PDF = plain_pdf(filler=5000)  # a real PDF: qpdf must be able to read every accepted one


def counts(world: World) -> tuple[int, int, int]:
    with world.gw.services.db.transaction() as session:
        return (
            session.scalar(select(func.count(Submission.id))) or 0,
            session.scalar(select(func.count(Document.id))) or 0,
            session.scalar(select(func.count()).select_from(Blob)) or 0,
        )


def blob_files(world: World) -> list[Path]:
    root = world.gw.services.settings.blob_dir
    return [p for p in root.rglob("*") if p.is_file()]


def submit(world: World, code: str, **kwargs: object) -> tuple[int, str]:
    attachments = kwargs.pop("attachments", [("compte 2025.pdf", "application/pdf", PDF)])
    raw = world.gw.message(subject=f"Compte de gestion [{code}]", attachments=attachments, **kwargs)  # type: ignore[arg-type]
    return world.gw.send(raw)


def test_stored_encrypted_and_gpg_decrypts(world: World) -> None:
    code = world.request_code("compte")
    raw = world.gw.message(
        subject=f"Compte [{code}]", attachments=[("compte.pdf", "application/pdf", PDF)]
    )
    status, reply = world.gw.send(raw)
    assert status == 250, reply
    reference = reply.split()[-1]
    files = blob_files(world)
    assert len(files) == 3  # raw message, one document, manifest
    for path in files:
        data = path.read_bytes()
        assert PDF[:200] not in data and b"Compte" not in data  # nothing in clear on disk
    with world.gw.services.db.transaction() as session:
        submission = session.scalars(select(Submission)).one()
        raw_blob, manifest_blob = submission.raw_blob, submission.manifest_blob
        doc = session.scalars(select(Document)).one()
        doc_blob, doc_sha = doc.blob, doc.sha256
    blobs = world.gw.services.blobs
    with GpgKeyring(world.court_key.gnupghome) as keyring:
        assert keyring.decrypt(blobs.read(raw_blob)) == raw
        assert keyring.decrypt(blobs.read(doc_blob)) == PDF
        manifest = json.loads(keyring.decrypt(blobs.read(manifest_blob)))
    assert doc_sha == hashlib.sha256(PDF).hexdigest()
    jsonschema.validate(manifest, load_schema())
    assert manifest["submission_reference"] == reference
    assert manifest["kind"] == "compte"
    assert manifest["measure"] == MEASURE
    assert manifest["authentication"]["dkim_result"] == "pass"
    assert manifest["documents"][0]["original_filename"] == "compte.pdf"
    assert manifest["documents"][0]["detected_type"] == "application/pdf"
    assert manifest["message"]["sha256"] == hashlib.sha256(raw).hexdigest()


def test_receipt_signed_and_lists_hashes(world: World) -> None:
    code = world.request_code()
    status, reply = submit(world, code)
    assert status == 250
    receipt = world.sink.wait_for(2, timeout=20)[-1]
    assert receipt[1] == [GUARDIAN]
    message = email.message_from_bytes(receipt[2], policy=default_policy)
    assert message.get_content_type() == "multipart/signed"
    assert message.get_param("protocol") == "application/pgp-signature"
    assert "DKIM-Signature" in message
    # The receipt as the relay got it verifies against the key `gateway init` published.
    settings = world.gw.services.settings
    record = f"v=DKIM1; k=rsa; p={settings.dkim_pub_file.read_text('ascii').strip()}".encode()
    assert dkim.verify(receipt[2], dnsfunc=lambda name, timeout=5: record)
    signed_part = message.get_payload(0)  # multipart/mixed: the text and its JSON facts
    text = signed_part.get_body(("plain",)).get_content()
    assert reply.split()[-1] in text
    assert hashlib.sha256(PDF).hexdigest() in text


def test_same_bytes_twice_stored_once(world: World) -> None:
    code = world.request_code()
    raw = world.gw.message(subject=f"[{code}]", attachments=[("a.pdf", "application/pdf", PDF)])
    first = world.gw.send(raw)
    before = counts(world)
    assert world.gw.send(raw) == first
    assert counts(world) == before


def test_same_bytes_in_two_sessions_at_once_stored_once(world: World) -> None:
    """Both copies pass the duplicate read before either commits: the unique index
    settles it in the group commit, the loser's blobs are removed and it is
    answered with the winner's reference."""
    code = world.request_code()
    raw = world.gw.message(subject=f"[{code}]", attachments=[("a.pdf", "application/pdf", PDF)])
    submissions, documents, blobs = counts(world)
    files = len(blob_files(world))
    ready = threading.Barrier(2)

    def send() -> tuple[int, bytes]:
        with smtplib.SMTP("127.0.0.1", world.gw.port, timeout=30) as client:
            client.ehlo("client.test")
            client.mail(GUARDIAN)
            client.rcpt(f"depot@{DOMAIN}")
            ready.wait(10)
            return client.data(raw)

    with ThreadPoolExecutor(2) as pool:
        replies = list(pool.map(lambda _: send(), range(2)))
    assert replies[0] == replies[1] and replies[0][0] == 250
    assert counts(world) == (submissions + 1, documents + 1, blobs + 3)
    assert len(blob_files(world)) == files + 3  # raw, document, manifest: the loser's gone


@pytest.mark.parametrize(
    ("attachment", "named"),
    [
        (
            ("setup.exe", "application/octet-stream", b"MZ\x90\x00\x03\x00\x00\x00" + b"\0" * 200),
            "setup.exe",
        ),
        (("archive.zip", "application/zip", b"PK\x05\x06" + b"\0" * 18), "archive.zip"),
    ],
)
def test_refused_document_leaves_nothing(
    world: World, attachment: tuple[str, str, bytes], named: str
) -> None:
    code = world.request_code()
    status, reply = submit(
        world, code, attachments=[("ok.pdf", "application/pdf", PDF), attachment]
    )
    assert status == 554 and reply.startswith("5.6.0") and named in reply
    assert counts(world) == (0, 0, 0)
    assert blob_files(world) == []


def test_expired_code_refused_and_request_sealed(world: World) -> None:
    code = world.request_code()
    world.gw.clock.advance(timedelta(hours=48, seconds=1))
    status, reply = submit(world, code)
    assert status == 550 and reply.startswith("5.7.0") and "expired" in reply
    with world.gw.services.db.transaction() as session:
        assert session.scalars(select(Request.status)).one() == "sealed"


def test_wrong_codes_lock_the_sender_even_with_the_right_code(world: World) -> None:
    code = world.request_code()
    for _ in range(5):
        status, reply = submit(world, "AAAAA-1AAAA")
        assert status == 550 and "not valid" in reply
    status, reply = submit(world, code)
    assert status == 550 and reply.startswith("5.7.0") and "try again later" in reply
    world.gw.clock.advance(timedelta(minutes=16))
    assert submit(world, code)[0] == 250


def test_missing_code(world: World) -> None:
    status, reply = submit(world, "")
    assert status == 550 and "no code" in reply


def test_etat_reports_and_cloture_seals(world: World) -> None:
    code = world.request_code()
    assert submit(world, code)[0] == 250
    sent = len(world.sink.wait_for(2, timeout=20))
    raw = world.gw.message(to=f"etat@{DOMAIN}", subject=f"[{code}]")
    assert world.gw.send(raw, rcpt=f"etat@{DOMAIN}")[0] == 250
    state = world.sink.wait_for(sent + 1, timeout=20)[-1]
    assert b"/1" in state[2]
    raw = world.gw.message(to=f"etat@{DOMAIN}", subject=f"CLOTURE {code}")
    assert world.gw.send(raw, rcpt=f"etat@{DOMAIN}")[0] == 250
    status, reply = submit(world, code)
    assert status == 550 and "closed" in reply
    with world.gw.services.db.transaction() as session:
        assert session.scalars(select(Request.status)).one() == "sealed"


def test_malformed_mime_refused(world: World) -> None:
    code = world.request_code()
    body = (
        f"From: {GUARDIAN}\r\nTo: depot@{DOMAIN}\r\nSubject: [{code}]\r\n"
        "MIME-Version: 1.0\r\nContent-Type: multipart/mixed\r\n\r\nno boundary\r\n"
    ).encode()
    from tests.fixtures.dkimkeys import sign

    key = world.gw.publish_key("exemple.fr")
    raw = sign(body, b"s1", b"exemple.fr", key.private_pem, headers=(b"from", b"to", b"subject"))
    status, reply = world.gw.send(raw)
    assert status == 554 and reply.startswith("5.6.0") and "boundary" in reply


def _reply(sock: socket.socket) -> bytes:
    """One whole reply, its last line `NNN text`."""
    reply = b""
    while not re.search(rb"(^|\r\n)\d{3} [^\r\n]*\r\n$", reply):
        chunk = sock.recv(65536)
        assert chunk, reply
        reply += chunk
    return reply


def _smtp_dialogue(port: int, payload: bytes, commands: tuple[bytes, ...] = ()) -> list[bytes]:
    """Send each of `commands` and wait for its reply, then `payload` in one go."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        received = _reply(sock) if commands else b""
        for command in commands:  # PIPELINING is not offered: bytes sent early close the session
            sock.sendall(command + b"\r\n")
            received += _reply(sock)
        sock.sendall(payload)  # no half-close: EOF would abort the transaction in flight
        while b"\r\n221" not in received and (chunk := sock.recv(65536)):
            received += chunk
    return received.split(b"\r\n")


@pytest.mark.parametrize("smuggle", [b"\n.\n", b"\n.\r\n", b"\r.\r\n", b"\r\n.\n", b"\r\n.\r"])
def test_smuggling_bare_lf_does_not_end_data(world: World, smuggle: bytes) -> None:
    code = world.request_code()
    raw = world.gw.message(subject=f"[{code}]")
    hidden = (
        b"MAIL FROM:<evil@exemple.fr>\r\nRCPT TO:<depot@" + DOMAIN.encode() + b">\r\nDATA\r\n"
        b"Subject: smuggled\r\n\r\nhi\r\n.\r\n"
    )
    commands = (
        b"EHLO client.test",
        b"MAIL FROM:<" + GUARDIAN.encode() + b">",
        b"RCPT TO:<depot@" + DOMAIN.encode() + b">",
        b"DATA",
    )
    payload = raw.rstrip(b"\r\n") + smuggle + hidden + b"QUIT\r\n"
    lines = [line for line in _smtp_dialogue(world.gw.port, payload, commands) if line]
    data_replies = [line for line in lines if line[:3] in (b"250", b"554", b"550", b"451")]
    # One message, one verdict: the smuggled MAIL/RCPT/DATA were never commands.
    assert not any(line.startswith(b"250 2.0.0 Accepted") for line in lines)
    assert lines[-2].startswith(b"554 5.5.2") or lines[-1].startswith(b"554 5.5.2"), lines
    assert sum(1 for line in data_replies if line.startswith(b"250 2.1.0")) == 1
    assert counts(world)[0] == 0


def test_internal_storage_fault_is_451_without_details(world: World) -> None:
    code = world.request_code()
    blob_dir = world.gw.services.settings.blob_dir
    blob_dir.rmdir()
    blob_dir.write_text("not a directory")
    status, reply = submit(world, code)
    assert status == 451 and reply.startswith("4.3.0")
    assert "/" not in reply.replace("4.3.0", "") and "Error" not in reply
    assert counts(world)[0] == 0


def test_greffe_export_round_trip_and_tamper(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = world.request_code("inventaire")
    raws = []
    for name in ("inventaire.pdf", "annexe.pdf"):
        raw = world.gw.message(
            subject=f"Inventaire [{code}]",
            attachments=[(name, "application/pdf", PDF + name.encode())],
        )
        raws.append(raw)
        assert world.gw.send(raw)[0] == 250
    from gateway.cli.main import main

    reference = f"{COURT}-{world.gw.clock().year}-000001"
    out = tmp_path / "export"
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "--config",
                str(world.gw.services.settings.config_path),
                "submissions",
                "export",
                reference,
                "--out",
                str(out),
                "--gnupghome",
                str(world.court_key.gnupghome),
            ]
        )
    assert exit_info.value.code == 0, capsys.readouterr().err
    assert (out / "1" / "message.eml").read_bytes() == raws[0]
    assert (out / "2" / "message.eml").read_bytes() == raws[1]
    assert (out / "2" / "documents" / "01-annexe.pdf").read_bytes() == PDF + b"annexe.pdf"
    request_manifest = json.loads((out / "manifest.json").read_text())
    assert [s["reference"] for s in request_manifest["submissions"]] == [
        f"{reference}/1",
        f"{reference}/2",
    ]
    for number in ("1", "2"):
        jsonschema.validate(json.loads((out / number / "manifest.json").read_text()), load_schema())
    # A blob altered on disk: the export refuses and writes nothing.
    with world.gw.services.db.transaction() as session:
        doc_blob = session.scalars(select(Document.blob).order_by(Document.id)).first()
    assert doc_blob is not None
    path = world.gw.services.settings.blob_dir / doc_blob
    path.write_bytes(path.read_bytes()[:-1] + b"\0")
    with GpgKeyring(world.court_key.gnupghome) as keyring:
        exporter = Exporter(world.gw.services.db, world.gw.services.blobs, keyring)
        with pytest.raises(IntegrityFailure):
            exporter.export(reference, tmp_path / "again")
    assert not (tmp_path / "again").exists()


def test_requests_seal_themselves_when_the_code_expires(world: World) -> None:
    from gateway.otp.service import seal_expired

    world.request_code()
    with world.gw.services.db.transaction() as session:
        assert seal_expired(session, world.gw.clock()) == []
    later = world.gw.clock() + timedelta(hours=48, seconds=1)
    with world.gw.services.db.transaction() as session:
        sealed = seal_expired(session, later)
    assert sealed == [f"{COURT}-{world.gw.clock().year}-000001"]
    with world.gw.services.db.transaction() as session:
        assert session.scalars(select(Request.status)).one() == "sealed"


def test_check_passes_then_names_orphans_and_tampering(world: World) -> None:
    from gateway.audit.check import run_check

    code = world.request_code()
    assert submit(world, code)[0] == 250
    services = world.gw.services
    assert run_check(services.db, services.blobs, world.gw.clock()).ok
    # A crash between blob write and commit leaves a named blob with no row.
    key = services.blobs.new_key("raw", world.gw.clock())
    services.blobs.write(key, b"sealed bytes")
    old = time.time() - 7200
    os.utime(services.blobs.root / key, (old, old))
    findings = run_check(services.db, services.blobs, world.gw.clock())
    assert [p for p in findings.problems if "orphan" in p] == [
        f"orphan blob {key}: no database row (interrupted write?)"
    ]
    (services.blobs.root / key).unlink()
    with services.db.transaction() as session:
        doc_blob = session.scalars(select(Document.blob)).one()
    path = services.blobs.root / doc_blob
    path.write_bytes(path.read_bytes() + b"\0")
    findings = run_check(services.db, services.blobs, world.gw.clock())
    assert findings.problems == [f"blob {doc_blob} does not match its recorded SHA-256"]


def test_pgp_signed_mail_signature_part_is_not_a_document(world: World) -> None:
    from email.message import EmailMessage

    from tests.fixtures.dkimkeys import sign

    code = world.request_code()
    inner = EmailMessage()
    inner.set_content("Ci-joint le compte.\n")
    inner.add_attachment(PDF, maintype="application", subtype="pdf", filename="compte.pdf")
    outer = EmailMessage()
    outer["From"] = GUARDIAN
    outer["To"] = f"depot@{DOMAIN}"
    outer["Subject"] = f"[{code}]"
    outer["Message-ID"] = "<signed-1@exemple.fr>"
    outer.make_mixed()
    outer.set_type("multipart/signed")
    outer.set_param("protocol", "application/pgp-signature")
    outer.attach(inner)
    signature = EmailMessage()
    signature.set_content(
        b"-----BEGIN PGP SIGNATURE-----\n\nxx\n-----END PGP SIGNATURE-----\n",
        maintype="application",
        subtype="pgp-signature",
    )
    outer.attach(signature)
    raw = outer.as_bytes(policy=outer.policy.clone(linesep="\r\n"))
    key = world.gw.publish_key("exemple.fr")
    raw = sign(raw, b"s1", b"exemple.fr", key.private_pem)
    status, reply = world.gw.send(raw)
    assert status == 250, reply
    with world.gw.services.db.transaction() as session:
        assert [d.detected_type for d in session.scalars(select(Document))] == ["application/pdf"]


def test_message_without_message_id_sent_twice_stored_once(world: World) -> None:
    code = world.request_code()
    from tests.fixtures.dkimkeys import sign

    unsigned = world.gw.message(
        subject=f"[{code}]", attachments=[("a.pdf", "application/pdf", PDF)], sign_domain=None
    )
    head, _, body = unsigned.partition(b"\r\n\r\n")
    head = b"\r\n".join(
        line for line in head.split(b"\r\n") if not line.lower().startswith(b"message-id:")
    )
    key = world.gw.publish_key("exemple.fr")
    raw = sign(
        head + b"\r\n\r\n" + body,
        b"s1",
        b"exemple.fr",
        key.private_pem,
        headers=(b"from", b"to", b"subject", b"date"),
    )
    assert b"Message-ID" not in raw.split(b"\r\n\r\n")[0]
    first = world.gw.send(raw)
    assert first[0] == 250, first
    before = counts(world)
    assert world.gw.send(raw) == first
    assert counts(world) == before


def test_code_of_another_registration_refused(world: World) -> None:
    code = world.request_code()  # mailed to GUARDIAN
    other = "autre.tuteur@exemple.fr"
    world.gw.services.admin.add_registration(COURT, "99/99999", other, "test")
    raw = world.gw.message(
        sender=other, subject=f"[{code}]", attachments=[("a.pdf", "application/pdf", PDF)]
    )
    status, reply = world.gw.send(raw, mail_from=other)
    assert status == 550 and reply.startswith("5.7.0") and "does not belong" in reply
    assert counts(world) == (0, 0, 0)


def test_a_guardian_with_many_measures_files_under_the_measure_of_the_code(world: World) -> None:
    # A professional guardian: many measures under one address. The message reads only
    # the registration its code is bound to, and the filing is that measure's.
    measures = [f"23/{n:05d}" for n in range(40)]
    for measure in measures:
        world.gw.services.admin.add_registration(COURT, measure, GUARDIAN, "test")
    code = world.request_code(measure=measures[17])
    raw = world.gw.message(subject=f"[{code}]", attachments=[("a.pdf", "application/pdf", PDF)])
    status, reply = world.gw.send(raw)
    assert status == 250, reply
    with world.gw.services.db.reading() as session:
        filed = session.execute(
            select(Registration.measure, Registration.address_key)
            .join(Submission, Submission.registration_id == Registration.id)
        ).all()
    assert filed == [(measures[17], GUARDIAN)]
    receipt = world.sink.wait_for_mail(
        lambda mail: mail_subject(mail).startswith("Accusé de réception"), timeout=20
    )
    text = email.message_from_bytes(receipt[2], policy=default_policy).get_payload(0)
    assert f"Mesure      : {measures[17]}" in text.get_body(("plain",)).get_content()


def test_code_of_a_revoked_registration_refused_though_the_sender_has_others(
    world: World,
) -> None:
    code = world.request_code()
    world.gw.services.admin.add_registration(COURT, "23/00001", GUARDIAN, "test")
    world.gw.services.admin.revoke_registration(COURT, MEASURE, GUARDIAN, "test")
    raw = world.gw.message(subject=f"[{code}]", attachments=[("a.pdf", "application/pdf", PDF)])
    status, reply = world.gw.send(raw)
    assert status == 550 and reply.startswith("5.7.0") and "does not belong" in reply, reply
    assert counts(world) == (0, 0, 0)
