"""Checks a receipt offline: its PGP/MIME signature against the gateway's key, then its facts.

A receipt is the filer's proof of filing, even when the court has no trace of
it (Cass. 18 Sept 2025).  Anyone holding the `.eml` and the gateway's public
key can check it here, with no gateway, database or network: the signature
(RFC 3156) must verify over the exact bytes of the signed part, by the key
given, and the signed part must carry the `gateway.receipt/1` facts.
"""

from __future__ import annotations

import email.policy
import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage, Message
from email.parser import BytesParser
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pysequoia
from pysequoia.packet import PacketPile, Tag

from gateway.errors import InputError, KeyRefused, ReceiptInvalid
from gateway.ingest.manifest import load_schema
from gateway.outbox.receiptfacts import FACTS_FILENAME, RECEIPT_SCHEMA, rfc3339

if TYPE_CHECKING:  # jsonschema is imported by the check, not by every command
    import jsonschema

MAX_RECEIPT_BYTES = 4 * 1024 * 1024
"""A receipt lists at most `limits.max_documents` documents: a few KB each, far below this."""
MAX_KEY_BYTES = 1024 * 1024
_SECRET_TAGS = (Tag.SecretKey, Tag.SecretSubkey)  # Tag values are not hashable
_KEY_TAGS = (Tag.PublicKey, Tag.PublicSubkey)
_LINE_END = re.compile(rb"\r?\n")


@dataclass(frozen=True, slots=True)
class ReceiptedDocument:
    """One document as the receipt lists it."""

    index: int
    name: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class VerifiedReceipt:
    """A receipt whose signature verified, and what it attests."""

    signer_fingerprint: str
    signed_at: datetime | None
    facts: dict[str, Any]

    @property
    def documents(self) -> list[ReceiptedDocument]:
        return [
            ReceiptedDocument(d["index"], d["name"], d["size"], d["sha256"])
            for d in self.facts["documents"]
        ]


@dataclass(frozen=True, slots=True)
class DocumentCheck:
    """A local file compared with the receipt's documents; `receipted` is None if none matches."""

    path: Path
    size: int
    sha256: str
    receipted: ReceiptedDocument | None


def read_bounded(path: Path, limit: int, what: str) -> bytes:
    """A file's bytes, refusing one larger than `limit` before reading it all."""
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise InputError(f"cannot read {what} {path}: {exc.strerror}") from None
    if len(data) > limit:
        raise InputError(f"{what} {path} is larger than {limit} bytes: not a receipt")
    return data


def load_certificates(data: bytes) -> list[pysequoia.Cert]:
    """The public keys in `data` (armoured or binary); a secret key is refused."""
    try:
        packets = list(PacketPile.from_bytes(data))
    except Exception:  # the binding raises bare RuntimeErrors with parser text
        raise KeyRefused("the key file is not an OpenPGP key") from None
    if any(packet.tag in _SECRET_TAGS for packet in packets):
        raise KeyRefused("the key file holds a secret key; give the gateway's public key")
    try:
        certs = list(pysequoia.Cert.split_bytes(data))
    except Exception:
        raise KeyRefused("the key file is not an OpenPGP key") from None
    if not certs:
        raise KeyRefused("the key file holds no OpenPGP key")
    return certs


def receipt_sender(raw: bytes) -> str | None:
    """The receipt's From address as written (unverified): only to say which key to fetch."""
    try:
        message = _parse(raw)
        sender = message.get("From")
        addresses: tuple[Any, ...] = tuple(getattr(sender, "addresses", ()))
        return str(addresses[0].addr_spec) if len(addresses) == 1 else None
    except Exception:  # a hint only: a header we cannot read just gives no hint
        return None


def verify_receipt(raw: bytes, certs: Sequence[pysequoia.Cert]) -> VerifiedReceipt:
    """Check the receipt's signature by one of `certs`; return its facts or raise ReceiptInvalid.

    Line ends are made CRLF first: RFC 3156 signs the canonical form, and a
    receipt saved by a Unix mail client has LF alone.
    """
    canonical = _LINE_END.sub(b"\r\n", raw)
    signed, signature = _split_signed(canonical)
    fingerprint, signed_at = _check_signature(signed, signature, certs)
    facts = _read_facts(signed)
    return VerifiedReceipt(fingerprint, signed_at, facts)


def check_document(receipt: VerifiedReceipt, path: Path) -> DocumentCheck:
    """Hash a local file and find the receipted document it is, if any."""
    digest = hashlib.sha256()
    size = 0
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
    except OSError as exc:
        raise InputError(f"cannot read document {path}: {exc.strerror}") from None
    sha256 = digest.hexdigest()
    match = next((d for d in receipt.documents if d.sha256 == sha256 and d.size == size), None)
    return DocumentCheck(path, size, sha256, match)


def _parse(raw: bytes) -> EmailMessage:
    message = BytesParser(policy=email.policy.default).parsebytes(raw)
    assert isinstance(message, EmailMessage)  # the default policy's message factory
    return message


