"""Receipt facts (`gateway.receipt/1`): built from the template values, valid against the schema."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import jsonschema
import pytest

from gateway.ingest.manifest import load_schema
from gateway.outbox.receiptfacts import (
    RECEIPT_SCHEMA,
    documents_json,
    encode_facts,
    parse_french_utc,
    receipt_facts,
)
from gateway.outbox.templates import DocumentLine, format_utc

REPO = Path(__file__).resolve().parents[2]
RECEIVED = datetime(2026, 11, 27, 14, 5, 9, tzinfo=UTC)
DOCUMENTS = [
    DocumentLine("compte 2025.pdf", 5123, "AB" * 32),
    DocumentLine("relevé.pdf", 9, "cd" * 32),
]
VALUES = {
    "court": "TJ-LYON",
    "measure": "21/00123",
    "request_reference": "TJ-LYON-2026-000001",
    "submission_reference": "TJ-LYON-2026-000001/2",
    "received_at": format_utc(RECEIVED),
    "message_sha256": "ef" * 32,
    "documents_json": documents_json(DOCUMENTS),
}


def facts() -> dict[str, object]:
    built = receipt_facts(
        VALUES, issuer="noreply@greffe.example", recipient="tuteur@exemple.fr",
        issued_at=RECEIVED,
    )  # fmt: skip
    assert built is not None
    return built


def test_receipt_facts_follow_the_published_schema() -> None:
    built = facts()

    jsonschema.validate(built, load_schema("receipt"))
    assert built["schema"] == RECEIPT_SCHEMA
    assert built["received_at"] == "2026-11-27T14:05:09Z"
    assert built["documents"] == [
        {"index": 1, "name": "compte 2025.pdf", "size": 5123, "sha256": "ab" * 32},
        {"index": 2, "name": "relevé.pdf", "size": 9, "sha256": "cd" * 32},
    ]


def test_receipt_received_at_reads_back_what_format_utc_writes() -> None:
    # The facts parse the French text value: a change to format_utc must show here.
    assert parse_french_utc(format_utc(RECEIVED)) == RECEIVED


def test_receipt_facts_need_documents_json() -> None:
    values = {k: v for k, v in VALUES.items() if k != "documents_json"}

    assert receipt_facts(values, issuer="a@b.example", recipient="c@d.example",
                         issued_at=RECEIVED) is None  # fmt: skip


def test_receipt_facts_encoded_as_utf8_json() -> None:
    data = encode_facts(facts())

    assert "relevé.pdf".encode() in data and data.endswith(b"\n")


@pytest.mark.parametrize("field", ["message_sha256", "submission_reference", "received_at"])
def test_receipt_schema_refuses_bad_values(field: str) -> None:
    built = {**facts(), field: "not-it"}

    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(built, load_schema("receipt"))


def test_receipt_schema_published_in_the_repository() -> None:
    packaged = REPO / "gateway" / "resources" / "receipt.schema.json"
    assert (REPO / "schemas" / "receipt.schema.json").read_bytes() == packaged.read_bytes()
