"""Composed bytes are those the email package makes (email.policy.SMTP) of the same message."""

from __future__ import annotations

import email.policy
import itertools
import json
import random
import string
from datetime import UTC, datetime
from email.headerregistry import AddressHeader, UnstructuredHeader
from pathlib import Path

import pytest

from gateway.outbox import compose
from gateway.outbox.compose import CachedHeaderRegistry, MailComposer
from gateway.outbox.templates import Templates
from tests.fixtures import composeref
from tests.fixtures.composeref import ReferenceComposer
from tests.fixtures.dkimkeys import generate_key

NOW = datetime(2026, 11, 25, 9, 30, tzinfo=UTC)
KINDS = (
    "code", "receipt", "state", "acknowledgement", "rejection", "registration",
    "registration_revoked", "check_report",
)  # fmt: skip
LONG = "Accusé de réception – « dossier » n° 12/345 : pièces reçues, vérifiées et enregistrées " * 2


class FixedSigner:
    """Deterministic stand-in for ReceiptSigner (real signatures carry their creation time)."""

    micalg = "pgp-sha256"
    fingerprint = "0123456789ABCDEF0123456789ABCDEF01234567"

    def sign_detached(self, data: bytes) -> str:
        return "-----BEGIN PGP SIGNATURE-----\n\nc2lnbmF0dXJl\n-----END PGP SIGNATURE-----\n"


@pytest.fixture(scope="module")
def dkim_pem() -> bytes:
    return generate_key().private_pem


def composer(
    dkim_pem: bytes, templates: Templates, cls: type[MailComposer] = MailComposer,
    from_name: str = "Greffe du tribunal judiciaire de Paris, service des tutelles",
) -> MailComposer:
    ids = (f"{n:032x}" for n in itertools.count())
    return cls(
        "greffe.example",
        from_name,
        "greffe",
        dkim_pem,
        templates,
        FixedSigner(),  # type: ignore[arg-type]
        lambda: NOW,
        lambda: next(ids),
    )


def values_for(templates: Templates, kind: str, text: str) -> dict[str, str]:
    identifiers = string.Template(templates.source(kind)).get_identifiers()
    return {name: f"{text} {name}" for name in identifiers}


RECIPIENTS = ("tuteur.helene@famille.example", "o'brien+x{y}@exemple.fr", "a" * 64 + "@b.example")
COURT_NAMES = (
    "", "Tribunal judiciaire de Besançon", "Cour d'appel de Paris", 'TJ "Lyon", 1re ch.',
    "Juridiction " + "très longue " * 8,
)  # fmt: skip


def compose_all(mail: MailComposer, templates: Templates, text: str) -> list[bytes]:
    out = []
    for kind in KINDS:
        for to, court_name in zip(RECIPIENTS * 2, COURT_NAMES, strict=False):
            values = values_for(templates, kind, text)
            values["court_name"] = court_name or " "  # blank: mail from the gateway itself
            if kind == "receipt":  # with its facts attachment
                values.update(received_at="25/11/2026 à 09:30:00 UTC", documents_json=json.dumps(
                    [{"name": f"{text}.pdf", "size": 5000, "sha256": "ab" * 32}] * 3))
            out.append(mail.compose(kind, to, **values))
        out.append(mail.compose_forward("code", RECIPIENTS[0], b"Subject: x\r\n\r\nbody\r\n",
                                        **values_for(templates, "code", text)))
    return out


@pytest.mark.parametrize("from_name", ["Passerelle", "Greffe du tribunal, service «tutelles»"])
@pytest.mark.parametrize(
    "text",
    ["12/345", LONG, "x" * 120, "x" * 75, "=?utf-8?q?d=C3=A9j=C3=A0?=", "a  b\tc ", "é" * 90],
)
def test_composed_bytes_are_those_of_the_email_package(
    dkim_pem: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, from_name: str
) -> None:
    # Operator templates whose subject is long, non-ASCII and full of values.
    for kind in KINDS:
        default = Templates(tmp_path / "none").source(kind)
        body = default.split("\n", 2)[2]
        (tmp_path / f"{kind}.txt").write_text(f"Subject: {LONG} $court\n\n{body}", "utf-8")
        (tmp_path / "short" / f"{kind}.txt").parent.mkdir(exist_ok=True)
        (tmp_path / "short" / f"{kind}.txt").write_text(f"Subject: $court\n\n{body}", "utf-8")
    # The reference with the standard registry: the cached one changes nothing either.
    monkeypatch.setattr(composeref, "POLICY", email.policy.SMTP)
    for templates in (Templates(tmp_path), Templates(tmp_path / "short")):
        assembled = compose_all(composer(dkim_pem, templates, from_name=from_name), templates, text)
        reference = compose_all(
            composer(dkim_pem, templates, ReferenceComposer, from_name), templates, text
        )
        assert assembled == reference


def test_cached_registry_builds_each_class_once_and_follows_the_map() -> None:
    registry = CachedHeaderRegistry()

    assert registry["From"] is registry["from"]
    assert issubclass(registry["From"], AddressHeader)
    registry.map_to_type("from", UnstructuredHeader)
    assert issubclass(registry["From"], UnstructuredHeader)
    assert str(registry("Subject", "Accusé de réception")) == "Accusé de réception"


def _reference_fold(name: str, value: str) -> bytes:
    policy = email.policy.SMTP
    return policy.fold_binary(name, policy.header_store_parse(name, value)[1])


def _reference_like(rng: random.Random) -> str:
    """A word folding sees by its length: letters, digits, hyphens, slashes, a digit at least."""
    alphabet = "ABCDEFGHJKMNPQRSTVWXYZ0123456789-/" + "abcxyz" * rng.randint(0, 1)
    return str(rng.randint(0, 9)) + "".join(
        rng.choice(alphabet) for _ in range(rng.choice([0, 1, 3, 5, 12, 15, 30, 60, 90]))
    )


def test_subjects_folded_by_shape_are_those_of_the_email_package() -> None:
    rng = random.Random(19)
    templates = Templates(Path("/nonexistent"))
    subjects = [
        templates.source(kind).split("\n", 1)[0].removeprefix("Subject:").strip()
        for kind in KINDS
    ]
    extras = ["é $a é $b é", '"$a" é', "$a $b $a", "n°$a é", "é=22 $a", "$a" * 3, "=?$a?= é"]
    folds = compose._Folds()  # one for all: its cached shapes serve the later subjects
    odd = ["2222", "1-1-1", "é1234", "12/34", "a b"]
    for _ in range(3000):
        template = string.Template(rng.choice(subjects + extras + [LONG + " $a"]))
        values = {name: _reference_like(rng) for name in template.get_identifiers()}
        if rng.random() < 0.2:
            values = {name: rng.choice(odd) for name in values}
        subject = template.safe_substitute(values).replace("$", "")
        expected = _reference_fold("Subject", subject)
        assert folds.unstructured("Subject", subject) == expected, subject


def test_receipt_subjects_of_one_shape_are_folded_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    original = compose.fold

    def counting(name: str, value: object) -> bytes:
        calls.append(str(value))
        return original(name, value)  # type: ignore[arg-type]

    monkeypatch.setattr(compose, "fold", counting)
    folds = compose._Folds()
    for number in (1, 2, 17, 18):  # a request's submissions: its reference, a slash, a number
        subject = f"Accusé de réception – TJ-EVRY-2026-{number:06d}/{number}"
        assert folds.unstructured("Subject", subject) == _reference_fold("Subject", subject)
    assert len(calls) == 2  # once for "/1" and "/2", once for "/17" and "/18"
