"""IMAP with OAuth2: a real Dovecot whose oauth2 passdb asks a loopback introspection endpoint.

The token endpoint and the introspection endpoint are `tests/fixtures/oauthserver.py`.
A token "expires" when the fixture makes the introspection endpoint refuse it;
a server ending sessions at expiry (as Exchange Online does) is played by
`doveadm kick`.
"""

from __future__ import annotations

import asyncio
import logging
import stat
import sys
from pathlib import Path

import pytest

from gateway.errors import ImapUnavailable
from gateway.imap.oauth import oauthbearer_response, xoauth2_response
from gateway.imap.stub import STUB_HEADER
from gateway.imap.watch import ImapSeams
from gateway.storage.imap import MessageKey
from tests.conftest import CliRunner
from tests.fixtures.dovecot import (
    Dovecot,
    carries_document,
    runner,
    states,
    submission_message,
    submissions,
)
from tests.fixtures.gatewayserver import World
from tests.fixtures.oauthserver import CLIENT_ID, CLIENT_SECRET, OAuthServer

pytestmark = pytest.mark.dovecot
SCOPE = "https://outlook.office.com/IMAP.AccessAsUser.All offline_access"


def grant_settings(oauth: OAuthServer, tmp_path: Path, auth: str = "xoauth2") -> dict[str, object]:
    refresh = tmp_path / "secrets" / "intake.refresh-token"
    refresh.parent.mkdir(exist_ok=True)
    refresh.write_text(oauth.refresh_token + "\n")
    refresh.chmod(0o600)
    return {
        "auth": auth,
        "password": "",
        "token_endpoint": oauth.token_url,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "refresh_token_file": refresh,
        "scope": SCOPE,
    }


def command_settings(tmp_path: Path, token: str) -> dict[str, object]:
    """A token_command printing `token` (and counting its runs in runs.txt)."""
    script = tmp_path / "print-token.py"
    script.write_text(
        "import pathlib, sys\n"
        f"runs = pathlib.Path({str(tmp_path / 'runs.txt')!r})\n"
        "runs.write_text(str(int(runs.read_text() or 0) + 1) if runs.exists() else '1')\n"
        f"print({token!r})\n"
    )
    return {"auth": "xoauth2", "password": "", "token_command": [sys.executable, str(script)]}


@pytest.mark.parametrize("auth", ["xoauth2", "oauthbearer"])
async def test_imap_oauth_pull_once_with_grant(
    world: World,
    dovecot_oauth: Dovecot,
    oauth_server: OAuthServer,
    tmp_path: Path,
    auth: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)  # aioimaplib logs every line it sends and receives
    raw = submission_message(world, world.request_code())
    dovecot_oauth.append(raw)
    first_refresh = oauth_server.refresh_token

    summary = await runner(
        world.gw.services, dovecot_oauth, **grant_settings(oauth_server, tmp_path, auth)
    ).pull_once()

    assert (summary.stored, summary.stripped) == (1, 1)
    [(_uid, _head, stub)] = dovecot_oauth.messages()
    assert STUB_HEADER.encode() in stub and not carries_document(stub)
    [form] = oauth_server.grants
    assert (form["client_id"], form["client_secret"], form["scope"]) == (
        CLIENT_ID,
        CLIENT_SECRET,
        SCOPE,
    )
    assert oauth_server.introspected and not oauth_server.refused_tokens
    assert f"method={auth.upper()}" in dovecot_oauth.log()
    [token] = oauth_server.tokens
    secrets = [token, first_refresh, oauth_server.refresh_token, CLIENT_SECRET]
    secrets += [
        xoauth2_response(dovecot_oauth.user, token),
        oauthbearer_response(dovecot_oauth.user, token, "127.0.0.1", dovecot_oauth.port),
    ]
    assert "Sending" in caplog.text  # the debug log was on
    assert not [secret for secret in secrets if secret in caplog.text]


async def test_imap_oauth_refresh_before_expiry_writes_rotated_token_back(
    world: World, dovecot_oauth: Dovecot, oauth_server: OAuthServer, tmp_path: Path
) -> None:
    oauth_server.lifetime = 4  # renewed a quarter of its life before expiry: after 3 s
    settings = grant_settings(oauth_server, tmp_path)
    refresh_file = settings["refresh_token_file"]
    assert isinstance(refresh_file, Path)
    first_refresh = oauth_server.refresh_token
    pulling = runner(world.gw.services, dovecot_oauth, **settings)

    await pulling.pull_once()
    assert len(oauth_server.grants) == 1
    assert refresh_file.read_text().strip() == oauth_server.refresh_token != first_refresh
    await pulling.pull_once()  # the cached token is still good: no grant
    assert len(oauth_server.grants) == 1

    await asyncio.sleep(3.2)
    dovecot_oauth.append(submission_message(world, world.request_code()))
    summary = await pulling.pull_once()

    assert summary.stripped == 1
    assert len(oauth_server.grants) == 2
    assert oauth_server.grants[1]["refresh_token"] != first_refresh  # the rotated one was used
    assert refresh_file.read_text() == oauth_server.refresh_token + "\n"
    assert stat.S_IMODE(refresh_file.stat().st_mode) == 0o600
    assert sorted(p.name for p in refresh_file.parent.iterdir()) == [refresh_file.name]
    assert not oauth_server.refused_tokens  # refreshed before the server refused anything


