"""Sender authentication: the single From: address, DKIM verification and relaxed alignment."""

from __future__ import annotations

import email.errors
import email.parser
import email.policy
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from email.headerregistry import Address

import dkim

from gateway.errors import (
    BadSignature,
    DnsTemporaryFailure,
    InvalidAddress,
    MultipleFrom,
    NoSignature,
    NotAligned,
)
from gateway.ingest.dkimverify import StreamingDKIM
from gateway.model import Mailbox

DnsFunc = Callable[[bytes, int], bytes | None]

# Each signature costs a DNS lookup of up to dns.timeout: a sender must not
# be able to hold a worker thread for minutes by stacking signatures.
MAX_SIGNATURES = 5

_PRINTABLE_DOMAIN = re.compile(r"[^a-z0-9.-]")
_SIGNATURE_HEADER = re.compile(rb"^dkim-signature[ \t]*:", re.IGNORECASE | re.MULTILINE)
# The first empty line as the email package splits lines (CRLF, CR or LF): the
# header block ends there at the latest.
_EMAIL_EMPTY_LINE = re.compile(rb"(?:\A|\r\n|\r(?!\n)|\n)[\r\n]")
# dkimpy logs why a signature failed at error level; keep it apart so
# operators can quieten it without losing the gateway's own messages.
_dkim_log = logging.getLogger(__name__ + ".dkimpy")


