"""depot.json: the filing's data a homologated software entered (`gateway.filing/1`), checked.

Decree art. 11 speaks of "messages contenant les données saisies": a
teletransmitted filing may carry them as one `application/json` part named
`depot.json`.  It is not a document: it is validated against the published
schema, checked against the Subject and the attached documents, and the
validated object goes into the submission's manifest.  Every refusal names
the field (`554 5.6.0`).
"""

from __future__ import annotations

import functools
import json
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from gateway.errors import FilingRefused, GatewayError
from gateway.ingest.documents import CheckedDocument
from gateway.ingest.manifest import load_schema
from gateway.ingest.mime import Attachment
from gateway.model import RequestKind, court_code, measure_number

if TYPE_CHECKING:  # jsonschema is imported by the first depot.json checked
    from jsonschema import Draft202012Validator

FILING_SCHEMA = "gateway.filing/1"
PART_NAME = "depot.json"
PART_TYPE = "application/json"
MAX_BYTES = 256 * 1024


def split_filing_part(
    attachments: Sequence[Attachment],
) -> tuple[Attachment | None, list[Attachment]]:
    """(the depot.json part or None, the documents): a part named depot.json is no document."""
    named = [a for a in attachments if (a.filename or "").strip().lower() == PART_NAME]
    if len(named) > 1:
        raise FilingRefused("depot.json: more than one depot.json part")
    if named and named[0].declared_type != PART_TYPE:
        raise FilingRefused(f"depot.json: the part must be declared {PART_TYPE}")
    documents = [a for a in attachments if not any(a is part for part in named)]
    return (named[0] if named else None), documents


@functools.cache
def _validator() -> Draft202012Validator:
    from jsonschema import Draft202012Validator

    return Draft202012Validator(
        load_schema("filing"), format_checker=Draft202012Validator.FORMAT_CHECKER
    )


def check_filing(
    part: Attachment,
    *,
    court: str,
    measure: str,
    kind: RequestKind,
    documents: Sequence[CheckedDocument],
) -> dict[str, Any]:
    """The validated depot.json, or FilingRefused naming the field that is wrong."""
    from jsonschema.exceptions import best_match

    data = _parse(part.content)
    error = best_match(_validator().iter_errors(data))
    if error is not None:
        where = "/".join(str(step) for step in error.absolute_path) or "(top level)"
        raise FilingRefused(f"depot.json: {where}: {error.message[:200]}")
    _check_subject(data, court, measure, kind)
    period = data.get("period")
    if period is not None and period["start"] > period["end"]:
        raise FilingRefused("depot.json: period: start is after end")
    _check_documents(data["documents"], documents)
    checked: dict[str, Any] = data
    return checked


def _parse(content: bytes) -> Any:
    if len(content) > MAX_BYTES:
        raise FilingRefused(f"depot.json: larger than {MAX_BYTES} bytes")
    try:
        text = content.decode("utf-8")
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise FilingRefused("depot.json: not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise FilingRefused(
            f"depot.json: not valid JSON (line {exc.lineno}, column {exc.colno})"
        ) from None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Two values for one key: which one a reader keeps depends on the reader.
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise FilingRefused("depot.json: a key appears twice in one object")
    return dict(pairs)


def _no_constant(name: str) -> Any:
    raise FilingRefused(f"depot.json: {name} is not JSON")


def _check_subject(data: dict[str, Any], court: str, measure: str, kind: RequestKind) -> None:
    """The data must describe the filing the Subject opens, not another one."""
    if data["kind"] != kind.value:
        raise FilingRefused(f"depot.json: kind: not the Subject's kind ({kind.value})")
    try:
        same_measure = measure_number(data["measure"]) == measure
        same_court = "court" not in data or court_code(data["court"]) == court
    except GatewayError:
        same_measure = same_court = False
    if not same_measure:
        raise FilingRefused("depot.json: measure: not the Subject's measure")
    if not same_court:
        raise FilingRefused("depot.json: court: not the Subject's court")


def _check_documents(entries: list[dict[str, Any]], documents: Sequence[CheckedDocument]) -> None:
    """Each entry names an attached document, and each attached document has one entry."""
    unlisted = Counter(doc.original_filename for doc in documents if doc.original_filename)
    for number, entry in enumerate(entries):
        name = entry["filename"]
        if unlisted[name] <= 0:
            reason = "names no attached document" if name not in unlisted else "listed twice"
            raise FilingRefused(f"depot.json: documents/{number}/filename: {reason}")
        unlisted[name] -= 1
    for doc in documents:
        if not doc.original_filename or unlisted[doc.original_filename] > 0:
            raise FilingRefused(f"depot.json: documents: document {doc.index} is not listed")
