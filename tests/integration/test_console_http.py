"""The clerks' console over real HTTP against a real `serve`, without a browser.

What a browser cannot easily show: the headers and cookie flags, the CSRF
refusals, court scoping on every route, login throttling and TOTP replay,
sessions ended by logout, idleness and disabling, and the domain effects of
each form (mail to the guardian, audit events naming the user).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, select

from gateway.retention import Retention
from gateway.storage.db import Database
from gateway.storage.models import Base, ReadMark, RequestAssignment
from tests.conftest import CliRunner
from tests.fixtures.apiclient import api, file_request, new_key
from tests.fixtures.console import ConsoleClient, Person, enrol
from tests.fixtures.gatewayserver import COURT, GUARDIAN, MEASURE, World, mail_subject
from tests.fixtures.gpgkeys import CourtKey

CSP = (
    "default-src 'self'; script-src 'self'; object-src 'none'; frame-ancestors 'none'; "
    "img-src 'self' data: blob:; frame-src blob:; base-uri 'none'; form-action 'self'"
)


@pytest.fixture
def filed(world: World) -> str:
    """A TJ-LYON request with one submission of two PDFs, filed by real SMTP."""
    with api(world, new_key(world, "admin")) as admin:
        return file_request(world, admin, COURT, MEASURE, documents=2)


@pytest.fixture
def clerk(world: World) -> Iterator[tuple[Person, ConsoleClient]]:
    person = enrol(world, "greffier@tj-lyon.example", "greffe", [COURT])
    client = ConsoleClient(world)
    client.login(person)
    yield person, client
    client.close()


def _audit(world: World, action: str) -> list[dict[str, object]]:
    page = world.gw.services.records.audit_events(0, 500, action)
    return page.items


def test_console_queue_and_request_page_mark_it_read(
    world: World, filed: str, clerk: tuple[Person, ConsoleClient]
) -> None:
    _person, client = clerk
    queue = client.get("/console/")
    assert queue.status_code == 200, queue.text
    row = queue.text.split(f">{filed}</a>")[0].rsplit("<tr", 1)[1]
    assert 'class="unread"' in row
    page = client.get(f"/console/requetes/{filed}")
    assert page.status_code == 200
    detail = world.gw.services.records.request(filed, None)
    for document in detail["submissions"][0]["documents"]:
        assert document["sha256"] in page.text
    assert "DKIM" in page.text and "exemple.fr" in page.text
    again = client.get("/console/")
    row = again.text.split(f">{filed}</a>")[0].rsplit("<tr", 1)[1]
    assert 'class="read"' in row
    # The encrypted bytes the page decrypts are the stored blob, scoped like the API's.
    blob = client.get(f"/console/requetes/{filed}/envois/1/documents/1")
    assert blob.status_code == 200
    assert blob.headers["content-type"] == "application/octet-stream"
    stored = world.gw.services.records.document_blob(f"{filed}/1", 1, None)
    assert blob.content == stored.data


def test_console_headers_and_cookie_flags(
    world: World, clerk: tuple[Person, ConsoleClient]
) -> None:
    _person, client = clerk
    page = client.get("/console/")
    assert page.headers["content-security-policy"] == CSP
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["cache-control"] == "no-store"
    cookie = page.headers.get("set-cookie", "")
    assert cookie.startswith("greffe_console=")
    lowered = cookie.lower()
    assert "httponly" in lowered and "samesite=strict" in lowered and "path=/console" in lowered
    assert "secure" not in lowered  # plain HTTP on loopback: a Secure cookie would never return
    assert "<script>" not in page.text and "style=" not in page.text  # CSP: nothing inline
    assert client.http.get("/").headers["location"] == "/console/"
    static = client.get("/console/static/console.css")
    assert static.status_code == 200 and static.headers["content-security-policy"] == CSP


def test_console_form_without_csrf_token_is_refused(
    world: World, filed: str, clerk: tuple[Person, ConsoleClient]
) -> None:
    _person, client = clerk
    client.get(f"/console/requetes/{filed}")
    bare = client.post(f"/console/requetes/{filed}/rejeter", {"reason": "x"}, csrf=False)
    assert bare.status_code == 403 and "Formulaire refusé" in bare.text
    forged = client.http.post(
        f"/console/requetes/{filed}/rejeter", data={"reason": "x", "csrf": "A" * 43}
    )
    assert forged.status_code == 403
    assert world.gw.services.records.request(filed, None)["status"] in ("open", "sealed")
    # A login form posted without a session (a cross-site login) is refused too.
    with httpx.Client(base_url=str(client.http.base_url)) as stranger:
        answer = stranger.post("/console/connexion", data={"email": "a@b.fr"})
        assert answer.status_code == 403


def test_console_reject_mails_the_notice_and_audits_the_user(
    world: World, filed: str, clerk: tuple[Person, ConsoleClient]
) -> None:
    person, client = clerk
    client.get(f"/console/requetes/{filed}")
    before = len(world.sink.messages)
    answer = client.post(
        f"/console/requetes/{filed}/rejeter",
        {"reason": "Le compte n'est pas signé.", "note-1-1": "page 3 illisible"},
    )
    page = client.follow(answer)
    assert "Requête rejetée" in page.text
    assert world.gw.services.records.request(filed, None)["status"] == "rejected"
    notice = world.sink.wait_for_mail(
        lambda mail: filed in mail_subject(mail) and GUARDIAN in mail[1], start=before, timeout=20
    )
    text = notice[2].decode("utf-8", "replace")
    assert "sign=C3=A9" in text or "signé" in text
    events = _audit(world, "request.rejected")
    assert events[-1]["actor"] == f"user:{person.user_id}"
    assert events[-1]["data"]["notes"] == ["1/1"]  # type: ignore[index]


def test_console_take_assigns_and_filters_mine(
    world: World, filed: str, clerk: tuple[Person, ConsoleClient]
) -> None:
    person, client = clerk
    client.get(f"/console/requetes/{filed}")
    client.follow(
        client.post(f"/console/requetes/{filed}/attribuer", {"assignee": str(person.user_id)})
    )
    mine = client.get("/console/", params={"moi": "1"})
    assert filed in mine.text
    assert _audit(world, "request.assigned")[-1]["actor"] == f"user:{person.user_id}"
    # Someone who is not a clerk of the court cannot be given it.
    client.get(f"/console/requetes/{filed}")
    refused = client.follow(
        client.post(f"/console/requetes/{filed}/attribuer", {"assignee": "999"})
    )
    assert "pas greffier de ce tribunal" in refused.text


@pytest.fixture
def two_courts(world: World) -> tuple[str, str]:
    """TJ75 and TJ13, each with one filed request: (TJ75's reference, TJ13's)."""
    admin_services = world.gw.services.admin
    refs = []
    with api(world, new_key(world, "admin")) as admin:
        for code in ("TJ75", "TJ13"):
            admin_services.add_court(code, f"Tribunal {code}", "test")
            admin_services.add_court_key(code, world.court_key.armored_public.encode(), "test")
            admin_services.add_registration(code, "21/00075", GUARDIAN, "test")
            refs.append(file_request(world, admin, code, "21/00075"))
    return refs[0], refs[1]


def test_console_other_courts_request_is_404_everywhere(
    world: World, two_courts: tuple[str, str]
) -> None:
    ref75, ref13 = two_courts
    person = enrol(world, "greffe13@tj13.example", "greffe", ["TJ13"])
    client = ConsoleClient(world)
    try:
        client.login(person)
        queue = client.get("/console/")
        assert ref13 in queue.text and ref75 not in queue.text
        unknown = "TJ75-2026-999999"
        for path in ("/console/requetes/{}", "/console/requetes/{}/envois/1/manifeste",
                     "/console/requetes/{}/envois/1/documents/1"):  # fmt: skip
            foreign, missing = client.get(path.format(ref75)), client.get(path.format(unknown))
            assert foreign.status_code == missing.status_code == 404, path
        for action in ("enregistrer", "rejeter", "attribuer"):
            client.get(f"/console/requetes/{ref13}")  # a page with this session's token
            answer = client.post(f"/console/requetes/{ref75}/{action}", {"reason": "x"})
            assert answer.status_code == 404, action
        assert world.gw.services.records.request(ref75, None)["status"] in ("open", "sealed")
        # Registrations: another court's list, export and registration are out of reach.
        assert client.get("/console/inscriptions", params={"tribunal": "TJ75"}).status_code == 404
        assert (
            client.get("/console/inscriptions/export", params={"tribunal": "TJ75"}).status_code
            == 404
        )
        listing = client.get("/console/inscriptions")
        assert "TJ75" not in listing.text
        foreign_id = world.gw.services.admin.list_registrations("TJ75")[0]["id"]
        listing = client.get("/console/inscriptions")
        assert listing.status_code == 200, listing.text
        assert client.post(f"/console/inscriptions/{foreign_id}/revoquer").status_code == 404
        # Administrators' pages are not for clerks.
        assert client.get("/console/admin/utilisateurs").status_code == 403
    finally:
        client.close()


def test_console_login_throttled_per_account_and_audited(world: World) -> None:
    person = enrol(world, "lente@tj-lyon.example", "greffe", [COURT])
    client = ConsoleClient(world)
    try:
        client.get("/console/connexion")
        for _ in range(5):
            wrong = client.post("/console/connexion", {"email": person.email, "password": "nope",
                                                       "code": "000000"})  # fmt: skip
            assert wrong.status_code == 401
            assert "incorrect" in wrong.text
        right = {"email": person.email, "password": person.password, "code": person.code(world)}
        assert client.post("/console/connexion", right).status_code == 429
        failures = _audit(world, "console.login_failed")
        assert len(failures) == 5 and failures[-1]["data"]["account_locked"] is True  # type: ignore[index]
        assert all("nope" not in json.dumps(event) for event in failures)
        world.gw.clock.advance(timedelta(minutes=16))
        right["code"] = person.code(world)
        assert client.post("/console/connexion", right).status_code == 303
    finally:
        client.close()


def test_console_totp_code_is_accepted_once(world: World) -> None:
    person = enrol(world, "rejoue@tj-lyon.example", "greffe", [COURT])
    first, second = ConsoleClient(world), ConsoleClient(world)
    try:
        code = person.code(world)
        for client in (first, second):
            client.get("/console/connexion")
        form = {"email": person.email, "password": person.password, "code": code}
        assert first.post("/console/connexion", form).status_code == 303
        assert second.post("/console/connexion", form).status_code == 401
        assert _audit(world, "console.login_failed")[-1]["data"]["reason"] == "code already used"  # type: ignore[index]
    finally:
        first.close()
        second.close()


def test_console_sessions_end_on_logout_idle_and_disable(
    world: World, clerk: tuple[Person, ConsoleClient]
) -> None:
    person, client = clerk
    copied = dict(client.http.cookies)
    client.follow(client.post("/console/deconnexion"))
    with httpx.Client(base_url=str(client.http.base_url), cookies=copied) as thief:
        assert thief.get("/console/").status_code == 303  # the copied cookie died with logout
    world.gw.clock.advance(timedelta(seconds=30))
    client.login(person)
    assert client.get("/console/").status_code == 200
    world.gw.clock.advance(timedelta(minutes=31))
    idle = client.get("/console/")
    assert idle.status_code == 303 and "/console/connexion" in idle.headers["location"]
    world.gw.clock.advance(timedelta(seconds=30))
    client.login(person)
    world.gw.services.users.disable(person.user_id, "test")
    assert client.get("/console/").status_code == 303


def test_console_registrations_add_import_export(
    world: World, clerk: tuple[Person, ConsoleClient]
) -> None:
    person, client = clerk
    client.get("/console/inscriptions")
    before = len(world.sink.messages)
    added = client.follow(client.post("/console/inscriptions", {
        "court": COURT, "measure": "22/00001", "address": "nouvelle@exemple.fr"}))  # fmt: skip
    assert "nouvelle@exemple.fr est inscrite" in added.text
    world.sink.wait_for_mail(lambda mail: mail[1] == ["nouvelle@exemple.fr"], start=before,
                             timeout=20)  # fmt: skip
    bad = "court,measure,address\nTJ-LYON,22/00002,a@exemple.fr\nTJ75,22/00003,b@exemple.fr\n"
    refused = client.post("/console/inscriptions/import",
                          files={"file": ("i.csv", bad.encode(), "text/csv")})  # fmt: skip
    assert refused.status_code == 422
    assert "rien n'a été importé" in refused.text and "tribunal inconnu : TJ75" in refused.text
    assert not [r for r in world.gw.services.admin.list_registrations(COURT)
                if r["address"] == "a@exemple.fr"]  # fmt: skip
    good = "court,measure,address\nTJ-LYON,22/00002,a@exemple.fr\n"
    imported = client.post("/console/inscriptions/import",
                           files={"file": ("i.csv", good.encode(), "text/csv")})  # fmt: skip
    assert imported.status_code == 200 and "1 inscription importée" in imported.text
    exported = client.get("/console/inscriptions/export", params={"tribunal": COURT})
    assert exported.headers["content-type"].startswith("text/csv")
    assert "a@exemple.fr" in exported.text and exported.text.startswith("court,measure,address")
    target = next(r for r in world.gw.services.admin.list_registrations(COURT)
                  if r["address"] == "a@exemple.fr")  # fmt: skip
    client.get("/console/inscriptions")
    revoked = client.follow(client.post(f"/console/inscriptions/{target['id']}/revoquer"))
    assert "révoquée" in revoked.text
    assert _audit(world, "registration.revoked")[-1]["actor"] == f"user:{person.user_id}"


def test_console_admin_pages(world: World) -> None:
    admin = enrol(world, "admin@greffe.example", "admin")
    client = ConsoleClient(world)
    try:
        client.login(admin)
        for path in ("tribunaux", "utilisateurs", "cles-api", "courriers", "journal"):
            assert client.get(f"/console/admin/{path}").status_code == 200, path
        made = client.post("/console/admin/utilisateurs", {
            "email": "neuf@tj-lyon.example", "role": "greffe", "courts": COURT})  # fmt: skip
        assert "/console/inscription/" in made.text and "ne sera plus affiché" in made.text
        key = client.post("/console/admin/cles-api", {"role": "greffe", "courts": COURT,
                                                      "name": "sync"})  # fmt: skip
        assert "gk_" in key.text
        refused = client.follow(client.post(f"/console/admin/tribunaux/{COURT}/cles",
                                            {"armored": "not a key"}))  # fmt: skip
        assert "Clé refusée" in refused.text
        verified = client.get("/console/admin/journal", params={"verifier": "1"})
        assert "Chaîne intacte" in verified.text
        outbox = client.get("/console/admin/courriers")
        assert "avis d&#39;inscription" in outbox.text or "avis d'inscription" in outbox.text
    finally:
        client.close()


def test_console_retires_a_court_key(world: World, second_court_key: CourtKey) -> None:
    world.gw.services.admin.add_court_key(COURT, second_court_key.armored_public.encode(), "t")
    first, second = world.court_key.fingerprint, second_court_key.fingerprint
    admin = enrol(world, "admin@greffe.example", "admin")
    client = ConsoleClient(world)
    try:
        client.login(admin)
        page = client.get("/console/admin/tribunaux")
        assert page.text.count("Retirer la clé") == 2 and "seule clé active" not in page.text
        keys = f"/console/admin/tribunaux/{COURT}/cles"
        retired = client.follow(client.post(f"{keys}/{first}/retirer"))
        assert f"Clé {first} retirée du tribunal {COURT}" in retired.text
        assert "retirée" in retired.text and retired.text.count("Retirer la clé") == 1
        assert "seule clé active" in retired.text  # the checkbox beside the last key
        kept = client.follow(client.post(f"{keys}/{second}/retirer"))
        assert "Clé non retirée" in kept.text
        assert f"seule clé active du tribunal {COURT}" in kept.text
        (court,) = [c for c in world.gw.services.admin.list_courts() if c["code"] == COURT]
        assert [k["fingerprint"] for k in court["keys"] if k["status"] == "active"] == [second]
        forced = client.follow(client.post(f"{keys}/{second}/retirer", {"last": "oui"}))
        assert "plus de clé active" in forced.text
        assert "Aucune clé active" in forced.text and "Retirer la clé" not in forced.text
        again = client.follow(client.post(f"{keys}/{second}/retirer", {"last": "oui"}))
        assert "est déjà retirée" in again.text
        csrf = client.post(f"{keys}/{first}/retirer", csrf=False)
        assert csrf.status_code == 403
    finally:
        client.close()
    events = _audit(world, "court.key_retired")
    assert [e["actor"] for e in events] == [f"user:{admin.user_id}"] * 2


def test_cli_users_add_list_disable(cli: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY__HTTP__PUBLIC_URL", "https://greffe.example/")
    cli("courts", "add", "TJ-LYON", "--name", "Tribunal judiciaire de Lyon")
    added = cli("users", "add", "--email", "Greffier@TJ-Lyon.example", "--role", "greffe",
                "--court", "tj-lyon")  # fmt: skip
    assert added.code == 0, added.err
    assert added.out.startswith("https://greffe.example/console/inscription/")
    assert "shown once" in added.err
    listed = json.loads(cli("users", "list", "--json").out)
    assert listed[0]["email"] == "greffier@tj-lyon.example"
    assert listed[0]["courts"] == ["TJ-LYON"] and listed[0]["state"] == "enrolment pending"
    assert "password" not in json.dumps(listed) and "totp" not in json.dumps(listed)
    assert cli("users", "add", "--email", "x@y.fr", "--role", "greffe").code == 1
    assert cli("users", "disable", str(listed[0]["id"])).code == 0
    assert json.loads(cli("users", "list", "--json").out)[0]["state"] == "disabled"
    assert cli("users", "disable", "99").code == 1


def test_console_schema_matches_the_models(db: Database) -> None:
    with db.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    tables = ("console_user", "read_mark", "request_assignment")
    ours = [d for d in diff if any(name in repr(d) for name in tables)]
    assert ours == []


def test_console_purge_takes_read_marks_and_assignment_with_the_request(
    world: World, filed: str, clerk: tuple[Person, ConsoleClient]
) -> None:
    person, client = clerk
    client.get(f"/console/requetes/{filed}")
    client.follow(
        client.post(f"/console/requetes/{filed}/attribuer", {"assignee": str(person.user_id)})
    )
    client.get(f"/console/requetes/{filed}")
    client.follow(client.post(f"/console/requetes/{filed}/rejeter", {"reason": "incomplet"}))
    services = world.gw.services
    retention = Retention(services.db, services.blobs, services.clock, 1)
    world.gw.clock.advance(timedelta(days=2))
    with services.db.reading() as session:
        assert session.scalar(select(func.count()).select_from(ReadMark)) == 1
    report = retention.purge("test")
    assert filed in [purged.reference for purged in report.purged]
    with services.db.reading() as session:
        for table in (ReadMark, RequestAssignment):
            assert session.scalar(select(func.count()).select_from(table)) == 0
