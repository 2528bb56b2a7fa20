"""Attacks on the front door's SMTP sessions, each through a real session against a real gateway.

Every gateway here offers STARTTLS with the self-signed certificate `gateway
init` made.  Each attack gets its named reply; afterwards the gateway still
answers a new session, its log holds no traceback, and nothing refused left a
row or a blob behind.
"""

from __future__ import annotations

import email
import email.policy
import logging
import re
import smtplib
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from gateway.smtp import replies
from gateway.storage.models import AuditEvent, Blob, Document, Outbox, Submission
from tests.fixtures.gatewayserver import (
    DOMAIN,
    GUARDIAN,
    GatewayFactory,
    GatewayUnderTest,
    World,
    make_world,
)
from tests.fixtures.gpgkeys import CourtKey
from tests.fixtures.smtpsink import SmtpSink

OPERATOR = "exploitation@exploitant.example"
REMOTE_POSTMASTER = "postmaster@fai.example"


# -- helpers ----------------------------------------------------------------------------
class RawSession:
    """A client on a plain socket: sends bytes as given, reads replies line by line."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.file = self.sock.makefile("rb")
        self.greeting = self.reply()

    def reply(self) -> bytes:
        """One whole reply (every line of a multi-line one); b"" once the server closed."""
        lines = []
        while True:
            line = self.file.readline()
            lines.append(line)
            if len(line) < 4 or line[3:4] != b"-":
                return b"".join(lines)

    def command(self, line: bytes) -> bytes:
        self.sock.sendall(line + b"\r\n")
        return self.reply()

    def closed_by_server(self) -> bool:
        try:
            return self.file.readline() == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@pytest.fixture
def raw_sessions() -> Iterator[list[RawSession]]:
    opened: list[RawSession] = []
    yield opened
    for session in opened:
        session.close()


@pytest.fixture
def clean_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """The gateway (in this process) logs no traceback and no error while it is attacked."""
    caplog.set_level(logging.INFO)
    yield caplog
    bad = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not bad, caplog.text
    assert "Traceback" not in caplog.text


def open_raw(gw: GatewayUnderTest, sessions: list[RawSession]) -> RawSession:
    session = RawSession(gw.port)
    sessions.append(session)
    assert session.greeting.startswith(b"220 ")
    return session


def unverified_tls() -> ssl.SSLContext:
    """What sending MTAs do with an MX's certificate: encrypt, without checking who it is."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def stored(gw: GatewayUnderTest) -> tuple[int, int, int, int]:
    """(submissions, documents, blobs, outbox rows) in the database.

    The guardian's registration notice, queued when the world was made, is
    not something an attack left: it is not counted.
    """
    with gw.services.db.transaction() as session:
        return (
            session.scalar(select(func.count(Submission.id))) or 0,
            session.scalar(select(func.count(Document.id))) or 0,
            session.scalar(select(func.count()).select_from(Blob)) or 0,
            session.scalar(select(func.count(Outbox.id)).where(Outbox.kind != "registration")) or 0,
        )


def assert_nothing_stored(gw: GatewayUnderTest) -> None:
    assert stored(gw) == (0, 0, 0, 0)
    assert [p for p in gw.services.settings.blob_dir.rglob("*") if p.is_file()] == []


def assert_still_up(gw: GatewayUnderTest) -> None:
    with smtplib.SMTP("127.0.0.1", gw.port, timeout=10) as client:
        assert client.ehlo("client.test")[0] == 250
        assert client.noop()[0] == 250


def message_to(rcpt: str, body: bytes = b"Bonjour,\r\n", sender: str = GUARDIAN) -> bytes:
    return (
        f"From: {sender}\r\nTo: {rcpt}\r\nSubject: test\r\nMessage-ID: <attack@exemple.fr>\r\n\r\n"
    ).encode() + body


def start_transaction(session: RawSession, rcpt: str = f"depot@{DOMAIN}") -> None:
    assert session.command(b"EHLO client.test").startswith(b"250")
    assert session.command(f"MAIL FROM:<{GUARDIAN}>".encode()).startswith(b"250")
    assert session.command(f"RCPT TO:<{rcpt}>".encode()).startswith(b"250")


