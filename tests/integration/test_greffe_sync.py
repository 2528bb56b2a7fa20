"""`gateway greffe sync` against a real `serve`: what it writes, re-runs, kills, tampering, keys.

Filings go in by real SMTP. The sync runs as the greffe would run it: a
subprocess with no gateway configuration (no GATEWAY_* variable, a working
directory of its own) and a GnuPG home of its own holding the court's
private key, imported from the court key pair's home.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import gnupg
import httpx
import pytest

from gateway.storage.blobstore import BlobStore
from gateway.storage.crypto import Encryptor
from gateway.storage.submissions import SubmissionRepository
from tests.fixtures.apiclient import PDF, api, base_url, file_request, new_key
from tests.fixtures.gatewayserver import COURT, GUARDIAN, MEASURE, World
from tests.fixtures.gpgkeys import export_secret, kill_agent, make_gnupghome
from tests.fixtures.pdfs import plain_pdf

OTHER_PDF = plain_pdf(filler=4000)


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """SQLite only: sync sees the API, whichever database is behind it (the API tests run both)."""
    return f"sqlite:///{tmp_path / 'db' / 'gateway.db'}"


@dataclass
class Greffe:
    """The greffe's machine: its GnuPG home with the court's private key, its key file, its out."""

    world: World
    admin: httpx.Client
    home: Path
    gnupghome: Path
    key_file: Path
    out: Path

    def command(self, *extra: str, url: str | None = None) -> list[str]:
        return [
            sys.executable, "-m", "gateway", "greffe", "sync",
            "--url", url or base_url(self.world), "--api-key-file", str(self.key_file),
            "--gnupghome", str(self.gnupghome), "--out", str(self.out), *extra,
        ]  # fmt: skip

    def env(self, **extra: str) -> dict[str, str]:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY")}
        return {**clean, **extra}

    def sync(self, *extra: str, url: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(*extra, url=url), cwd=self.home, env=self.env(),
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    def sync_json(self, *extra: str, url: str | None = None) -> tuple[int, dict[str, object], str]:
        done = self.sync("--json", *extra, url=url)
        return done.returncode, json.loads(done.stdout), done.stderr

    def use_key(self, key: str) -> None:
        self.key_file.write_text(key + "\n")


@pytest.fixture
def greffe(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Greffe]:
    # Short: gpg-agent's sockets live in the GnuPG home, and a Unix socket's path is
    # at most 107 bytes (a pytest-xdist worker's tmp_path is too long for it).
    home = tmp_path_factory.mktemp("g")
    gnupghome = make_gnupghome(home)
    secret = export_secret(world.court_key.gnupghome, world.court_key.fingerprint)
    assert gnupg.GPG(gnupghome=str(gnupghome)).import_keys(secret).sec_imported == 1
    key_file = home / "api-key"
    with api(world, new_key(world, "admin")) as admin:
        greffe = Greffe(world, admin, home, gnupghome, key_file, home / "depots")
        greffe.use_key(new_key(world, "greffe", [COURT]))
        try:
            yield greffe
        finally:
            kill_agent(gnupghome)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def visible(out: Path) -> list[str]:
    return sorted(entry.name for entry in out.iterdir() if not entry.name.startswith("."))


def hidden_folders(out: Path) -> list[str]:
    return sorted(e.name for e in out.iterdir() if e.name.startswith(".") and e.is_dir())


def test_first_sync_writes_each_request_and_documents_hash_as_sent(greffe: Greffe) -> None:
    first = file_request(greffe.world, greffe.admin, COURT, MEASURE, documents=2)
    second = file_request(greffe.world, greffe.admin, COURT, MEASURE, kind="inventaire")
    done = greffe.sync()
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        "synced 2 requests (3 documents), 0 already up to date, 0 errors"
    )
    assert visible(greffe.out) == [first, second]
    folder = greffe.out / first
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["reference"] == first and manifest["schema"] == "gateway.request/1"
    assert [s["folder"] for s in manifest["submissions"]] == ["1"]
    documents = sorted(p.name for p in (folder / "1" / "documents").iterdir())
    assert documents == ["01-piece 0.pdf", "02-piece 1.pdf"]
    for name in documents:
        assert sha256(folder / "1" / "documents" / name) == hashlib.sha256(PDF).hexdigest()
    detail = greffe.admin.get(f"/api/v1/requests/{first}").json()["submissions"][0]
    assert sha256(folder / "1" / "message.eml") == detail["raw_sha256"]
    submission = json.loads((folder / "1" / "manifest.json").read_text())
    assert submission["submission_reference"] == f"{first}/1"
    assert (greffe.out / ".sync-state.json").is_file()
    # Synced without acknowledging: the gateway still shows them as they were.
    assert greffe.admin.get(f"/api/v1/requests/{first}").json()["status"] in ("open", "sealed")


def test_rerun_fetches_nothing_new_and_a_new_submission_refreshes_its_request(
    greffe: Greffe,
) -> None:
    code = greffe.world.request_code("compte")
    reference = submit(greffe.world, code, PDF).split("/")[0]
    other = file_request(greffe.world, greffe.admin, COURT, MEASURE)
    assert greffe.sync().returncode == 0
    untouched = (greffe.out / other / "1" / "message.eml").stat().st_ino

    code_, again, _ = greffe.sync_json()
    assert code_ == 0
    assert again["synced"] == [] and again["up_to_date"] == 2 and again["errors"] == []
    assert (greffe.out / other / "1" / "message.eml").stat().st_ino == untouched

    assert submit(greffe.world, code, OTHER_PDF) == f"{reference}/2"
    code_, refreshed, _ = greffe.sync_json()
    assert code_ == 0
    assert refreshed["synced"] == [{"reference": reference, "submissions": 2, "documents": 2}]
    second_doc = greffe.out / reference / "2" / "documents" / "01-piece 1.pdf"
    assert sha256(second_doc) == hashlib.sha256(OTHER_PDF).hexdigest()
    assert (greffe.out / reference / "1" / "documents" / "01-piece 1.pdf").read_bytes() == PDF
    assert (greffe.out / other / "1" / "message.eml").stat().st_ino == untouched
    assert hidden_folders(greffe.out) == []


def submit(world: World, code: str, pdf: bytes) -> str:
    raw = world.gw.message(
        subject=f"Compte [{code}]", attachments=[("piece 1.pdf", "application/pdf", pdf)]
    )
    status, reply = world.gw.send(raw)
    assert status == 250, reply
    return reply.split()[-1]


def test_acknowledge_moves_what_was_written_to_received(greffe: Greffe) -> None:
    reference = file_request(greffe.world, greffe.admin, COURT, MEASURE)
    code, report, err = greffe.sync_json("--acknowledge")
    assert code == 0, err
    assert report["acknowledged"] == [reference]
    assert greffe.admin.get(f"/api/v1/requests/{reference}").json()["status"] == "received"
    # The folder's manifest says so too, and a second run acknowledges nothing again.
    local = json.loads((greffe.out / reference / "manifest.json").read_text())
    assert local["status"] == "received"
    code, report, _ = greffe.sync_json("--acknowledge")
    assert code == 0 and report["acknowledged"] == [] and report["up_to_date"] == 1


def test_run_killed_mid_request_leaves_no_half_folder_and_rerun_completes(
    greffe: Greffe,
) -> None:
    references = [
        file_request(greffe.world, greffe.admin, COURT, MEASURE, documents=3) for _ in range(2)
    ]
    greffe.out.mkdir()
    # Test-only hook: sleep after each file, so the kill lands inside a request.
    process = subprocess.Popen(
        greffe.command(), cwd=greffe.home, env=greffe.env(GATEWAY_SYNC_TEST_PAUSE="0.3"),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not any(".partial-" in name for name in hidden_folders(greffe.out)):
            assert process.poll() is None and time.monotonic() < deadline, "never wrote"
            time.sleep(0.02)
        time.sleep(0.4)  # a file or two into the partial folder
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    assert any(".partial-" in name for name in hidden_folders(greffe.out))
    for name in visible(greffe.out):  # what is there is complete
        assert len(list((greffe.out / name / "1" / "documents").iterdir())) == 3
    assert set(visible(greffe.out)) < set(references)

    code, report, err = greffe.sync_json()
    assert code == 0, err
    assert visible(greffe.out) == references and hidden_folders(greffe.out) == []
    assert any(".partial-" in name for name in report["settled"])  # type: ignore[union-attr]
    for reference in references:
        documents = list((greffe.out / reference / "1" / "documents").iterdir())
        assert [sha256(p) for p in documents] == [hashlib.sha256(PDF).hexdigest()] * 3


def document_blob(world: World, reference: str, index: int) -> Path:
    """The stored file of one document on the gateway's blob directory."""
    with world.gw.services.db.reading() as session:
        repo = SubmissionRepository(session)
        submission = repo.by_reference(reference)
        assert submission is not None
        document = repo.document(submission.id, index)
        assert document is not None
        key = document.blob
    store = world.gw.services.blobs
    assert isinstance(store, BlobStore)
    return store.root.joinpath(*key.split("/"))


