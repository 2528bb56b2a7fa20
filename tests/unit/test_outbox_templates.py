"""Templates: packaged French defaults, operator overrides, strict placeholders."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.outbox.templates import (
    DocumentLine,
    SubmissionLine,
    Templates,
    format_documents,
    format_size,
    format_submissions,
    format_utc,
)

COMMON = {
    "domain": "greffe.example",
    "gateway_name": "Passerelle du greffe",
    "codes_address": "codes@greffe.example",
    "submit_address": "depot@greffe.example",
    "status_address": "etat@greffe.example",
    "submit_local": "depot",
}
VALUES = {
    "code": {
        "court": "TJ-PARIS", "measure": "12/345", "kind": "requête",
        "reference": "TJ-PARIS-2026-000001", "code": "7K3QD-M2X9A",
        "code_compact": "7K3QDM2X9A", "expires_at": "27/11/2026 à 14:05:00 UTC",
    },
    "receipt": {
        "court": "TJ-PARIS", "measure": "12/345", "request_reference": "TJ-PARIS-2026-000001",
        "submission_reference": "TJ-PARIS-2026-000001/1", "received_at": "25/11/2026",
        "documents": "    1. compte.pdf", "message_sha256": "ab" * 32,
        # Where to get the signing key: values the composer adds to every receipt.
        "signing_fingerprint": "8515 4868 00E1 983D E84E  1D60 3C82 9472 01DD 32A7",
        "signing_address": "noreply@greffe.example",
        "signing_key_url": "https://greffe.example/.well-known/openpgpkey/hu/"
        "nwnwrk3rczw4ou5x56ibcrdatrgf1xag?l=noreply",
    },
    "state": {"reference": "TJ-PARIS-2026-000001", "status": "ouverte", "submissions": "    -"},
    "acknowledgement": {
        "court": "TJ-PARIS", "court_name": "Tribunal judiciaire de Paris", "measure": "12/345",
        "kind": "compte de gestion", "reference": "TJ-PARIS-2026-000001",
        "acknowledged_at": "02/12/2026 à 10:00:00 UTC", "submissions": "    TJ-PARIS-2026-000001/1",
        "signing_fingerprint": "8515 4868 00E1 983D E84E  1D60 3C82 9472 01DD 32A7",
        "signing_address": "noreply@greffe.example",
    },
    "rejection": {
        "court": "TJ-PARIS", "court_name": "Tribunal judiciaire de Paris", "measure": "12/345",
        "reference": "TJ-PARIS-2026-000001", "reason": "pièce illisible",
        "notes": "\nObservations sur les documents :\n\n    document 1\n",
        "code_request": "CODE TJ-PARIS 12/345 compte",
        "signing_fingerprint": "8515 4868 00E1 983D E84E  1D60 3C82 9472 01DD 32A7",
        "signing_address": "noreply@greffe.example",
    },
    "registration": {
        "court": "TJ-PARIS", "court_name": "Tribunal judiciaire de Paris", "measure": "12/345",
        "address": "tuteur@famille.example", "code_request": "CODE TJ-PARIS 12/345",
    },
    "registration_revoked": {
        "court": "TJ-PARIS", "court_name": "Tribunal judiciaire de Paris", "measure": "12/345",
        "address": "tuteur@famille.example",
    },
    "check_report": {
        "problem_count": "2", "checked_at": "25/11/2026 à 03:00:00 UTC",
        "problems": "    - blob 2026/11/25/x.raw.pgp is missing\n    - audit chain broken",
    },
    "credential_expiry": {
        "credential_id": "7", "software": "Tutelle Pro", "address": "tuteur@exemple.fr",
        "issued_at": "02/12/2026 à 09:00:00 UTC", "expires_at": "02/12/2028 à 09:00:00 UTC",
    },
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(VALUES))
def test_templates_defaults_render_every_value(name: str, tmp_path: Path) -> None:
    subject, body = Templates(tmp_path).render(name, **COMMON, **VALUES[name])

    assert subject and "$" not in subject + body
    for value in VALUES[name].values():
        assert value in subject + body
    assert body.endswith("\n") and not body.startswith("\n")


def test_templates_code_explains_both_ways_to_send(tmp_path: Path) -> None:
    _subject, body = Templates(tmp_path).render("code", **COMMON, **VALUES["code"])

    assert "depot@greffe.example" in body
    assert "[7K3QD-M2X9A]" in body
    assert "depot+7K3QDM2X9A@greffe.example" in body


@pytest.mark.parametrize("name", sorted(VALUES))
def test_templates_missing_value_is_an_error(name: str, tmp_path: Path) -> None:
    values = {**COMMON, **VALUES[name]}
    values.pop(next(iter(VALUES[name])))

    with pytest.raises(KeyError):
        Templates(tmp_path).render(name, **values)


def test_templates_override_dir_wins(tmp_path: Path) -> None:
    (tmp_path / "rejection.txt").write_text(
        "Subject: Rejet $reference\n\nMotif : $reason\n", encoding="utf-8"
    )

    subject, body = Templates(tmp_path).render("rejection", reference="R-1", reason="hors délai")

    assert (subject, body) == ("Rejet R-1", "Motif : hors délai\n")


def test_templates_override_only_replaces_its_own_file(tmp_path: Path) -> None:
    (tmp_path / "rejection.txt").write_text("Subject: x\n\ny\n", encoding="utf-8")

    subject, _body = Templates(tmp_path).render("registration", **COMMON, **VALUES["registration"])

    assert "12/345" in subject and "(TJ-PARIS)" in subject


@pytest.mark.parametrize(
    "text", ["Objet: x\n\ny\n", "Subject: x\ny\n", "Subject: x\n"], ids=["prefix", "blank", "short"]
)
def test_templates_malformed_override_names_the_file(tmp_path: Path, text: str) -> None:
    (tmp_path / "state.txt").write_text(text, encoding="utf-8")

    with pytest.raises(ConfigError, match=r"state\.txt"):
        Templates(tmp_path).render("state", reference="R", status="s", submissions="-")


@pytest.mark.parametrize("name", ["../etc/passwd", "nope", "Code", ""])
def test_templates_unknown_or_unsafe_name_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(KeyError):
        Templates(tmp_path).render(name)


def test_templates_crlf_override_reads_like_lf(tmp_path: Path) -> None:
    (tmp_path / "rejection.txt").write_bytes(b"Subject: Rejet $reference\r\n\r\nA\r\nB\r\n")

    assert Templates(tmp_path).render("rejection", reference="R", reason="-") == (
        "Rejet R", "A\nB\n"
    )


def test_format_documents_lists_name_size_and_hash() -> None:
    block = format_documents([DocumentLine("compte 2025.pdf", 1234567, "ab" * 32)])

    assert "1. compte 2025.pdf" in block
    assert "1\u00a0234\u00a0567 octets" in block
    assert "SHA-256 : " + "ab" * 32 in block


def test_format_documents_filename_cannot_add_lines() -> None:
    block = format_documents([DocumentLine("a.pdf\nSHA-256 : faux", 1, "cd" * 32)])

    assert block.count("\n") == 2


def test_format_documents_empty_says_so() -> None:
    assert "aucun document" in format_documents([])


def test_format_submissions_lists_each_submission() -> None:
    moment = datetime(2026, 11, 25, 9, 30, tzinfo=UTC)
    block = format_submissions(
        [SubmissionLine("R/1", moment, [DocumentLine("a.pdf", 10, "ef" * 32)])]
    )

    assert "R/1, reçu le 25/11/2026 à 09:30:00 UTC" in block
    assert "a.pdf" in block


def test_format_utc_converts_to_utc() -> None:
    from datetime import timedelta, timezone

    paris = timezone(timedelta(hours=1))

    assert format_utc(datetime(2026, 11, 25, 10, 0, tzinfo=paris)) == "25/11/2026 à 09:00:00 UTC"


def test_format_size_singular() -> None:
    assert format_size(1) == "1 octet"


def test_templates_override_edit_takes_effect_without_a_restart(tmp_path: Path) -> None:
    templates = Templates(tmp_path)
    values = {**COMMON, **VALUES["rejection"]}
    default_subject, _ = templates.render("rejection", **values)
    override = tmp_path / "rejection.txt"

    override.write_text("Subject: Premier $reference\n\nx\n", encoding="utf-8")
    first, _ = templates.render("rejection", **values)
    override.write_text("Subject: Second $reference\n\ny\n", encoding="utf-8")
    second, body = templates.render("rejection", **values)
    override.unlink()
    again, _ = templates.render("rejection", **values)

    assert first.startswith("Premier ") and second.startswith("Second ") and body == "y\n"
    assert again == default_subject