# -- sessions ---------------------------------------------------------------------------
def test_command_flood_of_mixed_verbs_closed_421_470(
    gateway_factory: GatewayFactory,
    raw_sessions: list[RawSession],
    clean_log: pytest.LogCaptureFixture,
) -> None:
    """20 commands in all, never more than 7 of a verb: aiosmtpd's per-verb limit never trips."""
    gw = gateway_factory({"GATEWAY__SMTP__MAX_COMMANDS": "20"})
    session = open_raw(gw, raw_sessions)
    verbs = [b"NOOP", b"RSET", b"HELP"] * 7
    answers = [session.command(verb) for verb in verbs[:20]]
    assert all(answer.startswith((b"250", b"214")) for answer in answers), answers
    assert session.command(verbs[20]) == replies.R421_TOO_MANY_COMMANDS.encode() + b"\r\n"
    assert session.closed_by_server()
    assert_still_up(gw)
    assert_nothing_stored(gw)


def test_noop_keepalive_closed_at_session_time_421_470(
    gateway_factory: GatewayFactory,
    raw_sessions: list[RawSession],
    clean_log: pytest.LogCaptureFixture,
) -> None:
    gw = gateway_factory({"GATEWAY__SMTP__MAX_SESSION_TIME": "2s"})
    session = open_raw(gw, raw_sessions)
    started = time.monotonic()
    answer = b""
    while time.monotonic() - started < 10:
        answer = session.command(b"NOOP")  # well within the idle timeout each time
        if not answer.startswith(b"250"):
            break
        time.sleep(0.2)
    assert answer == replies.R421_SESSION_TIME.encode() + b"\r\n"
    assert 1.8 < time.monotonic() - started < 5
    assert session.closed_by_server()
    assert_still_up(gw)


def assert_idle_close(
    gw: GatewayUnderTest, session: RawSession, since: float | None = None
) -> None:
    """The session gets 421 4.4.2 (about a second after `since`, the idle timeout of these
    tests), is closed, and the gateway serves on."""
    assert session.reply() == replies.R421_IDLE.encode() + b"\r\n"
    if since is not None:
        assert 0.9 < time.monotonic() - since < 3
    assert session.closed_by_server()
    assert_still_up(gw)


def test_idle_session_closed_with_421_442(
    gateway_factory: GatewayFactory,
    raw_sessions: list[RawSession],
    clean_log: pytest.LogCaptureFixture,
) -> None:
    """RFC 5321 4.5.3.2: a server that times a client out says so before closing."""
    gw = gateway_factory({"GATEWAY__SMTP__IDLE_TIMEOUT": "1s"})
    session = open_raw(gw, raw_sessions)
    assert session.command(b"EHLO client.test").startswith(b"250")
    assert_idle_close(gw, session)


def test_commands_move_the_idle_deadline_and_silence_still_gets_421_442(
    gateway_factory: GatewayFactory,
    raw_sessions: list[RawSession],
    clean_log: pytest.LogCaptureFixture,
) -> None:
    """The one inactivity timer follows each command (HookedSMTP._reset_timeout)."""
    gw = gateway_factory({"GATEWAY__SMTP__IDLE_TIMEOUT": "1s"})
    session = open_raw(gw, raw_sessions)
    started = last = time.monotonic()
    while last - started < 2.5:  # well past the first deadline
        time.sleep(0.3)
        assert session.command(b"NOOP").startswith(b"250")
        last = time.monotonic()
    assert_idle_close(gw, session, since=last)


def test_idle_after_a_message_gets_421_442_at_the_idle_timeout(
    gateway_factory: GatewayFactory,
    raw_sessions: list[RawSession],
    clean_log: pytest.LogCaptureFixture,
) -> None:
    """DATA's longer timer (idle + the size at the minimum rate) ends with its reply."""
    gw = gateway_factory({"GATEWAY__SMTP__IDLE_TIMEOUT": "1s"})
    session = open_raw(gw, raw_sessions)
    assert session.command(b"EHLO client.test").startswith(b"250")
    assert session.command(b"MAIL FROM:<a@famille.example>").startswith(b"250")
    assert session.command(f"RCPT TO:<depot@{DOMAIN}>".encode()).startswith(b"250")
    assert session.command(b"DATA").startswith(b"354")
    replied = session.command(b"Subject: x\r\n\r\nunsigned\r\n.")
    assert replied[:1] in (b"2", b"4", b"5")
    answered = time.monotonic()
    assert_idle_close(gw, session, since=answered)


