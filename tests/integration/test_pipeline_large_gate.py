"""Large messages are checked one at a time (memory), small ones concurrently."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.errors import SenderNotRegistered, UnknownRecipient
from gateway.ingest.mime import MimeLimits
from gateway.ingest.pipeline import Inbound, Pipeline
from gateway.ingest.recipients import Recipient, Role
from gateway.ingest.senderauth import SenderVerdict
from gateway.model import Channel, Mailbox
from gateway.storage import migrate
from gateway.storage.db import Database


class SlowAuthenticator:
    """Records how many checks overlap (a fake behind the authenticator seam)."""

    def __init__(self) -> None:
        self.running = 0
        self.most = 0
        self._lock = threading.Lock()

    def authenticate(self, raw: bytes) -> SenderVerdict:
        with self._lock:
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(0.2)
        with self._lock:
            self.running -= 1
        return SenderVerdict(Mailbox.parse("t@exemple.fr"), "pass", "exemple.fr", "s1", True, "")


def message(size: int) -> bytes:
    head = b"From: t@exemple.fr\r\nTo: depot@g.example\r\nSubject: x\r\n\r\n"
    return head + (b"x" * 70 + b"\r\n") * (size // 72)


@pytest.mark.parametrize(("size", "expected_overlap"), [(10_000, 3), (300_000, 1)])
def test_large_messages_checked_one_at_a_time(
    tmp_path: Path, size: int, expected_overlap: int
) -> None:
    db = Database.from_url(f"sqlite:///{tmp_path / 'g.db'}")
    migrate.upgrade(db)
    auth = SlowAuthenticator()
    pipeline = Pipeline(
        db=db,
        authenticator=auth,  # type: ignore[arg-type]
        limits=MimeLimits(),
        max_message_bytes=10_000_000,
        id_domain="g.example",
        clock=lambda: datetime.now(UTC),
        handlers={Role.SUBMIT: lambda ctx: None},  # type: ignore[dict-item]
        large_message_bytes=100_000,
    )
    raw = message(size)

    async def ingest_three() -> None:
        inbound = Inbound(
            raw,
            "t@exemple.fr",
            Recipient(Role.SUBMIT, ""),
            Channel.SMTP,
            "127.0.0.1",
            datetime.now(UTC),
        )
        results = await asyncio.gather(
            *(pipeline.ingest(inbound) for _ in range(3)), return_exceptions=True
        )
        assert all(isinstance(r, SenderNotRegistered) for r in results)

    asyncio.run(ingest_three())
    assert auth.most == expected_overlap
    # Again in a new event loop (imap pull --once runs one per mailbox): the gate
    # that made tasks wait in the first loop must not be reused in the second.
    auth.most = 0
    asyncio.run(ingest_three())
    assert auth.most == expected_overlap
    db.dispose()


def test_role_without_handler_refused_before_any_check(tmp_path: Path) -> None:
    """postmaster@ mail pulled over IMAP: no handler there, so 550 5.1.1, not a KeyError."""
    db = Database.from_url(f"sqlite:///{tmp_path / 'g.db'}")
    migrate.upgrade(db)
    auth = SlowAuthenticator()
    pipeline = Pipeline(
        db=db,
        authenticator=auth,  # type: ignore[arg-type]
        limits=MimeLimits(),
        max_message_bytes=10_000_000,
        id_domain="g.example",
        clock=lambda: datetime.now(UTC),
        handlers={Role.SUBMIT: lambda ctx: None},  # type: ignore[dict-item]
    )
    inbound = Inbound(
        message(1000),
        "t@exemple.fr",
        Recipient(Role.POSTMASTER, ""),
        Channel.IMAP,
        "imap:intake",
        datetime.now(UTC),
    )
    try:
        with pytest.raises(UnknownRecipient):
            asyncio.run(pipeline.ingest(inbound))
    finally:
        pipeline.close()
        db.dispose()
    assert auth.most == 0  # refused before DKIM
