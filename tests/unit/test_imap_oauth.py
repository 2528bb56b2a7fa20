"""OAuth2 token sources and SASL responses: caching, refresh margin, rotation, bounded commands."""

from __future__ import annotations

import base64
import json
import stat
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from gateway.errors import ConfigError, ImapUnavailable
from gateway.imap.oauth import (
    SASL_ABORT,
    CommandTokenSource,
    RefreshTokenSource,
    oauthbearer_response,
    token_source_for,
    write_secret,
    xoauth2_response,
)
from gateway.settings import ImapMailbox


def test_imap_xoauth2_response_matches_googles_example() -> None:
    # developers.google.com/gmail/imap/xoauth2-protocol, "Initial client response".
    assert xoauth2_response(
        "someuser@example.com", "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg"
    ) == (
        "dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5LnZGOWRmdDRxbVRjMk52YjNSbGNr"
        "QmhkSFJoZG1semRHRXVZMjl0Q2cBAQ=="
    )


def test_imap_oauthbearer_response_matches_rfc7628_example() -> None:
    token = "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg=="
    response = oauthbearer_response("user@example.com", token, "server.example.com", 143)
    assert base64.b64decode(response) == (
        b"n,a=user@example.com,\x01host=server.example.com\x01port=143\x01"
        b"auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\x01\x01"
    )
    escaped = base64.b64decode(oauthbearer_response("a=b,c@example.com", "t", "h", 1))
    assert escaped.startswith(b"n,a=a=3Db=2Cc@example.com,\x01")  # RFC 5801 saslname
    assert base64.b64decode(SASL_ABORT["OAUTHBEARER"]) == b"\x01" and SASL_ABORT["XOAUTH2"] == ""


@pytest.mark.parametrize("token", ["", "two words", "ctrl\x01a", "line\r\nA1 LOGOUT", "é"])
def test_imap_sasl_injection_malformed_token_refused(token: str) -> None:
    with pytest.raises(ImapUnavailable, match="malformed access token"):
        xoauth2_response("intake@court.example", token)


# -- the refresh-token grant ------------------------------------------------------------
class Endpoint:
    """A token endpoint behind httpx.MockTransport: records forms, answers as told."""

    def __init__(self) -> None:
        self.forms: list[dict[str, str]] = []
        self.answers: list[tuple[int, dict[str, object]]] = []
        self.issued = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.forms.append(dict(httpx.QueryParams(request.content.decode())))
        if self.answers:
            status, body = self.answers.pop(0)
        else:
            self.issued += 1
            status, body = 200, {"access_token": f"at-{self.issued}", "expires_in": 3600}
        return httpx.Response(status, content=json.dumps(body).encode())

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def mailbox(tmp_path: Path, **changes: object) -> ImapMailbox:
    refresh = tmp_path / "refresh-token"
    if not refresh.exists():
        refresh.write_text("rt-0\n")
    values: dict[str, object] = {
        "name": "intake",
        "host": "imap.example",
        "username": "intake@court.example",
        "auth": "xoauth2",
        "token_endpoint": "https://login.example/token",
        "client_id": "client",
        "refresh_token_file": refresh,
    }
    values.update(changes)
    return ImapMailbox.model_validate(values)


def source(
    tmp_path: Path, endpoint: Endpoint, clock: Callable[[], float], **changes: object
) -> RefreshTokenSource:
    return RefreshTokenSource(mailbox(tmp_path, **changes), clock=clock, http=endpoint.client)


async def test_imap_oauth_token_cached_until_margin_before_expiry(tmp_path: Path) -> None:
    endpoint, clock = Endpoint(), Clock()
    tokens = source(tmp_path, endpoint, clock, scope="https://mail.google.com/")

    assert await tokens.token() == "at-1"
    clock.now += 3600 - 121  # more than the 120 s margin left: still cached
    assert await tokens.token() == "at-1"
    clock.now += 2
    assert await tokens.token() == "at-2"
    assert await tokens.token(refresh=True) == "at-3"  # the server refused it: a new one
    assert [f["grant_type"] for f in endpoint.forms] == ["refresh_token"] * 3
    assert endpoint.forms[0] == {
        "grant_type": "refresh_token",
        "refresh_token": "rt-0",
        "client_id": "client",
        "scope": "https://mail.google.com/",
    }


async def test_imap_oauth_short_lived_token_renewed_at_three_quarters(tmp_path: Path) -> None:
    endpoint, clock = Endpoint(), Clock()
    endpoint.answers = [(200, {"access_token": "short", "expires_in": "40"})]  # a string
    tokens = source(tmp_path, endpoint, clock)
    assert await tokens.token() == "short"
    clock.now += 29
    assert await tokens.token() == "short"
    clock.now += 2
    assert await tokens.token() == "at-1"


