"""Sender authentication: the single From: address, DKIM verification, policy and alignment."""

from __future__ import annotations

import email.errors
import email.parser
import email.policy
import functools
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from email.headerregistry import Address

import dkim
from publicsuffixlist import PublicSuffixList

from gateway.adapters import dkimpy
from gateway.adapters.dkimpy import StreamingDKIM
from gateway.errors import (
    BadSignature,
    BodyLengthLimited,
    DnsTemporaryFailure,
    HeaderNotSigned,
    InvalidAddress,
    MultipleFrom,
    NoSignature,
    NotAligned,
    SignatureRefused,
    WeakAlgorithm,
    WeakKey,
)
from gateway.model import Mailbox

DnsFunc = Callable[[bytes, int], bytes | None]

# Each signature costs a DNS lookup of up to dns.timeout: a sender must not
# be able to hold a worker thread for minutes by stacking signatures.
MAX_SIGNATURES = 5

# The headers that carry a request (the code travels in the Subject): a
# signature that leaves one of them out does not vouch for the request.
DEFAULT_SIGNED_HEADERS = ("from", "subject")
# RFC 8301 section 3.2: verifiers MUST NOT consider RSA keys under 1024 bits valid.
MIN_RSA_BITS = 1024

# What dkimpy raises on a malformed signature, key or message; the builtin
# errors cover dkimpy paths that do not wrap them.
_DKIMPY_FAILURES = (dkim.DKIMException, ValueError, TypeError, IndexError, KeyError)

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
    verified: bool  # dkimpy says b= and bh= verify
    temporary_failure: bool
    refusal: SignatureRefused | None = None  # the policy rule it breaks, if any

    @property
    def counts(self) -> bool:
        """Verifies and meets the policy: only such a signature authenticates."""
        return self.verified and self.refusal is None


@functools.cache
def _public_suffixes() -> PublicSuffixList:
    # The list shipped inside the package: never fetched at run time. It is
    # immutable data, loaded once (about 0.1 s) and shared by every thread.
    return PublicSuffixList()


def organisational_domain(domain: str) -> str | None:
    """The organisational domain (RFC 7489 section 3.2) by the Public Suffix List.

    None when `domain` is a public suffix itself (`fr`, `gouv.fr`, `github.io`)
    or not a usable domain name: nobody's organisation can be found there.
    """
    text = domain.strip().rstrip(".").lower()
    try:
        text = text.encode("idna").decode("ascii")
    except UnicodeError:
        return None
    if not text or "" in text.split("."):
        return None
    found = _public_suffixes().privatesuffix(text)
    return found if isinstance(found, str) else None


def is_aligned(from_domain: str, dkim_domain: str) -> bool:
    """Relaxed alignment (RFC 7489 section 3.1.1): both have the same organisational domain.

    So d=example.org vouches for mail.example.org and the reverse, while
    d=github.io, d=gouv.fr or d=avocat.fr vouch for nobody beneath them.
    """
    author = organisational_domain(from_domain)
    return author is not None and author == organisational_domain(dkim_domain)


@dataclass(frozen=True, slots=True)
class SignaturePolicy:
    """What a DKIM signature must meet to count, beyond verifying (SPEC section 4).

    It covers the whole body (no l=), is not rsa-sha1, uses an RSA key of at
    least MIN_RSA_BITS, and signs every instance of each of `signed_headers`.
    """

    signed_headers: tuple[bytes, ...] = tuple(name.encode() for name in DEFAULT_SIGNED_HEADERS)

    @classmethod
    def from_names(cls, names: Iterable[str]) -> SignaturePolicy:
        """Lower-cased, deduplicated; From always included (RFC 6376 requires it signed)."""
        wanted = [name.strip().lower().encode("ascii") for name in names]
        return cls(tuple(dict.fromkeys([b"from", *wanted])))

    def tag_refusal(
        self,
        tags: dict[bytes, bytes],
        include_headers: list[bytes],
        headers: list[tuple[bytes, bytes]],
        label: str,
    ) -> SignatureRefused | None:
        """The rule the signature's tags break; checked before its key is looked up."""
        if b"l" in tags:
            return BodyLengthLimited(
                f"{label}: l= (body length) not accepted, it leaves part of the body unsigned"
            )
        if tags.get(b"a", b"").strip().lower() == b"rsa-sha1":
            return WeakAlgorithm(f"{label}: rsa-sha1 not accepted (RFC 8301)")
        for name in self.signed_headers:
            # dkimpy signs one instance per mention in h=, from the bottom up: an
            # instance beyond the mentions (a Subject added on top) is unsigned,
            # and the gateway reads the topmost one.
            signed = include_headers.count(name)
            present = sum(1 for field, _value in headers if field.strip().lower() == name)
            title = name.decode("ascii").title()
            if not signed:
                return HeaderNotSigned(f"{label}: does not sign the {title} header")
            if present > signed:
                return HeaderNotSigned(
                    f"{label}: does not sign every {title} header ({present} in the message)"
                )
        return None

    @staticmethod
    def key_refusal(key_type: object, key_bits: object, label: str) -> WeakKey | None:
        """WeakKey for an RSA key under MIN_RSA_BITS (dkimpy's own minimum, named)."""
        if key_type == b"rsa" and isinstance(key_bits, int) and key_bits < MIN_RSA_BITS:
            return WeakKey(
                f"{label}: RSA key of {key_bits} bits not accepted, "
                f"{MIN_RSA_BITS} at least (RFC 8301)"
            )
        return None


