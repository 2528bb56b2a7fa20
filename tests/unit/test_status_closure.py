"""CLOTURE in an etat@ subject, as guardians will type it."""

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
