"""Role and court scoping over a real `serve`: a TJ75 greffe key sees nothing of TJ13.

Another court's request answers 404 exactly like a reference that does not
exist (never 403), on every route that takes a reference, so references
cannot be probed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.fixtures.apiclient import api, file_request, new_key
from tests.fixtures.gatewayserver import GUARDIAN, World

MEASURE = "21/00075"


@dataclass
class TwoCourts:
    world: World
    admin: httpx.Client
    greffe75: httpx.Client
    ref75: str
    ref13: str


@pytest.fixture
def two_courts(world: World) -> Iterator[TwoCourts]:
    with api(world, new_key(world, "admin")) as admin:
        for code in ("TJ75", "TJ13"):
            assert (
                admin.post("/api/v1/courts", json={"code": code, "name": code}).status_code == 201
            )
            armored = world.court_key.armored_public
            answer = admin.post(f"/api/v1/courts/{code}/keys", json={"armored": armored})
            assert answer.status_code == 201, answer.text
            registration = {"court": code, "measure": MEASURE, "address": GUARDIAN}
            assert admin.post("/api/v1/registrations", json=registration).status_code == 201
        ref75 = file_request(world, admin, "TJ75", MEASURE)
        ref13 = file_request(world, admin, "TJ13", MEASURE)
        with api(world, new_key(world, "greffe", ["TJ75"])) as greffe75:
            yield TwoCourts(world, admin, greffe75, ref75, ref13)


def test_greffe_key_lists_only_its_court(two_courts: TwoCourts) -> None:
    listed = two_courts.greffe75.get("/api/v1/requests").json()
    assert [item["reference"] for item in listed["items"]] == [two_courts.ref75]
    # Asking for the other court by name gives an empty page, not an error.
    other = two_courts.greffe75.get("/api/v1/requests", params={"court": "TJ13"}).json()
    assert other == {"items": [], "next_cursor": None}
    courts = two_courts.greffe75.get("/api/v1/courts").json()
    assert [court["code"] for court in courts] == ["TJ75"]
    # The admin key sees both courts.
    everything = two_courts.admin.get("/api/v1/requests").json()["items"]
    assert {two_courts.ref75, two_courts.ref13} <= {item["reference"] for item in everything}


REFERENCE_ROUTES = [
    ("GET", "/api/v1/requests/{ref}"),
    ("GET", "/api/v1/requests/{ref}/manifest"),
    ("GET", "/api/v1/submissions/{ref}/1/message"),
    ("GET", "/api/v1/submissions/{ref}/1/manifest"),
    ("GET", "/api/v1/submissions/{ref}/1/documents/1"),
    ("POST", "/api/v1/requests/{ref}/accept"),  # open: 409 for its own court
    ("POST", "/api/v1/requests/{ref}/acknowledge"),
]


def test_other_courts_reference_answers_404_like_an_unknown_one(two_courts: TwoCourts) -> None:
    client = two_courts.greffe75
    for method, path in REFERENCE_ROUTES:
        foreign = client.request(method, path.format(ref=two_courts.ref13))
        unknown = client.request(method, path.format(ref="TJ75-2026-999999"))
        assert foreign.status_code == unknown.status_code == 404, path
        assert foreign.headers["content-type"] == "application/problem+json"
        # The same answer but for the reference itself: nothing tells the two apart.
        same = foreign.json()["detail"].replace(two_courts.ref13, "R")
        assert same == unknown.json()["detail"].replace("TJ75-2026-999999", "R"), path
        # Its own court's request does answer on the same route.
        own = client.request(method, path.format(ref=two_courts.ref75))
        assert own.status_code in (200, 409), (path, own.text)
    # Nothing of TJ13 moved: the acknowledge above was refused.
    assert two_courts.admin.get(f"/api/v1/requests/{two_courts.ref13}").json()["status"] == "open"


def test_reject_of_other_courts_request_is_404_and_changes_nothing(two_courts: TwoCourts) -> None:
    answer = two_courts.greffe75.post(
        f"/api/v1/requests/{two_courts.ref13}/reject", json={"reason": "incomplet"}
    )
    assert answer.status_code == 404
    seen = two_courts.admin.get(f"/api/v1/requests/{two_courts.ref13}").json()
    assert seen["status"] in ("open", "sealed")


def test_other_court_by_code_is_404(two_courts: TwoCourts) -> None:
    assert two_courts.greffe75.get("/api/v1/courts/TJ13").status_code == 404
    assert two_courts.greffe75.get("/api/v1/courts/TJ75").status_code == 200


ADMIN_ROUTES = [
    ("GET", "/api/v1/registrations", None),
    ("POST", "/api/v1/registrations", {"court": "TJ75", "measure": "1", "address": "a@b.fr"}),
    ("POST", "/api/v1/registrations/1/revoke", None),
    ("POST", "/api/v1/courts", {"code": "TJ99", "name": "x"}),
    ("POST", "/api/v1/courts/TJ75/keys", {"armored": "x"}),
    ("POST", "/api/v1/codes", {"court": "TJ75", "measure": MEASURE, "address": GUARDIAN}),
    ("GET", "/api/v1/audit", None),
    ("GET", "/api/v1/audit/verify", None),
]


def test_greffe_key_refused_admin_routes(two_courts: TwoCourts) -> None:
    for method, path, body in ADMIN_ROUTES:
        answer = two_courts.greffe75.request(method, path, json=body)
        assert answer.status_code == 403, path
        assert answer.json()["type"].endswith(":forbidden")
