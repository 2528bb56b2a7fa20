"""greffe sync's pure logic: the API client's one-line errors and paging, and what it trusts.

The gateway is an httpx.MockTransport here and the keyring decrypts by
identity: the real gateway and gpg are in tests/integration/test_greffe_sync.py.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.greffe.apiclient import ApiAnswer, ApiRefused, GatewayUnreachable, GreffeApi
from gateway.greffe.sync import Syncer
from gateway.greffe.syncfolder import SyncFolder
from gateway.storage.crypto import GpgKeyring

URL = "http://gateway.test"
REF = "TJ-LYON-2026-000001"
PDF = b"%PDF-1.7\n" + b"x" * 100


def problem(status: int, detail: str) -> httpx.Response:
    body = {"type": "urn:x", "title": "t", "status": status, "detail": detail}
    return httpx.Response(status, json=body, headers={"content-type": "application/problem+json"})


def client(handler: Any) -> GreffeApi:
    return GreffeApi(URL, "gk_test", transport=httpx.MockTransport(handler))


@pytest.mark.parametrize(
    ("status", "error", "words"),
    [
        (401, ApiRefused, "API key refused by http://gateway.test (401)"),
        (403, ApiRefused, "may not do this"),
        (429, ApiRefused, "throttling"),
        (404, ApiAnswer, "answered 404 (unknown request X [2J)"),  # no escape reaches a tty
        (503, ApiAnswer, "answered 503"),
    ],
)
def test_statuses_become_one_line_errors(status: int, error: type[Exception], words: str) -> None:
    answer = problem(status, "unknown request X\x1b[2J")
    with client(lambda request: answer) as api, pytest.raises(error) as raised:
        api.request(REF)
    message = str(raised.value)
    assert "\n" not in message and "\x1b[" not in message
    assert words in message


def test_connection_refused_names_the_url() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again before the call: nothing listens
    with (
        GreffeApi(f"http://127.0.0.1:{port}/", "gk_test") as api,
        pytest.raises(GatewayUnreachable) as raised,
    ):
        list(api.requests(None, None))
    assert str(raised.value) == f"cannot reach http://127.0.0.1:{port}: connection refused"


def test_something_that_is_not_the_api_is_said_so() -> None:
    with (
        client(lambda request: httpx.Response(200, text="<html>")) as api,
        pytest.raises(ApiAnswer, match="does not answer like the gateway API"),
    ):
        list(api.requests(None, None))


def test_listing_follows_cursors_with_filters() -> None:
    seen: list[dict[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        params = dict(request.url.params)
        seen.append(params)
        if "cursor" not in params:
            return httpx.Response(200, json={"items": [{"reference": "A"}], "next_cursor": "c1"})
        return httpx.Response(200, json={"items": [{"reference": "B"}], "next_cursor": None})

    with client(handler) as api:
        listed = [item["reference"] for item in api.requests("TJ75", "2026-01-01T00:00:00+00:00")]
    assert listed == ["A", "B"]
    assert seen[1] == {
        "limit": "500", "court": "TJ75", "since": "2026-01-01T00:00:00+00:00", "cursor": "c1"
    }  # fmt: skip


def test_blob_whose_bytes_differ_from_their_repr_digest_is_refused() -> None:
    digest = base64.b64encode(hashlib.sha256(b"sent").digest()).decode()
    answer = httpx.Response(
        200, content=b"received", headers={"Repr-Digest": f"sha-256=:{digest}:"}
    )
    with client(lambda request: answer) as api, pytest.raises(ApiAnswer, match="Repr-Digest"):
        api.blob("/api/v1/submissions/X/1/message")


class IdentityKeyring(GpgKeyring):
    """Decrypts by handing the bytes back: the blobs below are the clear text."""

    def __init__(self) -> None:  # no GnuPG home: nothing here runs gpg
        pass

    def decrypt(self, data: bytes) -> bytes:
        return data


def fake_gateway(reference: str, filename: str) -> dict[str, Any]:
    """The answers of one gateway holding one request of one submission with one document."""
    sha = hashlib.sha256(PDF).hexdigest()
    raw = b"From: x\r\n\r\nbody\r\n"
    raw_sha = hashlib.sha256(raw).hexdigest()
    document = {"index": 1, "detected_type": "application/pdf", "size": len(PDF), "sha256": sha}
    submission = {"reference": f"{reference}/1", "number": 1, "raw_sha256": raw_sha,
                  "documents": [document]}  # fmt: skip
    entry = {"index": 1, "filename": filename, "sha256": sha, "detected_type": "application/pdf"}
    manifest = {"submission_reference": f"{reference}/1", "message": {"sha256": raw_sha},
                "documents": [entry]}  # fmt: skip
    base = f"/api/v1/submissions/{reference}/1"
    return {
        "/api/v1/requests": {
            "items": [
                {
                    "reference": reference,
                    "submissions_count": 1,
                    "status": "sealed",
                    "updated_at": "2026-01-01T00:00:00Z",
                }
            ],
            "next_cursor": None,
        },
        f"/api/v1/requests/{reference}": {"reference": reference, "submissions": [submission]},
        f"/api/v1/requests/{reference}/manifest": {
            "reference": reference,
            "status": "sealed",
            "submissions": [{"reference": f"{reference}/1"}],
        },
        f"{base}/manifest": json.dumps(manifest).encode(),
        f"{base}/message": raw,
        f"{base}/documents/1": PDF,
    }


def sync_against(answers: dict[str, Any], out: Path, *, acknowledge: bool = False) -> Any:
    def handler(request: httpx.Request) -> httpx.Response:
        found = answers.get(request.url.path)
        if found is None:
            return problem(404, "not found")
        if isinstance(found, httpx.Response):
            return found
        if isinstance(found, bytes):
            return httpx.Response(200, content=found)
        return httpx.Response(200, json=found)

    folder = SyncFolder(out)
    with client(handler) as api:
        syncer = Syncer(api, IdentityKeyring(), folder, acknowledge=acknowledge)
        return syncer.run([], syncer.listing([]))


def test_filename_from_the_manifest_cannot_leave_the_documents_folder(tmp_path: Path) -> None:
    report = sync_against(fake_gateway(REF, "../../..\\evil\x07\u202e.pdf"), tmp_path)
    assert report.errors == []
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.pdf"))
    assert len(written) == 1 and written[0].startswith(f"{REF}/1/documents/01-")
    assert "\x07" not in written[0] and "\u202e" not in written[0] and ".." not in written[0]


def test_a_reference_from_the_wire_that_is_a_path_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    report = sync_against(fake_gateway("../escape", "a.pdf"), out)
    assert [error["reference"] for error in report.errors] == ["../escape"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert [p.name for p in out.iterdir() if p.name != ".sync.lock"] == []


def test_a_document_whose_size_differs_from_the_apis_is_not_written(tmp_path: Path) -> None:
    answers = fake_gateway(REF, "a.pdf")
    answers[f"/api/v1/requests/{REF}"]["submissions"][0]["documents"][0]["size"] += 1
    report = sync_against(answers, tmp_path)
    assert report.errors == [
        {
            "reference": REF,
            "error": f"{REF}/1 document 1: size differs from the API's; nothing written",
        }
    ]
    assert not (tmp_path / REF).exists()


def test_acknowledge_answered_409_is_no_error_and_not_counted(tmp_path: Path) -> None:
    """A colleague decided the request between our listing and our acknowledge."""
    answers = fake_gateway(REF, "a.pdf")
    answers[f"/api/v1/requests/{REF}/acknowledge"] = problem(409, f"request {REF} is accepted")
    answers[f"/api/v1/requests/{REF}"]["status"] = "accepted"
    report = sync_against(answers, tmp_path, acknowledge=True)
    assert report.errors == [] and report.acknowledged == []
    assert [item["reference"] for item in report.synced] == [REF]
    answers[f"/api/v1/requests/{REF}/acknowledge"] = problem(422, "refused")
    report = sync_against(answers, tmp_path, acknowledge=True)
    assert report.up_to_date == 1
    assert report.errors == [
        {
            "reference": REF,
            "error": f"{REF}: acknowledge refused: /api/v1/requests/{REF}/acknowledge: "
            "the gateway answered 422 (refused)",
        }
    ]
