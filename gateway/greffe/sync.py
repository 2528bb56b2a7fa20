"""`greffe sync`: pull what is new over the API, decrypt and verify it, write one folder a request.

Runs on the greffe's machine with its own GnuPG home: the court's private
key never travels, and no gateway configuration or database is needed.

A request is fetched when its folder is missing or holds fewer submissions
than the API lists; it is then fetched whole and its folder replaced in one
rename (`SyncFolder`). Every file is checked before it is written: the
message's and each document's SHA-256 against both the decrypted manifest
and the figures the API gives in clear, the sizes, the set of documents,
the manifest's own reference. A request that fails any check is reported
by name and nothing of it is written; the others still sync.

What to list: the requests changed since the last run that had no error
(the highest `updated_at` the API showed, minus `SINCE_MARGIN` for commits
that were in flight), per set of `--court`; `full=True` lists everything.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from gateway.errors import GatewayError
from gateway.greffe.apiclient import ApiAnswer, GreffeApi
from gateway.greffe.syncfolder import REFERENCE, Partial, SyncFolder
from gateway.ingest.documents import sanitise_filename
from gateway.ingest.manifest import encode
from gateway.storage.crypto import GpgKeyring

SINCE_MARGIN = timedelta(hours=1)
ACKNOWLEDGEABLE = frozenset({"open", "sealed"})
_ATTEMPTS = 3  # a submission landing between two reads of one request: read it again


class RequestFailed(GatewayError):
    """One request could not be synced (a check failed, or the gateway refused a call)."""


@dataclass
class SyncReport:
    synced: list[dict[str, Any]] = field(default_factory=list)
    up_to_date: int = 0
    acknowledged: list[str] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)
    settled: list[str] = field(default_factory=list)
    """Hidden folders a killed run had left, deleted or restored first."""

    @property
    def documents(self) -> int:
        return sum(int(item["documents"]) for item in self.synced)

    def summary(self) -> str:
        line = (
            f"synced {len(self.synced)} requests ({self.documents} documents), "
            f"{self.up_to_date} already up to date, {len(self.errors)} errors"
        )
        if self.acknowledged:
            line += f", {len(self.acknowledged)} acknowledged"
        return line

    def as_dict(self) -> dict[str, Any]:
        return {
            "synced": self.synced,
            "documents": self.documents,
            "up_to_date": self.up_to_date,
            "acknowledged": self.acknowledged,
            "errors": self.errors,
            "settled": self.settled,
        }


Progress = Callable[[str], None]


class Syncer:
    """One sync run: list, fetch and verify, write, acknowledge."""

    def __init__(
        self,
        api: GreffeApi,
        keyring: GpgKeyring,
        folder: SyncFolder,
        *,
        acknowledge: bool = False,
        pause: float = 0.0,
    ) -> None:
        """`pause`: seconds to sleep after each file written (test-only: lets a test kill us)."""
        self.api = api
        self.keyring = keyring
        self.folder = folder
        self.acknowledge = acknowledge
        self.pause = pause

    def listing(self, courts: Sequence[str], *, full: bool = False) -> list[dict[str, Any]]:
        """The requests to look at this run (the API's listing items)."""
        state = self.folder.load_state()
        since = None if full else state["since"].get(_scope(courts))
        if since:
            since = (datetime.fromisoformat(since) - SINCE_MARGIN).isoformat()
        found: dict[str, dict[str, Any]] = {}
        wanted: list[str | None] = [*courts] or [None]
        for court in wanted:
            for item in self.api.requests(court, since):
                found[str(item.get("reference"))] = item
        return list(found.values())

    def run(
        self,
        courts: Sequence[str],
        items: list[dict[str, Any]],
        progress: Progress | None = None,
    ) -> SyncReport:
        report = SyncReport(settled=self.folder.settle())
        for item in items:
            reference = str(item.get("reference"))
            try:
                self._one(item, report)
            except (RequestFailed, ApiAnswer) as exc:
                report.errors.append({"reference": reference, "error": exc.message})
            if progress:
                progress(reference)
        if not report.errors:
            self._advance(courts, items)
        return report

    def _one(self, item: dict[str, Any], report: SyncReport) -> None:
        reference = item.get("reference")
        count = item.get("submissions_count")
        if not isinstance(reference, str) or not REFERENCE.fullmatch(reference):
            raise RequestFailed(f"the API listed a malformed reference {str(reference)[:60]!r}")
        if not isinstance(count, int) or count < 1:
            return  # nothing filed yet: no folder to write
        status = str(item.get("status"))
        if self.folder.synced_count(reference) == count:
            report.up_to_date += 1
            self._refresh_manifest(reference, status)
        else:
            submissions, documents = self._write(reference)
            report.synced.append(
                {"reference": reference, "submissions": submissions, "documents": documents}
            )
        if self.acknowledge and status in ACKNOWLEDGEABLE and self._acknowledge(reference):
            report.acknowledged.append(reference)

    def _write(self, reference: str) -> tuple[int, int]:
        """Fetch, verify and write the whole request; (submissions, documents) written."""
        detail, manifest = self._consistent(reference)
        documents = 0
        with self.folder.building(reference) as partial:
            for submission in detail["submissions"]:
                documents += self._submission(reference, submission, partial)
            partial.write("manifest.json", encode(manifest))
        return len(detail["submissions"]), documents

    def _consistent(self, reference: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """The request's detail and manifest, read until both list the same submissions."""
        for _attempt in range(_ATTEMPTS):
            detail = self.api.request(reference)
            manifest = self.api.request_manifest(reference)
            listed = [s.get("reference") for s in _list(detail, "submissions", reference)]
            if listed == [s.get("reference") for s in _list(manifest, "submissions", reference)]:
                if manifest.get("reference") != reference:
                    raise RequestFailed(f"{reference}: the API's manifest names another request")
                return detail, manifest
        raise RequestFailed(f"{reference}: kept changing while it was read; run sync again")

    def _submission(self, reference: str, submission: dict[str, Any], partial: Partial) -> int:
        """Decrypt and check one submission into `NUMBER/`; the number of its documents."""
        number = submission.get("number")
        label = f"{reference}/{number}"
        if not isinstance(number, int) or number < 1 or submission.get("reference") != label:
            raise RequestFailed(f"{reference}: the API lists a malformed submission")
        base = f"/api/v1/submissions/{reference}/{number}"
        manifest_bytes = self._decrypt(f"{base}/manifest", f"{label} manifest")
        manifest = _manifest(manifest_bytes, label)
        raw = self._decrypt(f"{base}/message", f"{label} message")
        _expect(raw, [submission.get("raw_sha256"), manifest["message"].get("sha256")], label,
                "message")  # fmt: skip
        partial.write(f"{number}/manifest.json", manifest_bytes)
        self._paused()
        partial.write(f"{number}/message.eml", raw)
        self._paused()
        entries = {entry.get("index"): entry for entry in manifest["documents"]}
        rows = _list(submission, "documents", label)
        if sorted(entries, key=str) != sorted((row.get("index") for row in rows), key=str):
            raise RequestFailed(f"{label}: its documents differ from its manifest's")
        for row in rows:
            index = row.get("index")
            if not isinstance(index, int) or index < 0:
                raise RequestFailed(f"{label}: the API lists a malformed document index")
            self._document(base, label, row, entries[index], partial, number)
        return len(rows)

    def _document(
        self,
        base: str,
        label: str,
        row: dict[str, Any],
        entry: dict[str, Any],
        partial: Partial,
        number: int,
    ) -> None:
        index = int(row["index"])
        what = f"document {index}"
        content = self._decrypt(f"{base}/documents/{index}", f"{label} {what}")
        _expect(content, [row.get("sha256"), entry.get("sha256")], label, what)
        if len(content) != row.get("size"):
            raise RequestFailed(f"{label} {what}: size differs from the API's; nothing written")
        # The gateway sanitised the name on the way in; a name off the wire is sanitised again.
        detected = str(row.get("detected_type") or entry.get("detected_type") or "")
        name = sanitise_filename(str(entry.get("filename") or ""), index, detected)
        partial.write(f"{number}/documents/{index:02d}-{name}", content)
        self._paused()

    def _decrypt(self, path: str, what: str) -> bytes:
        try:
            sealed = self.api.blob(path)
        except ApiAnswer as exc:
            raise RequestFailed(f"{what}: {exc.message}") from None
        try:
            return self.keyring.decrypt(sealed)
        except GatewayError as exc:
            raise RequestFailed(f"{what}: does not decrypt ({exc.message})") from None

    def _refresh_manifest(self, reference: str, status: str) -> None:
        """Rewrite a complete folder's manifest.json when the request's status moved on."""
        local = self.folder.local_manifest(reference) or {}
        if local.get("status") == status:
            return
        manifest = self.api.request_manifest(reference)
        if len(_list(manifest, "submissions", reference)) == len(local.get("submissions") or []):
            self.folder.replace_manifest(reference, encode(manifest))

    def _acknowledge(self, reference: str) -> bool:
        """Acknowledge a request written whole; False when a colleague's move came first."""
        try:
            answer = self.api.acknowledge(reference)
        except ApiAnswer as exc:
            if exc.status != 409:  # 409: taken up (or decided) meanwhile: nothing to do
                raise RequestFailed(f"{reference}: acknowledge refused: {exc.message}") from None
            self._refresh_manifest(reference, str(self.api.request(reference).get("status")))
            return False
        self._refresh_manifest(reference, str(answer.get("status")))
        return True

    def _advance(self, courts: Sequence[str], items: list[dict[str, Any]]) -> None:
        """Remember the latest change seen, for the next run's `since` (only after a clean run)."""
        seen = [_moment(item.get("updated_at")) for item in items]
        latest = max((moment for moment in seen if moment is not None), default=None)
        if latest is None:
            return
        state = self.folder.load_state()
        previous = _moment(state["since"].get(_scope(courts)))
        if previous is None or latest > previous:
            state["since"][_scope(courts)] = latest.isoformat()
            self.folder.save_state(state)

    def _paused(self) -> None:
        if self.pause > 0:
            time.sleep(self.pause)


def _scope(courts: Sequence[str]) -> str:
    return ",".join(sorted({court.upper() for court in courts})) or "*"


def _moment(text: object) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def _list(body: dict[str, Any], key: str, label: str) -> list[dict[str, Any]]:
    found = body.get(key)
    if not isinstance(found, list) or not all(isinstance(item, dict) for item in found):
        raise RequestFailed(f"{label}: the API's answer has no {key} list")
    return found


def _manifest(data: bytes, label: str) -> dict[str, Any]:
    try:
        manifest = json.loads(data)
    except ValueError:
        raise RequestFailed(f"{label} manifest: not JSON once decrypted; nothing written") from None
    if not isinstance(manifest, dict) or manifest.get("submission_reference") != label:
        raise RequestFailed(f"{label} manifest: names another submission; nothing written")
    if not isinstance(manifest.get("message"), dict) or not isinstance(
        manifest.get("documents"), list
    ):
        raise RequestFailed(f"{label} manifest: malformed; nothing written")
    return manifest


def _expect(data: bytes, hashes: list[Any], label: str, what: str) -> None:
    actual = hashlib.sha256(data).hexdigest()
    if any(actual != expected for expected in hashes):
        request = label.split("/")[0]
        raise RequestFailed(f"{label} {what}: SHA-256 mismatch; nothing of {request} written")
