"""Code generation, display and parsing (Crockford base-32)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from gateway.otp.codes import ALPHABET, format_code, generate_code, normalise_code


def fixed(raw: bytes) -> Callable[[int], bytes]:
    def randbytes(size: int) -> bytes:
        assert size == len(raw)
        return raw

    return randbytes


def test_codes_alphabet_is_crockford() -> None:
    assert len(ALPHABET) == 32
    assert not set("ILOU") & set(ALPHABET)


def test_codes_generate_all_zero_bits() -> None:
    assert generate_code(fixed(b"\x00" * 7)) == "0000000000"


def test_codes_generate_all_one_bits() -> None:
    assert generate_code(fixed(b"\xff" * 7)) == "ZZZZZZZZZZ"


def test_codes_generate_uses_top_50_bits() -> None:
    # Only the 6 lowest of the 56 bits are dropped.
    assert generate_code(fixed(b"\x00" * 6 + b"\x3f")) == "0000000000"
    assert generate_code(fixed(b"\x00" * 6 + b"\x40")) == "0000000001"
    assert generate_code(fixed(b"\x80" + b"\x00" * 6)) == "G000000000"


def test_codes_generate_refuses_short_randomness() -> None:
    with pytest.raises(ValueError):
        generate_code(lambda size: b"\x00")


def test_codes_generate_default_rng_is_canonical_and_varied() -> None:
    codes = {generate_code() for _ in range(200)}
    assert len(codes) == 200
    assert all(normalise_code(code) == code for code in codes)
    # Every symbol position ranges over the alphabet, not a subset of it.
    assert set("".join(codes)) == set(ALPHABET)


def test_codes_format_groups_of_five() -> None:
    assert format_code("7K3QDM2X9A") == "7K3QD-M2X9A"


@pytest.mark.parametrize(
    "typed",
    ["7K3QD-M2X9A", "7K3QDM2X9A", "7k3qd-m2x9a", "  7k3QdM2x9A \t", "\n7K3QD-M2X9A\n"],
)
def test_codes_normalise_accepts_dash_case_spaces(typed: str) -> None:
    assert normalise_code(typed) == "7K3QDM2X9A"


def test_codes_normalise_folds_i_l_o() -> None:
    assert normalise_code("ILOAB-CDEFG") == "110AB" + "CDEFG"
    assert normalise_code("ilo12-34567") == "1101234567"
    assert normalise_code("OOOOO-OOOOO") == "0000000000"


@pytest.mark.parametrize(
    "typed",
    [
        "7K3QD-M2X9U",  # U is not Crockford
        "u0000-00000",
        "7K3QD-M2X9",  # too short
        "7K3QD-M2X9AB",  # too long
        "7K3Q-DM2X9A",  # dash in the wrong place
        "7K3QD--M2X9A",
        "7K3QD M2X9A",  # a space is not a dash
        "7K3QD-M2X9*",
        "",
        "７K3QD-M2X9A",  # full-width digit
    ],
)
def test_codes_normalise_rejects(typed: str) -> None:
    assert normalise_code(typed) is None


def test_codes_format_then_normalise_round_trip() -> None:
    code = generate_code()
    assert normalise_code(format_code(code)) == code
    assert normalise_code(format_code(code).lower()) == code
