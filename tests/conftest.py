"""Shared fixtures: databases (SQLite file and throwaway PostgreSQL), a gateway home, the CLI."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.cli.main import main
from gateway.storage import migrate
from gateway.storage.db import Database
from tests.fixtures.dnsserver import dns_server  # noqa: F401
from tests.fixtures.dovecot import (  # noqa: F401
    dovecot,
    dovecot_gmail_like,
    dovecot_oauth,
    dovecot_tls,
    imap_cert,
)
from tests.fixtures.gatewayserver import gateway_factory, world  # noqa: F401
from tests.fixtures.gpgkeys import (  # noqa: F401
    court_key,
    gpg_daemon_watch,
    pytest_sessionfinish,
    second_court_key,
)
from tests.fixtures.oauthserver import oauth_server  # noqa: F401
from tests.fixtures.postgres import PostgresCluster, postgres_cluster  # noqa: F401
from tests.fixtures.seaweed import seaweed, seaweed_private  # noqa: F401
from tests.fixtures.smtpsink import smtp_sink  # noqa: F401
from tests.fixtures.teletransmission import tele  # noqa: F401
from tests.fixtures.tlscert import tls_files  # noqa: F401


@dataclass
class CliResult:
    code: int
    out: str
    err: str


CliRunner = Callable[..., CliResult]


@pytest.fixture(autouse=True)
def _ports_chosen_by_the_system(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test binds a fixed default port (2587, 8025): tests run in parallel, and a
    `serve` a test starts without naming these ports must not collide with another's."""
    for name in ("GATEWAY__SMTP__SUBMISSION_LISTEN", "GATEWAY__HTTP__LISTEN"):
        if name not in os.environ:
            monkeypatch.setenv(name, "127.0.0.1:0")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db' / 'gateway.db'}"
    cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
    return cluster.create_database()


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    """A migrated database on db_url (SQLite file or throwaway PostgreSQL)."""
    database = Database.from_url(db_url)
    migrate.upgrade(database)
    yield database
    database.dispose()


def _init(config: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--config", str(config), "init"])
    assert exit_info.value.code == 0


@pytest.fixture(scope="session")
def _initialised_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One `gateway init` per worker: its configuration and keys (the DKIM key pair alone
    costs half a second of openssl), which each test's home starts from as a copy."""
    root = tmp_path_factory.mktemp("init-template")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GATEWAY__DATABASE__URL", f"sqlite:///{root / 'template.db'}")
        patch.delenv("GATEWAY_CONFIG", raising=False)
        _init(root / "home" / "gateway.toml")
    return root / "home"


@pytest.fixture
def gateway_config(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch, _initialised_home: Path
) -> Path:
    """A gateway home as `gateway init` makes it, its database on db_url.

    The configuration and keys are a copy of the worker's template; `gateway init`
    then runs on the copy, which creates the schema in the test's own database.
    """
    monkeypatch.setenv("GATEWAY__DATABASE__URL", db_url)
    monkeypatch.delenv("GATEWAY_CONFIG", raising=False)
    shutil.copytree(_initialised_home, tmp_path / "home")
    config = tmp_path / "home" / "gateway.toml"
    _init(config)
    return config


@pytest.fixture
def cli(gateway_config: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[CliRunner]:
    """Run `gateway --config <home> ARGS...` in-process; returns exit code and output."""

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_info:
            main(["--config", str(gateway_config), *args])
        captured = capsys.readouterr()
        code = exit_info.value.code
        return CliResult(code if isinstance(code, int) else 1, captured.out, captured.err)

    yield run