def header_block(raw: bytes) -> bytes:
    """A prefix of `raw` holding its whole header block, for the email package's parser.

    The parser reads the body too even when asked for headers only (it decodes
    the whole message and keeps the body as a string, about 7 times a large
    message's size); the headers it finds in this prefix are the same. The
    prefix runs one byte past the first empty line so a CR LF is never cut.
    """
    match = _EMAIL_EMPTY_LINE.search(raw)
    return raw if match is None else raw[: match.end() + 1]


_HEADERS_ONLY = email.parser.BytesHeaderParser(policy=email.policy.compat32)
FROM_CACHE_VALUE_LIMIT = 512
"""From: values up to this length have their parse remembered (`_from_addr_spec`)."""


def single_from(raw: bytes) -> Mailbox:
    """Return the one address of the one From: header, or raise MultipleFrom.

    What `BytesHeaderParser(policy=email.policy.default)` and `get_all("From")`
    find, for about a fifth of their cost (0.3 ms a message): the header block
    is split by the same feed parser under `compat32` (both policies cut a
    field into its name and value with the same code, and the parser's
    splitting does not depend on the policy), and only the From: value goes
    through the modern policy's header registry (its address parser is the
    costly part), remembered for the values a guardian's mail program sends
    again and again.
    """
    refused = MultipleFrom("From: must hold exactly one valid address")
    try:
        headers = _HEADERS_ONLY.parsebytes(header_block(raw))
        values = [value for name, value in headers.raw_items() if name.lower() == "from"]
        if len(values) != 1:
            raise refused
        value = values[0]
        if len(value) <= FROM_CACHE_VALUE_LIMIT:
            addr_spec = _from_addr_spec(value)
        else:
            addr_spec = _from_addr_spec.__wrapped__(value)
        if addr_spec is None:
            raise refused
        return Mailbox.parse(addr_spec)
    except (InvalidAddress, email.errors.MessageError):
        raise refused from None
    except (ValueError, IndexError, TypeError, AttributeError, LookupError):
        # The email package's header parser has been known to raise assorted
        # errors on hostile input; any of them means "no usable From:".
        raise refused from None


@functools.lru_cache(maxsize=1024)
def _from_addr_spec(value: str) -> str | None:
    """The addr-spec of a From: value holding exactly one address, as the modern policy reads it.

    Errors the header registry raises are not remembered (lru_cache keeps
    only results): the caller turns them into MultipleFrom each time.
    """
    header = email.policy.default.header_fetch_parse("From", value)
    addresses: tuple[Address, ...] = getattr(header, "addresses", ())
    return str(addresses[0].addr_spec) if len(addresses) == 1 else None


