"""The PDF policy through a real SMTP session: polyglots and unreadable PDFs refused, active
content accepted and flagged (encrypted manifest, and in clear in the database)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from sqlalchemy import func, select

from gateway.greffe.export import Exporter
from gateway.ingest.manifest import load_schema
from gateway.storage.crypto import GpgKeyring
from gateway.storage.models import AuditEvent, Blob, Document, Submission
from tests.fixtures import pdfs
from tests.fixtures.gatewayserver import COURT, World


def send_documents(world: World, attachments: list[tuple[str, bytes]]) -> tuple[int, str]:
    code = world.request_code("compte")
    raw = world.gw.message(
        subject=f"Compte de gestion [{code}]",
        attachments=[(name, "application/pdf", data) for name, data in attachments],
    )
    return world.gw.send(raw)


def assert_nothing_stored(world: World) -> None:
    with world.gw.services.db.transaction() as session:
        rows = [
            session.scalar(select(func.count()).select_from(model))
            for model in (Submission, Document, Blob)
        ]
        refusals = session.scalars(
            select(AuditEvent.action).where(AuditEvent.action == "message.refused")
        ).all()
    assert rows == [0, 0, 0]
    assert [p for p in world.gw.services.settings.blob_dir.rglob("*") if p.is_file()] == []
    assert refusals  # the refusal itself is audited


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (pdfs.zip_archive(), "data after the end of the PDF is application/zip"),
        (pdfs.zip_archive() + b"\n%%EOF\n", "a ZIP archive is hidden in the PDF"),
    ],
    ids=["zip", "zip-then-eof"],
)
def test_pdf_with_zip_appended_is_refused(world: World, payload: bytes, reason: str) -> None:
    status, reply = send_documents(
        world, [("compte.pdf", pdfs.plain_pdf()), ("releve banque.pdf", pdfs.plain_pdf() + payload)]
    )
    assert (status, reply[:5]) == (554, "5.6.0")
    assert f'document 2 "releve banque.pdf": {reason}' in reply
    assert_nothing_stored(world)


def test_pdf_with_executable_appended_is_refused(world: World) -> None:
    status, reply = send_documents(
        world, [("facture.pdf", pdfs.plain_pdf() + pdfs.pe_executable())]
    )
    assert (status, reply[:5]) == (554, "5.6.0")
    assert (
        'document 1 "facture.pdf": data after the end of the PDF is application/x-executable'
        in reply
    )
    assert_nothing_stored(world)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (pdfs.truncated_pdf(), "the PDF is truncated (no %%EOF)"),
        (pdfs.garbage_pdf(), "not a readable PDF"),
    ],
    ids=["truncated", "garbage"],
)
def test_pdf_qpdf_cannot_open_is_refused_naming_it(world: World, data: bytes, reason: str) -> None:
    status, reply = send_documents(world, [("inventaire.pdf", data)])
    assert (status, reply[:5]) == (554, "5.6.0")
    assert f'document 1 "inventaire.pdf": {reason}' in reply
    assert_nothing_stored(world)


def test_pdf_active_content_is_accepted_and_flagged(world: World, tmp_path: Path) -> None:
    documents = [
        ("compte.pdf", pdfs.plain_pdf()),
        ("formulaire.pdf", pdfs.javascript_pdf()),
        ("lien.pdf", pdfs.launch_pdf()),
        ("avec piece jointe.pdf", pdfs.embedded_file_pdf()),
    ]
    expected = [[], ["javascript", "open-action"], ["launch-action"], ["embedded-file"]]
    status, reply = send_documents(world, documents)
    assert status == 250, reply
    reference = reply.split()[-1]

    # In clear in the database, for the greffe's screens: machine words only.
    with world.gw.services.db.transaction() as session:
        stored = session.execute(select(Document.idx, Document.warnings).order_by(Document.idx))
        assert [tuple(row) for row in stored] == [
            (index, words or None) for index, words in enumerate(expected, start=1)
        ]

    # In the encrypted manifest, as the greffe's export decrypts it with the court's key.
    out = tmp_path / "export"
    with GpgKeyring(world.court_key.gnupghome) as keyring:
        Exporter(world.gw.services.db, world.gw.services.blobs, keyring).export(reference, out)
    manifest = json.loads((out / "manifest.json").read_text())
    jsonschema.validate(manifest, load_schema())
    assert manifest["submission_reference"] == reference and manifest["court"] == COURT
    assert [d["original_filename"] for d in manifest["documents"]] == [n for n, _ in documents]
    assert [d["warnings"] for d in manifest["documents"]] == expected
    exported = sorted(p.name for p in (out / "documents").iterdir())
    assert len(exported) == 4
    assert (out / "documents" / exported[1]).read_bytes() == documents[1][1]
