"""The .eml corpus: what make_corpus.py generates, and the fields each file parses to."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.errors import MalformedMessage
from gateway.ingest.mime import MimeLimits, ParsedMessage, parse_message
from tests.fixtures.eml import make_corpus
from tests.fixtures.eml.make_corpus import JPEG, ODT, PDF, PDF2

CORPUS = Path(make_corpus.__file__).parent
SENT_AT = datetime(2025, 3, 4, 9, 15, tzinfo=UTC)


def parse(name: str) -> ParsedMessage:
    return parse_message((CORPUS / name).read_bytes(), MimeLimits(), id_domain="gw.example")


def test_corpus_files_are_what_the_generator_produces() -> None:
    expected = make_corpus.build_corpus()
    on_disk = {path.name: path.read_bytes() for path in CORPUS.glob("*.eml")}
    assert on_disk == expected


def test_simple_text_pdf() -> None:
    msg = parse("simple_text_pdf.eml")
    assert msg.message_id == "corpus-simple@avocats.example"
    assert not msg.message_id_generated
    assert msg.from_header == "Jean Dupont <jean.dupont@avocats.example>"
    assert msg.to == ["depot@greffe.example"]
    assert msg.cc == []
    assert msg.subject == "Requete 7K3QD-M2X9A"
    assert msg.date == SENT_AT
    assert msg.text_body == "Bonjour,\nplease find the request attached."
    assert [(a.filename, a.declared_type, a.content) for a in msg.attachments] == [
        ("requete.pdf", "application/pdf", PDF)
    ]
    assert msg.size == len((CORPUS / "simple_text_pdf.eml").read_bytes())


def test_nested_alternative_keeps_plain_text_and_both_attachments() -> None:
    msg = parse("nested_alternative.eml")
    assert msg.subject == "Pièces jointes"
    # quoted-printable "=0A" then a real line break; the HTML alternative is not used.
    assert msg.text_body == (
        "Madame, Monsieur,\n\nvoici les pièces demandées pour la mesure 24/00123."
    )
    assert "HTML alternative" not in msg.text_body
    assert [(a.filename, a.declared_type, a.content) for a in msg.attachments] == [
        ("compte.pdf", "application/pdf", PDF2),
        ("scan.jpg", "image/jpeg", JPEG),
    ]


def test_attached_message_contributes_its_documents_and_text() -> None:
    msg = parse("attached_message.eml")
    assert msg.message_id == "corpus-forward@avocats.example"
    assert msg.text_body == (
        "Outer text, see the forwarded message.\n\n"
        "---------- Attached message ----------\n"
        "From: Greffe <greffe@tj-lyon.example>\n"
        "Date: Mon, 03 Mar 2025 09:00:00 +0000\n"
        "Subject: Inventaire initial\n\n"
        "Inner message text."
    )
    assert [(a.filename, a.declared_type, a.content) for a in msg.attachments] == [
        ("inventaire.pdf", "application/pdf", PDF)
    ]


def test_rfc2231_filenames_with_continuations_and_charsets() -> None:
    msg = parse("rfc2231_filename.eml")
    assert [a.filename for a in msg.attachments] == [
        "Ordonnance du juge des tutelles été €.pdf",
        "décision.pdf",
    ]
    assert [a.content for a in msg.attachments] == [PDF, PDF2]


def test_encoded_word_filenames_and_subject() -> None:
    msg = parse("encoded_word_filename.eml")
    assert msg.subject == "Requête"
    assert [(a.filename, a.declared_type, a.content) for a in msg.attachments] == [
        ("Requête été.pdf", "application/pdf", PDF),
        ("compte de gérance 2024.odt", "application/vnd.oasis.opendocument.text", ODT),
    ]
    assert msg.text_body == ""


def test_latin1_8bit_body_and_subject() -> None:
    msg = parse("latin1_8bit.eml")
    assert msg.subject == "dépôt de pièces"
    assert msg.text_body == (
        "Déposé à Besançon, reçu à l'accueil : 12 Euros n'existe pas en latin-1.\nLigne deux."
    )
    assert msg.attachments == []


def test_missing_message_id_is_generated_with_the_gateway_domain() -> None:
    fixed = uuid.UUID("12345678-1234-5678-1234-567812345678")
    raw = (CORPUS / "missing_message_id.eml").read_bytes()
    msg = parse_message(raw, MimeLimits(), id_domain="gw.example", new_uuid=lambda: fixed)
    assert msg.message_id == f"{fixed}@gw.example"
    assert msg.message_id_generated
    assert msg.text_body == "Body without Message-ID."


def test_missing_message_ids_differ_between_messages() -> None:
    first, second = parse("missing_message_id.eml"), parse("missing_message_id.eml")
    assert first.message_id.endswith("@gw.example")
    assert first.message_id != second.message_id


def test_html_only_body_is_rendered_as_text() -> None:
    msg = parse("html_only.eml")
    assert msg.text_body == "Bonjour Madame,\n\nVoici le compte & l'inventaire.\n\nun\n\ndeux"
    assert msg.attachments == []


def test_unknown_charset_falls_back_without_loss() -> None:
    msg = parse("unknown_charset.eml")
    assert msg.subject == "résumé"
    assert msg.text_body == "Résumé envoyé."
    # An inline application/pdf without any filename is still a document.
    assert [(a.filename, a.declared_type, a.content) for a in msg.attachments] == [
        (None, "application/pdf", PDF)
    ]


def test_lf_only_line_endings() -> None:
    msg = parse("lf_only.eml")
    assert msg.subject == "LF only"
    assert msg.date == SENT_AT
    assert msg.text_body == "Ligne une, accentuée.\nLigne deux."
    assert [(a.filename, a.content) for a in msg.attachments] == [("lf.pdf", PDF)]


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("malformed_too_deep.eml", "nesting deeper than 10"),
        ("malformed_too_many_parts.eml", "more than 200 MIME parts"),
        ("malformed_no_boundary.eml", "multipart without boundary in part 1"),
        ("malformed_bad_base64.eml", "undecodable base64 in part 3"),
        ("malformed_no_from.eml", "no From: header"),
    ],
)
def test_malformed_corpus_is_refused_with_its_reason(name: str, reason: str) -> None:
    with pytest.raises(MalformedMessage) as refused:
        parse(name)
    assert refused.value.message == reason
