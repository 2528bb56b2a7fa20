"""`gateway keys export`: the public signing key (what WKD serves) and the DKIM record."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pysequoia
import pytest

from gateway.outbox.compose import MailComposer
from gateway.outbox.receiptfacts import documents_json
from gateway.outbox.templates import DocumentLine, Templates, format_documents
from gateway.settings import Settings, load_settings
from gateway.storage.crypto import GpgKeyring, ReceiptSigner
from gateway.wkd import WkdDirectory, wkd_path
from tests.conftest import CliRunner

pytestmark = pytest.mark.gpg


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    # Keys live in files: one database backend is enough here.
    return f"sqlite:///{tmp_path / 'db' / 'gateway.db'}"


def receipt_composer(settings: Settings) -> MailComposer:
    """A composer signing with the gateway's keys (built directly: no composition root needed)."""
    return MailComposer(
        settings.gateway.domain, settings.gateway.name, settings.dkim_selector,
        settings.dkim_key_file.read_bytes(), Templates(settings.templates_dir),
        ReceiptSigner(settings.signing_key_file.read_text("ascii")),
        lambda: datetime(2026, 11, 25, 9, 30, tzinfo=UTC),
    )  # fmt: skip


def test_keys_export_prints_the_public_signing_key(
    cli: CliRunner, gateway_config: Path, tmp_path: Path
) -> None:
    settings = load_settings(gateway_config)
    signer = ReceiptSigner(settings.signing_key_file.read_text("ascii"))

    result = cli("keys", "export")

    assert result.code == 0, result.err
    assert result.out.startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----")
    assert "PRIVATE" not in result.out
    with GpgKeyring(tmp_path / "gnupg") as keyring:
        assert keyring.import_public(result.out) == signer.fingerprint


def test_keys_export_is_what_wkd_serves(cli: CliRunner, gateway_config: Path) -> None:
    settings = load_settings(gateway_config)
    directory = WkdDirectory.for_key_file("noreply@greffe.example", settings.signing_pub_file)
    served = directory.lookup(wkd_path("noreply@greffe.example"), host="greffe.example")

    exported = cli("keys", "export").out

    assert served is not None
    assert bytes(pysequoia.Cert.from_bytes(exported.encode())) == served.body


def test_keys_export_dkim_is_the_record_init_prints(cli: CliRunner) -> None:
    init_lines = cli("init").out.splitlines()

    result = cli("keys", "export", "--dkim")

    assert result.code == 0
    record = result.out.strip()
    assert record.startswith('greffe._domainkey.greffe.example. IN TXT "v=DKIM1; k=rsa; p=')
    assert record in init_lines


def test_keys_export_key_verifies_a_receipt(
    cli: CliRunner, gateway_config: Path, tmp_path: Path
) -> None:
    composer = receipt_composer(load_settings(gateway_config))
    documents = [DocumentLine("inventaire.pdf", 3, "ab" * 32)]
    receipt = composer.compose(
        "receipt", "tuteur@exemple.fr", court="TJ-LYON", measure="21/00123",
        request_reference="TJ-LYON-2026-000001", submission_reference="TJ-LYON-2026-000001/1",
        received_at="25/11/2026 à 09:30:00 UTC", documents=format_documents(documents),
        message_sha256="cd" * 32, documents_json=documents_json(documents),
    )  # fmt: skip
    (tmp_path / "accuse.eml").write_bytes(receipt)
    (tmp_path / "passerelle.asc").write_text(cli("keys", "export").out, encoding="ascii")

    result = cli("receipts", "verify", str(tmp_path / "accuse.eml"),
                 "--key", str(tmp_path / "passerelle.asc"))  # fmt: skip

    assert result.code == 0, result.err
    assert "inventaire.pdf" in result.out


def test_keys_export_without_keys_says_run_init(cli: CliRunner, gateway_config: Path) -> None:
    load_settings(gateway_config).signing_pub_file.unlink()

    result = cli("keys", "export")

    assert result.code == 1
    assert "run `gateway init`" in result.err


def test_receipt_queued_before_facts_reports_the_missing_facts(
    cli: CliRunner, gateway_config: Path, tmp_path: Path
) -> None:
    composer = receipt_composer(load_settings(gateway_config))
    receipt = composer.compose(
        "receipt", "tuteur@exemple.fr", court="TJ-LYON", measure="21/00123",
        request_reference="TJ-LYON-2026-000001", submission_reference="TJ-LYON-2026-000001/1",
        received_at="25/11/2026 à 09:30:00 UTC", documents="    (aucun)", message_sha256="cd" * 32,
    )  # fmt: skip
    (tmp_path / "ancien.eml").write_bytes(receipt)

    result = cli("receipts", "verify", str(tmp_path / "ancien.eml"))

    assert result.code == 1
    assert "signature is good" in result.err and "accuse-de-reception.json" in result.err
