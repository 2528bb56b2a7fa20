"""The CLI's documented exit codes: 2 for a usage error, 70 for an internal error."""

from __future__ import annotations

import pytest

from gateway.cli import keys_cmds
from gateway.cli.main import main


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[object, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    return exit_info.value.code, capsys.readouterr().err


@pytest.mark.parametrize(
    "args",
    [("no-such-command",), ("keys", "export", "--bogus"), ("courts", "add", "TJ-LYON")],
    ids=["unknown-command", "unknown-option", "missing-option"],
)
def test_usage_error_exits_2_with_one_line(
    capsys: pytest.CaptureFixture[str], args: tuple[str, ...]
) -> None:
    code, err = _run(capsys, *args)
    assert code == 2, err
    assert err.startswith("gateway: ") and "Traceback" not in err


def _boom(*args: object, **kwargs: object) -> None:
    raise RuntimeError("secret detail of a bug")


def test_internal_error_exits_70_naming_only_its_class(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GATEWAY_DEBUG", raising=False)
    monkeypatch.setattr(keys_cmds.keys_export, "callback", _boom)
    code, err = _run(capsys, "keys", "export")
    assert code == 70, err
    assert err == (
        "gateway: internal error (RuntimeError); rerun with GATEWAY_DEBUG=1 for details\n"
    )


def test_internal_error_with_gateway_debug_shows_the_traceback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GATEWAY_DEBUG", "1")
    monkeypatch.setattr(keys_cmds.keys_export, "callback", _boom)
    with pytest.raises(RuntimeError, match="secret detail"):
        main(["keys", "export"])
