"""`make test` left 118 gpg-agents running: every GnuPG home is closed when done, except an
agent the greffe was already running in its own home before the command."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.cli.main import main
from gateway.storage.crypto import GpgKeyring
from tests.conftest import CliRunner
from tests.fixtures.gatewayserver import COURT, World
from tests.fixtures.gpgkeys import (
    CourtKey,
    gpg_daemons_under,
    kill_agent,
    wait_for_no_daemons_under,
)
from tests.fixtures.pdfs import plain_pdf

pytestmark = pytest.mark.gpg


def start_agent(home: Path) -> int:
    """Start the home's gpg-agent the way a greffier's desktop would have; return its pid."""
    subprocess.run(
        ["gpg-connect-agent", "--homedir", str(home), "/bye"], check=True, capture_output=True
    )
    [agent] = gpg_daemons_under(home)
    return agent.pid


@pytest.fixture
def greffe_home(court_key: CourtKey) -> Iterator[Path]:
    """The court's GnuPG home with no daemon running, and none left after the test."""
    kill_agent(court_key.gnupghome)
    assert wait_for_no_daemons_under(court_key.gnupghome) == []
    yield court_key.gnupghome
    kill_agent(court_key.gnupghome)


def test_keyring_close_stops_the_agent_it_started(tmp_path: Path, court_key: CourtKey) -> None:
    home = tmp_path / "gnupg"
    keyring = GpgKeyring(home)
    assert keyring.already_running == frozenset()
    keyring.import_public(court_key.armored_public)
    assert [d.program for d in gpg_daemons_under(home)] == ["gpg-agent"]  # gpg started one
    keyring.close()
    assert wait_for_no_daemons_under(home) == []
    keyring.close()  # twice is harmless


def test_keyring_close_leaves_an_agent_already_running(tmp_path: Path, court_key: CourtKey) -> None:
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    pid = start_agent(home)
    try:
        with GpgKeyring(home) as keyring:
            assert keyring.already_running == frozenset({"gpg-agent"})
            keyring.import_public(court_key.armored_public)
        assert [d.pid for d in gpg_daemons_under(home)] == [pid]
    finally:
        kill_agent(home)
    assert wait_for_no_daemons_under(home) == []


def test_cli_add_key_leaves_no_agent(
    cli: CliRunner, gateway_config: Path, court_key: CourtKey, tmp_path: Path
) -> None:
    # Importing into the gateway's own keyring (var/gnupg) starts an agent there.
    keyfile = tmp_path / "court.asc"
    keyfile.write_text(court_key.armored_public)
    assert cli("courts", "add", COURT, "--name", "Lyon").code == 0
    result = cli("courts", "add-key", COURT, str(keyfile))
    assert result.code == 0, result.err
    assert (gateway_config.parent / "var" / "gnupg").is_dir()
    assert wait_for_no_daemons_under(gateway_config.parent) == []


def export(world: World, home: Path, out: Path) -> None:
    config = str(world.gw.services.settings.config_path)
    reference = f"{COURT}-{world.gw.clock().year}-000001"
    with pytest.raises(SystemExit) as exit_info:
        main(["--config", config, "submissions", "export", reference, "--out", str(out),
              "--gnupghome", str(home)])  # fmt: skip
    assert exit_info.value.code == 0


def test_cli_export_stops_only_the_agent_it_started(
    world: World, greffe_home: Path, tmp_path: Path
) -> None:
    code = world.request_code()
    raw = world.gw.message(
        subject=f"[{code}]", attachments=[("compte.pdf", "application/pdf", plain_pdf())]
    )
    assert world.gw.send(raw)[0] == 250

    # Nothing ran in the greffe's home: the agent decryption needed is stopped after.
    export(world, greffe_home, tmp_path / "first")
    assert (tmp_path / "first" / "1" / "message.eml").read_bytes() == raw
    assert wait_for_no_daemons_under(greffe_home) == []

    # The greffe's agent was running (a smartcard, cached passphrases): it is left alone.
    pid = start_agent(greffe_home)
    export(world, greffe_home, tmp_path / "second")
    assert [d.pid for d in gpg_daemons_under(greffe_home)] == [pid]
