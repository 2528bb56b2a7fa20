"""Finding a code in a subject line or a sub-address, without false positives."""

from __future__ import annotations

import pytest

from gateway.otp.codes import find_code_in_subaddress, find_code_in_subject


@pytest.mark.parametrize(
    "subject",
    [
        "[7K3QD-M2X9A]",
        "Dépôt pièces [7K3QD-M2X9A]",
        "Dépôt pièces [7k3qdm2x9a] tutelle",
        "[ 7K3QD-M2X9A ] compte de gestion",
        "Re: Fwd: compte 2024 7K3QD-M2X9A",
        "compte 2024 7k3qd-m2x9a.",
        "code:7K3QDM2X9A, merci",
        "(7K3QDM2X9A)",
        "7K3QDM2X9A",
    ],
)
def test_codes_subject_finds_code(subject: str) -> None:
    assert find_code_in_subject(subject) == "7K3QDM2X9A"


@pytest.mark.parametrize(
    "subject",
    [
        "INVENTAIRE",
        "Inventaire du patrimoine",
        "PROTECTION juridique",
        "inventaire protection administre",
        "Compte de gestion 2024",
        "",
        "7K3QDM2X9AB trop long",
        "REF-7K3QDM2X9A collé à un tiret",
        "7K3QD-M2X9A-2 suivi d'un tiret",
        "X7K3QDM2X9A",
        "é7K3QDM2X9A",
        "7K3QD_M2X9A",
        "0123456789 que des chiffres",
        "[7K3QD-M2X9U]",
        "7K3QD-M2X9U",
        "[7K3QD M2X9A]",
    ],
)
def test_codes_subject_ignores_non_codes(subject: str) -> None:
    assert find_code_in_subject(subject) is None


def test_codes_subject_bracketed_letters_only_is_a_code() -> None:
    # A drawn code may have no digit: bracketed it is still recognised.
    assert find_code_in_subject("Dépôt [ABCDE-FGHJK]") == "ABCDEFGHJK"
    assert find_code_in_subject("Dépôt [INVENTAIRE]") == "1NVENTA1RE"


def test_codes_subject_dashed_letters_only_is_a_code() -> None:
    assert find_code_in_subject("Dépôt ABCDE-FGHJK") == "ABCDEFGHJK"


def test_codes_subject_prefers_bracketed() -> None:
    subject = "AB12CD34EF pièces [7K3QD-M2X9A]"
    assert find_code_in_subject(subject) == "7K3QDM2X9A"


def test_codes_subject_dashed_digits_only_is_a_code() -> None:
    assert find_code_in_subject("Dépôt 01234-56789") == "0123456789"


def test_codes_subject_prefers_code_with_digit_over_dashed_word() -> None:
    # "avant-garde" is a 5-5 dashed word spelling a valid code.
    assert find_code_in_subject("avant-garde 7K3QD-M2X9A") == "7K3QDM2X9A"
    assert find_code_in_subject("avant-garde") == "AVANTGARDE"


def test_codes_subject_first_of_equal_rank_wins() -> None:
    assert find_code_in_subject("7K3QD-M2X9A 8K3QD-M2X9A") == "7K3QDM2X9A"


def test_codes_subject_skips_invalid_bracket_for_valid_word() -> None:
    assert find_code_in_subject("[UUUUU-UUUUU] 7K3QD-M2X9A") == "7K3QDM2X9A"


def test_codes_subject_folds_confusable_letters() -> None:
    assert find_code_in_subject("[7K3QD-M2XOI]") == "7K3QDM2X01"


@pytest.mark.parametrize(
    "local_part",
    ["depot+7K3QDM2X9A", "depot+7k3qd-m2x9a", "DEPOT+7K3QDM2X9A", "+7K3QDM2X9A"],
)
def test_codes_subaddress_finds_code(local_part: str) -> None:
    assert find_code_in_subaddress(local_part) == "7K3QDM2X9A"


@pytest.mark.parametrize(
    "local_part",
    ["depot", "depot+", "depot+7K3QDM2X9U", "depot+7K3QDM2X9A+x", "depot-7K3QDM2X9A"],
)
def test_codes_subaddress_rejects(local_part: str) -> None:
    assert find_code_in_subaddress(local_part) is None


def test_codes_subaddress_custom_separator() -> None:
    assert find_code_in_subaddress("depot-7K3QDM2X9A", separator="-") == "7K3QDM2X9A"
