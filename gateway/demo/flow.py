"""The demo's steps, in order: each one says what it did and what it saw, or fails naming itself.

init → court → guardian → serve → registration → code-request → code-mail
→ submission → receipt → export.  A step that does not hold raises
`DemoFailed` naming it; whatever was started is stopped on the way out
(the gateway, the DNS server, every gpg-agent).

`sabotage` is a seam for the tests (and the curious): it spoils one step on
purpose, the way the real world would, to show that the step notices.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from pathlib import Path

from gateway.app import Running, Services
from gateway.bootstrap import initialise
from gateway.demo.dnsserver import DnsServer
from gateway.demo.parties import (
    COURT,
    COURT_NAME,
    MEASURE,
    PDF_NAME,
    CourtKeyPair,
    Guardian,
    demo_pdf,
    make_court_key,
)
from gateway.demo.stage import (
    CapturedMail,
    Exchange,
    GatewayThread,
    StepFailed,
    smtp_transaction,
    wait_for_captured,
    write_config,
)
from gateway.errors import GatewayError
from gateway.greffe.export import Exporter
from gateway.greffe.receipts import load_certificates, verify_receipt
from gateway.outbox.compose import format_fingerprint
from gateway.outbox.receiptfacts import rfc3339
from gateway.storage.crypto import GpgKeyring

log = logging.getLogger("gateway.demo")
Say = Callable[[str], None]
STEPS = (
    "init",
    "court",
    "guardian",
    "serve",
    "registration",
    "code-request",
    "code-mail",
    "submission",
    "receipt",
    "export",
)
SABOTAGES = {
    "submission": "the message is changed after the guardian's DKIM signature",
    "receipt": "the captured receipt is changed before its signature is checked",
}
ACTOR = "demo:greffe"
_CODE = re.compile(r"\b([0-9A-HJKMNP-TV-Z]{5}-[0-9A-HJKMNP-TV-Z]{5})\b")
_ACCEPTED = re.compile(r"^2\.0\.0 Accepted (\S+)$")


class DemoFailed(GatewayError):
    """A step of the demo did not hold."""

    def __init__(self, step: str, reason: str) -> None:
        self.step = step
        super().__init__(f"demo failed at step {step!r}: {reason}")


@dataclass
class DemoReport:
    """What the demo made, to explore the folder afterwards."""

    folder: Path
    config: Path
    greffe_home: Path
    guardian_dir: Path
    submission: str = ""
    request: str = ""
    outbox_ids: dict[str, int] = field(default_factory=dict)


class Demo:
    """Plays every party in turn; `run()` walks the steps."""

    def __init__(self, folder: Path, say: Say, *, sabotage: str | None, timeout: float) -> None:
        if sabotage is not None and sabotage not in SABOTAGES:
            raise ValueError(f"unknown sabotage {sabotage!r}")
        self.say = say
        self.sabotage = sabotage
        self.timeout = timeout
        self.report = DemoReport(
            folder, folder / "gateway.toml", folder / "greffe-gnupg", folder / "guardian"
        )
        self._number = 0

    @contextlib.contextmanager
    def step(self, name: str, title: str) -> Iterator[None]:
        """One numbered step: its title first, and any failure inside it named after it."""
        self._number += 1
        self.say(f"\n{self._number:>2}/{len(STEPS)} {name}: {title}")
        if self.sabotage == name:
            self.detail(f"(sabotaged: {SABOTAGES[name]})")
        try:
            yield
        except DemoFailed:
            raise
        except GatewayError as exc:
            raise DemoFailed(name, exc.message) from None
        except Exception as exc:
            log.debug("demo step %s failed", name, exc_info=True)
            raise DemoFailed(name, f"{type(exc).__name__}: {exc}") from None

    def detail(self, text: str) -> None:
        self.say(f"       {text}")

    def run(self) -> DemoReport:
        with contextlib.ExitStack() as stack:
            dns = DnsServer()
            dns.start()
            stack.callback(dns.stop)
            services = self.init(dns)
            stack.callback(services.close)  # also after a failure before `serve` owns it
            greffe = stack.enter_context(GpgKeyring(self.report.greffe_home))
            court_key = self.court(services, greffe)
            guardian = self.guardian(dns)
            gateway = GatewayThread(services)
            stack.callback(gateway.stop)
            running = self.serve(gateway, services)
            self.registration(services, guardian)
            self.code_request(running, services, guardian)
            code = self.code_mail(services, guardian)
            pdf = self.submission(running, services, guardian, code)
            self.receipt(services, guardian, pdf)
            self.export(services, greffe, court_key, pdf)
        return self.report

    def init(self, dns: DnsServer) -> Services:
        with self.step("init", "gateway init in a throwaway folder"):
            config = write_config(self.report.folder)
            environ = {"GATEWAY__DNS__NAMESERVERS": f'["{dns.address}"]'}
            settings, report = initialise(config, environ)
            services = Services(settings)
            services.upgrade_database()
            self.detail(f"config {config} (relay.mode = \"capture\")")
            for line in report.created:
                self.detail(f"created {line}")
            self.detail(f"receipts are signed by {format_fingerprint(services.signer.fingerprint)}")
            return services

    def court(self, services: Services, greffe: GpgKeyring) -> CourtKeyPair:
        with self.step("court", "the greffe makes its key pair and the court is added"):
            court_key = make_court_key(greffe.home)
            self.detail(f"gpg key pair {format_fingerprint(court_key.fingerprint)}")
            self.detail(f"its secret half stays in {greffe.home}; the gateway gets the public half")
            services.admin.add_court(COURT, COURT_NAME, ACTOR)
            added = services.admin.add_court_key(COURT, court_key.armored_public.encode(), ACTOR)
            self.detail(f"court {COURT} ({COURT_NAME}) added, key {added.fingerprint}")
            return court_key

    def guardian(self, dns: DnsServer) -> Guardian:
        with self.step("guardian", "the guardian's provider publishes its DKIM key"):
            guardian = Guardian.with_new_key()
            dns.records[guardian.dkim_name] = [guardian.dkim_record]
            self.detail(f"{guardian.address}: mail signed with DKIM d={guardian.domain}")
            self.detail(f"TXT {guardian.dkim_name} served by a DNS server on {dns.address}")
            return guardian

    def serve(self, gateway: GatewayThread, services: Services) -> Running:
        with self.step("serve", "gateway serve, outgoing mail captured"):
            running = gateway.start(self.timeout)
            http = f", HTTP 127.0.0.1:{running.http_port}" if running.http_port else ""
            self.detail(f"SMTP 127.0.0.1:{running.smtp_port}{http}")
            self.detail(f"outgoing mail kept in the maildir {services.settings.mail_dir}")
            return running

    def registration(self, services: Services, guardian: Guardian) -> None:
        with self.step("registration", "the greffe registers the guardian's address"):
            row = services.admin.add_registration(COURT, MEASURE, guardian.address, ACTOR)
            self.detail(f"registration {row.id}: {row.address} for {COURT} {row.measure}")
            notice = self._captured(services, "registration", guardian.address)
            self.detail(f"the guardian is told by mail: outbox {notice.outbox_id}")

    def code_request(self, running: Running, services: Services, guardian: Guardian) -> None:
        to = services.settings.address("codes")
        subject = f"CODE {COURT} {MEASURE} compte"
        with self.step("code-request", f"the guardian mails {to}: {subject}"):
            raw = guardian.message(to, subject, "Bonjour,\n\nJe demande un numéro de saisie.\n")
            self._expect_250(self._send(running, guardian, to, raw))

    def code_mail(self, services: Services, guardian: Guardian) -> str:
        with self.step("code-mail", "the code as the gateway mailed it"):
            mail = self._captured(services, "code", guardian.address)
            message = _parse(mail.raw)
            self._show_headers(mail, message)
            found = _CODE.search(_text(message))
            if found is None:
                raise StepFailed("the code mail holds no code")
            line = next(line for line in _text(message).splitlines() if found.group(1) in line)
            self.detail(f"| {line.strip()}")
            return found.group(1)

    def submission(
        self, running: Running, services: Services, guardian: Guardian, code: str
    ) -> bytes:
        to = services.settings.address("submit")
        with self.step("submission", f"the guardian mails {to} a PDF, with [{code}]"):
            pdf = demo_pdf()
            self.report.guardian_dir.mkdir(exist_ok=True)
            (self.report.guardian_dir / PDF_NAME).write_bytes(pdf)
            self.detail(f"{PDF_NAME}: {len(pdf)} bytes, SHA-256 {_sha256(pdf)}")
            body = "Madame, Monsieur,\n\nVeuillez trouver ci-joint mon compte de gestion.\n"
            raw = guardian.message(to, f"Compte de gestion 2025 [{code}]", body, [(PDF_NAME, pdf)])
            if self.sabotage == "submission":  # as if a relay on the way rewrote the text
                raw = raw.replace(b"Madame, Monsieur,", b"Madame, Monsieur;", 1)
            reply = self._expect_250(self._send(running, guardian, to, raw))
            accepted = _ACCEPTED.match(reply.reply)
            if accepted is None:
                raise StepFailed(f"expected 250 2.0.0 Accepted <reference>, got {reply.reply}")
            self.report.submission = accepted.group(1)
            self.report.request = accepted.group(1).split("/", 1)[0]
            return pdf

    def receipt(self, services: Services, guardian: Guardian, pdf: bytes) -> None:
        with self.step("receipt", "the receipt as mailed, and its OpenPGP signature checked"):
            mail = self._captured(services, "receipt", guardian.address)
            self._show_headers(mail, _parse(mail.raw))
            raw = mail.raw
            (self.report.guardian_dir / "accuse-de-reception.eml").write_bytes(raw)
            if self.sabotage == "receipt":
                raw = _tamper(raw, self.report.submission)
            public = services.settings.signing_pub_file.read_bytes()
            verified = verify_receipt(raw, load_certificates(public))
            when = rfc3339(verified.signed_at) if verified.signed_at else "an unknown time"
            self.detail(
                f"signature good: {format_fingerprint(verified.signer_fingerprint)}, {when}"
            )
            facts = verified.facts
            if facts["submission_reference"] != self.report.submission:
                raise StepFailed(f"the receipt names {facts['submission_reference']}")
            self.detail(
                f"receipts {facts['submission_reference']}, received {facts['received_at']}"
            )
            listed = [(doc.name, doc.size, doc.sha256) for doc in verified.documents]
            if (PDF_NAME, len(pdf), _sha256(pdf)) not in listed:
                raise StepFailed(f"the receipt does not list {PDF_NAME} as sent: {listed}")
            self.detail(f"lists {PDF_NAME}, {len(pdf)} bytes, SHA-256 {_sha256(pdf)}")

    def export(
        self, services: Services, greffe: GpgKeyring, court_key: CourtKeyPair, pdf: bytes
    ) -> None:
        reference = self.report.request
        with self.step("export", f"the greffe exports {reference} and decrypts it"):
            out = self.report.folder / "export"
            files = Exporter(services.db, services.blobs, greffe).export(reference, out)
            key = format_fingerprint(court_key.fingerprint)
            self.detail(f"{len(files)} files in {out}, decrypted with the court's key {key}")
            documents = [name for name in files if name.endswith(f"-{PDF_NAME}")]
            if len(documents) != 1:
                raise StepFailed(f"expected one {PDF_NAME} in the export, found {files}")
            exported = (out / documents[0]).read_bytes()
            self.detail(f"{documents[0]}: SHA-256 {_sha256(exported)}")
            if exported != pdf:
                raise StepFailed("the exported document differs from the one sent")
            self.detail("identical to the document the guardian sent")

    def _send(self, running: Running, guardian: Guardian, to: str, raw: bytes) -> Exchange:
        exchanges = smtp_transaction(
            running.smtp_port, guardian.address, to, raw, helo=f"mail.{guardian.domain}"
        )
        for exchange in exchanges:
            for line in exchange.lines():
                self.detail(line)
        return exchanges[-1]

    def _expect_250(self, exchange: Exchange) -> Exchange:
        if exchange.code != 250:
            raise StepFailed(f"the gateway answered {exchange.code} {exchange.reply}")
        return exchange

    def _captured(self, services: Services, kind: str, recipient: str) -> CapturedMail:
        mail = wait_for_captured(services, kind, recipient, self.timeout)
        self.report.outbox_ids[kind] = mail.outbox_id
        return mail

    def _show_headers(self, mail: CapturedMail, message: EmailMessage) -> None:
        self.detail(f"captured: outbox {mail.outbox_id}, {len(mail.raw)} bytes")
        for name in ("From", "To", "Subject"):
            self.detail(f"| {name}: {message.get(name, '')}")


def run_demo(
    folder: Path, say: Say, *, sabotage: str | None = None, timeout: float = 20.0
) -> DemoReport:
    """Walk every step in `folder` (which must exist and be empty); raise DemoFailed naming one."""
    return Demo(folder, say, sabotage=sabotage, timeout=timeout).run()


def _parse(raw: bytes) -> EmailMessage:
    message = BytesParser(policy=default_policy).parsebytes(raw)
    assert isinstance(message, EmailMessage)  # the default policy's message factory
    return message


def _text(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    return str(part.get_content()) if part is not None else ""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _tamper(raw: bytes, reference: str) -> bytes:
    """The receipt with one character of its signed text changed (the reference it receipts)."""
    head_end = raw.find(b"\r\n\r\n")
    at = raw.find(reference.encode(), head_end)
    if head_end < 0 or at < 0:
        raise StepFailed("could not find the reference inside the receipt to change it")
    spoilt = b"8" if raw[at + len(reference) - 1 : at + len(reference)] != b"8" else b"9"
    return raw[: at + len(reference) - 1] + spoilt + raw[at + len(reference) :]
