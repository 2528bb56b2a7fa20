"""`gateway receipts verify` on receipts as the relay received them: valid, tampered, documents.

It runs with no gateway configuration (a guardian's machine): only the
receipt and the key exported from the gateway.
"""

from __future__ import annotations

import base64
import email
import hashlib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.policy import default as default_policy
from pathlib import Path

import jsonschema
import pytest

from gateway.cli.main import main
from gateway.ingest.manifest import load_schema
from gateway.storage.keys import generate_signing_key
from tests.conftest import CliResult
from tests.fixtures.gatewayserver import COURT, MEASURE, World
from tests.fixtures.pdfs import plain_pdf

pytestmark = pytest.mark.gpg

PDF = plain_pdf(filler=5000)
NAME = "compte 2025.pdf"


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    # The verifier never touches the database: one backend is enough here.
    return f"sqlite:///{tmp_path / 'db' / 'gateway.db'}"


@dataclass
class Relayed:
    """A receipt as the relay got it, saved as a guardian would, with the gateway's key."""

    eml: Path
    key: Path
    document: Path
    reference: str
    folder: Path


@pytest.fixture
def relayed(world: World, tmp_path: Path) -> Iterator[Relayed]:
    code = world.request_code("compte")
    raw = world.gw.message(subject=f"Compte [{code}]", attachments=[(NAME, "application/pdf", PDF)])
    status, reply = world.gw.send(raw)
    assert status == 250, reply
    receipt = world.sink.wait_for(2, timeout=20)[-1][2]
    folder = tmp_path / "guardian"
    folder.mkdir()
    (folder / "accuse.eml").write_bytes(receipt)
    (folder / "passerelle.asc").write_bytes(
        world.gw.services.settings.signing_pub_file.read_bytes()
    )
    (folder / NAME).write_bytes(PDF)
    yield Relayed(folder / "accuse.eml", folder / "passerelle.asc", folder / NAME,
                   reply.split()[-1], folder)  # fmt: skip
    # The gateway's keyring (court keys) started a gpg-agent: stop it.
    world.gw.services.keyring.close()


Verify = Callable[..., CliResult]