def _aligned_with(sender: Mailbox, signatures: list[_Signature]) -> list[_Signature]:
    return [sig for sig in signatures if sig.domain and is_aligned(sender.domain, sig.domain)]


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
    blocks on DNS: callers run it in a worker thread. `signed_headers` is
    `auth.signed_headers`: a signature counts only if it signs them all.
    """

    def __init__(
        self,
        dnsfunc: DnsFunc,
        *,
        require_dkim: bool = True,
        signed_headers: Iterable[str] = DEFAULT_SIGNED_HEADERS,
    ) -> None:
        self._dnsfunc = dnsfunc
        self._require_dkim = require_dkim
        self._policy = SignaturePolicy.from_names(signed_headers)
        _public_suffixes()  # load the list now: a broken install fails at start-up

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
        names = dkimpy.header_names(verifier)
        count = sum(1 for name in names if name.lower() == b"dkim-signature")
        return [self._verify_one(verifier, idx) for idx in range(min(count, MAX_SIGNATURES))]

    def _verify_one(self, verifier: StreamingDKIM, idx: int) -> _Signature:
        """Parse the signature's tags, apply the policy, then verify it (dkimpy's own steps)."""
        try:
            prep = dkimpy.prepare(verifier, idx)
        except _DKIMPY_FAILURES:
            prep = None
        fields = dkimpy.signature_fields(verifier)
        domain = _decode_domain(fields.get(b"d"))
        selector = _decode_selector(fields.get(b"s"))
        if not prep:
            return _Signature(domain, selector, verified=False, temporary_failure=False)
        tags, include_headers, signature_headers = prep
        label = f"DKIM signature from d={domain}" if domain else "DKIM signature"
        refusal = self._policy.tag_refusal(tags, include_headers, dkimpy.headers(verifier), label)
        if refusal is not None:
            # Refused by its tags alone: its key is not even looked up.
            return _Signature(domain, selector, False, temporary_failure=False, refusal=refusal)
        verified, temporary = self._verify_tags(
            verifier, tags, include_headers, signature_headers[idx]
        )
        refusal = self._policy.key_refusal(*dkimpy.key_facts(verifier), label)
        return _Signature(domain, selector, verified, temporary, refusal)

    def _verify_tags(
        self,
        verifier: StreamingDKIM,
        tags: dict[bytes, bytes],
        include_headers: list[bytes],
        signature_header: tuple[bytes, bytes],
    ) -> tuple[bool, bool]:
        """(verifies, DNS failed temporarily): dkimpy's verify() after its header preparation."""
        failures: list[DnsTemporaryFailure] = []

        def lookup(name: bytes, timeout: int = 5) -> bytes | None:
            # dkimpy swallows some lookup errors and reports "does not
            # verify"; record ours so a DNS outage is never a permanent refusal.
            try:
                return self._dnsfunc(name, timeout)
            except DnsTemporaryFailure as exc:
                failures.append(exc)
                raise

        try:
            verified = dkimpy.verify_prepared(
                verifier, tags, include_headers, signature_header, lookup
            )
        except DnsTemporaryFailure:
            verified = False
        except _DKIMPY_FAILURES:
            # A malformed signature, key or message does not verify (nor does a
            # key under dkimpy's minimum: key_refusal names that one).
            verified = False
        return verified, bool(failures)

    def _required(self, sender: Mailbox, signatures: list[_Signature]) -> SenderVerdict:
        """The most telling refusal when no aligned signature counts."""
        if not signatures:
            raise NoSignature("no DKIM signature")
        aligned = _aligned_with(sender, signatures)
        for sig in aligned:
            if sig.counts:
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
        for sig in aligned:
            if sig.refusal is not None:
                raise sig.refusal
        for sig in signatures:
            if sig.counts:
                raise NotAligned(
                    f"DKIM signature from d={sig.domain} is not aligned "
                    f"with From: domain {sender.domain}"
                )
        for sig in signatures:
            if sig.refusal is not None:
                raise sig.refusal
        raise BadSignature("DKIM signature does not verify")

    def _optional(self, sender: Mailbox, signatures: list[_Signature]) -> SenderVerdict:
        """require_dkim = false: report what DKIM says, never refuse for it."""
        if not signatures:
            return SenderVerdict(
                sender, "none", None, None, aligned=False, reason="no DKIM signature"
            )
        counted = [sig for sig in signatures if sig.counts]
        aligned = _aligned_with(sender, counted)
        if aligned or counted:
            best = (aligned or counted)[0]
            how = "and is aligned" if aligned else "but is not aligned"
            return SenderVerdict(
                sender,
                "pass",
                best.domain,
                best.selector,
                aligned=bool(aligned),
                reason=f"DKIM signature from d={best.domain} verifies {how}",
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
        refused = next((sig for sig in signatures if sig.refusal is not None), None)
        if refused is not None and refused.refusal is not None:
            return SenderVerdict(
                sender,
                "fail",
                refused.domain,
                refused.selector,
                aligned=False,
                reason=refused.refusal.message,
            )
        return SenderVerdict(
            sender,
            "fail",
            first.domain,
            first.selector,
            aligned=False,
            reason="DKIM signature does not verify",
        )
