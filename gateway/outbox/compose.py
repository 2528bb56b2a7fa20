"""Builds outgoing messages: headers, text body, PGP/MIME signature (RFC 3156), DKIM signature."""

from __future__ import annotations

import email.policy
import email.utils
from collections.abc import Callable, Mapping
from email.headerregistry import Address, BaseHeader, HeaderRegistry
from email.message import EmailMessage, MIMEPart
from uuid import uuid4

from gateway.errors import ConfigError
from gateway.model import Clock, Mailbox
from gateway.outbox.dkimsign import DkimSigner
from gateway.outbox.receiptfacts import FACTS_FILENAME, FACTS_SUBTYPE, encode_facts, receipt_facts
from gateway.outbox.templates import Templates
from gateway.storage.crypto import ReceiptSigner
from gateway.wkd import wkd_url

IdFactory = Callable[[], str]


class CachedHeaderRegistry(HeaderRegistry):
    """The standard header registry, building each header class once instead of per header.

    `HeaderRegistry` makes a new class (`type(...)`) for every header it parses:
    about a tenth of the time spent composing a message.  The class depends only
    on the header's name (and the map), so keeping it changes no byte produced.
    """

    def __init__(self) -> None:
        super().__init__()
        self._classes: dict[str, type[BaseHeader]] = {}

    def __getitem__(self, name: str) -> type[BaseHeader]:
        key = name.lower()
        cls = self._classes.get(key)
        if cls is None:
            # Two threads may both build it: either class is right, the last one stays.
            cls = self._classes[key] = super().__getitem__(name)
        return cls

    def map_to_type(self, name: str, cls: type[BaseHeader]) -> None:
        super().map_to_type(name, cls)
        self._classes.clear()


# CRLF line endings and folding at 78: the bytes we build, sign and send are the same.
POLICY = email.policy.SMTP.clone(header_factory=CachedHeaderRegistry())
SIGNED_HEADERS = (
    b"from",
    b"to",
    b"subject",
    b"date",
    b"message-id",
    b"content-type",
    b"mime-version",
    b"auto-submitted",
)
PGP_KINDS = frozenset({"receipt", "acknowledgement", "rejection"})
SENDER_LOCAL_PART = "noreply"
# Courts whose name starts with a feminine noun: "Greffe de la Cour d'appel de Paris".
_FEMININE_WORDS = frozenset({"cour", "chambre", "juridiction"})


def sender_address(domain: str) -> str:
    """The gateway's From address; its signing key is published by WKD for it."""
    return f"{SENDER_LOCAL_PART}@{domain}"


def format_fingerprint(fingerprint: str) -> str:
    """`1136 EBAE … 0C95` in groups of four, as gpg shows it (two halves of five groups)."""
    groups = [fingerprint[i : i + 4] for i in range(0, len(fingerprint), 4)]
    if len(groups) != 10:  # not a v4 fingerprint: plain groups
        return " ".join(groups)
    return " ".join(groups[:5]) + "  " + " ".join(groups[5:])


def greffe_name(court_name: str) -> str:
    """`Greffe du Tribunal judiciaire de Lyon`: who sends a guardian's mail (decree art. 9).

    The article follows French usage: "de la Cour d'appel", "de l'…" before a
    vowel, "du" otherwise; a name that already starts with "Greffe" is kept.
    """
    name = one_line(court_name)
    first = name.split(" ", 1)[0].split("'", 1)[0].lower()
    if first.startswith("greffe"):
        return name
    if first in _FEMININE_WORDS:
        return f"Greffe de la {name}"
    if first[:1] in set("aeiouyàâéèêëîïôöûü"):
        return f"Greffe de l'{name}"
    return f"Greffe du {name}"


def new_id() -> str:
    return uuid4().hex


def one_line(text: str) -> str:
    """Fold CR, LF and other line breaks into spaces: header values never span lines."""
    return " ".join(text.split())


def _set_text(part: MIMEPart, body: str) -> None:
    # Quoted-printable keeps every line short and 7-bit, so relays never re-encode
    # (which would break both signatures) and no line ends in a space.
    part.set_content(body, subtype="plain", charset="utf-8", cte="quoted-printable")


