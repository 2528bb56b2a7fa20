"""The gateway's exception tree: every domain error, and what it means.

Each error carries a message that is safe to show to whoever caused it (an
operator at the command line, a sender in an SMTP reply): it never holds a
secret, a path on the server or an exception's text.  Protocol adapters map
these classes to their wire (``gateway.smtp.replies`` for SMTP, the CLI's
exit codes) in one table each.

    GatewayError
    ├── ConfigError                  bad or missing configuration key
    ├── InputError                   an administrator's input is malformed
    │   ├── InvalidCourtCode
    │   ├── InvalidMeasure
    │   ├── InvalidAddress
    │   ├── InvalidKind
    │   ├── ImportRefused            a CSV import with a line-by-line report
    │   └── BodyTooLarge             an HTTP request body over http.max_body_bytes
    ├── NotFound                     unknown court, registration, request …
    ├── Conflict                     duplicate court, registration …
    │   ├── AlreadyStored            the same message committed meanwhile (a retry racing)
    │   └── WrongStatus              a review action on a request in another status
    ├── Unauthenticated              no API key, or one that is unknown, revoked or wrong
    ├── NotPermitted                 an API key whose role may not do this
    ├── KeyRefused                   an OpenPGP key that cannot serve
    ├── ReceiptInvalid               a receipt that does not verify (receipts verify)
    ├── AuthRefused                  SMTP AUTH refused on the submission port
    │   ├── CredentialInvalid        wrong, expired or revoked credential (535 5.7.8)
    │   └── AuthLocked               too many failed AUTHs from this address or client (454)
    ├── MessageRefused               permanent refusal of a message (5xx)
    │   ├── UnknownRecipient
    │   ├── MessageTooLarge
    │   ├── MalformedMessage
    │   ├── BareLineEnding           bare CR or LF in DATA (smuggling)
    │   ├── SenderAuthError          DKIM / alignment / registration
    │   │   ├── NoSignature
    │   │   ├── BadSignature
    │   │   ├── NotAligned
    │   │   ├── SignatureRefused     a signature that does not count (SPEC §4)
    │   │   │   ├── BodyLengthLimited    l=: part of the body unsigned
    │   │   │   ├── WeakAlgorithm        rsa-sha1 (RFC 8301)
    │   │   │   ├── WeakKey              RSA key under 1024 bits (RFC 8301)
    │   │   │   └── HeaderNotSigned      a header of auth.signed_headers not covered
    │   │   ├── SenderNotRegistered
    │   │   ├── SenderNotAuthenticated   MAIL FROM / From: not the AUTH login
    │   │   └── MultipleFrom
    │   ├── CodeError                the numéro de saisie
    │   │   ├── CodeMissing
    │   │   ├── CodeUnknown
    │   │   ├── CodeExpired
    │   │   ├── CodeMismatch
    │   │   └── CodeLocked           sender throttled after failures
    │   ├── CredentialRefused
    │   ├── RequestClosed
    │   ├── BadCommand               a codes@/etat@ subject that is not understood
    │   └── DocumentRefused
    │       └── FilingRefused        a depot.json that does not meet gateway.filing/1
    └── TemporaryFailure             try again later (4xx)
        ├── StorageUnavailable       database, blob store or encryption
        │   ├── CommitUncertain      the commit was sent but its answer lost
        │   └── BlobStoreFull        the blob store ran out of space mid-write
        ├── DnsTemporaryFailure      resolver timed out
        ├── DiskFull                 below the configured reserve
        ├── CourtKeyExpired          a court key can no longer receive data
        ├── ImapUnavailable          an IMAP server unreachable or refusing
        └── Throttled                too many messages from this client
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""

    def __init__(self, message: str = "") -> None:
        super().__init__(message or self.__class__.__doc__ or self.__class__.__name__)

    @property
    def message(self) -> str:
        return str(self.args[0])


class ConfigError(GatewayError):
    """The configuration is missing or invalid."""


class InputError(GatewayError):
    """An administrator's input is malformed."""


class InvalidCourtCode(InputError):
    """Not a valid court code."""


class InvalidMeasure(InputError):
    """Not a valid measure number."""


class InvalidAddress(InputError):
    """Not a valid mailbox address."""


class InvalidKind(InputError):
    """Not a valid request kind."""


class ImportRefused(InputError):
    """A CSV import was refused; nothing was imported."""

    def __init__(self, problems: list[tuple[int, str]]) -> None:
        self.problems = problems
        super().__init__(f"import refused: {len(problems)} bad line(s), nothing imported")


class NotFound(GatewayError):
    """The named object does not exist."""


class BodyTooLarge(InputError):
    """The request body is larger than the gateway accepts."""


class Conflict(GatewayError):
    """The object already exists."""


class AlreadyStored(Conflict):
    """The same message was committed meanwhile (a client's retry racing the first copy)."""


