"""A submission's payload on disk: each part encrypted to the court's keys, then written durably.

The raw message and the documents are written (and fsync'd) by the
message's own worker thread, in parallel with other messages.  The
manifest is written by the group commit's writer, once the submission's
number is known: its file is fsync'd together with the batch's others, and
every new blob's directory once per batch, before the batch commits.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Sequence

from gateway.errors import KeyRefused
from gateway.metrics import Observe, no_observe, timed
from gateway.model import Clock
from gateway.storage.blobstore import BlobStorage
from gateway.storage.courts import active_fingerprints, active_keys
from gateway.storage.crypto import Encryptor
from gateway.storage.db import Reads
from gateway.storage.groupcommit import Batch
from gateway.storage.submissions import StoredBlob

log = logging.getLogger("gateway.storage")


class CourtEncryptors:
    """One Encryptor per court, rebuilt when the court's active keys change.

    Each message reads only the fingerprints of the court's active keys (one
    narrow query); the armoured keys are loaded and parsed when that set changes.
    """

    def __init__(self) -> None:
        self._cache: dict[tuple[str, ...], Encryptor] = {}
        self._lock = threading.Lock()

    def for_court(self, reads: Reads, court_id: int) -> Encryptor:
        """The court's encryptor, read in the caller's read transaction."""
        marker = active_fingerprints(reads, court_id)
        if not marker:
            raise KeyRefused("court has no active encryption key")
        with self._lock:
            encryptor = self._cache.get(marker)
        if encryptor is not None:
            return encryptor
        keys = active_keys(reads, court_id)
        if not keys:
            raise KeyRefused("court has no active encryption key")
        encryptor = Encryptor.for_keys([armored for _fingerprint, armored in keys])
        with self._lock:
            self._cache[tuple(sorted(fingerprint for fingerprint, _ in keys))] = encryptor
        return encryptor


class PayloadWriter:
    """Encrypts and writes a submission's blobs; removes them again if its commit fails."""

    def __init__(self, blobs: BlobStorage, clock: Clock, observe: Observe = no_observe) -> None:
        self.blobs = blobs
        self.clock = clock
        self.observe = observe
        self.encryptors = CourtEncryptors()

    def free_bytes(self) -> int:
        return self.blobs.free_bytes()

    def write_message(
        self, encryptor: Encryptor, raw: bytes, documents: Sequence[bytes]
    ) -> list[StoredBlob]:
        """The raw message, then each document; all or nothing (fsync'd, directories pending).

        Nothing is written once one of the court's keys has expired (CourtKeyExpired).
        """
        encryptor.refuse_expired(self.clock())
        written: list[StoredBlob] = []
        try:
            written.append(self._write(encryptor, "raw", raw))
            written.extend(self._write(encryptor, "doc", content) for content in documents)
        except BaseException:
            self.discard(written)
            raise
        return written

    def write_manifest(self, encryptor: Encryptor, data: bytes, batch: Batch) -> StoredBlob:
        """The manifest, written by the writer thread; fsync'd with the batch's others."""
        blob = self._write(encryptor, "manifest", data, sync=False)
        keys: list[str] = batch.shared("blob-files", list)
        if not keys:
            batch.before_commit("blob-files", functools.partial(self.blobs.sync_files, keys))
        keys.append(blob.key)
        return blob

    def make_durable(self, batch: Batch, written: Sequence[StoredBlob]) -> None:
        """Before the batch commits, fsync (once each) the directories of these new blobs."""
        for blob in written:
            directory = self.blobs.directory_of(blob.key)
            batch.before_commit(
                ("blob-dir", directory), functools.partial(self.blobs.sync_directory, directory)
            )

    def discard(self, written: Sequence[StoredBlob]) -> None:
        for blob in written:
            try:
                self.blobs.delete(blob.key)
            except Exception:  # `check` reports what could not be removed
                log.warning("could not remove blob %s after a failed submission", blob.key)

    def _write(
        self, encryptor: Encryptor, kind: str, data: bytes, *, sync: bool = True
    ) -> StoredBlob:
        """Encrypt and store one blob; its directory entry is made durable by the batch.

        With `sync=False` the file itself is fsync'd by the batch too.
        """
        with timed(self.observe, "encrypt"):
            sealed = encryptor.encrypt(data)
        key = self.blobs.new_key(kind, self.clock())
        with timed(self.observe, "blob_write"):
            digest = self.blobs.write(key, sealed, sync_dir=False, sync=sync)
        return StoredBlob(key, kind, digest, len(sealed))
