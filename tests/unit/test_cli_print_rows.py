"""A list command's table: one line a row, whatever text a user typed into a cell."""

from __future__ import annotations

import pytest

from gateway.cli.context import print_rows
from gateway.cli.greffe_cmds import REASON_SHOWN, _shortened


def test_a_cell_keeps_accents_but_no_control_character(capsys: pytest.CaptureFixture[str]) -> None:
    rows = [
        {"reference": "TJ-LYON-2026-000001", "reason": "Pièce\nillisible\x1b[31m \u202eé"},
        {"reference": "TJ-LYON-2026-000002", "reason": None},
        {"reference": "TJ-LYON-2026-000003", "reason": False},
    ]
    print_rows(rows, ["reference", "reason"], as_json=False)
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "REFERENCE            REASON",
        "TJ-LYON-2026-000001  Pièce?illisible?[31m ?é",
        "TJ-LYON-2026-000002",
        "TJ-LYON-2026-000003  False",
    ]


def test_json_keeps_the_text_whole(capsys: pytest.CaptureFixture[str]) -> None:
    print_rows([{"reason": "Pièce\nillisible"}], ["reason"], as_json=True)
    assert '"Pièce\\nillisible"' in capsys.readouterr().out


def test_a_long_reason_is_shortened_for_the_table() -> None:
    reason = "Le compte de gestion ne comporte pas les relevés bancaires de décembre."
    shown = _shortened(reason, REASON_SHOWN)
    assert shown is not None and len(shown) == REASON_SHOWN and shown.endswith("…")
    assert reason.startswith(shown[:-1])
    assert _shortened("Pièce illisible.", REASON_SHOWN) == "Pièce illisible."
    assert _shortened(None, REASON_SHOWN) is None
