"""The submission port end to end: real TLS, a real SMTP client doing STARTTLS then AUTH, real gpg.

A filing goes in through `smtplib` (what a homologated software's mailer
does), is stored encrypted, and comes out of the greffe's export with
channel `teletransmission` and the credential's id.
"""

from __future__ import annotations

import email
import json
import smtplib
import socket
from email.policy import default as default_policy
from pathlib import Path

import jsonschema
import pytest
from sqlalchemy import func, select

from gateway.greffe.export import Exporter
from gateway.ingest.manifest import load_schema
from gateway.storage.crypto import GpgKeyring
from gateway.storage.models import AuditEvent, Credential, Request, Submission
from tests.fixtures.gatewayserver import COURT, DOMAIN, GUARDIAN, MEASURE, GatewayFactory
from tests.fixtures.gpgkeys import CourtKey
from tests.fixtures.smtpsink import SmtpSink
from tests.fixtures.teletransmission import (
    PDF,
    SOFTWARE,
    Teletransmission,
    depot_json,
    make_teletransmission,
)


def submissions(tele: Teletransmission) -> int:
    with tele.world.gw.services.db.reading() as session:
        return session.scalar(select(func.count(Submission.id))) or 0


def test_filing_end_to_end_through_the_greffe_export(
    tele: Teletransmission, tmp_path: Path
) -> None:
    raw = tele.filing(depot=depot_json())
    code, reply = tele.send(raw)
    year = tele.world.gw.clock().year
    reference = f"{COURT}-{year}-000001"
    assert (code, reply) == (250, f"2.0.0 Accepted {reference}/1")

    with GpgKeyring(tele.world.court_key.gnupghome) as keyring:
        services = tele.world.gw.services
        Exporter(services.db, services.blobs, keyring).export(reference, tmp_path / "out")
    request_manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    manifest = json.loads((tmp_path / "out" / "1" / "manifest.json").read_text())
    jsonschema.validate(manifest, load_schema())
    assert request_manifest["status"] == "sealed" and request_manifest["kind"] == "compte"
    assert [s["channel"] for s in request_manifest["submissions"]] == ["teletransmission"]
    assert manifest["channel"] == "teletransmission"
    assert manifest["authentication"]["credential_id"] == tele.credential_id
    assert manifest["authentication"]["code_id"] is None
    assert manifest["authentication"]["software"] == SOFTWARE
    assert manifest["authentication"]["dkim_result"] == "none"  # recorded, not required
    assert manifest["authentication"]["tls"]["version"] in ("TLSv1.2", "TLSv1.3")
    assert manifest["filing"] == depot_json()
    jsonschema.validate(manifest["filing"], load_schema("filing"))
    assert [d["original_filename"] for d in manifest["documents"]] == ["compte-2025.pdf"]
    assert (tmp_path / "out" / "1" / "message.eml").read_bytes() == raw
    assert (tmp_path / "out" / "1" / "documents" / "01-compte-2025.pdf").read_bytes() == PDF

    with services.db.reading() as session:
        submission = session.scalars(select(Submission)).one()
        assert submission.credential_id == tele.credential_id
        assert submission.channel == "teletransmission"
        request = session.scalars(select(Request)).one()
        assert (request.status, request.channel, request.submission_count) == (
            "sealed", "teletransmission", 1,
        )  # fmt: skip
        assert session.get(Credential, tele.credential_id).last_used_at is not None  # type: ignore[union-attr]
    receipt = tele.world.sink.wait_for(1, timeout=20)[-1]
    assert receipt[1] == [GUARDIAN]
    assert f"{reference}/1".encode() in receipt[2]


def test_one_message_is_one_request(tele: Teletransmission) -> None:
    client = tele.login()
    try:
        first = tele.send(tele.filing(), client=client)
        again = tele.filing(subject=f"DEPOT {COURT} {MEASURE} inventaire")
        second = tele.send(again, client=client)
    finally:
        client.quit()
    year = tele.world.gw.clock().year
    assert first == (250, f"2.0.0 Accepted {COURT}-{year}-000001/1")
    assert second == (250, f"2.0.0 Accepted {COURT}-{year}-000002/1")


