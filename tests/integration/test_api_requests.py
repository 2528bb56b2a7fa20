"""Requests over the HTTP API of a real `serve`: listings, one request, the blobs, the review.

Filings go in by real SMTP; the encrypted blobs that come out are decrypted
with the court's private key (real gpg) and checked against the hashes the
API gives in clear.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from gateway.storage.crypto import GpgKeyring
from tests.fixtures.apiclient import PDF, api, file_request, new_key
from tests.fixtures.gatewayserver import COURT, MEASURE, World


@dataclass
class Filed:
    world: World
    admin: httpx.Client
    references: list[str]


@pytest.fixture
def filed(world: World) -> Iterator[Filed]:
    with api(world, new_key(world, "admin")) as admin:
        references = [
            file_request(world, admin, COURT, MEASURE, kind="compte", documents=2),
            file_request(world, admin, COURT, MEASURE, kind="inventaire"),
            file_request(world, admin, COURT, MEASURE, kind="compte"),
        ]
        yield Filed(world, admin, references)


def test_list_pages_with_cursor_and_filters(filed: Filed) -> None:
    admin = filed.admin
    first = admin.get("/api/v1/requests", params={"limit": 2}).json()
    assert [item["reference"] for item in first["items"]] == filed.references[:2]
    assert first["next_cursor"]
    second = admin.get(
        "/api/v1/requests", params={"limit": 2, "cursor": first["next_cursor"]}
    ).json()
    assert [item["reference"] for item in second["items"]] == filed.references[2:]
    assert second["next_cursor"] is None

    comptes = admin.get("/api/v1/requests", params={"kind": "compte"}).json()["items"]
    assert [item["reference"] for item in comptes] == [filed.references[0], filed.references[2]]
    assert admin.get("/api/v1/requests", params={"status": "received"}).json()["items"] == []
    assert len(admin.get("/api/v1/requests", params={"court": "tj-lyon"}).json()["items"]) == 3
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert admin.get("/api/v1/requests", params={"since": later}).json()["items"] == []
    earlier = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    assert len(admin.get("/api/v1/requests", params={"since": earlier}).json()["items"]) == 3


def test_list_refuses_bad_filters_naming_them(filed: Filed) -> None:
    admin = filed.admin
    for params, field in (
        ({"status": "lost"}, "status"),
        ({"kind": "letter"}, "kind"),
        ({"since": "2026-01-01T00:00:00"}, "since"),  # no offset: ambiguous
        ({"limit": "0"}, "limit"),
    ):
        answer = admin.get("/api/v1/requests", params=params)
        assert answer.status_code == 422, params
        assert answer.json()["errors"][0]["field"] == field
    bad_cursor = admin.get("/api/v1/requests", params={"cursor": "bm9wZQ"})
    assert bad_cursor.status_code == 422 and "cursor" in bad_cursor.json()["detail"]


def test_one_request_holds_submissions_and_documents_in_clear(filed: Filed) -> None:
    found = filed.admin.get(f"/api/v1/requests/{filed.references[0]}").json()
    assert found["court"] == COURT and found["measure"] == MEASURE and found["kind"] == "compte"
    (submission,) = found["submissions"]
    assert submission["reference"] == f"{filed.references[0]}/1"
    assert [doc["index"] for doc in submission["documents"]] == [1, 2]
    for document in submission["documents"]:
        assert document["sha256"] == hashlib.sha256(PDF).hexdigest()
        assert document["size"] == len(PDF)
        assert document["detected_type"] == "application/pdf"
    # Nothing the sender wrote is in clear: no filename, no subject.
    assert "piece" not in json.dumps(found) and "Compte [" not in json.dumps(found)
    manifest = filed.admin.get(f"/api/v1/requests/{filed.references[0]}/manifest").json()
    assert manifest["schema"] == "gateway.request/1"
    assert [s["reference"] for s in manifest["submissions"]] == [submission["reference"]]


def test_blobs_are_the_stored_openpgp_bytes_and_decrypt_to_what_was_filed(filed: Filed) -> None:
    reference = filed.references[0]
    detail = filed.admin.get(f"/api/v1/requests/{reference}").json()["submissions"][0]
    base = f"/api/v1/submissions/{reference}/1"
    with GpgKeyring(filed.world.court_key.gnupghome) as keyring:
        message = filed.admin.get(f"{base}/message")
        assert message.headers["content-type"] == "application/octet-stream"
        digest = base64.b64encode(hashlib.sha256(message.content).digest()).decode()
        assert message.headers["repr-digest"] == f"sha-256=:{digest}:"
        assert b"piece" not in message.content  # encrypted, not the raw mail
        raw = keyring.decrypt(message.content)
        assert hashlib.sha256(raw).hexdigest() == detail["raw_sha256"]

        document = keyring.decrypt(filed.admin.get(f"{base}/documents/2").content)
        assert document == PDF
        manifest = json.loads(keyring.decrypt(filed.admin.get(f"{base}/manifest").content))
        assert manifest["submission_reference"] == f"{reference}/1"
        assert [doc["filename"] for doc in manifest["documents"]] == ["piece 0.pdf", "piece 1.pdf"]
    assert filed.admin.get(f"{base}/documents/3").status_code == 404
    assert filed.admin.get(f"/api/v1/submissions/{reference}/2/message").status_code == 404


def test_review_moves_through_statuses_and_refuses_wrong_ones(filed: Filed) -> None:
    with api(filed.world, new_key(filed.world, "greffe", [COURT])) as greffe:
        first, second = filed.references[:2]
        early = greffe.post(f"/api/v1/requests/{first}/accept")
        assert early.status_code == 409
        assert early.json()["type"].endswith(":wrong-status") and "open" in early.json()["detail"]

        acknowledged = greffe.post(f"/api/v1/requests/{first}/acknowledge")
        assert acknowledged.status_code == 200
        assert acknowledged.json()["status"] == "received"
        accepted = greffe.post(f"/api/v1/requests/{first}/accept").json()
        assert accepted == {
            "reference": first, "court": COURT, "status": "accepted", "status_reason": None
        }  # fmt: skip
        again = greffe.post(f"/api/v1/requests/{first}/acknowledge")
        assert again.status_code == 409 and "accepted" in again.json()["detail"]

        assert greffe.post(f"/api/v1/requests/{second}/acknowledge").status_code == 200
        no_reason = greffe.post(f"/api/v1/requests/{second}/reject", json={})
        assert no_reason.status_code == 422 and no_reason.json()["errors"][0]["field"] == "reason"
        for notes, status in (({"x": "?"}, 422), ({"9/9": "?"}, 422)):
            refused = greffe.post(
                f"/api/v1/requests/{second}/reject", json={"reason": "r", "notes": notes}
            )
            assert refused.status_code == status, refused.text
        rejected = greffe.post(
            f"/api/v1/requests/{second}/reject",
            json={"reason": "Pièce 2 illisible", "notes": {"1/1": "scan trop pâle"}},
        )
        assert rejected.status_code == 200, rejected.text
        assert rejected.json()["status_reason"] == "Pièce 2 illisible"
    listed = filed.admin.get("/api/v1/requests", params={"status": "rejected"}).json()["items"]
    assert [item["reference"] for item in listed] == [second]
    # Each move is in the audit trail under the key that made it.
    events = filed.admin.get("/api/v1/audit", params={"action": "request.accepted"}).json()
    assert [event["subject"] for event in events["items"]] == [first]
    assert events["items"][0]["actor"].startswith("api-key:")
