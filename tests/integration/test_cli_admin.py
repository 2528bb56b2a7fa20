"""Courts, keys, registrations and the audit chain through the CLI, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.conftest import CliRunner


def test_init_creates_config_keys_and_never_overwrites(
    cli: CliRunner, gateway_config: Path
) -> None:
    home = gateway_config.parent
    keys = home / "var" / "keys"
    for name in ("server-secret", "signing-key.asc", "dkim-private.pem"):
        assert stat.S_IMODE((keys / name).stat().st_mode) == 0o600, name
    gateway_config.write_text(gateway_config.read_text() + "\n# operator's edit\n")
    before = {p: p.read_bytes() for p in keys.iterdir()}
    result = cli("init")
    assert result.code == 0
    assert "nothing to create" in result.out
    assert 'IN TXT "v=DKIM1; k=rsa; p=' in result.out
    assert gateway_config.read_text().endswith("# operator's edit\n")
    assert {p: p.read_bytes() for p in keys.iterdir()} == before


def test_courts_add_list_and_duplicate(cli: CliRunner) -> None:
    assert cli("courts", "add", "tj-lyon", "--name", "Tribunal judiciaire de Lyon").code == 0
    again = cli("courts", "add", "TJ-LYON", "--name", "Autre")
    assert again.code == 1
    assert again.err.strip() == "gateway: court TJ-LYON already exists"
    listed = json.loads(cli("courts", "list", "--json").out)
    assert [c["code"] for c in listed] == ["TJ-LYON"]
    assert "TJ-LYON" in cli("courts", "list").out


def test_court_code_invalid_is_one_line(cli: CliRunner) -> None:
    result = cli("courts", "add", "-bad", "--name", "x")
    assert result.code != 0
    assert len(result.err.strip().splitlines()) == 1
    assert "Traceback" not in result.err


@pytest.mark.gpg
def test_add_key_validates_and_shows_fingerprint(cli: CliRunner, court_key, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cli("courts", "add", "TJ-LYON", "--name", "Lyon")
    keyfile = tmp_path / "court.asc"
    keyfile.write_text(court_key.armored_public)
    result = cli("courts", "add-key", "TJ-LYON", str(keyfile))
    assert result.code == 0, result.err
    assert court_key.fingerprint in result.out
    listed = json.loads(cli("courts", "list", "--json").out)
    assert listed[0]["keys"] == [{"fingerprint": court_key.fingerprint, "status": "active"}]
    assert cli("courts", "add-key", "TJ-LYON", str(keyfile)).code == 1  # duplicate
    garbage = tmp_path / "garbage.asc"
    garbage.write_text("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nnope\n")
    refused = cli("courts", "add-key", "TJ-LYON", str(garbage))
    assert refused.code == 1 and "OpenPGP" in refused.err
    missing = cli("courts", "add-key", "TJ-LYON", str(tmp_path / "absent.asc"))
    assert missing.code == 1 and "cannot read" in missing.err
    unknown = cli("courts", "add-key", "TJ-NOPE", str(keyfile))
    assert unknown.code == 1 and "unknown court TJ-NOPE" in unknown.err


@pytest.mark.gpg
def test_retire_key_keeps_the_last_unless_forced(  # type: ignore[no-untyped-def]
    cli: CliRunner, court_key, second_court_key, tmp_path: Path
) -> None:
    cli("courts", "add", "TJ-LYON", "--name", "Lyon")
    for number, key in enumerate((court_key, second_court_key)):
        keyfile = tmp_path / f"court{number}.asc"
        keyfile.write_text(key.armored_public)
        assert cli("courts", "add-key", "TJ-LYON", str(keyfile)).code == 0
    grouped = ":".join(court_key.fingerprint[i : i + 4] for i in range(0, 40, 4)).lower()
    retired = cli("courts", "retire-key", "tj-lyon", grouped)
    assert retired.code == 0, retired.err
    assert retired.out.strip() == (
        f"key {court_key.fingerprint} retired from court TJ-LYON (1 active key left)"
    )
    again = cli("courts", "retire-key", "TJ-LYON", court_key.fingerprint)
    assert again.code == 1 and "already retired" in again.err
    kept = cli("courts", "retire-key", "TJ-LYON", second_court_key.fingerprint)
    assert kept.code == 1 and "only active key" in kept.err and "Traceback" not in kept.err
    listed = json.loads(cli("courts", "list", "--json").out)[0]["keys"]
    assert [k["status"] for k in listed] == ["retired", "active"]
    forced = cli("courts", "retire-key", "TJ-LYON", second_court_key.fingerprint, "--force")
    assert forced.code == 0 and "has no active key" in forced.err
    assert cli("courts", "list").out.count(court_key.fingerprint) == 0  # only active keys shown
    back = cli("courts", "add-key", "TJ-LYON", str(tmp_path / "court0.asc"))
    assert back.code == 1 and "was retired" in back.err
    for bad, said in (("12AB", "not a key fingerprint"), ("A" * 40, "has no key")):
        refused = cli("courts", "retire-key", "TJ-LYON", bad)
        assert refused.code == 1 and said in refused.err, refused.err
    assert "unknown court TJ-NOPE" in cli("courts", "retire-key", "TJ-NOPE", "A" * 40).err


def test_registrations_add_normalise_revoke_keep_history(cli: CliRunner) -> None:
    cli("courts", "add", "TJ-LYON", "--name", "Lyon")
    added = cli(
        "registrations",
        "add",
        "--court",
        "tj-lyon",
        "--measure",
        " 21/00123  a ",
        "--address",
        "Jean.Dupont@Example.FR",
    )
    assert added.code == 0, added.err
    dup = cli(
        "registrations",
        "add",
        "--court",
        "TJ-LYON",
        "--measure",
        "21/00123 A",
        "--address",
        "jean.dupont@example.fr",
    )
    assert dup.code == 1 and "already registered" in dup.err
    rows = json.loads(cli("registrations", "list", "--json").out)
    assert [(r["court"], r["measure"], r["address"], r["status"]) for r in rows] == [
        ("TJ-LYON", "21/00123 A", "Jean.Dupont@example.fr", "active")
    ]
    revoke = cli(
        "registrations",
        "revoke",
        "--court",
        "TJ-LYON",
        "--measure",
        "21/00123 a",
        "--address",
        "JEAN.DUPONT@example.fr",
    )
    assert revoke.code == 0, revoke.err
    assert (
        cli(
            "registrations",
            "revoke",
            "--court",
            "TJ-LYON",
            "--measure",
            "21/00123 a",
            "--address",
            "jean.dupont@example.fr",
        ).code
        == 1
    )
    rows = json.loads(cli("registrations", "list", "--court", "TJ-LYON", "--json").out)
    assert [r["status"] for r in rows] == ["revoked"]
    # A revoked registration can be registered again; history keeps both.
    assert (
        cli(
            "registrations",
            "add",
            "--court",
            "TJ-LYON",
            "--measure",
            "21/00123 A",
            "--address",
            "jean.dupont@example.fr",
        ).code
        == 0
    )
    rows = json.loads(cli("registrations", "list", "--json").out)
    assert sorted(r["status"] for r in rows) == ["active", "revoked"]


def test_registrations_bad_input(cli: CliRunner) -> None:
    cli("courts", "add", "TJ-LYON", "--name", "Lyon")
    for args, named in [
        (("--court", "TJ-NOPE", "--measure", "1", "--address", "a@b.fr"), "unknown court TJ-NOPE"),
        (
            ("--court", "TJ-LYON", "--measure", "1", "--address", "not-an-address"),
            "invalid address",
        ),
        (("--court", "TJ-LYON", "--measure", "1:2", "--address", "a@b.fr"), "invalid measure"),
    ]:
        result = cli("registrations", "add", *args)
        assert result.code == 1
        assert named in result.err


def test_import_all_or_nothing_and_export_round_trip(cli: CliRunner, tmp_path: Path) -> None:
    cli("courts", "add", "TJ-LYON", "--name", "Lyon")
    cli("courts", "add", "TJ-PARIS", "--name", "Paris")
    cli("registrations", "add", "--court", "TJ-LYON", "--measure", "7", "--address", "x@ex.fr")
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "court,measure,address\n"
        "TJ-LYON,1,a@ex.fr\n"  # line 2 fine
        "TJ-NOPE,2,b@ex.fr\n"  # line 3 unknown court
        "TJ-LYON,3,not-an-address\n"  # line 4 bad address
        "tj-lyon, 1 ,A@EX.FR\n"  # line 5 duplicate of line 2 after normalisation
        "TJ-LYON,7,x@ex.fr\n"  # line 6 already registered
        "TJ-LYON,9:9,c@ex.fr\n"  # line 7 bad measure
    )
    result = cli("registrations", "import", str(bad))
    assert result.code == 1
    lines = result.err.strip().splitlines()
    assert [line.split(":")[0] for line in lines[:-1]] == [f"line {n}" for n in (3, 4, 5, 6, 7)]
    assert "unknown court TJ-NOPE" in lines[0]
    assert "duplicate of line 2" in lines[2]
    assert "nothing imported" in lines[-1]
    assert len(json.loads(cli("registrations", "list", "--json").out)) == 1

    good = tmp_path / "good.csv"
    good.write_text("\ufeffcourt,measure,address\nTJ-LYON,1,a@ex.fr\nTJ-PARIS,2,b@ex.fr\n")
    imported = cli("registrations", "import", str(good))
    assert imported.code == 0, imported.err
    assert "2 registrations imported" in imported.out
    exported = cli("registrations", "export").out
    assert exported.splitlines()[0].startswith("court,measure,address")
    assert len(exported.splitlines()) == 4
    only_paris = cli("registrations", "export", "--court", "TJ-PARIS").out.splitlines()
    assert len(only_paris) == 2 and only_paris[1].startswith("TJ-PARIS,2,b@ex.fr")


def test_import_bad_header_and_missing_file(cli: CliRunner, tmp_path: Path) -> None:
    bad = tmp_path / "h.csv"
    bad.write_text("tribunal,mesure,adresse\nA,B,C\n")
    result = cli("registrations", "import", str(bad))
    assert result.code == 1 and "header" in result.err
    assert cli("registrations", "import", str(tmp_path / "nope.csv")).code == 1


def test_audit_chain_verifies_and_names_tampered_event(cli: CliRunner, db_url: str) -> None:
    cli("courts", "add", "TJ-LYON", "--name", "Lyon")
    cli("registrations", "add", "--court", "TJ-LYON", "--measure", "1", "--address", "a@ex.fr")
    cli("registrations", "add", "--court", "TJ-LYON", "--measure", "2", "--address", "b@ex.fr")
    ok = cli("audit", "verify")
    assert ok.code == 0 and "3 events" in ok.out
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE audit_event SET actor = 'someone-else' WHERE seq = 2"))
    engine.dispose()
    broken = cli("audit", "verify")
    assert broken.code == 1
    assert "event 2" in broken.err


def test_audit_chain_detects_deleted_last_event(cli: CliRunner, db_url: str) -> None:
    cli("courts", "add", "TJ-LYON", "--name", "Lyon")
    cli("courts", "add", "TJ-PARIS", "--name", "Paris")
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_event WHERE seq = 2"))
    engine.dispose()
    assert cli("audit", "verify").code == 1


def test_bad_config_key_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.cli.main import main

    config = tmp_path / "g.toml"
    config.write_text("[smtp]\nlisten = 'x'\n")
    with pytest.raises(SystemExit) as info:
        main(["--config", str(config), "courts", "list"])
    assert info.value.code == 1
    assert "smtp.listen" in capsys.readouterr().err
