"""API keys against a real `serve`: created once by the CLI, stored hashed, revoked, throttled."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from gateway.cli.main import main
from gateway.storage.models import ApiKey, AuditEvent
from tests.fixtures.apiclient import api, new_key
from tests.fixtures.gatewayserver import COURT, World

WRONG = "gk_aaaaaaaaaaaaaaaa_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"


def run_cli(world: World, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["--config", str(world.gw.services.settings.config_path), *args])
    captured = capsys.readouterr()
    code = exit_info.value.code
    return (code if isinstance(code, int) else 1), captured.out, captured.err


def audit_rows(world: World, action: str) -> list[AuditEvent]:
    with world.gw.services.db.reading() as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.action == action)))


def test_cli_key_is_printed_once_stored_hashed_and_works(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(
        world, capsys, "api-keys", "create", "--role", "greffe", "--court", COURT, "--name", "sync"
    )
    assert code == 0, err
    key = out.strip()
    assert key.startswith("gk_") and len(key.splitlines()) == 1
    with world.gw.services.db.reading() as session:
        (row,) = session.scalars(select(ApiKey))
        assert key not in row.secret_hash and key.split("_")[2] not in row.secret_hash
        assert row.secret_hash.startswith("hmac-sha256:")
    code, listed, _ = run_cli(world, capsys, "api-keys", "list", "--json")
    (entry,) = json.loads(listed)
    assert entry["role"] == "greffe" and entry["courts"] == [COURT] and entry["name"] == "sync"
    assert key.split("_")[2] not in listed  # the secret is never shown again
    with api(world, key) as client:
        assert client.get("/api/v1/requests").status_code == 200

    assert run_cli(world, capsys, "api-keys", "revoke", str(entry["id"]))[0] == 0
    with api(world, key) as client:
        refused = client.get("/api/v1/requests")
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith("Bearer")
    assert run_cli(world, capsys, "api-keys", "revoke", str(entry["id"]))[0] == 1


def test_cli_refuses_bad_key_requests(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    for args, reason in (
        (["--role", "greffe"], "at least one court"),
        (["--role", "admin", "--court", COURT], "every court"),
        (["--role", "greffe", "--court", "TJ-NOWHERE"], "unknown court"),
    ):
        code, out, err = run_cli(world, capsys, "api-keys", "create", *args)
        assert code == 1 and out == "" and reason in err, (args, err)


def test_failed_authentication_is_audited_without_the_secret(world: World) -> None:
    with api(world, WRONG) as client:
        answer = client.get("/api/v1/requests")
    assert answer.status_code == 401
    assert answer.headers["content-type"] == "application/problem+json"
    (event,) = audit_rows(world, "api.auth_failed")
    assert event.data["client"] == "127.0.0.1" and event.data["reason"] == "unknown"
    assert event.subject == "api-key-lookup:aaaaaaaaaaaaaaaa"
    assert "bbbbbbbb" not in json.dumps(event.data) + event.subject + event.actor

    # A right lookup id with a wrong secret: audited as such, still no secret.
    good = new_key(world, "admin")
    forged = good[: -len("bbbb")] + "bbbb"
    with api(world, forged) as client:
        assert client.get("/api/v1/requests").status_code == 401
    event = audit_rows(world, "api.auth_failed")[-1]
    assert event.data["reason"] == "wrong secret"
    assert good.split("_")[2] not in json.dumps(event.data) + event.subject


def test_missing_key_is_401_and_not_counted(world: World) -> None:
    with api(world, None) as client:
        for _ in range(15):
            assert client.get("/api/v1/requests").status_code == 401
    assert audit_rows(world, "api.auth_failed") == []


def test_password_guessing_locks_the_address_out_even_for_a_good_key(world: World) -> None:
    good = new_key(world, "admin")
    limit = world.gw.services.settings.http.max_auth_failures
    with api(world, WRONG) as client:
        statuses = [client.get("/api/v1/courts").status_code for _ in range(limit + 2)]
    assert statuses[:limit] == [401] * limit
    assert statuses[limit:] == [429, 429]
    with api(world, good) as client:
        locked = client.get("/api/v1/courts")
    assert locked.status_code == 429 and "retry-after" in locked.headers
    assert [e.data["locked"] for e in audit_rows(world, "api.auth_failed")][-1] is True
    # Once the lock-out is over, the good key works again.
    world.gw.clock.advance(world.gw.services.settings.http.auth_lockout * 2)
    with api(world, good) as client:
        assert client.get("/api/v1/courts").status_code == 200


def test_api_key_never_reaches_the_logs(world: World, caplog: pytest.LogCaptureFixture) -> None:
    good = new_key(world, "admin")
    with caplog.at_level("DEBUG"), api(world, good) as client:
        client.get("/api/v1/courts")
        with api(world, WRONG) as wrong:
            wrong.get("/api/v1/courts")
    text = "\n".join(record.getMessage() + str(record.__dict__) for record in caplog.records)
    assert good.split("_")[2] not in text and "bbbbbbbbbbbb" not in text
