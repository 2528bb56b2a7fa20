"""Synthetic rows for the scale section: many registrations, requests, codes, submissions.

Rows go straight into the gateway's tables in one transaction (executemany),
under a court of their own so the measured traffic never touches them but
every index the accept path uses (submission dedupe, references, blob keys,
code hashes, registration addresses) is as large as a busy store's.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import create_engine, func, insert, select
from sqlalchemy.engine import Connection

from gateway.storage.models import (
    Blob,
    Code,
    Court,
    Document,
    Registration,
    Request,
    Submission,
)

SYNTH_COURT = "TJ-SYNTH"
CHUNK = 20_000


def _hex(*parts: object) -> str:
    return hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()


def _address(i: int) -> str:
    return f"g{i}@synth{i % 997}.example"


def _chunks(rows: Iterator[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= CHUNK:
            yield batch
            batch = []
    if batch:
        yield batch


def _insert(conn: Connection, table: Any, rows: Iterator[dict[str, Any]]) -> int:
    count = 0
    for batch in _chunks(rows):
        conn.execute(insert(table), batch)
        count += len(batch)
    return count


def populate(url: str, registrations: int, submissions: int, seed: int = 1) -> dict[str, Any]:
    """Insert the synthetic store; returns row counts, seconds taken and sample code hashes."""
    engine = create_engine(url)
    started = time.monotonic()
    now = datetime.now(UTC)
    old = now - timedelta(days=400)
    requests = max(min(registrations, submissions // 10 or 1), 1)
    counts: dict[str, int] = {}
    with engine.begin() as conn:
        base = {m: int(conn.execute(select(func.coalesce(func.max(m.id), 0))).scalar_one())
                for m in (Court, Registration, Request, Code, Submission, Document)}
        court_id = base[Court] + 1
        _insert(conn, Court.__table__, iter([
            {"id": court_id, "code": SYNTH_COURT, "name": "Synthetic", "created_at": old}]))
        counts["registration"] = _insert(conn, Registration.__table__, (
            {"id": base[Registration] + i + 1, "court_id": court_id, "measure": f"S/{i:07d}",
             "address": _address(i), "address_key": _address(i),
             "status": "active", "registered_by": "bench", "registered_at": old}
            for i in range(registrations)))
        counts["request"] = _insert(conn, Request.__table__, (
            {"id": base[Request] + i + 1, "reference": f"{SYNTH_COURT}-2020-{i + 1:06d}",
             "court_id": court_id, "registration_id": base[Registration] + i % registrations + 1,
             "kind": "requete", "channel": "smtp", "status": "sealed", "status_reason": "bench",
             "submission_count": 0, "opened_at": old, "sealed_at": old, "updated_at": old}
            for i in range(requests)))
        hmacs = [_hex("code", seed, i) for i in range(requests)]
        counts["code"] = _insert(conn, Code.__table__, (
            {"id": base[Code] + i + 1, "code_hmac": hmacs[i], "request_id": base[Request] + i + 1,
             "registration_id": base[Registration] + i % registrations + 1, "issued_at": old,
             "expires_at": old + timedelta(days=2), "closed_at": old, "use_count": 1}
            for i in range(requests)))
        counts.update(_submissions(conn, base, court_id, requests, registrations, submissions,
                                   old))
    engine.dispose()
    sample = random.Random(seed).sample(hmacs, min(len(hmacs), 1000))
    return {"rows": counts, "insert_s": round(time.monotonic() - started, 1), "sample": sample}


def _submissions(conn: Connection, base: dict[Any, int], court_id: int, requests: int,
                 registrations: int, submissions: int, old: datetime) -> dict[str, int]:
    def sub(i: int) -> dict[str, Any]:
        req = i % requests
        return {"id": base[Submission] + i + 1,
                "reference": f"{SYNTH_COURT}-2020-{req + 1:06d}/{i // requests + 1}",
                "request_id": base[Request] + req + 1, "number": i // requests + 1,
                "channel": "smtp", "message_id_sha256": _hex("mid", i),
                "raw_sha256": _hex("raw", i),
                "size": 100_000, "received_at": old,
                "registration_id": base[Registration] + req % registrations + 1,
                "credential_id": None, "auth_results": {"dkim": "pass"},
                "raw_blob": f"synth/raw/{i}", "manifest_blob": f"synth/manifest/{i}"}

    def doc(i: int) -> dict[str, Any]:
        return {"id": base[Document] + i + 1, "submission_id": base[Submission] + i + 1, "idx": 0,
                "detected_type": "application/pdf", "size": 70_000, "sha256": _hex("doc", i),
                "blob": f"synth/doc/{i}"}

    def blobs() -> Iterator[dict[str, Any]]:
        for i in range(submissions):
            for kind in ("raw", "document"):
                yield {"key": f"synth/{kind[:3]}/{i}", "kind": kind, "sha256": _hex(kind, i),
                       "size": 100_000, "created_at": old}

    return {
        "submission": _insert(conn, Submission.__table__, (sub(i) for i in range(submissions))),
        "document": _insert(conn, Document.__table__, (doc(i) for i in range(submissions))),
        "blob": _insert(conn, Blob.__table__, blobs()),
    }


def lookup_latency_us(url: str, hmacs: list[str]) -> dict[str, float]:
    """Mean and p99 time of the code lookup by hash (the index the accept path uses), in µs."""
    from bench.stats import percentile

    engine = create_engine(url)
    times: list[float] = []
    with engine.connect() as conn:
        for value in hmacs:
            started = time.perf_counter()
            conn.execute(select(Code.id, Code.request_id).where(Code.code_hmac == value)).first()
            times.append(time.perf_counter() - started)
    engine.dispose()
    return {
        "mean_us": round(sum(times) / len(times) * 1e6, 1) if times else 0.0,
        "p99_us": round((percentile(times, 99) or 0.0) * 1e6, 1),
    }