@dataclass(frozen=True, slots=True)
class SenderVerdict:
    """What sender authentication concluded about one message."""

    from_address: Mailbox
    dkim_result: str  # "pass" | "fail" | "none" | "skipped"
    dkim_domain: str | None  # d= of the signature reported
    dkim_selector: str | None  # s= of the signature reported
    aligned: bool
    reason: str

    def as_dict(self) -> dict[str, object]:
        """JSON-able form for the audit trail and the manifest."""
        return {
            "from_address": str(self.from_address),
            "dkim_result": self.dkim_result,
            "dkim_domain": self.dkim_domain,
            "dkim_selector": self.dkim_selector,
            "aligned": self.aligned,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class _Signature:
    """The outcome of verifying one DKIM-Signature header."""

    domain: str | None
    selector: str | None
    verified: bool
    temporary_failure: bool


def is_aligned(from_domain: str, dkim_domain: str) -> bool:
    """Relaxed alignment without a public suffix list.

    Aligned when the From: domain is d= or a subdomain of it, and d= has at
    least two labels (so d=fr cannot vouch for every .fr domain).
    """
    author = from_domain.strip().rstrip(".").lower()
    signer = dkim_domain.strip().rstrip(".").lower()
    if not author or not signer or signer.count(".") < 1 or "" in signer.split("."):
        return False
    return author == signer or author.endswith("." + signer)


def header_block(raw: bytes) -> bytes:
    """A prefix of `raw` holding its whole header block, for the email package's parser.

    The parser reads the body too even when asked for headers only (it decodes
    the whole message and keeps the body as a string, about 7 times a large
    message's size); the headers it finds in this prefix are the same. The
    prefix runs one byte past the first empty line so a CR LF is never cut.
    """
    match = _EMAIL_EMPTY_LINE.search(raw)
    return raw if match is None else raw[: match.end() + 1]


def single_from(raw: bytes) -> Mailbox:
    """Return the one address of the one From: header, or raise MultipleFrom."""
    refused = MultipleFrom("From: must hold exactly one valid address")
    try:
        parser = email.parser.BytesHeaderParser(policy=email.policy.default)
        headers = parser.parsebytes(header_block(raw))
        values = headers.get_all("From") or []
        if len(values) != 1:
            raise refused
        addresses: tuple[Address, ...] = getattr(values[0], "addresses", ())
        if len(addresses) != 1:
            raise refused
        return Mailbox.parse(addresses[0].addr_spec)
    except (InvalidAddress, email.errors.MessageError):
        raise refused from None
    except (ValueError, IndexError, TypeError, AttributeError, LookupError):
        # The email package's header parser has been known to raise assorted
        # errors on hostile input; any of them means "no usable From:".
        raise refused from None


def _decode_domain(value: bytes | None) -> str | None:
    """d= as lower-case ASCII, or None when it cannot be a domain name."""
    if value is None:
        return None
    try:
        text = value.decode("ascii").strip().rstrip(".").lower()
    except UnicodeDecodeError:
        try:
            text = value.decode("utf-8").strip().rstrip(".").encode("idna").decode("ascii")
        except UnicodeError:
            return None
    if not text or len(text) > 253 or _PRINTABLE_DOMAIN.search(text):
        return None
    return text


def _decode_selector(value: bytes | None) -> str | None:
    if value is None:
        return None
    text = value.decode("ascii", errors="replace").strip()
    return text[:63] if text else None


class SenderAuthenticator:
    """Checks that a message comes from its single From: address's domain (DKIM).

    `dnsfunc` is the seam for key lookups, normally `TxtResolver.dkim_dnsfunc`;
    it raises DnsTemporaryFailure when DNS cannot answer now. `authenticate`
    blocks on DNS: callers run it in a worker thread.
    """

    def __init__(self, dnsfunc: DnsFunc, *, require_dkim: bool = True) -> None:
        self._dnsfunc = dnsfunc
        self._require_dkim = require_dkim

    def authenticate(self, raw: bytes) -> SenderVerdict:
        """Return the verdict, or raise a SenderAuthError or DnsTemporaryFailure."""
        sender = single_from(raw)
        signatures = self._verify_all(raw)
        if self._require_dkim:
            return self._required(sender, signatures)
        return self._optional(sender, signatures)

    def _verify_all(self, raw: bytes) -> list[_Signature]:
        try:
            verifier = StreamingDKIM(raw, logger=_dkim_log)
        except (dkim.DKIMException, IndexError):
            # dkimpy cannot even read the header block (IndexError: it starts
            # with a continuation line): a signature in it cannot verify, and
            # without one there is nothing to verify.
            if _SIGNATURE_HEADER.search(raw):
                return [_Signature(None, None, verified=False, temporary_failure=False)]
            return []
        count = sum(1 for name, _ in verifier.headers if name.lower() == b"dkim-signature")
        return [self._verify_one(verifier, idx) for idx in range(min(count, MAX_SIGNATURES))]

    def _verify_one(self, verifier: StreamingDKIM, idx: int) -> _Signature:
        failures: list[DnsTemporaryFailure] = []

        def lookup(name: bytes, timeout: int = 5) -> bytes | None:
            # dkimpy swallows some lookup errors and reports "does not
            # verify"; record ours so a DNS outage is never a permanent refusal.
            try:
                return self._dnsfunc(name, timeout)
            except DnsTemporaryFailure as exc:
                failures.append(exc)
                raise

        verifier.signature_fields = None  # no stale d=/s= from the previous signature
        try:
            verified = bool(verifier.verify(idx=idx, dnsfunc=lookup))
        except DnsTemporaryFailure:
            verified = False
        except (dkim.DKIMException, ValueError, TypeError, IndexError, KeyError):
            # A malformed signature, key or message does not verify; the
            # builtin errors cover dkimpy paths that do not wrap them.
            verified = False
        fields = getattr(verifier, "signature_fields", None) or {}
        return _Signature(
            domain=_decode_domain(fields.get(b"d")),
            selector=_decode_selector(fields.get(b"s")),
            verified=verified,
            temporary_failure=bool(failures),
        )

    def _required(self, sender: Mailbox, signatures: list[_Signature]) -> SenderVerdict:
        if not signatures:
            raise NoSignature("no DKIM signature")
        for sig in signatures:
            if sig.verified and sig.domain and is_aligned(sender.domain, sig.domain):
                return SenderVerdict(
                    sender,
                    "pass",
                    sig.domain,
                    sig.selector,
                    aligned=True,
                    reason=f"DKIM signature from d={sig.domain} verifies and is aligned",
                )
        if any(sig.temporary_failure for sig in signatures):
            raise DnsTemporaryFailure("DNS lookup of the DKIM key failed, try again later")
        for sig in signatures:
            if sig.verified:
                raise NotAligned(
                    f"DKIM signature from d={sig.domain} is not aligned "
                    f"with From: domain {sender.domain}"
                )
        raise BadSignature("DKIM signature does not verify")

    def _optional(self, sender: Mailbox, signatures: list[_Signature]) -> SenderVerdict:
        """require_dkim = false: report what DKIM says, never refuse for it."""
        if not signatures:
            return SenderVerdict(
                sender, "none", None, None, aligned=False, reason="no DKIM signature"
            )
        verified = [sig for sig in signatures if sig.verified]
        aligned = [sig for sig in verified if sig.domain and is_aligned(sender.domain, sig.domain)]
        if aligned:
            best = aligned[0]
            return SenderVerdict(
                sender,
                "pass",
                best.domain,
                best.selector,
                aligned=True,
                reason=f"DKIM signature from d={best.domain} verifies and is aligned",
            )
        if verified:
            best = verified[0]
            return SenderVerdict(
                sender,
                "pass",
                best.domain,
                best.selector,
                aligned=False,
                reason=f"DKIM signature from d={best.domain} verifies but is not aligned",
            )
        first = signatures[0]
        if any(sig.temporary_failure for sig in signatures):
            return SenderVerdict(
                sender,
                "skipped",
                first.domain,
                first.selector,
                aligned=False,
                reason="DKIM not evaluated: DNS lookup failed temporarily",
            )
        return SenderVerdict(
            sender,
            "fail",
            first.domain,
            first.selector,
            aligned=False,
            reason="DKIM signature does not verify",
        )
