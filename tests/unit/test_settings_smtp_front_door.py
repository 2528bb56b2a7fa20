"""Settings of the front door: the default STARTTLS pair, session bounds, the operator address."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.settings import load_settings


def home(tmp_path: Path, text: str = "", *, generated: bool = True) -> Path:
    """A config file, with the pair `gateway init` makes in its keys directory (or none)."""
    config = tmp_path / "conf" / "gateway.toml"
    keys = config.parent / "var" / "keys"
    keys.mkdir(parents=True)
    config.write_text(text)
    if generated:
        (keys / "smtp-tls-cert.pem").write_text("cert")
        (keys / "smtp-tls-key.pem").write_text("key")
    return config


def test_no_tls_keys_means_the_generated_pair(tmp_path: Path) -> None:
    settings = load_settings(home(tmp_path), {})
    assert settings.smtp.tls_cert == settings.tls_cert_file
    assert settings.smtp.tls_key == settings.tls_key_file
    assert settings.tls_cert_file == tmp_path / "conf" / "var" / "keys" / "smtp-tls-cert.pem"


def test_no_tls_keys_and_nothing_generated_means_no_tls(tmp_path: Path) -> None:
    settings = load_settings(home(tmp_path, generated=False), {})
    assert (settings.smtp.tls_cert, settings.smtp.tls_key) == (None, None)


def test_generated_pair_follows_the_data_dir(tmp_path: Path) -> None:
    config = home(tmp_path, '[gateway]\ndata_dir = "elsewhere"\n')
    assert load_settings(config, {}).smtp.tls_cert is None  # no pair under elsewhere/keys
    (config.parent / "elsewhere" / "keys").mkdir(parents=True)
    for name in ("smtp-tls-cert.pem", "smtp-tls-key.pem"):
        (config.parent / "elsewhere" / "keys" / name).write_text("x")
    cert = load_settings(config, {}).smtp.tls_cert
    assert cert == config.parent / "elsewhere" / "keys" / "smtp-tls-cert.pem"


@pytest.mark.parametrize(
    ("text", "env"),
    [
        ('[smtp]\ntls_cert = ""\ntls_key = ""\n', {}),
        ("", {"GATEWAY__SMTP__TLS_CERT": "", "GATEWAY__SMTP__TLS_KEY": ""}),
    ],
)
def test_explicit_empty_certificate_means_no_tls(
    tmp_path: Path, text: str, env: dict[str, str]
) -> None:
    settings = load_settings(home(tmp_path, text), env)
    assert (settings.smtp.tls_cert, settings.smtp.tls_key) == (None, None)


def test_configured_certificate_replaces_the_generated_one(tmp_path: Path) -> None:
    config = home(tmp_path, '[smtp]\ntls_cert = "mx.pem"\ntls_key = "mx.key"\n')
    settings = load_settings(config, {})
    assert settings.smtp.tls_cert == config.parent / "mx.pem"
    assert settings.smtp.tls_key == config.parent / "mx.key"


def test_certificate_without_key_refused_naming_both(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"smtp\.tls_cert and smtp\.tls_key"):
        load_settings(home(tmp_path, '[smtp]\ntls_cert = "mx.pem"\n'), {})


def test_session_bounds_defaults_and_overrides(tmp_path: Path) -> None:
    settings = load_settings(home(tmp_path), {"GATEWAY__SMTP__MAX_SESSION_TIME": "90s"})
    assert settings.smtp.max_session_time == timedelta(seconds=90)
    defaults = load_settings(home(tmp_path / "d"), {})
    assert defaults.smtp.max_session_time == timedelta(minutes=10)
    assert defaults.smtp.data_rate_grace == timedelta(seconds=10)
    assert defaults.gateway.operator_address == ""


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("not an address", "gateway.operator_address"),
        ("ops@", "gateway.operator_address"),
        ("postmaster@greffe.example", "must be outside gateway.domain"),
        ("ops@GREFFE.example.", "must be outside gateway.domain"),
    ],
)
def test_operator_address_refused(tmp_path: Path, address: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(home(tmp_path), {"GATEWAY__GATEWAY__OPERATOR_ADDRESS": address})


def test_operator_address_accepted(tmp_path: Path) -> None:
    env = {"GATEWAY__GATEWAY__OPERATOR_ADDRESS": " ops@exploitant.example "}
    assert load_settings(home(tmp_path), env).gateway.operator_address == "ops@exploitant.example"
