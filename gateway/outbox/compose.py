"""Builds outgoing messages: headers, text body, PGP/MIME signature (RFC 3156), DKIM signature."""

from __future__ import annotations

import base64
import email.policy
import email.quoprimime
import email.utils
import re
from collections.abc import Callable, Mapping
from email.headerregistry import Address, BaseHeader, HeaderRegistry
from email.message import MIMEPart
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
MAX_LINE = 78
assert POLICY.max_line_length == MAX_LINE
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


# Composing is assembling bytes: the email package's header registry and generator
# cost more than the two signatures together.  Each header goes through POLICY
# only when folding could change it; what it folds the same way every time is
# folded once.  tests/unit/test_outbox_compose_policy.py holds the bytes equal
# to what the email package makes of the same message.
_VERBATIM = re.compile(r"[!-~]+(?: [!-~]+)*")
"""Printable ASCII words, single spaces: an unstructured header POLICY leaves as it is."""
_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9._+-]+@[A-Za-z0-9.-]+")
_HEX_ID = re.compile(r"[0-9a-f]+")
_VARYING_WORD = re.compile(r"(?<!\S)(?=[A-Za-z/-]*[0-9])[A-Za-z0-9/-]{4,}(?!\S)")
"""A whole word of ASCII letters, digits, hyphens and slashes with a digit in it: a
reference (a submission's is its request's, a slash and its number)."""


def fold(name: str, value: str | Address) -> bytes:
    """`Name: value` CRLF, folded and encoded as POLICY does (RFC 5322, 2047, 2231)."""
    return POLICY.fold_binary(name, POLICY.header_store_parse(name, value)[1])


def _unstructured(name: str, value: str) -> bytes:
    fits = len(name) + 2 + len(value) <= MAX_LINE
    if fits and "=?" not in value and _VERBATIM.fullmatch(value):
        return f"{name}: {value}\r\n".encode("ascii")
    return fold(name, value)


class _Folds:
    """Folded headers whose shape repeats: a display name per court, a boundary per kind."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str], bytes] = {}

    def address(self, name: str, address: Address) -> bytes:
        key = (name, str(address))
        found = self._cache.get(key)
        if found is None:
            if len(self._cache) > 1024:  # court names are few; never grow without bound
                self._cache.clear()
            found = self._cache[key] = fold(name, address)
        return found

    def unstructured(self, name: str, value: str) -> bytes:
        """An unstructured header (a subject), folded once per shape of its words.

        Folding sees a word of ASCII letters, digits, hyphens and slashes (a
        reference, a measure number) by its length alone: each one is one byte
        in an RFC 2047 "Q" encoded word as outside one, never special, never a
        break.
        Such words with a digit, four characters or more, are folded as runs
        of one digit each ("0000", "1111" …), and put back where their run
        came out whole, once; if a run came out cut in two or encoded
        ("B" encoding), the value is folded as it is.
        """
        fits = len(name) + 2 + len(value) <= MAX_LINE
        if fits and "=?" not in value and _VERBATIM.fullmatch(value):
            return f"{name}: {value}\r\n".encode("ascii")
        words = _VARYING_WORD.findall(value)
        if not words or len(words) > 10:
            return fold(name, value)
        runs = [str(index) * len(word) for index, word in enumerate(words)]
        each_run = iter(runs)
        shape = _VARYING_WORD.sub(lambda _match: next(each_run), value)
        key = (name, shape)
        found = self._cache.get(key)
        if found is None:
            if len(self._cache) > 1024:
                self._cache.clear()
            found = self._cache[key] = fold(name, shape)
        for run, word in zip(runs, words, strict=True):
            marker = run.encode("ascii")
            if shape.count(run) != 1 or found.count(marker) != 1:
                return fold(name, value)
            found = found.replace(marker, word.encode("ascii"), 1)
        return found

    def with_id(self, name: str, template: str, new_id: str) -> bytes:
        """Fold `template` with `{id}` filled in: once per length for a hex id."""
        if not _HEX_ID.fullmatch(new_id):
            return fold(name, template.format(id=new_id))
        # Folding sees a run of quoted hex digits by its length alone.
        placeholder = "0" * len(new_id)
        key = (name, template.format(id=placeholder))
        found = self._cache.get(key)
        if found is None:
            found = self._cache[key] = fold(name, key[1])
        return found.replace(placeholder.encode("ascii"), new_id.encode("ascii"), 1)


def _entity_head(**content: str) -> bytes:
    """The headers (and blank line) `set_content` writes for an entity: built once."""
    part = MIMEPart(policy=POLICY)
    part.set_content(b"", **content)  # type: ignore[arg-type]
    return part.as_bytes(policy=POLICY)


_TEXT_HEAD = (
    b'Content-Type: text/plain; charset="utf-8"\r\n'
    b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
)
_FACTS_HEAD = _entity_head(
    maintype="application", subtype=FACTS_SUBTYPE, cte="base64",
    disposition="attachment", filename=FACTS_FILENAME,
)  # fmt: skip


def _text_part(body: str) -> bytes:
    """text/plain in quoted-printable: every line short and 7-bit, so relays never
    re-encode it (which would break both signatures) and no line ends in a space."""
    lines = body.encode("utf-8").splitlines()
    encoded = email.quoprimime.body_encode(
        (b"\n".join(lines) + b"\n").decode("latin-1"), MAX_LINE
    )
    return _TEXT_HEAD + encoded.replace("\n", "\r\n").encode("ascii")


def _base64_lines(data: bytes) -> bytes:
    """Base64 in 76-character lines (57 bytes each), as the email package writes it."""
    return base64.encodebytes(data).replace(b"\n", b"\r\n")


def _multipart(head: bytes, boundary: str, parts: list[bytes]) -> bytes:
    """A multipart entity with no preamble, each part's own last line break kept."""
    delimiter = f"--{boundary}".encode("ascii")
    body = b"".join(b"\r\n" + delimiter + b"\r\n" + part for part in parts)
    return head + b"\r\n" + body[2:] + b"\r\n" + delimiter + b"--\r\n"