def _split_signed(raw: bytes) -> tuple[bytes, bytes]:
    """The exact bytes of the signed part and the signature, from the first multipart/signed."""
    container = next(
        (
            part
            for part in _parse(raw).walk()
            if part.get_content_type() == "multipart/signed"
            and str(part.get_param("protocol", "")).lower() == "application/pgp-signature"
        ),
        None,
    )
    if container is None:
        raise ReceiptInvalid("not a signed receipt: no OpenPGP multipart/signed part")
    boundary = container.get_boundary()
    parts = list(container.iter_parts())
    if not boundary or len(parts) != 2:
        raise ReceiptInvalid("malformed receipt: multipart/signed must hold exactly two parts")
    signed = _signed_bytes(raw, boundary.encode("ascii", "replace"))
    signature = _payload_bytes(parts[1])
    if parts[1].get_content_type() != "application/pgp-signature" or signature is None:
        raise ReceiptInvalid("malformed receipt: its second part is not an OpenPGP signature")
    return signed, signature


def _signed_bytes(raw: bytes, boundary: bytes) -> bytes:
    # RFC 2046: a delimiter is CRLF "--" boundary, then optional blanks and CRLF;
    # the CRLF before a delimiter belongs to it, not to the part it ends.
    delimiter = re.compile(rb"(?:\A|\r\n)--" + re.escape(boundary) + rb"[ \t]*\r\n")
    first = delimiter.search(raw)
    end = raw.find(b"\r\n--" + boundary, first.end()) if first else -1
    if first is None or end < 0:
        raise ReceiptInvalid("malformed receipt: the signed part cannot be located")
    return raw[first.end() : end]


def _payload_bytes(part: Message) -> bytes | None:
    payload = part.get_payload(decode=True)
    return payload if isinstance(payload, bytes) else None


def _key_ids(certs: Sequence[pysequoia.Cert]) -> dict[str, str]:
    """Each primary and subkey fingerprint and key id (upper hex) -> its certificate's."""
    ids: dict[str, str] = {}
    for cert in certs:
        for packet in PacketPile.from_bytes(bytes(cert)):
            if packet.tag in _KEY_TAGS:
                for name in (packet.fingerprint, packet.key_id):
                    if name:
                        ids[str(name).upper()] = cert.fingerprint.upper()
    return ids


def _check_signature(
    signed: bytes, signature: bytes, certs: Sequence[pysequoia.Cert]
) -> tuple[str, datetime | None]:
    """The signer's primary fingerprint and the signing time, or ReceiptInvalid naming why."""
    try:
        sig = pysequoia.Sig.from_bytes(signature)
    except Exception:
        raise ReceiptInvalid("malformed receipt: the signature part cannot be read") from None
    known = _key_ids(certs)
    issuer = (sig.issuer_fingerprint or sig.issuer_key_id or "").upper()
    if issuer not in known:
        given = ", ".join(sorted({cert.fingerprint.upper() for cert in certs}))
        raise ReceiptInvalid(
            f"signed by key {issuer or '(unnamed)'}, not by the key given ({given})"
        )
    store: Callable[[list[str]], list[pysequoia.Cert]] = lambda _ids: list(certs)  # noqa: E731
    try:
        result = pysequoia.verify(bytes=signed, store=store, signature=sig)
    except Exception:  # Sequoia says only "no valid signatures found"
        raise ReceiptInvalid(
            "the signature does not match the receipt: it was changed after it was signed"
        ) from None
    signers = {str(valid.certificate).upper() for valid in result.valid_sigs}
    if not signers & set(known.values()):
        raise ReceiptInvalid("the signature does not verify with the key given")
    created = sig.created
    return known[issuer], created.astimezone(UTC) if created else None


def _read_facts(signed: bytes) -> dict[str, Any]:
    """The `accuse-de-reception.json` of the signed part, checked against its schema."""
    part = next(
        (
            p
            for p in _parse(signed).walk()
            if p.get_content_type() == "application/json" and p.get_filename() == FACTS_FILENAME
        ),
        None,
    )
    payload = _payload_bytes(part) if part is not None else None
    if payload is None:
        raise ReceiptInvalid(
            f"the signature is good, but the receipt carries no {FACTS_FILENAME} "
            "(it was made before receipts carried their facts): read its text instead"
        )
    try:
        facts = json.loads(payload)
    except ValueError:
        raise ReceiptInvalid(f"the receipt's {FACTS_FILENAME} is not JSON") from None
    errors = sorted(_validator().iter_errors(facts), key=lambda e: list(e.absolute_path))
    if errors:
        where = "/".join(str(p) for p in errors[0].absolute_path) or "(top level)"
        raise ReceiptInvalid(f"the receipt's facts do not follow {RECEIPT_SCHEMA} at {where}")
    assert isinstance(facts, dict)  # the schema says object
    return facts


def _validator() -> jsonschema.protocols.Validator:
    import jsonschema.validators

    schema = load_schema("receipt")
    validator_class = jsonschema.validators.validator_for(schema)
    return validator_class(schema)


def summary(receipt: VerifiedReceipt, checks: Sequence[DocumentCheck]) -> dict[str, Any]:
    """The `--json` output of a valid receipt."""
    return {
        "valid": all(check.receipted is not None for check in checks),
        "signer": {
            "fingerprint": receipt.signer_fingerprint,
            "signed_at": rfc3339(receipt.signed_at) if receipt.signed_at else None,
        },
        "receipt": receipt.facts,
        "documents_checked": [
            {
                "file": str(check.path),
                "size": check.size,
                "sha256": check.sha256,
                "receipted_as": check.receipted.index if check.receipted else None,
            }
            for check in checks
        ],
    }