class WrongStatus(Conflict):
    """The request is not in a status this review action applies to.

    The message names the request's current status; `status` holds it too
    (empty when the raiser did not say), for an adapter that shows it apart.
    """

    def __init__(self, message: str = "", *, status: str = "") -> None:
        super().__init__(message)
        self.status = status


class Unauthenticated(GatewayError):
    """API key missing, unknown or revoked."""


class NotPermitted(GatewayError):
    """This API key's role may not do this."""


class KeyRefused(GatewayError):
    """The OpenPGP key cannot be used."""


class ReceiptInvalid(GatewayError):
    """The receipt does not verify."""


class AuthRefused(GatewayError):
    """SMTP AUTH was refused."""


class CredentialInvalid(AuthRefused):
    """Authentication credentials invalid.

    `delay` is how long to wait before saying so: it grows with the failures
    counted against the address and the client.
    """

    def __init__(self, message: str = "", *, delay: float = 0.0) -> None:
        super().__init__(message)
        self.delay = delay


class AuthLocked(AuthRefused):
    """Too many failed authentications; try again later."""


class MessageRefused(GatewayError):
    """A message is permanently refused."""


class UnknownRecipient(MessageRefused):
    """Recipient address is not one of this gateway's addresses."""


class MessageTooLarge(MessageRefused):
    """Message exceeds the size limit."""


class MalformedMessage(MessageRefused):
    """Message is not well-formed MIME within limits."""


class BareLineEnding(MessageRefused):
    """Bare CR or LF in message data."""


class SenderAuthError(MessageRefused):
    """Sender authentication failed."""


class NoSignature(SenderAuthError):
    """No DKIM signature."""


class BadSignature(SenderAuthError):
    """DKIM signature does not verify."""


class NotAligned(SenderAuthError):
    """DKIM signing domain is not aligned with the From: domain."""


class SignatureRefused(SenderAuthError):
    """DKIM signature does not count under the gateway's signature policy."""


class BodyLengthLimited(SignatureRefused):
    """DKIM signature with l= not accepted: it leaves part of the body unsigned."""


class WeakAlgorithm(SignatureRefused):
    """DKIM signature algorithm rsa-sha1 not accepted (RFC 8301)."""


class WeakKey(SignatureRefused):
    """DKIM key under 1024 bits not accepted (RFC 8301)."""


class HeaderNotSigned(SignatureRefused):
    """DKIM signature does not sign a header that carries the request."""


class SenderNotRegistered(SenderAuthError):
    """Sender is not a registered address."""


class SenderNotAuthenticated(SenderAuthError):
    """The sender is not the authenticated address."""


class MultipleFrom(SenderAuthError):
    """From: must hold exactly one address."""


class CodeError(MessageRefused):
    """The one-time code was refused."""


class CodeMissing(CodeError):
    """No code found in the subject or the recipient address."""


class CodeUnknown(CodeError):
    """Code is not valid."""


class CodeExpired(CodeError):
    """Code has expired."""


class CodeMismatch(CodeError):
    """Code does not belong to this sender."""


class CodeLocked(CodeError):
    """Too many failed codes; try again later."""


class CredentialRefused(MessageRefused):
    """Teletransmission credential refused."""


class RequestClosed(MessageRefused):
    """The request is sealed; ask for a new code."""


class BadCommand(MessageRefused):
    """The subject is not a command this address understands."""


class DocumentRefused(MessageRefused):
    """A document was refused."""


class FilingRefused(DocumentRefused):
    """The filing's data (depot.json) does not meet its schema."""


class TemporaryFailure(GatewayError):
    """A temporary failure; try again later."""


class StorageUnavailable(TemporaryFailure):
    """Storage temporarily unavailable."""


class BlobStoreFull(StorageUnavailable):
    """The blob store ran out of space while writing (ENOSPC, an S3 quota): 451, try later.

    Not `DiskFull` (452 4.3.1), which is the gateway's own refusal before any
    write, when free space is below `limits.disk_reserve_bytes`.
    """


class CommitUncertain(StorageUnavailable):
    """The database connection failed while committing: the rows may or may not be stored.

    Whoever wrote files for those rows must leave them: if the commit landed,
    the rows name them (the client's retry is then answered as a duplicate);
    if not, the blob sweep removes them once no row names them.
    """


class DnsTemporaryFailure(TemporaryFailure):
    """DNS lookup timed out."""


class DiskFull(TemporaryFailure):
    """Insufficient storage."""


class CourtKeyExpired(TemporaryFailure):
    """The court's encryption key has expired; try again later."""


class ImapUnavailable(TemporaryFailure):
    """The IMAP server cannot be reached or refused a command; try again later."""


class Throttled(TemporaryFailure):
    """Too many messages from this client."""
