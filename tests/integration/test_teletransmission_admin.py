"""Homologated software and credentials through the CLI, the schema, and the expiry notices."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import select

from gateway.app import Services
from gateway.credentials.tokens import lookup_id_of
from gateway.settings import load_settings
from gateway.storage.db import Database
from gateway.storage.models import AuditEvent, Base, Credential, Outbox
from tests.conftest import CliRunner

ADDRESS = "tuteur@exemple.fr"


def _issue(cli: CliRunner, software: str = "Tutelle Pro") -> tuple[int, str]:
    result = cli("credentials", "issue", "--address", ADDRESS, "--software", software)
    assert result.code == 0, result.err
    credential_id = int(result.err.split()[1])
    return credential_id, result.out.strip()


def test_software_add_list_revoke(cli: CliRunner) -> None:
    assert cli("software", "add", "Tutelle Pro", "--publisher", "Éditeur SA").code == 0
    again = cli("software", "add", "Tutelle Pro")
    assert again.code == 1 and "already homologated" in again.err
    listed = json.loads(cli("software", "list", "--json").out)
    assert [(s["name"], s["publisher"], s["status"]) for s in listed] == [
        ("Tutelle Pro", "Éditeur SA", "homologated")
    ]
    assert "Tutelle Pro" in cli("software", "list").out
    assert cli("software", "revoke", "Tutelle Pro").code == 0
    assert json.loads(cli("software", "list", "--json").out)[0]["status"] == "revoked"
    assert cli("software", "revoke", "Tutelle Pro").code == 1
    assert cli("software", "add", "Tutelle Pro").code == 0  # homologated again
    assert json.loads(cli("software", "list", "--json").out)[0]["status"] == "homologated"


def test_credential_secret_printed_once_and_stored_hashed(
    cli: CliRunner, gateway_config: Path
) -> None:
    cli("software", "add", "Tutelle Pro")
    credential_id, secret = _issue(cli)
    lookup_id = lookup_id_of(secret)
    assert lookup_id is not None and len(secret.split(".")[1]) == 43  # 256 bits
    listing = cli("credentials", "list", "--json")
    assert secret not in listing.out and secret.split(".")[1] not in listing.out
    rows = json.loads(listing.out)
    assert rows == [
        {
            "id": credential_id, "address": ADDRESS, "software": "Tutelle Pro",
            "issued_at": rows[0]["issued_at"], "expires_at": rows[0]["expires_at"],
            "last_used_at": None, "status": "active",
        }
    ]  # fmt: skip
    issued = datetime.fromisoformat(rows[0]["issued_at"])
    assert datetime.fromisoformat(rows[0]["expires_at"]) - issued == timedelta(days=730)
    settings = load_settings(gateway_config)
    database = Database.from_url(settings.database.url.get_secret_value())
    try:
        with database.reading() as session:
            stored = session.scalars(select(Credential)).one()
            events = [json.dumps(e.data) for e in session.scalars(select(AuditEvent))]
    finally:
        database.dispose()
    hidden = secret.split(".")[1]
    assert stored.lookup_id == lookup_id
    assert stored.secret_hash.startswith("$argon2id$") and hidden not in stored.secret_hash
    assert not any(hidden in data for data in events)


def test_credential_needs_a_homologated_software(cli: CliRunner) -> None:
    result = cli("credentials", "issue", "--address", ADDRESS, "--software", "Inconnu")
    assert result.code == 1 and "not a homologated software" in result.err
    assert result.out == ""
    cli("software", "add", "Ancien")
    cli("software", "revoke", "Ancien")
    assert cli("credentials", "issue", "--address", ADDRESS, "--software", "Ancien").code == 1
    bad = cli("credentials", "issue", "--address", "pas une adresse", "--software", "Ancien")
    assert bad.code == 1 and len(bad.err.strip().splitlines()) == 1


def test_credentials_revoke_and_software_revoke_revokes_its_credentials(cli: CliRunner) -> None:
    cli("software", "add", "Tutelle Pro")
    cli("software", "add", "Autre Logiciel")
    first, _ = _issue(cli)
    second, _ = _issue(cli)
    other, _ = _issue(cli, "Autre Logiciel")
    assert cli("credentials", "revoke", str(first)).code == 0
    assert cli("credentials", "revoke", str(first)).code == 1
    assert cli("credentials", "revoke", "999").code == 1
    revoked = cli("software", "revoke", "Tutelle Pro")
    assert revoked.code == 0 and "1 credential(s)" in revoked.out
    statuses = {r["id"]: r["status"] for r in json.loads(cli("credentials", "list", "--json").out)}
    assert statuses == {first: "revoked", second: "revoked", other: "active"}
    assert "revoked" in cli("credentials", "list").out


def test_migrated_schema_matches_the_models(db: Database) -> None:
    """The revision creates what the models describe (software, credential's new columns)."""
    with db.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    ours = [d for d in diff if "software" in repr(d) or "credential" in repr(d)]
    assert ours == []


class _Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def test_expiry_notice_sent_once_thirty_days_ahead(gateway_config: Path) -> None:
    settings = load_settings(gateway_config)
    clock = _Clock(datetime(2026, 12, 2, 9, 0, tzinfo=UTC))
    services = Services(settings, clock=clock)
    try:
        services.upgrade_database()
        services.credentials.add_software("Tutelle Pro", "", "test")
        issued = services.credentials.issue(ADDRESS, "Tutelle Pro", "test")
        services.credentials.issue("autre@exemple.fr", "Tutelle Pro", "test")
        services.credentials.revoke(issued.id + 1, "test")  # revoked: never noticed
        notifier = services.expiry_notifier("node-a")
        clock.now = issued.expires_at - timedelta(days=31)
        assert notifier.pass_if_leader() == 0
        clock.now = issued.expires_at - timedelta(days=29)
        assert notifier.lease.acquire()
        assert services.expiry_notifier("node-b").pass_if_leader() == 0  # node-a holds it
        assert notifier.pass_if_leader() == 1
        assert notifier.pass_if_leader() == 0  # once
        with services.db.reading() as session:
            row = session.scalars(select(Outbox)).one()
            kind, recipient, values = row.kind, row.recipient, row.template_values
        assert (kind, recipient) == ("credential_expiry", ADDRESS)
        assert values is not None
        mail = message_from_bytes(
            services.compose_mail(kind, recipient, values).data, policy=default_policy
        )
        text = mail.get_content()
        assert "expire" in mail["Subject"] and "Tutelle Pro" in text
        assert f"n° {issued.id}" in text and issued.expires_at.strftime("%d/%m/%Y") in text
    finally:
        services.close()