def test_resent_filing_stored_once(tele: Teletransmission) -> None:
    raw = tele.filing(message_id="<filing-1@tutelle-pro.example>")
    first = tele.send(raw)
    assert first[0] == 250
    assert tele.send(raw) == first  # a lost 250, the software sends again
    assert submissions(tele) == 1


def test_dkim_signature_is_verified_and_recorded(tele: Teletransmission, tmp_path: Path) -> None:
    code, reply = tele.send(tele.filing(sign=True))
    assert code == 250, reply
    services = tele.world.gw.services
    with GpgKeyring(tele.world.court_key.gnupghome) as keyring:
        Exporter(services.db, services.blobs, keyring).export(reply.split()[-1], tmp_path / "o")
    authentication = json.loads((tmp_path / "o" / "manifest.json").read_text())["authentication"]
    assert (authentication["dkim_result"], authentication["aligned"]) == ("pass", True)


def test_auth_before_starttls_refused_530(tele: Teletransmission) -> None:
    with smtplib.SMTP("127.0.0.1", tele.port, timeout=30) as client:
        client.ehlo("software.test")
        assert client.has_extn("starttls") and not client.has_extn("auth")
        assert client.docmd("AUTH", "PLAIN AGZvbwBiYXI=")[0:2] == (
            530, b"5.7.0 commencez par STARTTLS (Must issue a STARTTLS command first)",
        )  # fmt: skip
        assert client.mail(GUARDIAN)[0] == 530
    assert submissions(tele) == 0


def test_no_mail_taken_before_auth(tele: Teletransmission) -> None:
    client = tele.connect()
    try:
        assert client.has_extn("auth")
        assert sorted(client.esmtp_features["auth"].split()) == ["LOGIN", "PLAIN"]
        code, text = client.mail(GUARDIAN)
        assert (code, text) == (530, b"5.7.0 authentification requise (Authentication required)")
    finally:
        client.quit()


def test_auth_login_mechanism(tele: Teletransmission) -> None:
    client = tele.connect()
    try:
        client.user, client.password = GUARDIAN, tele.secret
        assert client.auth("LOGIN", client.auth_login)[0] == 235
        assert tele.send(tele.filing(), client=client)[0] == 250
    finally:
        client.quit()


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("wrong", "invalid"),
        ("expired", "credential expired"),
        ("revoked", "credential revoked"),
        ("software revoked", "credential revoked"),  # revoking it revoked its credentials
        ("another address", "invalid"),
    ],
)
def test_refused_credentials_535(tele: Teletransmission, case: str, reason: str) -> None:
    services, secret, address = tele.world.gw.services, tele.secret, GUARDIAN
    if case == "wrong":
        secret = secret[:-4] + ("AAAA" if not secret.endswith("AAAA") else "BBBB")
    elif case == "expired":
        tele.world.gw.clock.advance(services.settings.credentials.validity)
    elif case == "revoked":
        services.credentials.revoke(tele.credential_id, "test")
    elif case == "software revoked":
        assert services.credentials.revoke_software(SOFTWARE, "test") == 1
    else:
        services.admin.add_registration(COURT, MEASURE, "autre@exemple.fr", "test")
        address = "autre@exemple.fr"
    client = tele.connect()
    try:
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            client.login(address, secret)
    finally:
        client.close()
    assert refused.value.smtp_code == 535
    error = refused.value.smtp_error
    assert error.startswith(b"5.7.8") and reason.encode() in error


def test_session_revoked_after_auth_cannot_file(tele: Teletransmission) -> None:
    client = tele.login()
    try:
        tele.world.gw.services.credentials.revoke(tele.credential_id, "test")
        code, reply = tele.send(tele.filing(), client=client)
    finally:
        client.quit()
    assert code == 550 and reply.startswith("5.7.8") and "revoked" in reply
    assert submissions(tele) == 0


