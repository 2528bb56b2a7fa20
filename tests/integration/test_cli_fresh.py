"""The CLI on a fresh machine: a config never initialised, read-only commands, exit codes.

Regressions pinned: a never-initialised config answered "database
unavailable" and left `var/gateway.db` and `var/gnupg` behind; `courts list`
opened (and created) the gateway's GnuPG home; `audit verify` took the
writer lock, creating its lock file.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.bootstrap import starter_config
from gateway.cli.main import main
from tests.conftest import CliResult, CliRunner

NOT_INITIALISED = "gateway: database not initialised: run `gateway init`\n"
# Commands that need the database; every one must refuse a database without the schema.
NEEDS_DATABASE = [
    ("courts", "list"),
    ("courts", "add", "TJ-LYON", "--name", "Lyon"),
    ("registrations", "list", "--json"),
    ("registrations", "add", "--court", "TJ-LYON", "--measure", "1", "--address", "a@b.fr"),
    ("registrations", "export"),
    ("requests", "list"),
    ("submissions", "list"),
    ("outbox", "list", "--json"),
    ("outbox", "show", "1"),
    ("outbox", "retry", "1"),
    ("audit", "verify"),
    ("check",),
]
# Commands that only read, on an initialised home.
READ_ONLY = [
    ("courts", "list"),
    ("courts", "list", "--json"),
    ("registrations", "list"),
    ("registrations", "export"),
    ("requests", "list", "--json"),
    ("submissions", "list"),
    ("outbox", "list"),
    ("outbox", "show", "1"),  # refused (no such row), and still creates nothing
    ("audit", "verify"),
    ("keys", "export"),
    ("keys", "export", "--dkim"),
    ("--help",),
]


def tree(root: Path) -> set[str]:
    """Every path under `root`, as strings relative to it."""
    return {str(path.relative_to(root)) for path in root.rglob("*")}


@pytest.fixture
def run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[CliRunner]:
    """`gateway ARGS...` in-process, with no GATEWAY* variable from outside."""
    monkeypatch.delenv("GATEWAY_CONFIG", raising=False)
    monkeypatch.delenv("GATEWAY__DATABASE__URL", raising=False)

    def invoke(*args: str) -> CliResult:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_info:
            main(list(args))
        captured = capsys.readouterr()
        code = exit_info.value.code
        return CliResult(code if isinstance(code, int) else 1, captured.out, captured.err)

    yield invoke


def test_never_initialised_config_says_run_init_and_creates_nothing(
    run: CliRunner, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    config = home / "gateway.toml"
    config.write_text(starter_config())  # copied from the example, `init` never run
    for command in NEEDS_DATABASE:
        result = run("--config", str(config), *command)
        assert (result.code, result.err) == (1, NOT_INITIALISED), command
        assert tree(home) == {"gateway.toml"}, command  # no var/, gateway.db or var/gnupg
    assert run("--config", str(config), "init").code == 0
    assert run("--config", str(config), "courts", "list").code == 0


def test_database_without_schema_says_run_init(
    run: CliRunner, tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if db_url.startswith("sqlite"):
        path = Path(db_url.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True)
        with sqlite3.connect(path) as other:  # a SQLite file, but not ours
            other.execute("CREATE TABLE notes (text TEXT)")
        other.close()
    # (PostgreSQL: db_url is a new, empty database.)
    config = tmp_path / "home" / "gateway.toml"
    config.parent.mkdir()
    config.write_text(starter_config())
    monkeypatch.setenv("GATEWAY__DATABASE__URL", db_url)
    for command in (("courts", "list"), ("outbox", "list"), ("audit", "verify")):
        result = run("--config", str(config), *command)
        assert (result.code, result.err) == (1, NOT_INITIALISED), command
    upgraded = run("--config", str(config), "db", "upgrade")  # makes the schema itself
    assert upgraded.code == 0, upgraded.err
    assert run("--config", str(config), "courts", "list").code == 0


def test_read_only_commands_leave_nothing_behind(cli: CliRunner, gateway_config: Path) -> None:
    home = gateway_config.parent
    root = home.parent  # the home, and the SQLite database's own folder (db_url)
    before = tree(root)
    assert not any(name.endswith("-writer.lock") for name in before)  # init took no writer lock
    for command in READ_ONLY:
        result = cli(*command)
        assert result.code in (0, 1), (command, result.err)
        assert tree(root) == before, command
    assert not (home / "var" / "gnupg").exists()
    assert not (home / "var" / "mail").exists()


def test_exit_codes_0_success_1_refusal_2_usage(cli: CliRunner) -> None:
    assert cli("courts", "list").code == 0
    assert cli("--help").code == 0
    refused = [
        ("courts", "add", "T J!", "--name", "x"),  # bad input: not a court code
        ("outbox", "show", "7"),  # no such row
        ("requests", "list", "--court", "not a court!"),
    ]
    for command in refused:
        assert cli(*command).code == 1, command
    usage = [
        ("no-such-command",),
        ("courts", "add", "TJ-LYON"),  # --name missing
        ("requests", "list", "--status", "lost"),  # not one of the choices
        ("outbox", "show", "seven"),  # not a number
        ("courts", "list", "--bogus"),
    ]
    for command in usage:
        result = cli(*command)
        assert result.code == 2, (command, result.err)
        assert result.err.startswith("gateway: ") and "Traceback" not in result.err
