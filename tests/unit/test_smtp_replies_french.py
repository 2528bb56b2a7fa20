"""Every SMTP refusal in French first, then English: each class, each constant, each document."""

from __future__ import annotations

import re

import pytest

from gateway import errors
from gateway.errors import DocumentRefused
from gateway.ingest.documents import DEFAULT_ALLOWED_TYPES, DocumentPolicy, check_documents
from gateway.smtp import replies
from gateway.smtp.french import FRENCH, french_for
from tests.fixtures.pdfs import password_pdf, plain_pdf, truncated_pdf, zip_archive

# <code> <enhanced> <French> (<English>), the enhanced code optional for 500-class syntax replies.
REFUSAL = re.compile(r"[45][0-9]{2}(?: [45]\.[0-9]{1,3}\.[0-9]{1,3})? [^(]+ \(.+\)\Z")
POLICY = DocumentPolicy(
    allowed_types=DEFAULT_ALLOWED_TYPES, max_document_bytes=5000, max_documents=3
)
EXE = b"MZ\x90\x00\x03\x00\x00\x00" + b"\x00" * 56


def _subclasses(root: type[errors.GatewayError]) -> set[type[errors.GatewayError]]:
    found = {root}
    for sub in root.__subclasses__():
        found |= _subclasses(sub)
    return found


# Every class a sender can meet on the SMTP path: the table's, and everything beneath them.
SMTP_CLASSES = sorted(
    {cls for table_cls, _ in replies._TABLE for cls in _subclasses(table_cls)}
    | _subclasses(errors.MessageRefused)
    | _subclasses(errors.TemporaryFailure)
    | _subclasses(errors.AuthRefused)
    | {errors.KeyRefused, errors.GatewayError},
    key=lambda cls: cls.__name__,
)
CONSTANTS = sorted(name for name in dir(replies) if re.fullmatch(r"R[0-9]{3}_[A-Z0-9_]+", name))


def _assert_fit(reply: str) -> None:
    assert reply.isascii() and reply.isprintable(), reply
    assert len(reply.encode()) + 2 <= 512, reply  # with its CRLF (RFC 5321 4.5.3.1.5)


@pytest.mark.parametrize("cls", SMTP_CLASSES, ids=lambda cls: cls.__name__)
def test_every_refusal_class_has_its_own_french_words(cls: type[errors.GatewayError]) -> None:
    assert cls in FRENCH, f"{cls.__name__} has no French text in gateway/smtp/french.py"
    assert FRENCH[cls].isascii() and FRENCH[cls].isprintable(), FRENCH[cls]
    reply = replies.reply_for(cls())
    _assert_fit(reply)
    assert REFUSAL.match(reply), reply
    assert reply.startswith(f"{replies.code_for(cls())} {FRENCH[cls]} ("), reply


@pytest.mark.parametrize("name", CONSTANTS)
def test_every_reply_constant_fits_and_every_refusal_is_french_first(name: str) -> None:
    template: str = getattr(replies, name)
    reply = template.format(ref="0123456789ab", reference="TJ-LYON-2026-000001/1")
    _assert_fit(reply)
    if reply[0] in "45":
        assert REFUSAL.match(reply.removesuffix(" (ref 0123456789ab)")), reply
    else:  # success replies keep the words programs parse (SPEC §3.2)
        assert "(" not in reply, reply


def test_code_is_not_valid_reads_french_then_english() -> None:
    reply = replies.reply_for(errors.CodeUnknown("code is not valid"))
    assert reply == "550 5.7.0 numero de saisie non valide (code is not valid)"


def test_internal_error_keeps_its_ref_at_the_end() -> None:
    reply = replies.R451_INTERNAL.format(ref="0123456789ab")
    assert reply.startswith("451 4.3.0 erreur interne temporaire")
    assert re.search(r"\(ref ([0-9a-f]{12})\)\Z", reply)


def _refused(docs: list[tuple[str | None, str | None, bytes]]) -> str:
    with pytest.raises(DocumentRefused) as caught:
        check_documents(POLICY, docs)
    return replies.reply_for(caught.value)


@pytest.mark.parametrize(
    ("docs", "french"),
    [
        (
            [("a.pdf", None, plain_pdf()), ("x.exe", None, EXE)],
            "document 2 refuse: type non autorise",
        ),
        ([("gros.pdf", None, plain_pdf(filler=6000))], "document 1 refuse: trop volumineux"),
        ([("t.pdf", None, truncated_pdf())], "document 1 refuse: PDF tronque"),
        ([("m.pdf", None, password_pdf())], "document 1 refuse: PDF protege par un mot de passe"),
        (
            [("z.pdf", None, plain_pdf() + zip_archive())],
            "document 1 refuse: un autre fichier suit la fin du PDF",
        ),
        ([(None, None, EXE)], "document 1 refuse: type non autorise"),
        ([("a.pdf", None, plain_pdf())] * 4, "trop de documents"),
    ],
    ids=["type", "size", "truncated", "password", "zip", "unnamed", "count"],
)
def test_document_refusals_name_the_document_in_french(
    docs: list[tuple[str | None, str | None, bytes]], french: str
) -> None:
    reply = _refused(docs)
    assert reply.startswith(f"554 5.6.0 {french}"), reply
    _assert_fit(reply)


def test_document_type_refusal_keeps_the_details_in_english() -> None:
    reply = _refused([("a.pdf", None, plain_pdf()), ("x.exe", None, EXE)])
    assert re.fullmatch(
        r"554 5\.6\.0 document 2 refuse: type non autorise "
        r'\(document 2 "x\.exe": type \S+ is not allowed\)',
        reply,
    ), reply


def test_a_filename_cannot_steer_the_french_words() -> None:
    # The name imitates another reason; the French follows our own words after the name.
    reply = _refused([('gros": not a readable PDF', None, EXE)])
    french, _, english = reply.partition(" (")
    assert french == "554 5.6.0 document 1 refuse: type non autorise", reply
    assert "gros" in english and "gros" not in french


def test_a_long_english_message_is_cut_and_the_line_closed() -> None:
    reply = replies.reply_for(errors.MalformedMessage("x" * 2000))
    _assert_fit(reply)
    assert reply.startswith("554 5.6.0 message mal forme (x") and reply.endswith("x)")


@pytest.mark.parametrize(
    ("error", "french"),
    [
        (
            errors.SenderNotRegistered("a@b.fr is not registered for TJ-LYON 21/00123"),
            "adresse non enregistree pour cette juridiction et cette mesure",
        ),
        (
            errors.SenderNotRegistered("sender is not a registered address"),
            "adresse d'expedition non enregistree aupres du greffe",
        ),
        (
            errors.CredentialInvalid("authentication credentials invalid: credential expired"),
            "identifiant expire",
        ),
        (
            errors.CredentialInvalid("authentication credentials invalid: credential revoked"),
            "identifiant revoque",
        ),
        (
            errors.CredentialInvalid("authentication credentials invalid"),
            "identifiants non valides",
        ),
        (errors.MalformedMessage("no From: header"), "en-tete From: absent"),
        (errors.FilingRefused("depot.json: not UTF-8"), "donnees depot.json non conformes"),
    ],
)
def test_finer_french_where_the_english_says_more(error: errors.GatewayError, french: str) -> None:
    assert french_for(error) == french