@pytest.fixture
def verify(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Verify:
    """`gateway receipts verify ARGS...` from a folder with no gateway configuration."""
    bare = tmp_path / "elsewhere"
    bare.mkdir()

    def run(*args: str, config: Path | None = None) -> CliResult:
        monkeypatch.chdir(bare)
        monkeypatch.delenv("GATEWAY_CONFIG", raising=False)
        capsys.readouterr()
        prefix = ["--config", str(config)] if config else []
        with pytest.raises(SystemExit) as exit_info:
            main([*prefix, "receipts", "verify", *args])
        captured = capsys.readouterr()
        code = exit_info.value.code
        return CliResult(code if isinstance(code, int) else 1, captured.out, captured.err)

    return run


def signed_region(raw: bytes) -> tuple[int, int]:
    """Where the signed part lies in the raw receipt (between the first two delimiters)."""
    boundary = re.search(rb'boundary="(=_signed_[0-9a-f]+)"', raw)
    assert boundary is not None
    start = raw.index(b"--" + boundary.group(1) + b"\r\n") + len(boundary.group(1)) + 4
    return start, raw.index(b"\r\n--" + boundary.group(1), start)


def flip(raw: bytes, index: int) -> bytes:
    """One byte changed, to another printable character of the same class."""
    old = raw[index : index + 1]
    new = b"B" if old == b"A" else b"A" if old.isalpha() else b"1" if old != b"1" else b"2"
    return raw[:index] + new + raw[index + 1 :]


def test_receipt_as_relayed_verifies_and_prints_facts(relayed: Relayed, verify: Verify) -> None:
    result = verify(str(relayed.eml), "--key", str(relayed.key))

    assert result.code == 0, result.err
    assert result.out.startswith("receipt valid: signed by ")
    for fact in (relayed.reference, COURT, MEASURE, NAME, hashlib.sha256(PDF).hexdigest(),
                 f"{len(PDF)} bytes", "tuteur@exemple.fr"):  # fmt: skip
        assert fact in result.out, fact


def test_receipt_json_output_follows_the_schema(relayed: Relayed, verify: Verify) -> None:
    result = verify(str(relayed.eml), "--key", str(relayed.key), "--json")

    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["valid"] is True
    jsonschema.validate(report["receipt"], load_schema("receipt"))
    assert report["receipt"]["submission_reference"] == relayed.reference
    assert report["receipt"]["documents"][0]["sha256"] == hashlib.sha256(PDF).hexdigest()
    assert re.fullmatch(r"[0-9A-F]{40}", report["signer"]["fingerprint"])


@pytest.mark.parametrize("where", ["text", "facts", "signature"])
def test_receipt_one_byte_changed_fails(relayed: Relayed, verify: Verify, where: str) -> None:
    raw = relayed.eml.read_bytes()
    start, end = signed_region(raw)
    if where == "text":
        index = raw.index(b"Juridiction", start)
    elif where == "facts":
        index = raw.index(b"\r\n\r\n", raw.index(b"accuse-de-reception.json", start)) + 10
    else:
        index = raw.index(b"-----BEGIN PGP SIGNATURE-----", end) + 40
    tampered = relayed.folder / "tampered.eml"
    tampered.write_bytes(flip(raw, index))

    result = verify(str(tampered), "--key", str(relayed.key))

    assert result.code == 1
    assert result.out == ""
    assert result.err.startswith("gateway: ")
    if where != "signature":
        assert "changed after it was signed" in result.err


def test_receipt_forged_facts_beside_the_signature_are_not_read(
    relayed: Relayed, verify: Verify
) -> None:
    # Wrap the genuine receipt in a multipart/mixed whose first part is forged facts:
    # only what lies inside the signed part counts.
    raw = relayed.eml.read_bytes()
    head, body = raw.split(b"\r\n\r\n", 1)
    inner_type = re.search(rb"Content-Type: multipart/signed;.*?(?=\r\n[^ \t]|\Z)", head, re.S)
    assert inner_type is not None
    forged = json.dumps({"submission_reference": "TJ-LYON-2026-999999/9"}).encode()
    wrapped = (
        b"From: noreply@greffe.example\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="outer"\r\n\r\n'
        b"--outer\r\nContent-Type: application/json\r\n"
        b'Content-Disposition: attachment; filename="accuse-de-reception.json"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.b64encode(forged) + b"\r\n"
        b"--outer\r\n" + inner_type.group(0) + b"\r\n\r\n" + body + b"\r\n--outer--\r\n"
    )
    tampered = relayed.folder / "wrapped.eml"
    tampered.write_bytes(wrapped)

    result = verify(str(tampered), "--key", str(relayed.key), "--json")

    assert result.code == 0, result.err
    assert json.loads(result.out)["receipt"]["submission_reference"] == relayed.reference


def test_receipt_document_right_and_wrong(relayed: Relayed, verify: Verify) -> None:
    other = relayed.folder / "autre.pdf"
    other.write_bytes(PDF + b"\n")

    right = verify(str(relayed.eml), "--key", str(relayed.key), "--document", str(relayed.document))
    wrong = verify(str(relayed.eml), "--key", str(relayed.key), "--document", str(relayed.document),
                   "--document", str(other))  # fmt: skip

    assert right.code == 0, right.err
    assert f"document {relayed.document}: receipted as document 1 ({NAME})" in right.out
    assert wrong.code == 1
    assert f"document {other}: NOT receipted" in wrong.out
    assert wrong.err.strip() == (
        f"gateway: not among the 1 document(s) this receipt lists: {other}"
    )


def test_receipt_document_check_in_json(relayed: Relayed, verify: Verify) -> None:
    other = relayed.folder / "autre.pdf"
    other.write_bytes(b"%PDF-1.4 autre chose")

    result = verify(str(relayed.eml), "--key", str(relayed.key), "--json",
                    "--document", str(relayed.document), "--document", str(other))  # fmt: skip

    assert result.code == 1
    report = json.loads(result.out)
    assert report["valid"] is False and "not among" in report["reason"]
    assert [d["receipted_as"] for d in report["documents_checked"]] == [1, None]


def test_receipt_saved_with_lf_line_endings_verifies(relayed: Relayed, verify: Verify) -> None:
    # A Unix mail client saves the receipt with LF line ends; RFC 3156 signs CRLF.
    saved = relayed.folder / "unix.eml"
    saved.write_bytes(relayed.eml.read_bytes().replace(b"\r\n", b"\n"))

    result = verify(str(saved), "--key", str(relayed.key))

    assert result.code == 0, result.err


def test_receipt_with_relay_headers_added_verifies(relayed: Relayed, verify: Verify) -> None:
    saved = relayed.folder / "delivered.eml"
    saved.write_bytes(
        b"Return-Path: <noreply@greffe.example>\r\n"
        b"Received: from relay.example by mx.exemple.fr; Tue, 1 Dec 2026 10:00:00 +0000\r\n"
        + relayed.eml.read_bytes()
    )

    assert verify(str(saved), "--key", str(relayed.key)).code == 0


def test_receipt_signed_by_another_key_refused(relayed: Relayed, verify: Verify) -> None:
    # A key with the same user ID is not the gateway's key: the fingerprint decides.
    _secret, public = generate_signing_key("Passerelle du greffe <noreply@greffe.example>")
    impostor = relayed.folder / "autre-cle.asc"
    impostor.write_text(public, encoding="ascii")

    result = verify(str(relayed.eml), "--key", str(impostor))

    assert result.code == 1
    assert "not by the key given" in result.err


def test_receipt_without_key_or_config_says_how_to_get_the_key(
    relayed: Relayed, verify: Verify
) -> None:
    result = verify(str(relayed.eml))

    assert result.code == 1
    assert "gpg --auto-key-locate clear,wkd --locate-keys noreply@greffe.example" in result.err
    assert "gateway keys export" in result.err
    assert result.err.count("\n") == 1


def test_receipt_without_key_uses_the_local_gateway_key(
    relayed: Relayed, verify: Verify, gateway_config: Path
) -> None:
    assert verify(str(relayed.eml), config=gateway_config).code == 0


def test_receipt_secret_key_given_refused(relayed: Relayed, verify: Verify, world: World) -> None:
    result = verify(str(relayed.eml), "--key", str(world.gw.services.settings.signing_key_file))

    assert result.code == 1
    assert "secret key" in result.err


def test_receipt_not_a_signed_mail_refused(tmp_path: Path, verify: Verify) -> None:
    plain = tmp_path / "plain.eml"
    plain.write_bytes(b"From: a@b.example\r\nSubject: x\r\n\r\nBonjour\r\n")
    key = tmp_path / "k.asc"
    key.write_text(generate_signing_key("G <noreply@greffe.example>")[1], encoding="ascii")

    result = verify(str(plain), "--key", str(key))

    assert result.code == 1
    assert "no OpenPGP multipart/signed part" in result.err


def test_receipt_oversized_file_refused_before_reading(tmp_path: Path, verify: Verify) -> None:
    huge = tmp_path / "huge.eml"
    with huge.open("wb") as handle:
        handle.truncate(5 * 1024 * 1024)  # sparse: costs no disk

    result = verify(str(huge), "--key", str(huge))

    assert result.code == 1
    assert "larger than" in result.err


def test_receipt_signature_part_of_the_message_is_what_gpg_verifies(relayed: Relayed) -> None:
    # The bytes the verifier reads as signed are the ones stock gpg accepts.
    from gateway.storage.crypto import GpgKeyring

    raw = relayed.eml.read_bytes()
    start, end = signed_region(raw)
    message = email.message_from_bytes(raw, policy=default_policy)
    signature = list(message.iter_parts())[1].get_content().decode("ascii")
    with GpgKeyring(relayed.folder / "gnupg") as keyring:
        keyring.import_public(relayed.key.read_text("ascii"))
        assert keyring.verify_detached(raw[start:end], signature)
