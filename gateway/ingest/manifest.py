"""The normalised submission: the `gateway.submission/1` JSON manifest and the request manifest."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from gateway.ingest.documents import CheckedDocument
from gateway.ingest.mime import ParsedMessage

SUBMISSION_SCHEMA = "gateway.submission/1"
REQUEST_SCHEMA = "gateway.request/1"


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Filing:
    """Where an accepted message is filed: its references and its request's facts."""

    request_reference: str
    submission_reference: str
    court: str
    measure: str
    kind: str
    sender_address: str
    registration_id: int
    court_name: str = ""
    """The court's name, for mail sent in the name of its greffe (not in the manifest)."""


@dataclass(frozen=True, slots=True)
class Arrival:
    """How the message arrived and what the checks found."""

    channel: str
    received_at: datetime
    authentication: dict[str, Any]
    parsed: ParsedMessage
    raw_sha256: str


def submission_manifest(
    filing: Filing,
    arrival: Arrival,
    documents: Sequence[CheckedDocument],
    filing_data: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything the greffe needs about one accepted message (stored encrypted).

    `filing_data` is a teletransmitted filing's validated depot.json (`gateway.filing/1`).
    """
    parsed = arrival.parsed
    manifest: dict[str, Any] = {
        "schema": SUBMISSION_SCHEMA,
        "request_reference": filing.request_reference,
        "submission_reference": filing.submission_reference,
        "court": filing.court,
        "measure": filing.measure,
        "kind": filing.kind,
        "channel": arrival.channel,
        "received_at": rfc3339(arrival.received_at),
        "sender": {"address": filing.sender_address, "registration_id": filing.registration_id},
        "authentication": arrival.authentication,
        "message": {
            "message_id": parsed.message_id,
            "message_id_generated": parsed.message_id_generated,
            "date": rfc3339(parsed.date) if parsed.date else None,
            "subject": parsed.subject,
            "size": parsed.size,
            "sha256": arrival.raw_sha256,
        },
        "body_text": parsed.text_body,
        "documents": [
            {
                "index": doc.index,
                "filename": doc.filename,
                "original_filename": doc.original_filename,
                "declared_type": doc.declared_type,
                "detected_type": doc.detected_type,
                "size": doc.size,
                "sha256": doc.sha256,
                "warnings": list(doc.warnings),
            }
            for doc in documents
        ],
    }
    if filing_data is not None:
        manifest["filing"] = filing_data
    return manifest


def request_manifest(
    *,
    reference: str,
    court: str,
    measure: str,
    kind: str,
    status: str,
    status_reason: str | None,
    opened_at: datetime,
    sealed_at: datetime | None,
    submissions: Sequence[dict[str, Any]],
) -> dict[str, Any]:
    """A request and the list of its submissions (references, times, hashes: no sender text)."""
    return {
        "schema": REQUEST_SCHEMA,
        "reference": reference,
        "court": court,
        "measure": measure,
        "kind": kind,
        "status": status,
        "status_reason": status_reason,
        "opened_at": rfc3339(opened_at),
        "sealed_at": rfc3339(sealed_at) if sealed_at else None,
        "submissions": list(submissions),
    }


def encode(manifest: dict[str, Any]) -> bytes:
    return json.dumps(manifest, ensure_ascii=False, indent=2, sort_keys=False).encode("utf-8")


def load_schema(name: str = "submission") -> dict[str, Any]:
    """The published JSON Schema (also in the repository's schemas/ folder)."""
    text = (resources.files("gateway") / "resources" / f"{name}.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema
