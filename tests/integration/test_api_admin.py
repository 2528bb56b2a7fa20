"""Administration over the HTTP API of a real `serve`: courts, keys, registrations, codes, audit."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.fixtures.apiclient import api, mail_code, new_key
from tests.fixtures.gatewayserver import COURT, GUARDIAN, MEASURE, World
from tests.fixtures.gpgkeys import CourtKey


@pytest.fixture
def admin(world: World) -> Iterator[httpx.Client]:
    with api(world, new_key(world, "admin")) as client:
        yield client


def registration_count(admin: httpx.Client) -> int:
    return len(admin.get("/api/v1/registrations", params={"limit": 500}).json()["items"])


def test_courts_and_keys(world: World, admin: httpx.Client) -> None:
    created = admin.post("/api/v1/courts", json={"code": "tj-paris", "name": "TJ de Paris"})
    assert created.status_code == 201
    assert created.json()["code"] == "TJ-PARIS" and created.json()["keys"] == []
    duplicate = admin.post("/api/v1/courts", json={"code": "TJ-PARIS", "name": "again"})
    assert duplicate.status_code == 409 and "already exists" in duplicate.json()["detail"]
    armored = world.court_key.armored_public
    added = admin.post("/api/v1/courts/TJ-PARIS/keys", json={"armored": armored})
    assert added.status_code == 201
    assert added.json()["fingerprint"] == world.court_key.fingerprint.upper()
    assert admin.get("/api/v1/courts/tj-paris").json()["keys"][0]["status"] == "active"
    garbage = admin.post("/api/v1/courts/TJ-PARIS/keys", json={"armored": "not a key"})
    assert garbage.status_code == 422 and garbage.json()["type"].endswith(":key-refused")
    nowhere = admin.post("/api/v1/courts/TJ-NOWHERE/keys", json={"armored": armored})
    assert nowhere.status_code == 404
    assert [court["code"] for court in admin.get("/api/v1/courts").json()] == [COURT, "TJ-PARIS"]


def test_retire_a_court_key(world: World, admin: httpx.Client, second_court_key: CourtKey) -> None:
    first, keys = world.court_key.fingerprint, f"/api/v1/courts/{COURT}/keys"
    added = admin.post(keys, json={"armored": second_court_key.armored_public})
    assert added.status_code == 201
    spaced = " ".join(first[i : i + 4] for i in range(0, len(first), 4)).lower()
    retired = admin.post(f"{keys}/{spaced}/retire")
    assert retired.status_code == 200, retired.text
    assert {k["fingerprint"]: k["status"] for k in retired.json()["keys"]} == {
        first: "retired",
        second_court_key.fingerprint: "active",
    }
    again = admin.post(f"{keys}/{first}/retire")
    assert again.status_code == 409 and "already retired" in again.json()["detail"]
    last = f"{keys}/{second_court_key.fingerprint}/retire"
    kept = admin.post(last)
    assert kept.status_code == 409 and "only active key" in kept.json()["detail"]
    forced = admin.post(last, params={"force": "true"})
    assert forced.status_code == 200
    assert {k["status"] for k in forced.json()["keys"]} == {"retired"}
    back = admin.post(keys, json={"armored": world.court_key.armored_public})
    assert back.status_code == 409 and "was retired" in back.json()["detail"]
    unknown = admin.post(f"{keys}/{'A' * 40}/retire")
    assert unknown.status_code == 404
    malformed = admin.post(f"{keys}/not-hex/retire")
    assert malformed.status_code in (400, 422) and "fingerprint" in malformed.json()["detail"]
    with api(world, new_key(world, "greffe", [COURT])) as greffe:
        assert greffe.post(f"{keys}/{first}/retire").status_code == 403
    events = admin.get("/api/v1/audit", params={"action": "court.key_retired"}).json()
    assert [e["data"]["active_keys_left"] for e in events["items"]] == [1, 0]


def test_registrations_add_revoke_and_page(admin: httpx.Client) -> None:
    for number in range(5):
        body = {"court": COURT, "measure": f"22/{number}", "address": f"t{number}@exemple.fr"}
        assert admin.post("/api/v1/registrations", json=body).status_code == 201
    again = admin.post(
        "/api/v1/registrations",
        json={"court": COURT, "measure": "22/0", "address": "T0@exemple.fr"},
    )
    assert again.status_code == 409  # local parts compare case-insensitively
    bad = admin.post("/api/v1/registrations", json={"court": COURT, "measure": "x", "address": "@"})
    assert bad.status_code == 422 and "address" in bad.json()["detail"]

    seen, cursor = [], None
    while True:
        page = admin.get("/api/v1/registrations", params={"limit": 2, "cursor": cursor}).json()
        seen += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 6 and len({item["id"] for item in seen}) == 6  # the world's one too

    target = seen[-1]["id"]
    revoked = admin.post(f"/api/v1/registrations/{target}/revoke")
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
    assert admin.post(f"/api/v1/registrations/{target}/revoke").status_code == 409
    assert admin.post("/api/v1/registrations/999999/revoke").status_code == 404
    active = admin.get("/api/v1/registrations", params={"status": "active"}).json()["items"]
    assert target not in {item["id"] for item in active}


def test_csv_import_is_all_or_nothing_with_line_errors(admin: httpx.Client) -> None:
    before = registration_count(admin)
    csv = (
        "court,measure,address\n"
        f"{COURT},23/1,a@exemple.fr\n"
        "TJ-NOWHERE,23/2,b@exemple.fr\n"
        f"{COURT},23/3,not an address\n"
        f"{COURT},23/1,A@exemple.fr\n"
    )
    refused = admin.post(
        "/api/v1/registrations/import", content=csv, headers={"content-type": "text/csv"}
    )
    assert refused.status_code == 422
    body = refused.json()
    assert body["type"].endswith(":import-refused")
    assert [problem["line"] for problem in body["problems"]] == [3, 4, 5]
    assert "unknown court TJ-NOWHERE" in body["problems"][0]["problem"]
    assert registration_count(admin) == before  # nothing half-written

    good = "court,measure,address\n" + "".join(
        f"{COURT},24/{n},g{n}@exemple.fr\n" for n in range(50)
    )
    imported = admin.post(
        "/api/v1/registrations/import", content=good, headers={"content-type": "text/csv"}
    )
    assert imported.status_code == 201 and imported.json() == {"imported": 50}
    assert registration_count(admin) == before + 50


def test_csv_import_bad_header_wrong_type_and_oversize(world: World, admin: httpx.Client) -> None:
    before = registration_count(admin)
    no_header = admin.post(
        "/api/v1/registrations/import", content="a,b\n1,2\n", headers={"content-type": "text/csv"}
    )
    assert no_header.status_code == 422 and "header" in no_header.json()["detail"]
    as_json = admin.post("/api/v1/registrations/import", json={"court": COURT})
    assert as_json.status_code == 415
    limit = world.gw.services.settings.http.max_body_bytes
    line = f"{COURT},25/1,big@exemple.fr\n"
    huge = "court,measure,address\n" + line * (limit // len(line) + 1)
    too_big = admin.post(
        "/api/v1/registrations/import", content=huge, headers={"content-type": "text/csv"}
    )
    assert too_big.status_code == 413
    assert str(limit) in too_big.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: refused once past the limit
        yield b"court,measure,address\n"
        for _ in range(limit // 65536 + 2):
            yield line.encode() * (65536 // len(line))

    streamed = admin.post(
        "/api/v1/registrations/import", content=chunks(), headers={"content-type": "text/csv"}
    )
    assert streamed.status_code == 413
    assert registration_count(admin) == before


def test_codes_always_202_and_mail_only_a_registration(world: World, admin: httpx.Client) -> None:
    code = mail_code(world, admin, COURT, MEASURE, "compte")
    assert len(code) == 11
    mails = len(world.sink.messages)
    for body in (
        {"court": COURT, "measure": "99/999", "address": GUARDIAN},
        {"court": "TJ-NOWHERE", "measure": MEASURE, "address": GUARDIAN},
        {"court": COURT, "measure": MEASURE, "address": "stranger@exemple.fr"},
    ):
        answer = admin.post("/api/v1/codes", json=body)
        assert answer.status_code == 202 and answer.json() == {"status": "accepted"}
    malformed = admin.post("/api/v1/codes", json={"court": COURT, "measure": MEASURE})
    assert malformed.status_code == 422 and malformed.json()["errors"][0]["field"] == "address"
    wrong_kind = admin.post(
        "/api/v1/codes",
        json={"court": COURT, "measure": MEASURE, "address": GUARDIAN, "kind": "lettre"},
    )
    assert wrong_kind.status_code == 422
    ignored = admin.get("/api/v1/audit", params={"action": "code.request_ignored"}).json()
    assert len(ignored["items"]) == 3
    assert len(world.sink.messages) == mails  # nothing mailed for the three


def test_audit_lists_in_order_and_verify_names_a_tampered_event(
    world: World, admin: httpx.Client, db_url: str
) -> None:
    admin.post("/api/v1/courts", json={"code": "TJ-A", "name": "A"})
    admin.post("/api/v1/courts", json={"code": "TJ-B", "name": "B"})
    events, cursor = [], None
    while True:
        page = admin.get("/api/v1/audit", params={"limit": 3, "cursor": cursor}).json()
        events += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [event["seq"] for event in events] == list(range(1, len(events) + 1))
    assert all(b["prev_sha256"] == a["sha256"] for a, b in itertools.pairwise(events))
    assert admin.get("/api/v1/audit/verify").json() == {
        "ok": True, "events": len(events), "broken_seq": None, "reason": ""
    }  # fmt: skip
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE audit_event SET actor = 'someone-else' WHERE seq = 2"))
    engine.dispose()
    broken = admin.get("/api/v1/audit/verify").json()
    assert broken["ok"] is False and broken["broken_seq"] == 2
