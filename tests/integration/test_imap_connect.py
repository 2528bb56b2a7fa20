"""Connecting to a real Dovecot (STARTTLS, implicit TLS, certificate checks) and the CLI pass."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from gateway.imap.client import ImapClient, ImapUnavailable
from tests.conftest import CliRunner
from tests.fixtures.dovecot import Dovecot, mailbox_for

pytestmark = pytest.mark.dovecot


@pytest.mark.parametrize("mode", ["starttls", "ssl"])
async def test_imap_tls_modes_verify_the_certificate(
    dovecot_tls: Dovecot, imap_cert: tuple[str, str], mode: str
) -> None:
    port = dovecot_tls.port if mode == "starttls" else dovecot_tls.imaps_port
    mailbox = mailbox_for(dovecot_tls, tls=mode, port=port)
    trusted = ssl.create_default_context(cafile=imap_cert[0])

    client = await ImapClient.connect(mailbox, dovecot_tls.password, tls_context=trusted)
    try:
        state = await client.select("INBOX")
        assert state.uidvalidity > 0 and client.has("UIDPLUS")
    finally:
        await client.close()
    assert "TLS" in dovecot_tls.log().split("Login: ")[-1].splitlines()[0]

    # The system's trust store does not know the test certificate: refused, not ignored.
    with pytest.raises(ImapUnavailable, match="SSLCertVerificationError"):
        await ImapClient.connect(mailbox, dovecot_tls.password)


async def test_imap_wrong_password_is_reported(dovecot: Dovecot) -> None:
    with pytest.raises(ImapUnavailable, match="login refused"):
        await ImapClient.connect(mailbox_for(dovecot), "not the password")


def _configure(monkeypatch: pytest.MonkeyPatch, dovecot: Dovecot, password_file: Path) -> None:
    monkeypatch.setenv(
        "GATEWAY__IMAP__MAILBOXES",
        f'[{{name = "intake", host = "127.0.0.1", port = {dovecot.port}, tls = "none", '
        f'username = "{dovecot.user}", password_file = "{password_file}"}}]',
    )


def test_imap_cli_pull_once_prints_summary(
    cli: CliRunner, dovecot: Dovecot, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret = tmp_path / "imap-password"
    secret.write_text(dovecot.password + "\n")
    _configure(monkeypatch, dovecot, secret)
    dovecot.append(b"From: inconnu@exemple.fr\r\nTo: depot@greffe.example\r\n\r\nbonjour\r\n")

    result = cli("imap", "pull", "--once")

    assert result.code == 0, result.err
    assert result.out.strip() == (
        "intake: 1 examined, 0 stored, 0 stripped, 1 quarantined, 0 scrubbed, 0 deferred, 0 skipped"
    )
    assert dovecot.messages() == [] and len(dovecot.messages("Quarantine")) == 1

    secret.write_text("wrong\n")
    failed = cli("imap", "pull", "--once")
    assert failed.code == 1 and failed.err.strip() == "gateway: intake: imap intake: login refused"
