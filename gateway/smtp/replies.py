"""The one table from domain errors to SMTP replies, and the named reply constants.

Every refusal reads ``<code> <enhanced code> <French> (<English>)``: a
guardian reads it in their provider's bounce, so French comes first
(ASCII, as SMTP requires; the words are in `gateway.smtp.french`), then the
English that says it in detail.  A reply line stays within RFC 5321's 512
octets (4.5.3.1.5).  The 2xx replies stay as they are: nobody reads them in
a bounce, and programs parse ``250 2.0.0 Accepted <reference>`` (SPEC §3.2).
"""

from __future__ import annotations

import re

from gateway import errors
from gateway.smtp.french import french_for

MAX_REPLY_CHARS = 510
"""RFC 5321 4.5.3.1.5: a reply line is at most 512 octets, the final CRLF included."""
MAX_ENGLISH_CHARS = 300
"""The English part of a refusal is cut there (a DocumentRefused names a sender's file)."""

_UNSAFE = re.compile(r"[^\x20-\x7e]")
_CODE = re.compile(r"[2-5][0-9][0-9](?: [245]\.[0-9]{1,3}\.[0-9]{1,3})?")


def refusal(code: str, french: str, english: str) -> str:
    """``<code> <French> (<English>)`` in printable ASCII, within MAX_REPLY_CHARS."""
    head = f"{code} {_UNSAFE.sub('?', french)} ("
    room = min(MAX_ENGLISH_CHARS, MAX_REPLY_CHARS - len(head) - 1)
    return f"{head}{_UNSAFE.sub('?', english)[:room]})"


R250_ACCEPTED = "250 2.0.0 Accepted {reference}"
R250_OK = "250 2.0.0 Message accepted"
R250_RECIPIENT_OK = "250 2.1.5 Recipient OK"
R250_SENDER_OK = "250 2.1.0 Sender OK"
R235_AUTH_OK = "235 2.7.0 Authentication successful"

R550_UNKNOWN_RECIPIENT = refusal(
    "550 5.1.1", "adresse inconnue ici", "Recipient address rejected: no such user here"
)
R452_TOO_MANY_RECIPIENTS = refusal("452 4.5.3", "trop de destinataires", "Too many recipients")
R452_ONE_ADDRESS = refusal(
    "452 4.5.3",
    "une seule adresse de la passerelle par message, envoyez les autres a part",
    "One gateway address per message; send the rest separately",
)
R421_TOO_MANY_CONNECTIONS = refusal(
    "421 4.7.0", "trop de connexions, reessayez plus tard", "Too many connections, try again later"
)
R450_TOO_MANY_MESSAGES = refusal(
    "450 4.7.1",
    "trop de messages de ce client, reessayez plus tard",
    "Too many messages from this client, try again later",
)
# The correlation id closes the line, where `451 4.3.0 ... (ref <id>)` has always put it.
R451_INTERNAL = (
    refusal(
        "451 4.3.0",
        "erreur interne temporaire, reessayez plus tard",
        "Temporary internal error, try again later",
    )
    + " (ref {ref})"
)
R421_SHUTTING_DOWN = refusal(
    "421 4.3.2",
    "service en cours d'arret, reessayez plus tard",
    "Service shutting down, try again later",
)
R552_TOO_BIG = refusal(
    "552 5.3.4", "message trop volumineux", "Message size exceeds fixed maximum message size"
)
R500_LINE_TOO_LONG = refusal("500", "ligne trop longue", "Line too long, see RFC 5321 4.5.3.1.6")
R421_TLS_FAILED = refusal(
    "421 4.7.0",
    "echec de la negociation TLS, TLS 1.2 ou plus recent requis",
    "TLS handshake failed, TLS 1.2 or newer is required",
)
R530_STARTTLS_FIRST = refusal(
    "530 5.7.0", "commencez par STARTTLS", "Must issue a STARTTLS command first"
)
R530_AUTH_REQUIRED = refusal("530 5.7.0", "authentification requise", "Authentication required")
R502_NO_AUTH = refusal(
    "502 5.5.1", "AUTH n'est pas proposee sur ce port", "AUTH is not offered on this port"
)
R454_AUTH_TEMPORARY = refusal(
    "454 4.7.0",
    "echec temporaire de l'authentification, reessayez plus tard",
    "Temporary authentication failure, try again later",
)
R501_AUTH_BASE64 = refusal("501 5.5.2", "base64 illisible", "Cannot decode base64")
R501_AUTH_SPLIT = refusal(
    "501 5.5.2", "reponse PLAIN mal formee", "Cannot split the PLAIN response"
)
R421_TOO_MANY_COMMANDS = refusal(
    "421 4.7.0",
    "trop de commandes dans la session, fermeture",
    "Too many commands in one session, closing connection",
)
R421_SESSION_TIME = refusal(
    "421 4.7.0",
    "duree de session depassee, fermeture",
    "Session time limit reached, closing connection",
)
R421_IDLE = refusal(
    "421 4.4.2", "inactif trop longtemps, fermeture", "Idle for too long, closing connection"
)
R421_TOO_SLOW = refusal(
    "421 4.4.2",
    "donnees recues trop lentement, fermeture",
    "Message data arriving too slowly, closing connection",
)
R554_EARLY_DATA = refusal(
    "554 5.5.0",
    "donnees envoyees avant la reponse 354, fermeture",
    "Data sent before the 354 reply, no PIPELINING here, closing",
)
R503_TLS_ACTIVE = refusal("503 5.5.1", "TLS deja actif", "TLS already active")

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


def with_reference(reply: str, ref: str | None) -> str:
    """``reply`` closed by `` (ref <id>)``, as R451_INTERNAL is, when the line has room."""
    suffix = f" (ref {ref})" if ref else ""
    return reply + suffix if len(reply) + len(suffix) <= MAX_REPLY_CHARS else reply


def reply_code(reply: str) -> str:
    """A reply's code and enhanced code (``554 5.6.0``), without the text, for the logs."""
    found = _CODE.match(reply)
    return found.group(0) if found else reply[:3]


def code_for(error: errors.GatewayError) -> str:
    """The code and enhanced code the table gives `error` (``451 4.3.0`` when it has none)."""
    return next((code for cls, code in _TABLE if isinstance(error, cls)), "451 4.3.0")


def reply_for(error: errors.GatewayError) -> str:
    """The SMTP reply for a domain error: its code, then French, then its own (English) message."""
    return refusal(code_for(error), french_for(error), error.message)
