"""The From display name of mail about a court: its greffe, with the French article."""

from __future__ import annotations

import pytest

from gateway.outbox.compose import greffe_name


@pytest.mark.parametrize(
    ("court", "expected"),
    [
        ("Tribunal judiciaire de Lyon", "Greffe du Tribunal judiciaire de Lyon"),
        ("Tribunal de proximité de Vienne", "Greffe du Tribunal de proximité de Vienne"),
        ("Cour d'appel de Paris", "Greffe de la Cour d'appel de Paris"),
        ("Chambre de proximité de Lens", "Greffe de la Chambre de proximité de Lens"),
        ("Antenne de Saint-Denis", "Greffe de l'Antenne de Saint-Denis"),
        ("Greffe du TJ de Lyon", "Greffe du TJ de Lyon"),
        ("  Tribunal\n judiciaire  de Lyon ", "Greffe du Tribunal judiciaire de Lyon"),
    ],
)
def test_greffe_name_follows_french_usage(court: str, expected: str) -> None:
    assert greffe_name(court) == expected
