"""The greffe side: list requests and submissions, export and decrypt them, verifying every hash."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.errors import GatewayError, InputError, NotFound
from gateway.ingest.documents import sanitise_filename
from gateway.ingest.manifest import encode, request_manifest, rfc3339
from gateway.model import court_code
from gateway.storage.blobstore import BlobStorage
from gateway.storage.courts import CourtRepository
from gateway.storage.crypto import GpgKeyring
from gateway.storage.db import Database, Session
from gateway.storage.models import Submission
from gateway.storage.registrations import RegistrationRepository
from gateway.storage.requests import RequestRepository
from gateway.storage.submissions import BlobRepository, SubmissionRepository

Progress = Callable[[int], None]


class IntegrityFailure(GatewayError):
    """Stored data does not match its recorded hash; nothing was written."""


def list_requests(db: Database, court: str | None, status: str | None) -> list[dict[str, Any]]:
    with db.reading() as session:
        rows = RequestRepository(session).listing(court_code(court) if court else None, status)
        return [
            {
                "reference": req.reference,
                "court": code,
                "measure": measure,
                "kind": req.kind,
                "status": req.status,
                "submissions": req.submission_count,
                "opened_at": rfc3339(req.opened_at),
                "sealed_at": rfc3339(req.sealed_at) if req.sealed_at else None,
                "held": req.held,
                "reason": req.status_reason,
            }
            for req, code, measure in rows
        ]


def list_submissions(db: Database, court: str | None) -> list[dict[str, Any]]:
    with db.reading() as session:
        rows = SubmissionRepository(session).listing(court_code(court) if court else None)
        return [
            {
                "reference": sub.reference,
                "court": code,
                "channel": sub.channel,
                "received_at": rfc3339(sub.received_at),
                "size": sub.size,
                "documents": count,
                "raw_sha256": sub.raw_sha256,
            }
            for sub, code, count in rows
        ]


@dataclass
class _Staged:
    """Decrypted, verified files waiting to be moved into the output folder."""

    files: dict[str, bytes] = field(default_factory=dict)


class Exporter:
    """Decrypts with the greffe's keyring and writes only what verifies."""

    def __init__(self, db: Database, blobs: BlobStorage, keyring: GpgKeyring) -> None:
        self.db = db
        self.blobs = blobs
        self.keyring = keyring

    def export(self, reference: str, out: Path, progress: Progress | None = None) -> list[str]:
        """Export a request (every submission) or one submission; returns the files written."""
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise InputError(f"{out} must be an empty or new folder")
        staged = _Staged()
        with self.db.reading() as session:
            if "/" in reference:
                submission = self._submission(session, reference)
                self._stage_submission(session, submission, "", staged, progress)
            else:
                self._stage_request(session, reference, staged, progress)
        return _write_all(out, staged)

    def _submission(self, session: Session, reference: str) -> Submission:
        submission = SubmissionRepository(session).by_reference(reference.strip().upper())
        if submission is None:
            raise NotFound(f"unknown submission {reference}")
        return submission

    def _stage_request(
        self, session: Session, reference: str, staged: _Staged, progress: Progress | None
    ) -> None:
        request = RequestRepository(session).by_reference(reference.strip().upper())
        if request is None:
            raise NotFound(f"unknown request {reference}")
        court = CourtRepository(session).get(request.court_id)
        registration = RegistrationRepository(session).get(request.registration_id)
        assert court is not None and registration is not None
        submissions = SubmissionRepository(session).of_request(request.id)
        listing = []
        for submission in submissions:
            self._stage_submission(session, submission, f"{submission.number}/", staged, progress)
            listing.append(
                {
                    "reference": submission.reference,
                    "folder": str(submission.number),
                    "received_at": rfc3339(submission.received_at),
                    "channel": submission.channel,
                    "raw_sha256": submission.raw_sha256,
                }
            )
        staged.files["manifest.json"] = encode(
            request_manifest(
                reference=request.reference,
                court=court.code,
                measure=registration.measure,
                kind=request.kind,
                status=request.status,
                status_reason=request.status_reason,
                opened_at=request.opened_at,
                sealed_at=request.sealed_at,
                submissions=listing,
            )
        )

    def _stage_submission(
        self,
        session: Session,
        submission: Submission,
        prefix: str,
        staged: _Staged,
        progress: Progress | None,
    ) -> None:
        manifest_bytes = self._open(session, submission.manifest_blob)
        manifest = json.loads(manifest_bytes)
        if manifest.get("submission_reference") != submission.reference:
            raise IntegrityFailure(f"{submission.reference}: manifest names another submission")
        raw = self._open(session, submission.raw_blob)
        _expect(raw, submission.raw_sha256, f"{submission.reference}: message")
        _expect(raw, manifest["message"]["sha256"], f"{submission.reference}: message")
        staged.files[f"{prefix}manifest.json"] = manifest_bytes
        staged.files[f"{prefix}message.eml"] = raw
        rows = SubmissionRepository(session).documents(submission.id)
        entries = {entry["index"]: entry for entry in manifest["documents"]}
        if set(entries) != {row.idx for row in rows}:
            raise IntegrityFailure(f"{submission.reference}: documents differ from the manifest")
        for row in rows:
            entry = entries[row.idx]
            content = self._open(session, row.blob)
            label = f"{submission.reference}: document {row.idx}"
            _expect(content, row.sha256, label)
            _expect(content, entry["sha256"], label)
            # The manifest's name was sanitised on the way in; sanitise again all the same.
            name = sanitise_filename(entry["filename"], row.idx, row.detected_type)
            staged.files[f"{prefix}documents/{row.idx:02d}-{name}"] = content
        if progress:
            progress(1)

    def _open(self, session: Session, key: str) -> bytes:
        blob = BlobRepository(session).get(key)
        sealed = self.blobs.read(key)
        if blob is None or hashlib.sha256(sealed).hexdigest() != blob.sha256:
            raise IntegrityFailure(f"stored blob {key} does not match its recorded hash")
        return self.keyring.decrypt(sealed)


def _expect(data: bytes, sha256: str, label: str) -> None:
    if hashlib.sha256(data).hexdigest() != sha256:
        raise IntegrityFailure(f"{label}: SHA-256 mismatch; nothing written")


def _write_all(out: Path, staged: _Staged) -> list[str]:
    """Write into a staging folder beside `out`, then move it into place in one rename."""
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=out.parent))
    try:
        for relative, data in staged.files.items():
            target = staging / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        if out.exists():
            out.rmdir()
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return sorted(staged.files)