def _login_reply(tele: Teletransmission, address: str, secret: str) -> tuple[int, bytes]:
    """One AUTH PLAIN (smtplib's login() would try LOGIN too after a refusal: two attempts)."""
    client = tele.connect()
    try:
        client.user, client.password = address, secret
        code, text = client.auth("PLAIN", client.auth_plain)
        return code, text
    except smtplib.SMTPAuthenticationError as exc:
        return exc.smtp_code, exc.smtp_error
    finally:
        client.close()


def test_brute_force_on_an_address_throttled_454(
    smtp_sink: SmtpSink,
    gateway_factory: GatewayFactory,
    court_key: CourtKey,
    tls_files: tuple[Path, Path],
) -> None:
    tele = make_teletransmission(
        smtp_sink, gateway_factory, court_key, tls_files,
        {"GATEWAY__CREDENTIALS__FAILURE_DELAY": "0.5s"},
    )  # fmt: skip
    guess = tele.secret[:17] + "x" * 43
    import time

    waits = []
    for _ in range(5):
        started = time.monotonic()
        assert _login_reply(tele, GUARDIAN, guess)[0] == 535
        waits.append(time.monotonic() - started)
    # 0.5 s, then 1, 2, 4: a growing delay (TLS and argon2id add the same to each)
    assert waits[3] - waits[0] > 2.5
    code, text = _login_reply(tele, GUARDIAN, tele.secret)  # even the right one, while locked
    assert code == 454 and text.startswith(b"4.7.0")
    tele.world.gw.clock.advance(tele.world.gw.services.settings.credentials.lockout)
    assert _login_reply(tele, GUARDIAN, tele.secret)[0] == 235


def test_brute_force_from_one_client_throttled_454(tele: Teletransmission) -> None:
    for number in range(5):  # other addresses each time: the client's own count locks it
        assert _login_reply(tele, f"essai{number}@exemple.fr", tele.secret)[0] == 535
    code, text = _login_reply(tele, GUARDIAN, tele.secret)
    assert code == 454 and text.startswith(b"4.7.0")


