"""The `gateway.receipt/1` facts: what a receipt attests, as JSON inside its OpenPGP-signed part.

The composer builds them from the receipt's template values; `gateway
receipts verify` (`gateway.greffe.receipts`) reads them back once the
signature checks.  The JSON Schema is `gateway/resources/receipt.schema.json`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from gateway.outbox.templates import DocumentLine

RECEIPT_SCHEMA = "gateway.receipt/1"
FACTS_FILENAME = "accuse-de-reception.json"
FACTS_SUBTYPE = "json"
# The exact shape `templates.format_utc` writes for `received_at`.
_FRENCH_UTC = "%d/%m/%Y à %H:%M:%S UTC"


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_french_utc(text: str) -> datetime:
    """The inverse of `templates.format_utc` (`27/11/2026 à 14:05:09 UTC`)."""
    return datetime.strptime(text.strip(), _FRENCH_UTC).replace(tzinfo=UTC)


def documents_json(documents: Iterable[DocumentLine]) -> str:
    """The `documents_json` template value the receipt's facts are built from."""
    return json.dumps(
        [{"name": doc.name, "size": doc.size, "sha256": doc.sha256} for doc in documents],
        ensure_ascii=False,
    )


def receipt_facts(
    values: Mapping[str, str], *, issuer: str, recipient: str, issued_at: datetime
) -> dict[str, Any] | None:
    """The facts of a receipt from its template values, or None without `documents_json`.

    A receipt queued before `documents_json` existed has only the formatted
    document list: it is composed as a signed text alone, as it was then.
    """
    documents_json = values.get("documents_json")
    if documents_json is None:
        return None
    documents = [
        {"index": index, "name": str(doc["name"]), "size": int(doc["size"]),
         "sha256": str(doc["sha256"]).lower()}
        for index, doc in enumerate(json.loads(documents_json), start=1)
    ]  # fmt: skip
    return {
        "schema": RECEIPT_SCHEMA,
        "issuer": issuer,
        "recipient": recipient,
        "issued_at": rfc3339(issued_at),
        "court": values["court"],
        "measure": values["measure"],
        "request_reference": values["request_reference"],
        "submission_reference": values["submission_reference"],
        "received_at": rfc3339(parse_french_utc(values["received_at"])),
        "message_sha256": values["message_sha256"].lower(),
        "documents": documents,
    }


def encode_facts(facts: Mapping[str, Any]) -> bytes:
    """The attachment's bytes: UTF-8 JSON, one key per line, so a reader can also diff it."""
    return json.dumps(facts, ensure_ascii=False, indent=2).encode("utf-8") + b"\n"