class MailComposer:
    """Turns a template and its values into the signed bytes the outbox will deliver.

    `defaults` are values every template may use (addresses, gateway name);
    values given to `compose` take precedence over them.  Messages of the
    kinds in `pgp_kinds` are also OpenPGP-signed (PGP/MIME).
    """

    def __init__(
        self,
        domain: str,
        from_name: str,
        dkim_selector: str,
        dkim_private_pem: bytes,
        templates: Templates,
        signer: ReceiptSigner | None,
        clock: Clock,
        id_factory: IdFactory = new_id,
        *,
        defaults: Mapping[str, str] | None = None,
        pgp_kinds: frozenset[str] = PGP_KINDS,
    ) -> None:
        self._domain = domain
        self._from = Address(display_name=one_line(from_name), addr_spec=sender_address(domain))
        self._selector = dkim_selector.encode("ascii")
        self._dkim = DkimSigner(
            domain, dkim_selector, dkim_private_pem, SIGNED_HEADERS, lambda: clock().timestamp()
        )
        self._templates = templates
        self._signer = signer
        self._clock = clock
        self._new_id = id_factory
        self._pgp_kinds = pgp_kinds
        self._defaults = {
            "domain": domain,
            "gateway_name": from_name,
            **self._key_values(),
            **(defaults or {}),
        }
        self._dkim_sign(b"From: probe@invalid\r\n\r\nprobe\r\n")  # a bad key fails now, not later

    @property
    def from_address(self) -> str:
        """The envelope and header sender, `noreply@<domain>`."""
        return self._from.addr_spec

    def compose(self, kind: str, to: str, /, **values: str) -> bytes:
        """Render template `kind` for `to` and return the DKIM-signed bytes to enqueue.

        Kinds in `pgp_kinds` (receipts by default) become PGP/MIME multipart/signed;
        a receipt's signed part also carries its `gateway.receipt/1` facts.
        """
        recipient = str(Mailbox.parse(one_line(to)))
        merged = {**self._defaults, **values}
        if "code" in merged and "code_compact" not in merged:
            merged["code_compact"] = merged["code"].replace("-", "")
        if kind in self._pgp_kinds and self._signer is None:
            raise ConfigError("this message must be OpenPGP-signed but no signing key is loaded")
        subject, body = self._templates.render(kind, **merged)
        headers = self._headers(recipient, one_line(subject), merged.get("court_name"))
        if kind in self._pgp_kinds:
            part = MIMEPart(policy=POLICY)
            _set_text(part, body)
            if kind == "receipt":
                part = self._with_facts(part, merged, recipient)
            message = self._pgp_mime(headers, part)
        else:
            _set_text(headers, body)
            message = headers.as_bytes()
        return self._dkim_sign(message) + message

    def _with_facts(self, text: MIMEPart, values: dict[str, str], recipient: str) -> MIMEPart:
        """multipart/mixed of the text and `accuse-de-reception.json`, or the text alone.

        The JSON says in a machine-readable form what the text says, under the
        same signature, so `gateway receipts verify` never parses French prose.
        """
        facts = receipt_facts(
            values, issuer=self.from_address, recipient=recipient, issued_at=self._clock()
        )
        if facts is None:
            return text
        attachment = MIMEPart(policy=POLICY)
        # base64: lines stay short and 7-bit whatever the file names hold, so no
        # relay re-encodes the part (which would break the signature).
        attachment.set_content(
            encode_facts(facts), maintype="application", subtype=FACTS_SUBTYPE, cte="base64",
            disposition="attachment", filename=FACTS_FILENAME,
        )  # fmt: skip
        mixed = MIMEPart(policy=POLICY)
        mixed["Content-Type"] = f'multipart/mixed; boundary="=_mixed_{self._new_id()}"'
        mixed.attach(text)
        mixed.attach(attachment)
        return mixed

    def _key_values(self) -> dict[str, str]:
        """Where a reader gets the key that signs receipts (the receipt template names it)."""
        address = self.from_address
        return {
            "signing_address": address,
            "signing_key_url": wkd_url(address),
            "signing_fingerprint": (
                format_fingerprint(self._signer.fingerprint) if self._signer else "(aucune)"
            ),
        }

    def _headers(self, recipient: str, subject: str, court_name: str | None) -> EmailMessage:
        headers = EmailMessage(policy=POLICY)
        # Mail about a court goes out in the name of its greffe; the address stays ours
        # (DKIM, WKD). The policy writes a non-ASCII name as an RFC 2047 encoded-word.
        headers["From"] = (
            Address(display_name=greffe_name(court_name), addr_spec=self._from.addr_spec)
            if court_name and court_name.strip()
            else self._from
        )
        headers["To"] = recipient
        headers["Subject"] = subject
        headers["Date"] = email.utils.format_datetime(self._clock())
        headers["Message-ID"] = f"<{self._new_id()}@{self._domain}>"
        headers["Auto-Submitted"] = "auto-generated"
        headers["MIME-Version"] = "1.0"
        return headers

    def _pgp_mime(self, headers: EmailMessage, part: MIMEPart) -> bytes:
        """RFC 3156 multipart/signed, assembled byte by byte around the exact signed part."""
        if self._signer is None:
            raise ConfigError("this message must be OpenPGP-signed but no signing key is loaded")
        signed = part.as_bytes(policy=POLICY)
        signature = self._signer.sign_detached(signed)
        boundary = f"=_signed_{self._new_id()}"
        headers["Content-Type"] = (
            f'multipart/signed; boundary="{boundary}"; micalg={self._signer.micalg}; '
            'protocol="application/pgp-signature"'
        )
        head = b"".join(POLICY.fold_binary(name, value) for name, value in headers.items())
        delimiter = f"--{boundary}".encode("ascii")
        signature_part = (
            b'Content-Type: application/pgp-signature; name="signature.asc"\r\n'
            b"Content-Description: OpenPGP digital signature\r\n"
            b'Content-Disposition: attachment; filename="signature.asc"\r\n\r\n'
            + "\r\n".join(signature.strip().splitlines()).encode("ascii")
        )
        # The CRLF before each delimiter belongs to the delimiter, not to the
        # signed part: the verifier sees exactly `signed`.
        return b"".join(
            [
                head,
                b"\r\nThis is an OpenPGP/MIME signed message (RFC 4880 and 3156).\r\n",
                delimiter + b"\r\n" + signed,
                b"\r\n" + delimiter + b"\r\n" + signature_part,
                b"\r\n" + delimiter + b"--\r\n",
            ]
        )

    def _dkim_sign(self, message: bytes) -> bytes:
        return self._dkim.header(message)

    def __repr__(self) -> str:
        return f"MailComposer(domain={self._domain!r}, selector={self._selector.decode()!r})"
