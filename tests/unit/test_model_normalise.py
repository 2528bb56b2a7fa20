"""Normalisation of court codes, measure numbers and mailboxes (SPEC §2)."""

from __future__ import annotations

import pytest

from gateway.errors import InvalidAddress, InvalidCourtCode, InvalidKind, InvalidMeasure
from gateway.model import Mailbox, RequestKind, court_code, measure_number


def test_court_code_upper_cased() -> None:
    assert court_code(" tj-lyon ") == "TJ-LYON"


@pytest.mark.parametrize("bad", ["", "A", "-AB", "TJ LYON", "TJ_LYON", "A" * 17, "TJ/1"])
def test_court_code_refused(bad: str) -> None:
    with pytest.raises(InvalidCourtCode):
        court_code(bad)


def test_measure_trimmed_folded_upper_cased() -> None:
    assert measure_number("  21/00123   tutelle.a_b-c ") == "21/00123 TUTELLE.A_B-C"


@pytest.mark.parametrize("bad", ["", "   ", "a" * 41, "21:00", "éé", "a\tb"])
def test_measure_refused(bad: str) -> None:
    with pytest.raises(InvalidMeasure):
        measure_number(bad)


def test_mailbox_domain_idna_lower_and_key_folds_local() -> None:
    box = Mailbox.parse("Jean.Dupont@Exemple-Élysée.FR")
    assert box.domain == "xn--exemple-lyse-iebd.fr"
    assert str(box) == "Jean.Dupont@xn--exemple-lyse-iebd.fr"
    assert box.key == "jean.dupont@xn--exemple-lyse-iebd.fr"
    assert Mailbox.parse("<jean.dupont@EXEMPLE-élysée.fr>").key == box.key


@pytest.mark.parametrize(
    "bad",
    [
        "nobody",
        "@example.fr",
        "a@",
        "a b@example.fr",
        "a@localhost",
        "a@-x.fr",
        "a..b@x.fr",
        "x" * 65 + "@example.fr",
        "a@exa mple.fr",
    ],
)
def test_mailbox_refused(bad: str) -> None:
    with pytest.raises(InvalidAddress):
        Mailbox.parse(bad)


def test_kind_defaults_and_parses() -> None:
    assert RequestKind.parse(None) is RequestKind.REQUETE
    assert RequestKind.parse("COMPTE") is RequestKind.COMPTE
    with pytest.raises(InvalidKind):
        RequestKind.parse("divorce")