async def test_imap_oauth_token_expiring_during_pull_is_refreshed_and_pull_completes(
    world: World, dovecot_oauth: Dovecot, oauth_server: OAuthServer, tmp_path: Path
) -> None:
    code = world.request_code()
    raws = [submission_message(world, code, body=f"message {n}\n") for n in range(3)]
    for raw in raws:
        dovecot_oauth.append(raw)
    kicked: list[int] = []

    def expire_at_second(state: str, key: MessageKey) -> None:
        if state == "stored" and key.uid == 2 and not kicked:
            kicked.append(key.uid)
            oauth_server.expire()  # the introspection endpoint refuses the token from now on
            dovecot_oauth.kick()  # and the server ends the session, mid-pass

    seams = ImapSeams(checkpoint=expire_at_second)
    summary = await runner(
        world.gw.services, dovecot_oauth, seams, **grant_settings(oauth_server, tmp_path)
    ).pull_once()

    assert kicked == [2]
    assert (summary.examined, summary.stored, summary.stripped) == (3, 3, 3)
    assert len(submissions(world.gw.services)) == 3  # nothing stored twice
    assert states(world.gw.services) == ["stripped"] * 3
    stubs = [raw for _uid, _head, raw in dovecot_oauth.messages()]
    assert len(stubs) == 3  # nothing lost, no stub appended twice
    assert all(STUB_HEADER.encode() in s and not carries_document(s) for s in stubs)
    assert len(oauth_server.grants) == 2  # the refused token was refreshed, once
    assert oauth_server.refused_tokens  # the cached token was tried, and refused


async def test_imap_oauth_token_command(
    world: World, dovecot_oauth: Dovecot, oauth_server: OAuthServer, tmp_path: Path
) -> None:
    token = oauth_server.issue()
    dovecot_oauth.append(submission_message(world, world.request_code()))

    summary = await runner(
        world.gw.services, dovecot_oauth, **command_settings(tmp_path, token)
    ).pull_once()

    assert summary.stripped == 1
    assert oauth_server.introspected == [token]
    assert (tmp_path / "runs.txt").read_text() == "1"


async def test_imap_oauth_refused_token_leaves_message_on_server(
    world: World, dovecot_oauth: Dovecot, oauth_server: OAuthServer, tmp_path: Path
) -> None:
    raw = submission_message(world, world.request_code())
    dovecot_oauth.append(raw)
    never_issued = "at-not-a-token-the-server-knows"

    with pytest.raises(ImapUnavailable, match="token refused"):
        await runner(
            world.gw.services, dovecot_oauth, **command_settings(tmp_path, never_issued)
        ).pull_once()

    assert (tmp_path / "runs.txt").read_text() == "2"  # asked again once after the refusal
    assert oauth_server.refused_tokens == [never_issued, never_issued]
    assert [m for _uid, _head, m in dovecot_oauth.messages()] == [raw]
    assert submissions(world.gw.services) == []


async def test_imap_oauth_revoked_refresh_token_leaves_message_on_server(
    world: World, dovecot_oauth: Dovecot, oauth_server: OAuthServer, tmp_path: Path
) -> None:
    raw = submission_message(world, world.request_code())
    dovecot_oauth.append(raw)
    settings = grant_settings(oauth_server, tmp_path)
    oauth_server.refresh_token = "rt-revoked-and-replaced"

    with pytest.raises(ImapUnavailable, match=r"refused the grant \(HTTP 400, invalid_grant\)"):
        await runner(world.gw.services, dovecot_oauth, **settings).pull_once()

    assert oauth_server.refused_grants == 1
    assert [m for _uid, _head, m in dovecot_oauth.messages()] == [raw]
    assert submissions(world.gw.services) == []


def test_imap_oauth_cli_pull_once(
    cli: CliRunner,
    dovecot_oauth: Dovecot,
    oauth_server: OAuthServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    refresh_file = grant_settings(oauth_server, tmp_path, "oauthbearer")["refresh_token_file"]
    monkeypatch.setenv(
        "GATEWAY__IMAP__MAILBOXES",
        f'[{{name = "intake", host = "127.0.0.1", port = {dovecot_oauth.port}, tls = "none", '
        f'username = "{dovecot_oauth.user}", auth = "oauthbearer", '
        f'token_endpoint = "{oauth_server.token_url}", client_id = "{CLIENT_ID}", '
        f'client_secret = "{CLIENT_SECRET}", refresh_token_file = "{refresh_file}"}}]',
    )
    dovecot_oauth.append(b"From: inconnu@exemple.fr\r\nTo: depot@greffe.example\r\n\r\nbonjour\r\n")

    result = cli("imap", "pull", "--once")

    assert result.code == 0, result.err
    assert result.out.strip().startswith("intake: 1 examined, 0 stored, 0 stripped, 1 quarantined")
    assert len(dovecot_oauth.messages("Quarantine")) == 1
    assert CLIENT_SECRET not in result.out + result.err