def test_tampered_stored_blob_is_reported_and_only_that_request_is_not_written(
    greffe: Greffe,
) -> None:
    good = file_request(greffe.world, greffe.admin, COURT, MEASURE)
    bad = file_request(greffe.world, greffe.admin, COURT, MEASURE, documents=2)
    blob = document_blob(greffe.world, f"{bad}/1", 2)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x01
    blob.write_bytes(bytes(data))

    code, report, err = greffe.sync_json()
    assert code == 1
    assert report["errors"] == [
        {"reference": bad, "error": report["errors"][0]["error"]}  # type: ignore[index]
    ]
    assert f"{bad}/1 document 2" in err and "Traceback" not in err
    assert visible(greffe.out) == [good] and hidden_folders(greffe.out) == []
    # Nothing advanced past the failure: once the blob is restored, a re-run fetches it.
    data[len(data) // 2] ^= 0x01
    blob.write_bytes(bytes(data))
    code, report, _ = greffe.sync_json()
    assert code == 0 and [s["reference"] for s in report["synced"]] == [bad]  # type: ignore


class TamperingProxy:
    """Forwards to the gateway, rewriting the body of one path (and its Repr-Digest to match)."""

    def __init__(self, upstream: str, path: str, tamper: Callable[[bytes], bytes]) -> None:
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.forward(self, "GET")

            def do_POST(self) -> None:
                owner.forward(self, "POST")

            def log_message(self, *args: object) -> None:
                pass

        self.upstream, self.path, self.tamper = upstream, path, tamper
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def forward(self, handler: http.server.BaseHTTPRequestHandler, method: str) -> None:
        headers = {"Authorization": handler.headers.get("Authorization", "")}
        answer = httpx.request(method, self.upstream + handler.path, headers=headers, timeout=30)
        body = answer.content
        if handler.path.split("?")[0] == self.path:
            body = self.tamper(body)
        handler.send_response(answer.status_code)
        for name in ("content-type", "www-authenticate"):
            if name in answer.headers:
                handler.send_header(name, answer.headers[name])
        digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
        handler.send_header("Repr-Digest", f"sha-256=:{digest}:")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


def flip_a_byte(data: bytes) -> bytes:
    return data[:-20] + bytes([data[-20] ^ 0x01]) + data[-19:]


@pytest.mark.parametrize("attack", ["swapped_document", "flipped_ciphertext"])
def test_blob_tampered_in_transit_is_detected_naming_request_and_document(
    greffe: Greffe, attack: str
) -> None:
    good = file_request(greffe.world, greffe.admin, COURT, MEASURE)
    bad = file_request(greffe.world, greffe.admin, COURT, MEASURE)
    encryptor = Encryptor.for_keys([greffe.world.court_key.armored_public])
    # A swapped document decrypts well (anyone can encrypt to the court's public key):
    # only the hashes tell it from the one filed.
    tamper = (
        (lambda _: encryptor.encrypt(OTHER_PDF)) if attack == "swapped_document" else (flip_a_byte)
    )
    proxy = TamperingProxy(
        base_url(greffe.world), f"/api/v1/submissions/{bad}/1/documents/1", tamper
    )
    try:
        code, report, err = greffe.sync_json(url=proxy.url)
    finally:
        proxy.close()
    assert code == 1
    expected = "SHA-256 mismatch" if attack == "swapped_document" else "does not decrypt"
    assert f"{bad}/1 document 1" in err and expected in err, err
    assert [e["reference"] for e in report["errors"]] == [bad]  # type: ignore[index,union-attr]
    assert visible(greffe.out) == [good] and hidden_folders(greffe.out) == []


def test_wrong_api_key_and_unreachable_gateway_are_one_clear_line(greffe: Greffe) -> None:
    file_request(greffe.world, greffe.admin, COURT, MEASURE)
    greffe.use_key("gk_" + "x" * 40)
    refused = greffe.sync()
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        f"gateway: API key refused by {base_url(greffe.world)} (401): check the key file"
    ]
    unreachable = greffe.sync(url="http://127.0.0.1:9")
    assert unreachable.returncode == 1
    assert (
        unreachable.stderr.strip() == "gateway: cannot reach http://127.0.0.1:9: connection refused"
    )
    assert visible(greffe.out) == []


def test_greffe_key_for_tj75_syncs_nothing_of_tj13(greffe: Greffe) -> None:
    world, admin = greffe.world, greffe.admin
    refs = {}
    for code in ("TJ75", "TJ13"):
        assert admin.post("/api/v1/courts", json={"code": code, "name": code}).status_code == 201
        armored = world.court_key.armored_public
        assert admin.post(f"/api/v1/courts/{code}/keys", json={"armored": armored}).is_success
        registration = {"court": code, "measure": "21/00075", "address": GUARDIAN}
        assert admin.post("/api/v1/registrations", json=registration).status_code == 201
        refs[code] = file_request(world, admin, code, "21/00075")
    greffe.use_key(new_key(world, "greffe", ["TJ75"]))
    code, report, err = greffe.sync_json()
    assert code == 0, err
    assert visible(greffe.out) == [refs["TJ75"]]
    code, report, err = greffe.sync_json("--court", "TJ13", "--full", "--acknowledge")
    assert code == 0 and report["synced"] == [] and report["acknowledged"] == []
    assert admin.get(f"/api/v1/requests/{refs['TJ13']}").json()["status"] in ("open", "sealed")