def test_idle_sessions_from_many_addresses_free_their_slots(
    gateway_factory: GatewayFactory,
    raw_sessions: list[RawSession],
    clean_log: pytest.LogCaptureFixture,
) -> None:
    """Idle connections filling `max_connections` are closed, and the next client gets in."""
    gw = gateway_factory(
        {"GATEWAY__SMTP__MAX_CONNECTIONS": "10", "GATEWAY__SMTP__IDLE_TIMEOUT": "1s"}
    )
    for index in range(10):  # 127.0.0.2 … 127.0.0.11: ten addresses, one slot each
        sock = socket.create_connection(("127.0.0.1", gw.port), 10, (f"127.0.0.{index + 2}", 0))
        session = RawSession.__new__(RawSession)
        session.sock, session.file = sock, sock.makefile("rb")
        session.greeting = session.reply()
        raw_sessions.append(session)
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as late:
        assert late.recv(200).startswith(b"421 4.7.0")  # every slot is held
    for session in raw_sessions:
        assert session.reply() == replies.R421_IDLE.encode() + b"\r\n"
    time.sleep(0.2)
    assert_still_up(gw)


def test_data_trickled_byte_by_byte_closed_421_442(
    gateway_factory: GatewayFactory,
    raw_sessions: list[RawSession],
    clean_log: pytest.LogCaptureFixture,
) -> None:
    gw = gateway_factory(
        {"GATEWAY__SMTP__MIN_DATA_RATE": "1000", "GATEWAY__SMTP__DATA_RATE_GRACE": "1s"}
    )
    session = open_raw(gw, raw_sessions)
    start_transaction(session)
    assert session.command(b"DATA").startswith(b"354")
    started = time.monotonic()
    answer = _trickle(session.sock, message_to(f"depot@{DOMAIN}")[:60], pause=0.2)  # 5 B/s
    assert answer == replies.R421_TOO_SLOW.encode() + b"\r\n"
    assert time.monotonic() - started < 3  # the grace and a few bytes, not a fixed timer
    assert_still_up(gw)
    assert_nothing_stored(gw)


def _trickle(sock: socket.socket, data: bytes, pause: float) -> bytes:
    """Send `data` a byte every `pause` seconds until the server answers; all it sent."""
    sock.settimeout(pause)
    answer = b""
    try:
        for byte in data:
            sock.sendall(bytes([byte]))
            try:
                answer = sock.recv(200)
            except TimeoutError:
                continue
            break
        sock.settimeout(10)
        while chunk := sock.recv(200):  # then the server closes
            answer += chunk
    except ConnectionError:
        pass
    return answer


def test_fast_data_after_slow_start_accepted_by_the_rate(
    gateway_factory: GatewayFactory,
    raw_sessions: list[RawSession],
    clean_log: pytest.LogCaptureFixture,
) -> None:
    """Within the grace a client may pause; then an average above the rate goes through."""
    gw = gateway_factory(
        {"GATEWAY__SMTP__MIN_DATA_RATE": "1000", "GATEWAY__SMTP__DATA_RATE_GRACE": "1s"}
    )
    session = open_raw(gw, raw_sessions)
    start_transaction(session)
    assert session.command(b"DATA").startswith(b"354")
    time.sleep(0.8)
    session.sock.sendall(message_to(f"depot@{DOMAIN}", b"x" * 70 + b"\r\n") + b".\r\n")
    assert session.reply().startswith(b"550 5.7.1")  # the pipeline's answer: unsigned


def test_pipelined_message_before_354_refused_554_550(
    gateway_factory: GatewayFactory,
    raw_sessions: list[RawSession],
    clean_log: pytest.LogCaptureFixture,
) -> None:
    gw = gateway_factory()
    session = open_raw(gw, raw_sessions)
    start_transaction(session)
    session.sock.sendall(b"DATA\r\n" + message_to(f"depot@{DOMAIN}") + b".\r\nQUIT\r\n")
    assert session.reply() == replies.R554_EARLY_DATA.encode() + b"\r\n"
    assert session.closed_by_server()
    assert_still_up(gw)
    assert_nothing_stored(gw)