async def test_imap_oauth_rotated_refresh_token_written_back(tmp_path: Path) -> None:
    endpoint, clock = Endpoint(), Clock()
    secret_file = tmp_path / "client-secret"
    secret_file.write_text("s3cret\n")
    endpoint.answers = [(200, {"access_token": "a", "expires_in": 1, "refresh_token": "rt-1"})]
    tokens = source(tmp_path, endpoint, clock, client_secret_file=secret_file)

    await tokens.token()
    refresh = tmp_path / "refresh-token"
    assert refresh.read_text() == "rt-1\n"
    assert stat.S_IMODE(refresh.stat().st_mode) == 0o600
    clock.now += 5
    await tokens.token()
    assert [f["refresh_token"] for f in endpoint.forms] == ["rt-0", "rt-1"]
    assert endpoint.forms[0]["client_secret"] == "s3cret"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["client-secret", "refresh-token"]


async def test_imap_oauth_rotated_token_kept_in_memory_when_file_unwritable(
    tmp_path: Path,
) -> None:
    endpoint, clock = Endpoint(), Clock()
    endpoint.answers = [(200, {"access_token": "a", "expires_in": 1, "refresh_token": "rt-1"})]
    tokens = source(tmp_path, endpoint, clock)
    (tmp_path / "refresh-token").unlink()
    (tmp_path / "refresh-token").mkdir()  # os.replace onto a directory fails
    tokens._refresh_token = "rt-0"  # as if read before the file went bad

    await tokens.token()
    clock.now += 5
    await tokens.token()
    assert [f["refresh_token"] for f in endpoint.forms] == ["rt-0", "rt-1"]


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ((400, {"error": "invalid_grant"}), r"refused the grant \(HTTP 400, invalid_grant\)"),
        ((401, {"error": "Bad Thing <script>"}), r"refused the grant \(HTTP 401\)$"),
        ((503, {}), r"refused the grant \(HTTP 503\)"),
        ((200, {"token_type": "Bearer"}), "without an access token"),
        ((200, {"access_token": "has space"}), "malformed access token"),
    ],
)
async def test_imap_oauth_grant_failures_are_temporary(
    tmp_path: Path, answer: tuple[int, dict[str, object]], message: str
) -> None:
    endpoint = Endpoint()
    endpoint.answers = [answer]
    with pytest.raises(ImapUnavailable, match=message) as raised:
        await source(tmp_path, endpoint, Clock()).token()
    assert "rt-0" not in raised.value.message


async def test_imap_oauth_unreachable_endpoint_is_temporary(tmp_path: Path) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    tokens = RefreshTokenSource(
        mailbox(tmp_path), http=lambda: httpx.AsyncClient(transport=httpx.MockTransport(refuse))
    )
    with pytest.raises(ImapUnavailable, match=r"unreachable \(ConnectError\)"):
        await tokens.token()


async def test_imap_oauth_missing_refresh_token_file_names_the_key(tmp_path: Path) -> None:
    tokens = source(tmp_path, Endpoint(), Clock(), refresh_token_file=tmp_path / "absent")
    with pytest.raises(ConfigError, match=r"imap.mailboxes\[intake\]: refresh_token_file"):
        await tokens.token()


def test_imap_oauth_write_secret_replaces_atomically(tmp_path: Path) -> None:
    target = tmp_path / "token"
    target.write_text("old\n")
    target.chmod(0o644)
    write_secret(target, "new\n")
    assert target.read_text() == "new\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["token"]


def test_imap_oauth_source_for_names_the_missing_key(tmp_path: Path) -> None:
    incomplete = mailbox(tmp_path, token_endpoint="")
    with pytest.raises(ConfigError, match=r"imap.mailboxes\[intake\].token_endpoint"):
        token_source_for(incomplete)
    assert isinstance(token_source_for(mailbox(tmp_path)), RefreshTokenSource)
    assert "rt-0" not in repr(token_source_for(mailbox(tmp_path)))


# -- token_command ----------------------------------------------------------------------
def command(code: str, timeout: float = 10.0) -> CommandTokenSource:
    return CommandTokenSource("intake", [sys.executable, "-c", code], timeout)


async def test_imap_oauth_command_prints_token() -> None:
    assert await command("print('at-from-command'); print('ignored')").token() == "at-from-command"


async def test_imap_oauth_command_is_not_run_by_a_shell(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    argv = [sys.executable, "-c", "import sys; print(sys.argv[1])", f"x; touch {marker}"]
    with pytest.raises(ImapUnavailable, match="malformed"):  # "x; touch ..." is one argument
        await CommandTokenSource("intake", argv, 10).token()
    assert not marker.exists()


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("import time; time.sleep(30)", "timed out"),
        ("import sys; sys.stdout.write('a' * 200000)", "printed too much"),
        ("import sys; print('at-x'); sys.exit(3)", r"failed \(exit 3\)"),
        ("pass", "printed no token"),
    ],
)
async def test_imap_oauth_command_bounded(code: str, message: str) -> None:
    with pytest.raises(ImapUnavailable, match=message):
        await command(code, timeout=1.0).token()


async def test_imap_oauth_command_missing_program_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="token_command: cannot run"):
        await CommandTokenSource("intake", [str(tmp_path / "absent")], 5).token()
