"""The one table from domain errors to SMTP replies, and the named reply constants."""

from __future__ import annotations

import re

from gateway import errors

R250_ACCEPTED = "250 2.0.0 Accepted {reference}"
R250_OK = "250 2.0.0 Message accepted"
R250_RECIPIENT_OK = "250 2.1.5 Recipient OK"
R250_SENDER_OK = "250 2.1.0 Sender OK"
R550_UNKNOWN_RECIPIENT = "550 5.1.1 Recipient address rejected: no such user here"
R452_TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
R452_ONE_ADDRESS = "452 4.5.3 One gateway address per message; send the rest separately"
R421_TOO_MANY_CONNECTIONS = "421 4.7.0 Too many connections, try again later"
R450_TOO_MANY_MESSAGES = "450 4.7.1 Too many messages from this client, try again later"
R451_INTERNAL = "451 4.3.0 Temporary internal error, try again later (ref {ref})"
R421_SHUTTING_DOWN = "421 4.3.2 Service shutting down, try again later"
R552_TOO_BIG = "552 5.3.4 Message size exceeds fixed maximum message size"
R500_LINE_TOO_LONG = "500 Line too long (see RFC5321 4.5.3.1.6)"
R421_TLS_FAILED = "421 4.7.0 TLS handshake failed (TLS 1.2 or newer is required)"
R530_STARTTLS_FIRST = "530 5.7.0 Must issue a STARTTLS command first"
R502_NO_AUTH = "502 5.5.1 AUTH is not offered on this port"
R235_AUTH_OK = "235 2.7.0 Authentication successful"
R454_AUTH_TEMPORARY = "454 4.7.0 Temporary authentication failure, try again later"
R501_AUTH_BASE64 = "501 5.5.2 Cannot decode base64"
R501_AUTH_SPLIT = "501 5.5.2 Cannot split the PLAIN response"

# Order matters: the first class that matches wins, so subclasses come first.
_TABLE: list[tuple[type[errors.GatewayError], str]] = [
    (errors.UnknownRecipient, "550 5.1.1"),
    (errors.MessageTooLarge, "552 5.3.4"),
    (errors.BareLineEnding, "554 5.5.2"),
    (errors.MalformedMessage, "554 5.6.0"),
    (errors.DocumentRefused, "554 5.6.0"),
    (errors.BadCommand, "554 5.5.4"),
    (errors.SenderAuthError, "550 5.7.1"),
    (errors.CredentialInvalid, "535 5.7.8"),
    (errors.AuthLocked, "454 4.7.0"),
    (errors.CodeError, "550 5.7.0"),
    (errors.RequestClosed, "550 5.7.0"),
    (errors.CredentialRefused, "550 5.7.8"),
    (errors.DnsTemporaryFailure, "451 4.4.3"),
    (errors.DiskFull, "452 4.3.1"),
    (errors.Throttled, "450 4.7.1"),
    (errors.StorageUnavailable, "451 4.3.0"),
    (errors.TemporaryFailure, "451 4.3.0"),
    (errors.MessageRefused, "554 5.7.0"),
]

_UNSAFE = re.compile(r"[^\x20-\x7e]")
_CODE = re.compile(r"[2-5][0-9][0-9](?: [245]\.[0-9]{1,3}\.[0-9]{1,3})?")


def reply_code(reply: str) -> str:
    """A reply's code and enhanced code (``554 5.6.0``), without the text, for the logs."""
    found = _CODE.match(reply)
    return found.group(0) if found else reply[:3]


def reply_for(error: errors.GatewayError) -> str:
    """The SMTP reply for a domain error: code, enhanced code, and its safe message."""
    text = _UNSAFE.sub("?", error.message)[:300]
    for cls, code in _TABLE:
        if isinstance(error, cls):
            return f"{code} {text}"
    return f"451 4.3.0 {text}"