def test_commands_injected_after_a_failing_data_refused_554_550(
    gateway_factory: GatewayFactory,
    raw_sessions: list[RawSession],
    clean_log: pytest.LogCaptureFixture,
) -> None:
    """DATA without RCPT would fail (503): the bytes behind it must not run as commands."""
    gw = gateway_factory()
    session = open_raw(gw, raw_sessions)
    assert session.command(b"EHLO client.test").startswith(b"250")
    assert session.command(f"MAIL FROM:<{GUARDIAN}>".encode()).startswith(b"250")
    injected = f"RCPT TO:<depot@{DOMAIN}>\r\nDATA\r\n".encode() + message_to(f"depot@{DOMAIN}")
    session.sock.sendall(b"DATA\r\n" + injected + b".\r\n")
    assert session.reply() == replies.R554_EARLY_DATA.encode() + b"\r\n"
    assert session.closed_by_server()
    with gw.services.db.transaction() as db:
        refused = db.scalar(select(func.count()).where(AuditEvent.action == "message.refused"))
    assert refused == 0  # the injected message never reached the pipeline
    assert_nothing_stored(gw)
    assert_still_up(gw)


# -- TLS ----------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
def test_starttls_offered_by_default_with_the_generated_certificate(
    gateway_factory: GatewayFactory, clean_log: pytest.LogCaptureFixture
) -> None:
    gw = gateway_factory()
    settings = gw.services.settings
    assert settings.smtp.tls_cert == settings.tls_cert_file  # made by `gateway init`
    with smtplib.SMTP("127.0.0.1", gw.port, timeout=10) as client:
        client.ehlo("client.test")
        assert client.has_extn("starttls")
        old = unverified_tls()
        old.maximum_version = ssl.TLSVersion.TLSv1_1
        old.minimum_version = ssl.TLSVersion.TLSv1
        with pytest.raises((ssl.SSLError, smtplib.SMTPServerDisconnected, ConnectionError)):
            client.starttls(context=old)
    with smtplib.SMTP("127.0.0.1", gw.port, timeout=10) as client:
        client.starttls(context=unverified_tls())
        assert client.sock.version() in ("TLSv1.2", "TLSv1.3")  # type: ignore[union-attr]
        peer = client.sock.getpeercert(binary_form=True)  # type: ignore[union-attr]
        assert peer == ssl.PEM_cert_to_DER_cert(settings.tls_cert_file.read_text())
        cipher = client.sock.cipher()[0]  # type: ignore[union-attr]
        client.ehlo("client.test")
        client.mail(GUARDIAN)
        client.rcpt(f"depot@{DOMAIN}")
        assert client.data(message_to(f"depot@{DOMAIN}"))[0] == 550  # unsigned
    [line] = [r for r in clean_log.records if r.getMessage() == "smtp transaction"]
    assert line.tls_version in ("TLSv1.2", "TLSv1.3")  # type: ignore[attr-defined]
    assert line.tls_cipher == cipher  # type: ignore[attr-defined]
    assert line.reply.startswith("550 5.7.1")  # type: ignore[attr-defined]


def test_no_auth_offered_on_inbound_port_even_inside_tls(
    gateway_factory: GatewayFactory, clean_log: pytest.LogCaptureFixture
) -> None:
    gw = gateway_factory()
    with smtplib.SMTP("127.0.0.1", gw.port, timeout=10) as client:
        client.ehlo("client.test")
        assert not client.has_extn("auth")
        client.starttls(context=unverified_tls())
        client.ehlo("client.test")
        assert not client.has_extn("auth"), client.esmtp_features
        code, text = client.docmd("HELP")
        assert code == 250 and b"AUTH" not in text and b"DATA" in text
        assert client.docmd("HELP", "AUTH")[1].startswith(b"Supported commands")
        code, text = client.docmd("AUTH", "PLAIN AHRlc3QAdGVzdA==")
        assert f"{code} {text.decode()}" == replies.R502_NO_AUTH
        assert client.noop()[0] == 250