def test_auth_audited_without_the_secret(
    tele: Teletransmission, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    wrong = tele.secret[:-1] + ("A" if tele.secret[-1] != "A" else "B")
    assert _login_reply(tele, GUARDIAN, wrong)[0] == 535
    assert _login_reply(tele, GUARDIAN, tele.secret)[0] == 235
    with tele.world.gw.services.db.reading() as session:
        events = session.scalars(select(AuditEvent).where(AuditEvent.action.like("credential.%")))
        seen = [(e.action, json.dumps(e.data)) for e in events]
    actions = [action for action, _ in seen]
    assert actions == ["credential.issued", "credential.auth_failed", "credential.authenticated"]
    secret_part = tele.secret.split(".")[1]
    assert not any(secret_part[:20] in data or wrong.split(".")[1][:20] in data for _, data in seen)
    assert secret_part[:20] not in caplog.text and wrong.split(".")[1][:20] not in caplog.text


def test_address_not_registered_for_that_court_and_measure(tele: Teletransmission) -> None:
    code, reply = tele.send(tele.filing(subject=f"DEPOT {COURT} 99/99999 compte"))
    assert code == 550 and reply.startswith("5.7.1")
    assert f"not registered for {COURT} 99/99999" in reply
    code, reply = tele.send(tele.filing(subject=f"DEPOT TJ-NULLEPART {MEASURE}"))
    assert code == 550 and "not registered for TJ-NULLEPART" in reply
    assert submissions(tele) == 0


def test_from_header_differs_from_the_login(tele: Teletransmission) -> None:
    other = "autre@exemple.fr"
    tele.world.gw.services.admin.add_registration(COURT, MEASURE, other, "test")
    code, reply = tele.send(tele.filing(sender=other))
    assert code == 550 and reply.startswith("5.7.1") and "authenticated address" in reply
    code, reply = tele.send(tele.filing(), mail_from=other)  # MAIL FROM, at MAIL time
    assert code == 550 and reply.startswith("5.7.1") and "authenticated address" in reply
    assert submissions(tele) == 0


def test_subject_that_is_not_depot_refused(tele: Teletransmission) -> None:
    code, reply = tele.send(tele.filing(subject="Compte de gestion 2025"))
    assert code == 554 and reply.startswith("5.5.4") and "DEPOT <court> <measure>" in reply


def test_invalid_depot_json_names_the_field(tele: Teletransmission) -> None:
    bad = depot_json(documents=[{"filename": "compte-2025.pdf", "role": "brouillon"}])
    code, reply = tele.send(tele.filing(depot=bad))
    assert code == 554 and reply.startswith("5.6.0") and "documents/0/role" in reply
    code, reply = tele.send(tele.filing(depot=depot_json(kind="inventaire")))
    assert code == 554 and "depot.json: kind" in reply
    assert submissions(tele) == 0
    assert not [p for p in tele.world.gw.services.settings.blob_dir.rglob("*") if p.is_file()]


def test_refused_document_is_named(tele: Teletransmission) -> None:
    code, reply = tele.send(
        tele.filing(attachments=[("outil.exe", "application/octet-stream", b"MZ" + b"\0" * 300)])
    )
    assert code == 554 and reply.startswith("5.6.0") and "outil.exe" in reply


def test_inbound_port_still_offers_no_auth(tele: Teletransmission) -> None:
    with smtplib.SMTP("127.0.0.1", tele.world.gw.port, timeout=30) as client:
        client.ehlo("client.test")
        client.starttls(context=tele.tls_context())
        client.ehlo("client.test")
        assert not client.has_extn("auth")
        assert client.docmd("AUTH", "PLAIN AGZvbwBiYXI=")[0] == 502
        # The credential is no way in there: depot@ still wants DKIM and a code.
        code, reply = tele.world.gw.send(
            tele.filing(subject=f"DEPOT {COURT} {MEASURE}"), mail_from=GUARDIAN
        )
    assert code == 550 and reply.startswith("5.7.1")  # no DKIM signature


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
def test_tls_older_than_1_2_refused(tele: Teletransmission) -> None:
    import ssl

    with smtplib.SMTP("127.0.0.1", tele.port, timeout=30) as client:
        client.ehlo("software.test")
        context = ssl.create_default_context(cafile=str(tele.cert))
        context.maximum_version = ssl.TLSVersion.TLSv1_1
        context.minimum_version = ssl.TLSVersion.TLSv1
        with pytest.raises((ssl.SSLError, smtplib.SMTPServerDisconnected, ConnectionError)):
            client.starttls(context=context)


def test_implicit_tls_submission_port(
    smtp_sink: SmtpSink,
    gateway_factory: GatewayFactory,
    court_key: CourtKey,
    tls_files: tuple[Path, Path],
) -> None:
    tele = make_teletransmission(
        smtp_sink, gateway_factory, court_key, tls_files,
        {"GATEWAY__SMTP__SUBMISSION_IMPLICIT_TLS": "true"},
    )  # fmt: skip
    with socket.create_connection(("127.0.0.1", tele.port), timeout=5) as plain:
        plain.sendall(b"EHLO software.test\r\n")  # no TLS: no SMTP is spoken in clear
        try:
            first = plain.recv(100)
        except (ConnectionError, TimeoutError):
            first = b""
    assert not first.startswith(b"220")
    client = smtplib.SMTP_SSL("127.0.0.1", tele.port, timeout=30, context=tele.tls_context())
    try:
        client.ehlo("software.test")
        assert not client.has_extn("starttls") and client.has_extn("auth")
        client.login(GUARDIAN, tele.secret)
        code, reply = tele.send(tele.filing(), client=client)
    finally:
        client.quit()
    assert code == 250, reply
    received = tele.world.sink.wait_for(1, timeout=20)[-1]
    message = email.message_from_bytes(received[2], policy=default_policy)
    assert message["To"] == GUARDIAN and DOMAIN in message["From"]
