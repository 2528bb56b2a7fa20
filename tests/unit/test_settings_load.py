"""Settings: TOML file, GATEWAY__SECTION__KEY overrides, errors naming the key."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from gateway.bootstrap import starter_config
from gateway.errors import ConfigError
from gateway.settings import load_settings, parse_duration


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "conf" / "gateway.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


def test_defaults_and_relative_paths(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, ""), {})
    assert settings.codes.ttl == timedelta(hours=48)
    assert settings.data_dir == tmp_path / "conf" / "var"
    assert settings.database.url.get_secret_value() == f"sqlite:///{tmp_path}/conf/var/gateway.db"


def test_starter_config_is_valid_and_matches_defaults_but_captures_mail(tmp_path: Path) -> None:
    from_file = load_settings(write(tmp_path, starter_config()), {})
    defaults = load_settings(write(tmp_path, ""), {})
    # The one exception: the starter config keeps outgoing mail in a local maildir,
    # while a config without the key relays it.
    assert (from_file.relay.mode, defaults.relay.mode) == ("capture", "smtp")
    captured = defaults.model_copy(
        update={"relay": defaults.relay.model_copy(update={"mode": "capture"})}
    )
    assert from_file.model_dump(exclude={"config_path"}) == captured.model_dump(
        exclude={"config_path"}
    )


def test_env_overrides_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[smtp]\nlisten = "127.0.0.1:2525"\n[codes]\nttl = "48h"\n')
    env = {
        "GATEWAY__SMTP__LISTEN": "0.0.0.0:25",
        "GATEWAY__CODES__TTL": "90s",
        "GATEWAY__DNS__NAMESERVERS": '["127.0.0.1:5353"]',
        "GATEWAY__AUTH__REQUIRE_DKIM": "false",
    }
    settings = load_settings(path, env)
    assert settings.smtp.listen == "0.0.0.0:25"
    assert settings.codes.ttl == timedelta(seconds=90)
    assert settings.dns.nameservers == ["127.0.0.1:5353"]
    assert settings.auth.require_dkim is False


@pytest.mark.parametrize(
    ("text", "env", "named"),
    [
        ("[smtp]\nlisten = 25\n", {}, "smtp.listen"),
        ("[smtp]\nlisten = 'nowhere'\n", {}, "smtp.listen"),
        ("[codes]\nttl = 'forever'\n", {}, "codes.ttl"),
        ("[codes]\ncolour = 'red'\n", {}, "codes.colour: unknown key"),
        ("", {"GATEWAY__LIMITS__MAX_RECIPIENTS": "0"}, "limits.max_recipients"),
        ("", {"GATEWAY__NOPE": "1"}, "GATEWAY__NOPE"),
        ("[smtp\n", {}, "invalid configuration file"),
    ],
)
def test_error_names_the_key(tmp_path: Path, text: str, env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text), env)
    assert named in info.value.message
    assert "\n" not in info.value.message


def test_imap_tls_none_only_on_loopback(tmp_path: Path) -> None:
    text = "[[imap.mailboxes]]\nname='a'\nhost='imap.example.fr'\nusername='u'\ntls='none'\n"
    with pytest.raises(ConfigError, match="loopback"):
        load_settings(write(tmp_path, text), {})


def test_secrets_masked_in_repr(tmp_path: Path) -> None:
    path = write(tmp_path, "[relay]\npassword = 'hunter2'\n")
    settings = load_settings(path, {"GATEWAY__DATABASE__URL": "postgresql://u:pw@h/db"})
    assert "hunter2" not in repr(settings)
    assert "pw@h" not in repr(settings)


def test_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="gateway init"):
        load_settings(tmp_path / "absent.toml", {})


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("30m", 1800), ("48h", 172800), ("2d", 172800), (15, 15)]
)
def test_parse_duration(text: str | int, seconds: int) -> None:
    assert parse_duration(text).total_seconds() == seconds


MAILBOX = "[[imap.mailboxes]]\nname = 'intake'\nhost = 'imap.example.fr'\nusername = 'u'\n"
GRANT = (
    "auth = 'xoauth2'\ntoken_endpoint = 'https://login.example/token'\n"
    "client_id = 'c'\nrefresh_token_file = 'secrets/refresh'\n"
)


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ("auth = 'xoauth2'\n", "imap.mailboxes[intake].token_endpoint: auth = xoauth2 needs"),
        ("auth = 'oauthbearer'\nclient_id = 'c'\n", "imap.mailboxes[intake].token_endpoint"),
        (GRANT.replace("client_id = 'c'\n", ""), "imap.mailboxes[intake].client_id"),
        (GRANT + "password = 'p'\n", "imap.mailboxes[intake].password: not used"),
        (GRANT + "token_command = ['x']\n", "imap.mailboxes[intake].token_endpoint: not used"),
        (GRANT + "client_secret = 's'\nclient_secret_file = 'f'\n", "client_secret_file"),
        (GRANT.replace("https://login", "http://login"), "token_endpoint: expected an https"),
        ("client_id = 'c'\n", "imap.mailboxes[intake].client_id: only used with auth"),
        ("auth = 'cram-md5'\n", "imap.mailboxes.0.auth"),
    ],
)
def test_imap_oauth_settings_errors_name_the_key(tmp_path: Path, extra: str, named: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, MAILBOX + extra), {})
    assert named in info.value.message


def test_imap_oauth_settings_paths_resolved_and_loopback_http_allowed(tmp_path: Path) -> None:
    text = "[imap]\nconcurrency = 3\n" + MAILBOX + GRANT
    text = text.replace("https://login.example", "http://127.0.0.1:8080")
    settings = load_settings(write(tmp_path, text + "client_secret_file = 'secrets/c'\n"), {})
    [mailbox] = settings.imap.mailboxes
    assert mailbox.refresh_token_file == tmp_path / "conf" / "secrets" / "refresh"
    assert mailbox.client_secret_file == tmp_path / "conf" / "secrets" / "c"
    assert settings.imap.concurrency == 3  # once lost when the mailboxes' paths were resolved


def test_imap_oauth_token_command_alone_is_a_source(tmp_path: Path) -> None:
    text = MAILBOX + "auth = 'xoauth2'\ntoken_command = ['/usr/bin/print-token', 'intake']\n"
    [mailbox] = load_settings(write(tmp_path, text), {}).imap.mailboxes
    assert mailbox.token_command == ["/usr/bin/print-token", "intake"]


def test_imap_strip_batch_setting_loads_and_refuses_zero(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, MAILBOX), {}).imap.strip_batch == 8
    settings = load_settings(write(tmp_path, "[imap]\nstrip_batch = 1\n" + MAILBOX), {})
    assert settings.imap.strip_batch == 1
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, "[imap]\nstrip_batch = 0\n" + MAILBOX), {})
    assert "imap.strip_batch" in info.value.message
