"""depot.json (gateway.filing/1): found among the parts, validated, checked against the filing."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from gateway.errors import FilingRefused
from gateway.ingest.codereq import parse_filing_command
from gateway.ingest.documents import CheckedDocument
from gateway.ingest.filing import check_filing, split_filing_part
from gateway.ingest.manifest import load_schema
from gateway.ingest.mime import Attachment
from gateway.ingest.teletransmit import USAGE
from gateway.model import RequestKind

DOCS = [
    CheckedDocument(1, "compte 2025.pdf", "compte_2025.pdf", "application/pdf",
                    "application/pdf", 10, "a" * 64),
    CheckedDocument(2, "releve.pdf", "releve.pdf", "application/pdf", "application/pdf", 10,
                    "b" * 64),
]  # fmt: skip


def filing(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "schema": "gateway.filing/1",
        "court": "tj-lyon",
        "measure": "21/00123",
        "kind": "compte",
        "period": {"start": "2025-01-01", "end": "2025-12-31"},
        "documents": [
            {"filename": "compte 2025.pdf", "role": "compte_de_gestion"},
            {"filename": "releve.pdf", "role": "releve_bancaire", "description": "Banque"},
        ],
    }
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


def check(data: Any, *, raw: bytes | None = None) -> dict[str, Any]:
    content = raw if raw is not None else json.dumps(data).encode()
    return check_filing(
        Attachment("depot.json", "application/json", content),
        court="TJ-LYON", measure="21/00123", kind=RequestKind.COMPTE, documents=DOCS,
    )  # fmt: skip


def refusal(data: Any = None, *, raw: bytes | None = None) -> str:
    with pytest.raises(FilingRefused) as refused:
        check(data, raw=raw)
    return refused.value.message


def test_valid_filing_returned_as_sent() -> None:
    assert check(filing()) == filing()
    jsonschema.Draft202012Validator.check_schema(load_schema("filing"))


@pytest.mark.parametrize(
    ("data", "named"),
    [
        (filing(schema="gateway.filing/2"), "schema"),
        (filing(kind=None), "'kind' is a required property"),
        (filing(period=None), "'period' is a required property"),  # a compte covers a period
        (filing(period={"start": "2025-02-30", "end": "2025-12-31"}), "period/start"),
        (filing(documents=[{"filename": "compte 2025.pdf", "role": "brouillon"}]),
         "documents/0/role"),
        (filing(extra=1), "(top level)"),
        (filing(documents=[]), "documents"),
    ],
)  # fmt: skip
def test_schema_refusals_name_the_field(data: dict[str, Any], named: str) -> None:
    message = refusal(data)
    assert message.startswith("depot.json: ") and named in message


@pytest.mark.parametrize(
    ("data", "named"),
    [
        (filing(kind="inventaire", period=None), "kind: not the Subject's kind (compte)"),
        (filing(measure="21/00124"), "measure: not the Subject's measure"),
        (filing(court="TJ-PARIS"), "court: not the Subject's court"),
        (filing(period={"start": "2025-12-31", "end": "2025-01-01"}), "period: start is after"),
        (filing(documents=[{"filename": "autre.pdf", "role": "autre"},
                           {"filename": "releve.pdf", "role": "autre"}]),
         "documents/0/filename: names no attached document"),
        (filing(documents=[{"filename": "releve.pdf", "role": "autre"},
                           {"filename": "releve.pdf", "role": "autre"}]),
         "documents/1/filename: listed twice"),
        (filing(documents=[{"filename": "releve.pdf", "role": "autre"}]),
         "documents: document 1 is not listed"),
    ],
)  # fmt: skip
def test_filing_must_describe_this_filing(data: dict[str, Any], named: str) -> None:
    assert named in refusal(data)


def test_measure_compared_after_normalisation() -> None:
    assert check(filing(measure="  21/00123 "))["measure"] == "  21/00123 "


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        (b"{", "not valid JSON (line 1, column 2)"),
        (b"\xff{}", "not UTF-8"),
        (b'{"kind": "compte", "kind": "inventaire"}', "a key appears twice"),
        (b'{"n": NaN}', "NaN is not JSON"),
        (b"[1, 2]", "(top level)"),
        (b" " * (256 * 1024 + 1), "larger than"),
    ],
)
def test_not_json_refused(raw: bytes, named: str) -> None:
    assert named in refusal(raw=raw)


def test_depot_json_part_is_not_a_document() -> None:
    pdf = Attachment("compte.pdf", "application/pdf", b"%PDF")
    part = Attachment("DEPOT.JSON", "application/json", b"{}")
    assert split_filing_part([pdf, part]) == (part, [pdf])
    assert split_filing_part([pdf]) == (None, [pdf])


@pytest.mark.parametrize(
    ("parts", "named"),
    [
        ([Attachment("depot.json", "text/plain", b"{}")], "must be declared application/json"),
        ([Attachment("depot.json", "application/json", b"{}")] * 2, "more than one"),
    ],
)
def test_depot_json_part_refusals(parts: list[Attachment], named: str) -> None:
    with pytest.raises(FilingRefused, match=named):
        split_filing_part(parts)


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("DEPOT TJ-LYON 21/00123", ("TJ-LYON", "21/00123", RequestKind.REQUETE)),
        ("Dépôt tj-lyon 21/00123 compte", ("TJ-LYON", "21/00123", RequestKind.COMPTE)),
        ("DEPOT TJ-LYON 21 00123 A inventaire", ("TJ-LYON", "21 00123 A", RequestKind.INVENTAIRE)),
    ],
)
def test_depot_subject(subject: str, expected: tuple[str, str, RequestKind]) -> None:
    assert parse_filing_command(subject, "DEPOT", USAGE) == expected


@pytest.mark.parametrize("subject", ["CODE TJ-LYON 21/00123", "DEPOT TJ-LYON", "DEPOT -X 1"])
def test_depot_subject_refused(subject: str) -> None:
    from gateway.errors import BadCommand

    with pytest.raises(BadCommand, match="DEPOT <court> <measure>"):
        parse_filing_command(subject, "DEPOT", USAGE)