def _attachment(message: bytes) -> bytes:
    """A received message as a MIME part, its bytes untouched when it is 7-bit."""
    if message.isascii():
        # Its own last line break stays its own: the one before the delimiter is ours.
        body = message if message.endswith(b"\r\n") else message + b"\r\n"
        return (
            b"Content-Type: message/rfc822\r\n"
            b'Content-Disposition: attachment; filename="message.eml"\r\n'
            b"Content-Transfer-Encoding: 7bit\r\n\r\n" + body
        )
    encoded = base64.encodebytes(message).replace(b"\n", b"\r\n")
    return (
        b'Content-Type: application/octet-stream; name="message.eml"\r\n'
        b'Content-Disposition: attachment; filename="message.eml"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n" + encoded
    )


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
        self._folds = _Folds()
        self._senders: dict[str, Address] = {}  # by court name: From in its greffe's name
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
        head = self._headers(recipient, one_line(subject), merged.get("court_name"))
        if kind in self._pgp_kinds:
            part = _text_part(body)
            if kind == "receipt":
                part = self._with_facts(part, merged, recipient)
            message = self._pgp_mime(head, part)
        else:
            message = head + _text_part(body)
        return self._dkim_sign(message) + message

    def compose_forward(self, kind: str, to: str, attached: bytes, /, **values: str) -> bytes:
        """Template `kind` as a notice from the gateway, with `attached` joined unchanged.

        `attached` is a message as someone else sent it (postmaster@): it is
        neither parsed nor re-encoded, so nothing its sender wrote becomes a
        header of what we send.  A 7-bit message goes as `message/rfc822`
        (RFC 2046 allows no other encoding there); one with 8-bit bytes as an
        `application/octet-stream` file in base64, so no relay must carry 8-bit.
        """
        recipient = str(Mailbox.parse(one_line(to)))
        subject, body = self._templates.render(kind, **{**self._defaults, **values})
        head = self._headers(recipient, one_line(subject), None)  # from the gateway itself
        boundary = f"=_forward_{self._new_id()}"
        while boundary.encode("ascii") in attached:  # never a delimiter inside the message
            boundary = f"=_forward_{self._new_id()}"
        head += fold("Content-Type", f'multipart/mixed; boundary="{boundary}"')
        delimiter = f"\r\n--{boundary}\r\n".encode("ascii")
        message = b"".join(
            [
                head,
                b"\r\nThis is a multi-part message in MIME format.",
                delimiter + _text_part(body),
                delimiter + _attachment(attached),
                f"\r\n--{boundary}--\r\n".encode("ascii"),
            ]
        )
        return self._dkim_sign(message) + message

    def _with_facts(self, text: bytes, values: dict[str, str], recipient: str) -> bytes:
        """multipart/mixed of the text and `accuse-de-reception.json`, or the text alone.

        The JSON says in a machine-readable form what the text says, under the
        same signature, so `gateway receipts verify` never parses French prose.
        """
        facts = receipt_facts(
            values, issuer=self.from_address, recipient=recipient, issued_at=self._clock()
        )
        if facts is None:
            return text
        # base64: lines stay short and 7-bit whatever the file names hold, so no
        # relay re-encodes the part (which would break the signature).
        attachment = _FACTS_HEAD + _base64_lines(encode_facts(facts))
        new_id = self._new_id()
        head = self._folds.with_id(
            "Content-Type", 'multipart/mixed; boundary="=_mixed_{id}"', new_id
        )
        return _multipart(head, f"=_mixed_{new_id}", [text, attachment])

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

    def _headers(self, recipient: str, subject: str, court_name: str | None) -> bytes:
        # Mail about a court goes out in the name of its greffe; the address stays ours
        # (DKIM, WKD). The policy writes a non-ASCII name as an RFC 2047 encoded-word.
        sender = self._from
        if court_name and court_name.strip():
            found = self._senders.get(court_name)
            if found is None:
                if len(self._senders) > 1024:  # court names are few; never grow without bound
                    self._senders.clear()
                found = self._senders[court_name] = Address(
                    display_name=greffe_name(court_name), addr_spec=self._from.addr_spec
                )
            sender = found
        to = (
            f"To: {recipient}\r\n".encode("ascii")
            if _PLAIN_ADDRESS.fullmatch(recipient) and len(recipient) <= 70
            else fold("To", recipient)
        )
        return b"".join(
            [
                self._folds.address("From", sender),
                to,
                self._folds.unstructured("Subject", subject),
                _unstructured("Date", email.utils.format_datetime(self._clock())),
                _unstructured("Message-ID", f"<{self._new_id()}@{self._domain}>"),
                b"Auto-Submitted: auto-generated\r\nMIME-Version: 1.0\r\n",
            ]
        )

    def _pgp_mime(self, head: bytes, signed: bytes) -> bytes:
        """RFC 3156 multipart/signed, assembled byte by byte around the exact signed part."""
        if self._signer is None:
            raise ConfigError("this message must be OpenPGP-signed but no signing key is loaded")
        signature = self._signer.sign_detached(signed)
        new_id = self._new_id()
        boundary = f"=_signed_{new_id}"
        head += self._folds.with_id(
            "Content-Type",
            'multipart/signed; boundary="=_signed_{id}"; '
            f"micalg={self._signer.micalg}; "
            'protocol="application/pgp-signature"',
            new_id,
        )
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
