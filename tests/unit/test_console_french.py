"""The console's French for the court-key and teletransmission errors an administrator meets."""

from __future__ import annotations

import pytest

from gateway import errors
from gateway.console import french

FPR = "D935FFCB0030BC7B1E60CB0A9E0BD3C9E5D0C2A1"


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            errors.Conflict(f"key {FPR} is already registered for court TJ-LYON"),
            f"la clé {FPR} est déjà enregistrée pour le tribunal TJ-LYON",
        ),
        (
            errors.Conflict(
                f"key {FPR} was retired from court TJ-LYON: a retired key is not taken back "
                "(the greffe makes a new one)"
            ),
            f"la clé {FPR} a été retirée du tribunal TJ-LYON : une clé retirée n'est pas "
            "reprise (le greffe en crée une nouvelle)",
        ),
        (
            errors.NotFound(f"court TJ-LYON has no key {FPR}"),
            f"le tribunal TJ-LYON n'a pas de clé {FPR}",
        ),
        (
            errors.Conflict(f"key {FPR} of court TJ-LYON is already retired"),
            f"la clé {FPR} du tribunal TJ-LYON est déjà retirée",
        ),
        (
            errors.InputError("not a key fingerprint: '12AB' (40 or 64 hexadecimal digits)"),
            "empreinte de clé invalide (40 ou 64 chiffres hexadécimaux)",
        ),
        (
            errors.NotFound("'Mandat' is not a homologated software (see `software list`)"),
            "« Mandat » n'est pas un logiciel homologué",
        ),
        (
            errors.NotFound("no homologated software named 'Mandat'"),
            "aucun logiciel homologué ne s'appelle « Mandat »",
        ),
        (
            errors.NotFound("no credential 7 that is not revoked already"),
            "aucun identifiant 7 qui ne soit déjà révoqué",
        ),
        (
            errors.Conflict("jean@exemple.fr is already registered for TJ-LYON 21/00123"),
            "jean@exemple.fr est déjà inscrite pour TJ-LYON 21/00123",
        ),
    ],
)
def test_admin_errors_in_french(error: errors.GatewayError, expected: str) -> None:
    assert french.message(error) == expected


def test_the_last_key_message_says_how_to_go_on() -> None:
    said = french.message(
        errors.Conflict(
            f"key {FPR} is court TJ-LYON's only active key: add its successor first, or "
            "retire it anyway and the court's filings are refused with 451 until a key is added"
        )
    )
    assert said.startswith("c'est la seule clé active du tribunal TJ-LYON : ajoutez d'abord")
    assert "retirer quand même" in said


def test_an_unknown_message_keeps_the_cli_words() -> None:
    assert french.message(errors.Conflict("something new")) == "refusé : something new"
