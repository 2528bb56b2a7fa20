"""The composer's header registry keeps header classes: the bytes are those of email.policy.SMTP."""

from __future__ import annotations

import email.policy
import itertools
import string
from datetime import UTC, datetime
from email.headerregistry import AddressHeader, UnstructuredHeader
from pathlib import Path

import pytest

from gateway.outbox import compose as compose_module
from gateway.outbox.compose import CachedHeaderRegistry, MailComposer
from gateway.outbox.templates import Templates
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


def composer(dkim_pem: bytes, templates: Templates) -> MailComposer:
    ids = (f"{n:032x}" for n in itertools.count())
    return MailComposer(
        "greffe.example",
        "Greffe du tribunal judiciaire de Paris, service des tutelles",
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


def compose_all(dkim_pem: bytes, templates: Templates, text: str) -> list[bytes]:
    mail = composer(dkim_pem, templates)
    return [
        mail.compose(kind, "tuteur.helene@famille.example", **values_for(templates, kind, text))
        for kind in KINDS
    ]


@pytest.mark.parametrize("text", ["12/345", LONG, "x" * 120, "=?utf-8?q?d=C3=A9j=C3=A0?="])
def test_composed_bytes_are_those_of_the_standard_policy(
    dkim_pem: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    # Operator templates whose subject is long, non-ASCII and full of values.
    for kind in KINDS:
        default = Templates(tmp_path / "none").source(kind)
        body = default.split("\n", 2)[2]
        (tmp_path / f"{kind}.txt").write_text(f"Subject: {LONG} $court\n\n{body}", "utf-8")
    templates = Templates(tmp_path)

    cached = compose_all(dkim_pem, templates, text)
    monkeypatch.setattr(compose_module, "POLICY", email.policy.SMTP)
    standard = compose_all(dkim_pem, templates, text)

    assert cached == standard


def test_cached_registry_builds_each_class_once_and_follows_the_map() -> None:
    registry = CachedHeaderRegistry()

    assert registry["From"] is registry["from"]
    assert issubclass(registry["From"], AddressHeader)
    registry.map_to_type("from", UnstructuredHeader)
    assert issubclass(registry["From"], UnstructuredHeader)
    assert str(registry("Subject", "Accusé de réception")) == "Accusé de réception"
