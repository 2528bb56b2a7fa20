"""Delivers the outbox: claim due rows under a lease, send, record, retry, give up.

Where the mail goes is a `Transport`: the relay (`RelayTransport`, SMTP to
the smarthost) or a local maildir (`gateway.outbox.maildir`, relay.mode =
"capture").  Claiming, recording, back-off and the audit are the same for both.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import logging
import re
import ssl
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.policy import default as default_policy
from typing import Protocol

import aiosmtplib
from aiosmtplib.email import quote_address

from gateway.errors import TemporaryFailure
from gateway.model import Clock
from gateway.settings import RelaySection
from gateway.storage.audit import append_event, lock_head
from gateway.storage.db import Database, Session
from gateway.storage.outbox import PENDING, LeasedRow, OutboxRepository

log = logging.getLogger("gateway.outbox")

FIRST_RETRY = timedelta(seconds=30)
DETAIL_MAX = 200
RECORD_TRIES = 2
"""Recording a batch is retried once: a lost record means re-sending the whole batch later."""
RECORD_RETRY_PAUSE = 1.0
# Operations a relay answers with 5xx that say nothing about the message itself
# (bad relay credentials, refused greeting): the operator fixes them, we retry.
_NOT_ABOUT_THE_MESSAGE = (
    aiosmtplib.SMTPAuthenticationError,
    aiosmtplib.SMTPHeloError,
    aiosmtplib.SMTPConnectResponseError,  # a 5xx greeting
)


@dataclass(frozen=True, slots=True)
class Composed:
    """A message the composer made: its envelope sender and its signed bytes.

    Also what the relay is sent for it, worked out where it is built (a
    compose thread, not the event loop): `size`, its SIZE (RFC 1870), and
    `wire`, what follows DATA (`data_wire_form`).
    """

    sender: str
    data: bytes
    size: int = field(init=False, repr=False, compare=False)
    wire: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        size, wire = data_wire_form(self.data)
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "wire", wire)


Compose = Callable[[str, str, dict[str, str]], Composed]
"""(kind, recipient, template values) -> the signed message and who sends it."""


@dataclass(frozen=True, slots=True)
class Claimed:
    """A row taken under lease: what delivery needs, detached from its session."""

    id: int
    kind: str
    recipient: str
    message: bytes | None
    values: dict[str, str] | None
    lease_until: datetime


Ready = tuple[Claimed, Composed | None]
"""A claimed row and its message, or None when it could not be composed."""


class Result(enum.StrEnum):
    """What one delivery attempt came to."""

    SENT = "sent"
    TEMPORARY = "temporary"
    """Try again later (back-off), until `relay.give_up_after`."""
    PERMANENT = "permanent"
    """The relay refused the message itself: give up now."""


@dataclass(frozen=True, slots=True)
class Attempt:
    result: Result
    detail: str


@dataclass(frozen=True, slots=True)
class Delivered:
    """What became of one claimed row, and when: recorded with the rest of its batch."""

    item: Claimed
    outcome: Attempt
    at: datetime


SENT_OUTCOME = Attempt(Result.SENT, "250 accepted by the relay")
COMPOSE_FAILED = Attempt(Result.TEMPORARY, "could not compose the message (see the log)")
INTERNAL_ERROR = Attempt(Result.TEMPORARY, "internal error while sending (see the log)")
# What sending one message may raise about the relay or that message: aiosmtplib's
# errors, the network's, and ValueError for an address aiosmtplib will not put on a
# command line. Caught per message, so one bad message never sinks its batch.
_DELIVERY_ERRORS = (aiosmtplib.SMTPException, OSError, TimeoutError, ValueError)
# The end of the header block: a line break followed by an empty line (CRLF or LF).
_HEADER_END = re.compile(rb"\r?\n\r?\n")


class Connection(Protocol):
    """One session with where mail goes, opened on demand and reused message after message."""

    async def open(self) -> Attempt | None:
        """Get ready to send unless ready; the failure (which ends the lane), if any."""

    async def send(self, item: Claimed, composed: Composed) -> Attempt:
        """Deliver one message; its result classified."""

    def drop(self) -> None:
        """Give the session up at once: its state is unknown."""

    async def close(self) -> None:
        """End the session politely."""


class Transport(Protocol):
    """Where the outbox delivers; each lane of a batch takes a connection of its own.

    The worker keeps a lane's connection for the next pass while passes find
    work, and closes them all once a pass finds nothing due (or it stops).
    """

    def connection(self) -> Connection: ...


def retry_delay(failures: int, max_backoff: timedelta) -> timedelta:
    """Wait before the next attempt after `failures` failed ones: 30 s, 1 min, 2 min … capped."""
    exponent = min(max(failures - 1, 0), 30)  # 2**30 * 30 s is far above any cap
    delay: timedelta = FIRST_RETRY * (1 << exponent)
    return min(max_backoff, delay)


def ehlo_name(host_name: str) -> str | None:
    """`host_name` as EHLO carries it (IDNA), or None (then the machine's FQDN) if it cannot."""
    try:
        name = host_name.strip().rstrip(".").encode("idna").decode("ascii")
    except UnicodeError:
        return None
    return name if name and all(part for part in name.split(".")) else None


class SessionGone(aiosmtplib.SMTPServerDisconnected):
    """The relay closed the session before this message's MAIL was answered (or said 421).

    Nothing of the message was sent, so it may go again on a fresh session.
    """


def relay_tls_context() -> ssl.SSLContext:
    """Certificate-checking client context, TLS 1.2 or newer only."""
    context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def classify(error: Exception) -> Attempt:
    """Map a delivery error to an attempt result: 5xx about the message is permanent."""
    if isinstance(error, SessionGone):
        # As it was said: "421 …", or how aiosmtplib saw the connection go.
        cause = error.__cause__
        text = f"{type(cause).__name__}: {cause}" if cause is not None else str(error)
        return Attempt(Result.TEMPORARY, _short(text))
    if isinstance(error, aiosmtplib.SMTPRecipientsRefused):
        codes = [refused.code for refused in error.recipients]
        texts = "; ".join(f"{r.code} {r.message}" for r in error.recipients)
        permanent = bool(codes) and all(500 <= code < 600 for code in codes)
        return Attempt(Result.PERMANENT if permanent else Result.TEMPORARY, _short(texts))
    if isinstance(error, aiosmtplib.SMTPResponseException):
        detail = _short(f"{error.code} {error.message}")
        if 500 <= error.code < 600 and not isinstance(error, _NOT_ABOUT_THE_MESSAGE):
            return Attempt(Result.PERMANENT, detail)
        return Attempt(Result.TEMPORARY, detail)
    if isinstance(error, aiosmtplib.SMTPException):
        return Attempt(Result.TEMPORARY, _short(f"{type(error).__name__}: {error}"))
    # OSError, TimeoutError, ssl.SSLError: the relay is unreachable for now.
    return Attempt(Result.TEMPORARY, _short(type(error).__name__))


def _short(text: str) -> str:
    return " ".join(text.split())[:DETAIL_MAX]


def envelope_sender(message: bytes) -> str:
    """The From address of a message stored ready-made, used as MAIL FROM (empty: null sender).

    Messages composed at delivery come with their sender (`Composed`); only
    a row queued with its bytes (a forwarded message) needs this.

    Only the header block is parsed: the cut is at the first line break followed
    by an empty line, never before the parser's own end of headers, so the
    parser sees every header it would have seen in the whole message.  The
    split into raw fields is the same under every policy; the compat32 one
    skips interpreting Content-Type, which we do not need.  Interpreting the
    From value is the costly part and every composed message has the same one,
    so it is done by the default policy, as before, once per distinct value.
    """
    end = _HEADER_END.search(message)
    head = message[: end.end()] if end else message
    headers = BytesHeaderParser(policy=compat32).parsebytes(head)
    for name, value in headers.raw_items():  # what `headers.get("From")` walks
        if name.lower() == "from":
            return _first_address(name, str(value))
    return ""


@functools.lru_cache(maxsize=256)
def _first_address(name: str, value: str) -> str:
    header = default_policy.header_fetch_parse(name, value)
    addresses = getattr(header, "addresses", ())
    return str(addresses[0].addr_spec) if addresses else ""


async def mail_transaction(
    client: aiosmtplib.SMTP, sender: str, recipient: str, message: Composed
) -> None:
    """MAIL, RCPT and DATA for one recipient, raising what `SMTP.sendmail` raises.

    What `sendmail` does for one recipient and no options, without its costs
    that buy us nothing: both addresses are checked and quoted once (and the
    sender, always the same, once at all), and the message's SIZE and wire
    form were worked out off the event loop (`Composed`, `send_data`).  A
    refused command is followed by RSET, so the session can carry the next
    message.
    """
    if client.is_ehlo_or_helo_needed:
        try:
            await client.ehlo()
        except aiosmtplib.SMTPHeloError:
            if not client.is_connected:
                raise
            await client.helo()
    mail_from = b"FROM:" + _command_address(sender)
    rcpt_to = b"TO:" + _command_address(recipient)  # both checked before anything is sent
    options = [b"SIZE=%d" % message.size] if client.supports_extension("size") else []
    try:
        try:
            response = await client.execute_command(b"MAIL", mail_from, *options)
        except aiosmtplib.SMTPServerDisconnected as error:
            raise SessionGone(str(error)) from error
        if response.code == aiosmtplib.SMTPStatus.domain_unavailable:  # 421: closing
            raise SessionGone(f"{response.code} {response.message}")
        if response.code != aiosmtplib.SMTPStatus.completed:
            raise aiosmtplib.SMTPSenderRefused(response.code, response.message, sender)
        response = await client.execute_command(b"RCPT", rcpt_to)
        if response.code not in (
            aiosmtplib.SMTPStatus.completed,
            aiosmtplib.SMTPStatus.will_forward,
        ):
            refused = aiosmtplib.SMTPRecipientRefused(response.code, response.message, recipient)
            raise aiosmtplib.SMTPRecipientsRefused([refused])
        await send_data(client, message.wire)
    except SessionGone:
        raise
    except (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused):
        # Disconnected, or a bad status: the refusal is what we report.
        with contextlib.suppress(ConnectionError, aiosmtplib.SMTPResponseException):
            await client.rset()
        raise


# What aiosmtplib turns into CRLF in DATA (its `normalize_message_line_endings`).
_LINE_ENDING = re.compile(rb"(?:\r\n|\n|\r(?!\n))")
# An addr-spec `quote_address` gives back as it is, between angle brackets.
_PLAIN_ADDRESS = re.compile(
    r"[A-Za-z0-9_+-]+(?:\.[A-Za-z0-9_+-]+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
)


@functools.lru_cache(maxsize=256)
def _command_address(address: str) -> bytes:
    """`<address>` for MAIL or RCPT, as aiosmtplib quotes and checks it (ValueError if unsafe)."""
    if _PLAIN_ADDRESS.fullmatch(address):
        return b"<" + address.encode("ascii") + b">"
    return quote_address(address).encode("ascii")


def data_wire_form(message: bytes) -> tuple[int, bytes]:
    """The SIZE (RFC 1870) of `message` and the bytes that follow DATA for it.

    What aiosmtplib's `execute_data_command` sends: every line ending made
    CRLF and a last one added, a dot that starts a line doubled, and the
    lone dot that ends DATA; the SIZE is the length before the dots.  Our
    own messages are already in CRLF lines: three counts tell, and its two
    regular expressions (a substitution at every line end) are not run.
    """
    lines = message.count(b"\n")
    if not (lines == message.count(b"\r") == message.count(b"\r\n")):
        message = _LINE_ENDING.sub(b"\r\n", message)
    if not message.endswith(b"\r\n"):
        message += b"\r\n"
    stuffed = message.replace(b"\r\n.", b"\r\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    return len(message), stuffed + b".\r\n"


async def send_data(client: aiosmtplib.SMTP, wire: bytes) -> None:
    """DATA, then `wire` (`data_wire_form`), raising what `SMTP.data` raises.

    `SMTP.data` would normalise and dot-stuff the message again with two
    regular expressions on the event loop (a few percent of the loop's time
    under load); the bytes sent are the same.  The protocol's `write` and
    `read_response` are the steps its `execute_data_command` takes; no
    other command can run on this session meanwhile (one lane sends on it).
    """
    response = await client.execute_command(b"DATA")
    if response.code != aiosmtplib.SMTPStatus.start_input:
        raise aiosmtplib.SMTPDataError(response.code, response.message)
    protocol = client.protocol
    if protocol is None:
        raise aiosmtplib.SMTPServerDisconnected("Connection lost")
    try:
        protocol.write(wire)
        response = await protocol.read_response(timeout=client.timeout)
    except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError):
        client.close()
        raise
    if response.code != aiosmtplib.SMTPStatus.completed:
        raise aiosmtplib.SMTPDataError(response.code, response.message)


class RelayConnection:
    """One SMTP client session with the relay, opened on demand and reused message after message.

    Each message is one mail transaction (MAIL, RCPT, DATA) on the open
    session, as aiosmtplib's `sendmail` runs it, and RSET after a refusal, so
    the session stays usable after a message is refused (`mail_transaction`).
    When the relay drops the connection (or aiosmtplib closes it after a
    timeout or a 421), `open` connects again for the next message.  A session
    that already carried a message may have been ended by the relay since
    (its idle timeout, a limit of messages per session): if it is found gone
    at MAIL, before any of the message was sent, the message goes once more
    on a fresh session instead of waiting for a retry.  The EHLO name is
    `local_hostname` (the gateway's own host name), else the machine's FQDN.
    """

    def __init__(
        self, relay: RelaySection, tls_context: ssl.SSLContext, local_hostname: str | None
    ) -> None:
        password = relay.password.get_secret_value()
        # The same settings `aiosmtplib.send` was given for one message per connection.
        self._client = aiosmtplib.SMTP(
            hostname=relay.host,
            port=relay.port,
            use_tls=relay.implicit_tls,
            start_tls=relay.starttls and not relay.implicit_tls,
            tls_context=tls_context,
            username=relay.username or None,
            password=password if relay.username else None,
            timeout=relay.timeout,
            local_hostname=local_hostname,
        )
        self._carried = 0  # mail transactions on the current session

    async def open(self) -> Attempt | None:
        """Connect (TLS, STARTTLS, AUTH as configured) unless connected; the failure, if any."""
        if self._client.is_connected:
            return None
        self._carried = 0
        try:
            await self._client.connect()
        except _DELIVERY_ERRORS as error:
            return classify(error)  # aiosmtplib has already closed the half-open session
        return None

    async def send(self, item: Claimed, composed: Composed) -> Attempt:
        """One mail transaction on the open session, its result classified."""
        try:
            try:
                await self._transaction(item, composed)
            except SessionGone:
                if self._carried <= 1:
                    raise  # a fresh session refused us: that is the answer
                log.info("outbox %s: the relay had closed the session, sending on a new one",
                         item.id)
                self._client.close()
                self._carried = 0
                await self._client.connect()
                await self._transaction(item, composed)
        except _DELIVERY_ERRORS as error:
            return classify(error)
        return SENT_OUTCOME

    async def _transaction(self, item: Claimed, composed: Composed) -> None:
        self._carried += 1
        await mail_transaction(self._client, composed.sender, item.recipient, composed)

    def drop(self) -> None:
        """Close the socket without a word: the session's state is unknown."""
        self._client.close()

    async def close(self) -> None:
        """QUIT if still connected, then close whatever the relay answers."""
        try:
            if self._client.is_connected:
                await self._client.quit()
        except _DELIVERY_ERRORS:
            pass  # the messages are already sent or classified; only the goodbye failed
        finally:
            self._client.close()


@dataclass(frozen=True, slots=True)
class RelayTransport:
    """Delivery to the configured relay (relay.mode = "smtp")."""

    relay: RelaySection
    tls_context: ssl.SSLContext
    local_hostname: str | None = None

    def connection(self) -> RelayConnection:
        return RelayConnection(self.relay, self.tls_context, self.local_hostname)


class OutboxWorker:
    """Sends due outbox rows; several workers (nodes) may share one database safely.

    Rows are claimed by setting `lease_until` in a short transaction (with
    `FOR UPDATE SKIP LOCKED` on PostgreSQL; SQLite's write lock serialises
    claims), so a row is never in two workers' hands while its lease runs.
    A claimed batch goes out over at most `concurrency` relay connections and
    its outcomes are recorded together in one transaction: a crash before that
    record leaves the leases in place, and the rows are sent again once they
    run out (at least once, never lost).
    """

    def __init__(
        self,
        db: Database,
        relay: RelaySection,
        clock: Clock,
        *,
        batch: int = 20,
        lease: timedelta = timedelta(minutes=10),
        concurrency: int = 4,
        tls_context: ssl.SSLContext | None = None,
        local_hostname: str | None = None,
        compose: Compose | None = None,
        count: Callable[[str], None] | None = None,
        transport: Transport | None = None,
    ) -> None:
        """`count` is told the result of each recorded attempt (sent, temporary, permanent).

        `transport` is where mail goes; by default the relay of `relay`, over
        `tls_context` (certificate-checking by default) as `local_hostname`.
        """
        if concurrency < 1:
            raise ValueError("the outbox needs at least one relay connection")
        self._db = db
        self._relay = relay
        self._clock = clock
        self._batch = batch
        self._lease = lease
        self._concurrency = concurrency
        self._transport = transport or RelayTransport(
            relay, tls_context or relay_tls_context(), local_hostname
        )
        self._compose = compose
        self._count = count
        self._open: list[Connection] = []  # kept from the last pass, for the next one
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def run_once(self) -> int:
        """Claim and attempt one batch of due rows; return how many were attempted.

        Every connection it opened is closed again before it returns.
        """
        try:
            return await self._pass()
        finally:
            await self.close_connections()

    async def _pass(self) -> int:
        # One hand-off for the claim and every message's composing (signatures
        # included), one for the record: not one per message.
        ready = await asyncio.to_thread(self._claim_and_compose)
        if ready:
            delivered = await self._deliver(ready)
            await self._record(delivered)
        return len(ready)

    async def close_connections(self) -> None:
        """End the sessions kept open between passes (QUIT), all at once."""
        connections, self._open = self._open, []
        await asyncio.gather(*(connection.close() for connection in connections))

    async def run(self, stop: asyncio.Event, interval: float = 5.0) -> None:
        """Deliver until `stop` is set; the batch in flight is always finished first.

        The relay sessions stay open from one pass to the next (no connect,
        EHLO and QUIT per batch) until a pass that no wake-up asked for (a
        quiet `interval`) finds nothing due: a session idles about `interval`.
        """
        self._loop = asyncio.get_running_loop()
        woken = True
        try:
            while not stop.is_set():
                attempted = 0
                try:
                    attempted = await self._pass()
                except TemporaryFailure:
                    log.warning("outbox: database unavailable, will retry")
                except Exception:
                    log.exception("outbox: unexpected error in a delivery pass")
                if attempted == 0 and not woken:
                    await self.close_connections()
                woken = True
                if attempted < self._batch:  # a full batch means more may be due right now
                    woken = await self._idle(stop, interval)
        finally:
            await self.close_connections()

    def wake(self) -> None:
        """Ask the running loop to look at the outbox now (callable from any thread)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            self._wake.set()
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._wake.set()
        else:
            loop.call_soon_threadsafe(self._wake.set)

    async def _idle(self, stop: asyncio.Event, interval: float) -> bool:
        """Wait for a wake-up, `stop` or `interval`; True if woken (or stopped)."""
        waiters = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())}
        try:
            await asyncio.wait(waiters, timeout=interval, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)
        woken = self._wake.is_set() or stop.is_set()
        self._wake.clear()
        return woken

    def _claim_and_compose(self) -> list[Ready]:
        """The batch claimed, each message ready to send (None: it could not be composed)."""
        return [(item, self._ready(item)) for item in self._claim()]

    def _claim(self) -> list[Claimed]:
        now = self._clock()
        lease_until = now + self._lease
        with self._db.transaction() as session:
            rows = OutboxRepository(session).claim(now, lease_until, self._batch)
        return [
            Claimed(row.id, row.kind, row.recipient, row.message, row.template_values, lease_until)
            for row in rows
            # Cannot happen for a pending row; never send nothing.
            if row.message is not None or row.template_values is not None
        ]

    async def _deliver(self, claimed: list[Ready]) -> list[Delivered]:
        """Send a batch over at most `concurrency` connections, each taking the next message.

        A connection that cannot be opened ends its lane (the relay is down, or
        refuses us): the other lanes go on.  If every lane ends that way, the
        messages nobody tried are temporary failures too, without trying each.
        """
        queue = deque(claimed)
        delivered: list[Delivered] = []
        lanes = min(self._concurrency, len(claimed))
        failures = await asyncio.gather(*(self._lane(queue, delivered) for _ in range(lanes)))
        unreachable = next((failure for failure in failures if failure is not None), None)
        if queue and unreachable is not None:
            left = Attempt(Result.TEMPORARY, unreachable.detail)
            delivered.extend(Delivered(item, left, self._clock()) for item, _ in queue)
        return delivered

    async def _lane(self, queue: deque[Ready], delivered: list[Delivered]) -> Attempt | None:
        """Deliver messages from `queue` one after the other over one relay connection.

        Returns the failure to connect that ended the lane early, or None once
        the queue is empty.  The lane takes a connection kept from the last
        pass if there is one, and keeps its own for the next pass unless it
        failed to connect.
        """
        connection = self._open.pop() if self._open else self._transport.connection()
        keep = False
        try:
            while queue:
                item, composed = queue.popleft()
                outcome, reached = await self._attempt(connection, item, composed)
                delivered.append(Delivered(item, outcome, self._clock()))
                if not reached:
                    return outcome
            keep = True
            return None
        finally:
            if keep:
                self._open.append(connection)
            else:
                await connection.close()

    async def _attempt(
        self, connection: Connection, item: Claimed, composed: Composed | None
    ) -> tuple[Attempt, bool]:
        """Send one message; also say whether the relay was reached."""
        if composed is None:
            return COMPOSE_FAILED, True
        try:
            failure = await connection.open()
            if failure is not None:
                return failure, False
            return await connection.send(item, composed), True
        except Exception:
            # Not the relay's doing nor the message's: keep it from sinking the batch.
            log.exception("outbox %s (%s): sending failed", item.id, item.kind)
            connection.drop()
            return INTERNAL_ERROR, True

    def _ready(self, item: Claimed) -> Composed | None:
        """The message to send for `item`: stored ready-made, or composed and signed now."""
        if item.message is not None:
            return Composed(envelope_sender(item.message), item.message)
        if self._compose is None or item.values is None:
            log.error("outbox %s: template values but no composer", item.id)
            return None
        try:
            return self._compose(item.kind, item.recipient, item.values)
        except Exception:
            log.exception("outbox %s (%s): composing failed", item.id, item.kind)
            return None

    async def _record(self, delivered: list[Delivered]) -> None:
        """Record the batch, trying once more on a database fault, then give up with a log.

        Unrecorded rows keep their lease: they are sent again once it runs out.
        """
        for attempt in range(1, RECORD_TRIES + 1):
            try:
                await asyncio.to_thread(self._record_batch, delivered)
                return
            except TemporaryFailure:
                if attempt == RECORD_TRIES:
                    log.warning(
                        "outbox: database unavailable, %d outcome(s) not recorded; "
                        "those rows will be sent again when their lease runs out",
                        len(delivered),
                    )
                    return
                await asyncio.sleep(RECORD_RETRY_PAUSE)
            except Exception:
                log.exception(
                    "outbox: recording %d outcome(s) failed; those rows will be sent again "
                    "when their lease runs out",
                    len(delivered),
                )
                return

    def _record_batch(self, delivered: Iterable[Delivered]) -> None:
        """All of a batch's outcomes in one transaction: one commit (fsync) per batch."""
        ordered = sorted(delivered, key=lambda done: done.item.id)
        with self._db.transaction() as session:
            if any(done.outcome.result is not Result.SENT for done in ordered):
                # A failure may append to the audit chain: take its head lock before
                # any row lock, the order every appending transaction follows.
                lock_head(session)
            outbox = OutboxRepository(session)
            by_id = outbox.locked([done.item.id for done in ordered])
            changes = _Changes()
            for done in ordered:
                self._record_one(session, changes, by_id.get(done.item.id), done)
            outbox.add_attempts(changes.attempts)
            outbox.mark_sent(changes.sent)
            outbox.mark_retry(changes.retry)
            outbox.mark_failed(changes.failed)
        if self._count is not None:
            for result in changes.recorded:
                self._count(result)

    def _record_one(
        self, session: Session, changes: _Changes, row: LeasedRow | None, done: Delivered
    ) -> None:
        """One row's attempt, as its own transaction recorded it before batches."""
        item, outcome, now = done.item, done.outcome, done.at
        if row is None or row.status != PENDING or row.lease_until != item.lease_until:
            # Our lease ran out and another worker took the row: its record wins.
            log.warning("outbox %s: lease lost, %s not recorded", item.id, outcome.result)
            return
        attempts = row.attempts + 1
        changes.recorded.append(outcome.result)
        changes.attempts.append(
            {
                "outbox_id": row.id,
                "attempted_at": now,
                "result": outcome.result.value,
                "detail": outcome.detail,
            }
        )
        if outcome.result is Result.SENT:
            # The message (or its values) may hold a code: keep neither once sent.
            changes.sent.append({"row_id": row.id, "at": now, "attempts": attempts})
            log.info("outbox %s (%s): sent after %d attempt(s)", row.id, row.kind, attempts)
            return
        too_old = now - row.created_at >= self._relay.give_up_after
        if outcome.result is Result.PERMANENT or too_old:
            changes.failed.append({"row_id": row.id, "attempts": attempts})
            log.warning("outbox %s (%s): gave up: %s", row.id, row.kind, outcome.detail)
            append_event(
                session,
                now,
                "outbox.failed",
                actor="outbox",
                subject=row.related_reference or f"outbox/{row.id}",
                data={
                    "outbox_id": row.id,
                    "kind": row.kind,
                    "attempts": attempts,
                    "reason": (
                        "permanent refusal" if outcome.result is Result.PERMANENT else "expired"
                    ),
                    "detail": outcome.detail,
                },
            )
            return
        next_attempt_at = now + retry_delay(attempts, self._relay.max_backoff)
        changes.retry.append(
            {"row_id": row.id, "attempts": attempts, "next_attempt_at": next_attempt_at}
        )
        log.info(
            "outbox %s (%s): %s, retry at %s",
            row.id,
            row.kind,
            outcome.detail,
            next_attempt_at.isoformat(),
        )


@dataclass(slots=True)
class _Changes:
    """What recording a batch writes, gathered by outcome: one statement for each."""

    recorded: list[Result] = field(default_factory=list)
    attempts: list[dict[str, object]] = field(default_factory=list)
    sent: list[dict[str, object]] = field(default_factory=list)
    retry: list[dict[str, object]] = field(default_factory=list)
    failed: list[dict[str, object]] = field(default_factory=list)