def test_starttls_inside_tls_503_551_session_kept(
    gateway_factory: GatewayFactory, clean_log: pytest.LogCaptureFixture
) -> None:
    gw = gateway_factory()
    with smtplib.SMTP("127.0.0.1", gw.port, timeout=10) as client:
        client.starttls(context=unverified_tls())
        client.ehlo("client.test")
        assert not client.has_extn("starttls")
        code, text = client.docmd("STARTTLS")
        assert (code, text[:5]) == (503, b"5.5.1")
        assert b"STARTTLS" not in client.docmd("HELP")[1]
        assert client.noop()[0] == 250  # still the same TLS session
        assert client.sock.version() in ("TLSv1.2", "TLSv1.3")  # type: ignore[union-attr]
    assert_still_up(gw)


def test_log_injection_through_the_verb_escaped(
    gateway_factory: GatewayFactory,
    raw_sessions: list[RawSession],
    clean_log: pytest.LogCaptureFixture,
) -> None:
    gw = gateway_factory()
    session = open_raw(gw, raw_sessions)
    answer = session.command(b"\x1b[2J\x1b[31mFORGED\rINFO smtp transaction reply=250")
    assert answer.startswith(b"500 ")
    assert b"\\x1b[2J\\x1b[31MFORGED\\x0dINFO" in answer  # aiosmtpd upper-cases verbs
    assert b"\x1b" not in answer and answer.count(b"\r") == 1  # only the reply's own CRLF
    answer = session.command(b"MAIL FROM:<a\x1b]0;owned\x07@exemple.fr>")
    answer += session.command(b"VRFY \xff\x1b[0m")
    assert b"\x1b" not in answer and b"\x07" not in answer and b"\xff" not in answer
    session.command(b"QUIT")
    lines = [record.getMessage() for record in clean_log.records]
    assert any("FORGED" in line for line in lines)  # aiosmtpd logged the verb …
    for line in lines:  # … escaped, like every other client-controlled string
        assert "\x1b" not in line and "\r" not in line and "\x07" not in line, repr(line)
    assert_still_up(gw)


def test_greeting_names_no_software(
    gateway_factory: GatewayFactory, raw_sessions: list[RawSession]
) -> None:
    gw = gateway_factory()
    session = open_raw(gw, raw_sessions)
    assert session.greeting == f"220 {DOMAIN} ESMTP\r\n".encode()


# -- postmaster@ --------------------------------------------------------------------------
@pytest.fixture
def postmaster_world(
    smtp_sink: SmtpSink, gateway_factory: GatewayFactory, court_key: CourtKey
) -> World:
    return make_world(
        smtp_sink, gateway_factory, court_key, {"GATEWAY__GATEWAY__OPERATOR_ADDRESS": OPERATOR}
    )


