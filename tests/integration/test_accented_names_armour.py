"""Regression: a name with an accent in an OpenPGP user id broke reading the key's armour.

pysequoia's armour carries each user id in a `Comment:` header, in UTF-8
(RFC 4880 6.2), so "Passerelle des greffes — Tribunal judiciaire" put
non-ASCII bytes in `signing-key.pub.asc` and in every stored court key;
they were read as ASCII (and handed to gpg as Latin-1).
"""

from __future__ import annotations

from pathlib import Path

import pysequoia
import pytest

from gateway.app import Services
from gateway.cli.main import main
from gateway.settings import load_settings
from gateway.storage.courts import CourtRepository
from gateway.storage.crypto import Encryptor, GpgKeyring
from gateway.storage.db import Database
from tests.conftest import CliRunner
from tests.fixtures.gpgkeys import generate_court_keypair, kill_agent, make_gnupghome

pytestmark = pytest.mark.gpg

ACCENTED_NAME = "Passerelle des greffes — Tribunal judiciaire"
ACCENTED_COURT_UID = "Greffe du Tribunal judiciaire de Créteil — pôle <greffe@tj-creteil.example>"


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    # The armour is read the same on every backend: one is enough here.
    return f"sqlite:///{tmp_path / 'db' / 'gateway.db'}"


@pytest.fixture
def gateway_config(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`gateway init` with an accented gateway.name: the signing key's user id carries it."""
    monkeypatch.setenv("GATEWAY__GATEWAY__NAME", ACCENTED_NAME)
    monkeypatch.setenv("GATEWAY__DATABASE__URL", db_url)
    monkeypatch.delenv("GATEWAY_CONFIG", raising=False)
    config = tmp_path / "home" / "gateway.toml"
    with pytest.raises(SystemExit) as exit_info:
        main(["--config", str(config), "init"])
    assert exit_info.value.code == 0
    return config


def test_gateway_name_with_an_accent_breaks_no_signing_key_armour(
    cli: CliRunner, gateway_config: Path, tmp_path: Path
) -> None:
    settings = load_settings(gateway_config)
    assert "—" in settings.signing_pub_file.read_text("utf-8")  # the bug's precondition

    exported = cli("keys", "export")
    signer = Services(settings).signer  # what serve, the outbox and the demo load

    assert exported.code == 0, exported.err
    assert exported.out.startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----")
    with GpgKeyring(tmp_path / "verifier") as keyring:
        assert keyring.import_public(exported.out) == signer.fingerprint
    assert any(ACCENTED_NAME in str(uid) for uid in pysequoia.Cert.from_bytes(
        exported.out.encode()).user_ids)  # fmt: skip


def test_court_key_with_an_accented_user_id_is_added_checked_and_encrypted_to(
    cli: CliRunner, gateway_config: Path, tmp_path: Path
) -> None:
    home = make_gnupghome(tmp_path)
    try:
        _, armored = generate_court_keypair(home, ACCENTED_COURT_UID)
        key_file = tmp_path / "creteil.asc"
        key_file.write_text(armored, "utf-8")
        assert cli("courts", "add", "TJ-CRETEIL", "--name", "Tribunal de Créteil").code == 0

        added = cli("courts", "add-key", "TJ-CRETEIL", str(key_file))
        checked = cli("check")

        assert added.code == 0, added.err
        assert checked.code == 0, checked.out + checked.err
        database = Database.from_url(load_settings(gateway_config).database.url.get_secret_value())
        try:
            with database.reading() as session:
                courts = CourtRepository(session)
                court = courts.by_code("TJ-CRETEIL")
                assert court is not None
                stored = [key.armored for key in courts.keys(court.id)]
        finally:
            database.dispose()
        assert "Créteil" in stored[0]  # stored as sequoia armours it, user id comment included
        sealed = Encryptor.for_keys(stored).encrypt(b"compte de gestion")
        with GpgKeyring(home) as keyring:
            assert keyring.decrypt(sealed) == b"compte de gestion"
    finally:
        kill_agent(home)
