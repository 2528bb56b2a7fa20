"""Subjects guardians type: CLOTURE for etat@, CODE <court> <measure> [kind] for codes@."""

from __future__ import annotations

import pytest

from gateway.ingest.status import wants_closure


@pytest.mark.parametrize(
    "subject",
    ["CLOTURE 7K3QD-M2X9A", "Clôture [7K3QD-M2X9A]", "[7K3QD-M2X9A] clôture.", "CLÔTURE"],
)
def test_closure_recognised(subject: str) -> None:
    assert wants_closure(subject)


@pytest.mark.parametrize("subject", ["[7K3QD-M2X9A]", "CLOTURES", "état de ma requête"])
def test_other_subjects_are_not_closures(subject: str) -> None:
    assert not wants_closure(subject)


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("CODE TJ-LYON 21/00123 A requête", ("TJ-LYON", "21/00123 A", "requete")),
        ("code tj-lyon 21/00123 Compte", ("TJ-LYON", "21/00123", "compte")),
        ("CODE TJ-LYON 21/00123", ("TJ-LYON", "21/00123", "requete")),
        ("CODE TJ-LYON INVENTAIRE", ("TJ-LYON", "INVENTAIRE", "requete")),
    ],
)
def test_code_request_subject(subject: str, expected: tuple[str, str, str]) -> None:
    from gateway.ingest.codereq import parse_code_request

    court, measure, kind = parse_code_request(subject)
    assert (court, measure, kind.value) == expected