def _bounce(size: int = 0) -> bytes:
    body = b"Your message could not be delivered.\r\n" + (b"y" * 76 + b"\r\n") * (size // 78)
    return (
        b"From: Mail Delivery System <" + REMOTE_POSTMASTER.encode() + b">\r\n"
        b"To: postmaster@" + DOMAIN.encode() + b"\r\n"
        b"Subject: Undelivered Mail Returned to Sender\r\n"
        b"Bcc: victim@exemple.fr\r\n"
        b"Message-ID: <bounce-1@fai.example>\r\n\r\n" + body
    )


def test_postmaster_accepted_unsigned_and_forwarded_wrapped(
    postmaster_world: World, clean_log: pytest.LogCaptureFixture
) -> None:
    world, raw = postmaster_world, _bounce()
    code, text = world.gw.send(raw, rcpt=f"PostMaster@{DOMAIN}", mail_from="")
    assert (code, text) == (250, "2.0.0 Message accepted")
    mail_from, rcpts, forwarded = world.sink.wait_for(1, timeout=20)[-1]
    assert (mail_from, rcpts) == (f"noreply@{DOMAIN}", [OPERATOR])
    outer = email.message_from_bytes(forwarded, policy=email.policy.default)
    assert outer["From"].addresses[0].addr_spec == f"noreply@{DOMAIN}"
    assert outer["To"] == OPERATOR and outer["Bcc"] is None
    assert "Undelivered" not in outer["Subject"]  # nothing the sender wrote is a header
    assert forwarded.startswith(b"DKIM-Signature:")
    notice, attached = outer.iter_parts()
    assert "127.0.0.1" in notice.get_content() and "non vérifié" in notice.get_content()
    assert attached.get_content_type() == "message/rfc822"
    assert raw in forwarded  # the original, byte for byte
    with world.gw.services.db.transaction() as session:
        row = session.scalars(select(Outbox).where(Outbox.kind == "postmaster")).one()
        events = session.scalars(select(AuditEvent.action)).all()
    assert row.kind == "postmaster"
    assert "postmaster.forwarded" in events
    assert stored(world.gw)[:3] == (0, 0, 0)


def test_postmaster_without_domain_accepted(postmaster_world: World) -> None:
    """RFC 5321 4.1.1.3: `RCPT TO:<Postmaster>` with no domain must be accepted."""
    with smtplib.SMTP("127.0.0.1", postmaster_world.gw.port, timeout=10) as client:
        client.ehlo("client.test")
        client.mail(REMOTE_POSTMASTER)
        assert client.rcpt("<Postmaster>")[0] == 250
        assert client.data(_bounce())[0] == 250


def test_postmaster_over_1mb_refused_552_534(
    postmaster_world: World, clean_log: pytest.LogCaptureFixture
) -> None:
    world = postmaster_world
    code, text = world.gw.send(_bounce(1 << 20), rcpt=f"postmaster@{DOMAIN}", mail_from="")
    assert (code, text[:5]) == (552, "5.3.4"), text
    assert_nothing_stored(world.gw)
    assert_still_up(world.gw)


def test_postmaster_bare_lf_refused_554_552(postmaster_world: World) -> None:
    """Forwarded on to the relay, a bare LF would be smuggling by proxy."""
    world = postmaster_world
    raw = _bounce().replace(b"delivered.\r\n", b"delivered.\n.\nMAIL FROM:<x@y>\n")
    code, text = world.gw.send(raw, rcpt=f"postmaster@{DOMAIN}", mail_from="")
    assert (code, text[:5]) == (554, "5.5.2")
    assert_nothing_stored(world.gw)


def test_postmaster_flood_from_one_client_450_471(
    postmaster_world: World, clean_log: pytest.LogCaptureFixture
) -> None:
    world = postmaster_world
    codes = [
        world.gw.send(_bounce(), rcpt=f"postmaster@{DOMAIN}", mail_from="")[0] for _ in range(11)
    ]
    assert codes == [250] * 10 + [450]
    assert stored(world.gw)[3] == 10
    assert world.gw.send(_bounce(), rcpt=f"postmaster@{DOMAIN}", mail_from="")[1][:5] == "4.7.1"


def test_postmaster_refused_without_operator_address_and_check_says_so(
    world: World, gateway_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gateway.cli.main import main

    code, text = world.gw.send(_bounce(), rcpt=f"postmaster@{DOMAIN}", mail_from="")
    assert (code, text[:5]) == (550, "5.1.1")
    assert_nothing_stored(world.gw)
    with pytest.raises(SystemExit) as exit_info:
        main(["--config", str(gateway_config), "check"])
    assert exit_info.value.code == 0  # a warning, not a fault
    err = capsys.readouterr().err
    assert f"warning: postmaster@{DOMAIN} is refused: set gateway.operator_address" in err


def test_postmaster_notice_that_cannot_be_composed_451_nothing_queued(
    postmaster_world: World,
) -> None:
    """A broken template override is our fault: 451 4.3.0 without details, nothing queued."""
    world = postmaster_world
    templates = world.gw.services.settings.templates_dir
    templates.mkdir(exist_ok=True)
    (templates / "postmaster.txt").write_text("no subject line\n", encoding="utf-8")
    code, text = world.gw.send(_bounce(), rcpt=f"postmaster@{DOMAIN}", mail_from="")
    assert code == 451
    assert re.fullmatch(
        r"4\.3\.0 erreur temporaire, reessayez plus tard \(temporary internal error, "
        r"try again later\) \(ref [0-9a-f]{12}\)",
        text,
    ), text
    assert_nothing_stored(world.gw)
