"""IMAP pull with several messages in the pipeline at once and batched server actions.

Each test would fail if concurrency or batching broke a guarantee of the
one-at-a-time puller: each message gets its own fate, nothing is lost,
nothing is stored or stubbed twice, and a pass stopped in the middle of a
batch is finished by the next one.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable

import pytest
from sqlalchemy import func, select

from gateway.imap.client import FetchedMessage, ImapClient, ImapUnavailable
from gateway.imap.stub import STUB_HEADER, is_stub, stub_marker
from gateway.imap.watch import ImapSeams
from gateway.ingest.pipeline import Inbound, Outcome
from gateway.storage.models import Outbox
from tests.fixtures.dovecot import (
    Crash,
    Dovecot,
    audit_events,
    carries_document,
    runner,
    states,
    submission_message,
    submissions,
)
from tests.fixtures.gatewayserver import World

pytestmark = pytest.mark.dovecot

Ingest = Callable[[Inbound], Awaitable[Outcome]]
# 1: the tail commits and stubs one message at a time; 8: several at once.
strip_batches = pytest.mark.parametrize("strip_batch", [1, 8])


def _receipts(world: World) -> int:
    with world.gw.services.db.transaction() as session:
        query = select(func.count()).select_from(Outbox).where(Outbox.kind == "receipt")
        return session.scalar(query) or 0


def _wrap_ingest(
    monkeypatch: pytest.MonkeyPatch, world: World, wrap: Callable[[Ingest], Ingest]
) -> None:
    pipeline = world.gw.services.pipeline
    monkeypatch.setattr(pipeline, "ingest", wrap(pipeline.ingest))


def _marker(raw: bytes) -> bytes:
    return stub_marker(hashlib.sha256(raw).hexdigest()).encode()


def _assert_each_original_or_its_one_stub(dovecot: Dovecot, raws: list[bytes]) -> None:
    """Nothing lost, nothing doubled: every original is there, or exactly one stub for it."""
    found = [raw for _uid, _head, raw in dovecot.messages()]
    assert len(found) == len(raws)
    for raw in raws:
        stubs = [m for m in found if is_stub(m) and _marker(raw) in m]
        assert (raw in found) != (len(stubs) == 1), "an original must be kept or replaced once"


@strip_batches
async def test_imap_mixed_batch_gives_each_message_its_own_fate(
    world: World, dovecot: Dovecot, strip_batch: int
) -> None:
    code = world.request_code()
    accepted = [submission_message(world, code, body=f"envoi {i}\n") for i in range(3)]
    refused = [world.gw.message(sign_domain=None, subject=f"sans signature {i}") for i in range(3)]
    for raw in [accepted[0], refused[0], accepted[1], refused[1], refused[2], accepted[2]]:
        dovecot.append(raw)  # UIDs 1..6, all in one batch and one fetch group

    seams = ImapSeams(strip_batch=strip_batch)
    summary = await runner(world.gw.services, dovecot, seams).pull_once()

    assert (summary.examined, summary.stored, summary.stripped, summary.quarantined) == (
        6,
        3,
        3,
        3,
    )
    inbox = [raw for _uid, _head, raw in dovecot.messages()]
    assert len(inbox) == 3 and all(is_stub(raw) and not carries_document(raw) for raw in inbox)
    for raw in accepted:  # each stub replaces its own original, with its own reference
        assert sum(_marker(raw) in stub for stub in inbox) == 1
    references = {reference for reference, _channel in submissions(world.gw.services)}
    assert len(references) == 3
    assert all(any(ref.encode() in stub for ref in references) for stub in inbox)
    assert sorted(raw for _uid, _head, raw in dovecot.messages("Quarantine")) == sorted(refused)
    assert states(world.gw.services) == [
        "stripped",
        "quarantined",
        "stripped",
        "quarantined",
        "quarantined",
        "stripped",
    ]
    assert len(audit_events(world.gw.services, "imap.stripped")) == 3
    assert len(audit_events(world.gw.services, "imap.quarantined")) == 3


async def test_imap_pipeline_holds_several_messages_at_once(
    world: World, dovecot: Dovecot, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = world.request_code()
    for index in range(4):
        dovecot.append(submission_message(world, code, body=f"envoi {index}\n"))
    inside, peak, together = 0, 0, asyncio.Event()

    def wrap(real: Ingest) -> Ingest:
        async def ingest(inbound: Inbound) -> Outcome:
            nonlocal inside, peak
            inside += 1
            peak = max(peak, inside)
            if inside >= 2:
                together.set()
            try:  # one message at a time would never get past this wait
                await asyncio.wait_for(together.wait(), 10)
                return await real(inbound)
            finally:
                inside -= 1

        return ingest

    _wrap_ingest(monkeypatch, world, wrap)
    summary = await runner(world.gw.services, dovecot, ImapSeams(concurrency=3)).pull_once()

    assert (summary.stored, summary.stripped, summary.deferred) == (4, 4, 0)
    assert 2 <= peak <= 3  # concurrent, and bounded


@strip_batches
async def test_imap_two_copies_in_one_batch_store_once(
    world: World, dovecot: Dovecot, strip_batch: int
) -> None:
    raw = submission_message(world, world.request_code())
    dovecot.append(raw)
    dovecot.append(raw)  # delivered twice: the same bytes under two UIDs
    receipts_before = _receipts(world)

    seams = ImapSeams(strip_batch=strip_batch)
    summary = await runner(world.gw.services, dovecot, seams).pull_once()

    assert (summary.stored, summary.stripped, summary.deferred) == (1, 2, 0)
    assert len(submissions(world.gw.services)) == 1
    assert _receipts(world) == receipts_before + 1
    [(_uid, _head, stub)] = dovecot.messages()  # both originals gone, one stub for the bytes
    assert is_stub(stub) and _marker(raw) in stub


@strip_batches
async def test_imap_crash_mid_batch_then_next_pass_loses_and_doubles_nothing(
    world: World, dovecot: Dovecot, monkeypatch: pytest.MonkeyPatch, strip_batch: int
) -> None:
    """The process dies after the pipeline committed one message, others in flight."""
    services = world.gw.services
    code = world.request_code()
    raws = [submission_message(world, code, body=f"envoi {index}\n") for index in range(8)]
    dovecot.write_maildir(raws)
    receipts_before = _receipts(world)

    def wrap(real: Ingest) -> Ingest:
        async def ingest(inbound: Inbound) -> Outcome:
            outcome = await real(inbound)
            if b"envoi 3\r\n" in inbound.raw:
                raise Crash("killed after the pipeline committed")
            return outcome

        return ingest

    _wrap_ingest(monkeypatch, world, wrap)
    with pytest.raises(Crash):
        await runner(services, dovecot, ImapSeams(strip_batch=strip_batch)).pull_once()
    _assert_each_original_or_its_one_stub(dovecot, raws)
    stored_before = len(submissions(services))
    assert 1 <= stored_before <= 8
    monkeypatch.undo()

    summary = await runner(services, dovecot).pull_once()

    assert summary.deferred == 0 and stored_before + summary.stored == 8
    assert len(submissions(services)) == 8
    assert _receipts(world) == receipts_before + 8  # one receipt per submission
    _assert_each_original_or_its_one_stub(dovecot, raws)
    assert all(is_stub(raw) for _uid, _head, raw in dovecot.messages())
    assert "fetched" not in states(services)


@strip_batches
async def test_imap_pipeline_error_defers_only_that_message(
    world: World, dovecot: Dovecot, monkeypatch: pytest.MonkeyPatch, strip_batch: int
) -> None:
    services = world.gw.services
    code = world.request_code()
    raws = [submission_message(world, code, body=f"envoi {index}\n") for index in range(4)]
    for raw in raws:
        dovecot.append(raw)

    def wrap(real: Ingest) -> Ingest:
        async def ingest(inbound: Inbound) -> Outcome:
            if b"envoi 2\r\n" in inbound.raw:
                raise RuntimeError("a bug of ours")
            return await real(inbound)

        return ingest

    _wrap_ingest(monkeypatch, world, wrap)
    first = await runner(services, dovecot, ImapSeams(strip_batch=strip_batch)).pull_once()

    assert (first.stored, first.stripped, first.deferred) == (3, 3, 1)
    assert states(services) == ["stripped", "stripped", "fetched", "stripped"]
    assert raws[2] in [raw for _uid, _head, raw in dovecot.messages()]
    monkeypatch.undo()

    second = await runner(services, dovecot).pull_once()

    assert (second.examined, second.stored, second.stripped, second.skipped) == (1, 1, 1, 3)
    assert states(services) == ["stripped"] * 4
    assert len(submissions(services)) == 4
    _assert_each_original_or_its_one_stub(dovecot, raws)
    assert all(STUB_HEADER.encode() in raw for _uid, _head, raw in dovecot.messages())


async def test_imap_server_failure_mid_pass_keeps_what_was_done(
    world: World, dovecot: Dovecot, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The third body FETCH fails: what was stripped stays recorded, the next pass finishes."""
    services = world.gw.services
    code = world.request_code()
    raws = [submission_message(world, code, body=f"envoi {index}\n") for index in range(5)]
    for raw in raws:
        dovecot.append(raw)
    real_fetch = ImapClient.fetch
    calls = 0

    async def flaky_fetch(self: ImapClient, uids: list[int]) -> list[FetchedMessage]:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise ImapUnavailable("imap intake: UID FETCH failed")
        return await real_fetch(self, uids)

    monkeypatch.setattr(ImapClient, "fetch", flaky_fetch)
    # Groups of two: [1, 2] and [3, 4] are read ahead; [5] is fetched once 1 is stripped
    # (alone: with a larger strip_batch, 2 would be stripped with 1 when ready in time).
    with pytest.raises(ImapUnavailable):
        await runner(services, dovecot, ImapSeams(concurrency=2, strip_batch=1)).pull_once()

    # 1's `stripped` was waiting for the next write: the failed pass still records it.
    assert states(services) == ["stripped", "fetched", "fetched", "fetched"]
    assert len(audit_events(services, "imap.stripped")) == 1
    assert len(submissions(services)) == 4  # 2 to 4 went through the pipeline meanwhile
    monkeypatch.undo()

    summary = await runner(services, dovecot).pull_once()

    assert (summary.stored, summary.stripped, summary.skipped) == (1, 4, 1)
    assert len(submissions(services)) == 5
    assert states(services) == ["stripped"] * 5
    _assert_each_original_or_its_one_stub(dovecot, raws)
    assert all(is_stub(raw) for _uid, _head, raw in dovecot.messages())


async def test_imap_crash_after_a_runs_stored_leaves_originals_then_strips_them(
    world: World, dovecot: Dovecot
) -> None:
    """strip_batch 8: the pass dies right after a run's `stored` commit, before any stub."""
    services = world.gw.services
    code = world.request_code()
    raws = [submission_message(world, code, body=f"envoi {index}\n") for index in range(6)]
    for raw in raws:
        dovecot.append(raw)
    receipts_before = _receipts(world)

    def die_at_stored(reached: str, key: object) -> None:
        if reached == "stored":
            raise Crash("killed after `stored`")

    seams = ImapSeams(strip_batch=8, checkpoint=die_at_stored)
    with pytest.raises(Crash):
        await runner(services, dovecot, seams).pull_once()

    assert [raw for _uid, _head, raw in dovecot.messages()] == raws  # nothing touched yet
    assert "stored" in states(services)
    stored_before = len(submissions(services))

    summary = await runner(services, dovecot, ImapSeams(strip_batch=8)).pull_once()

    assert stored_before + summary.stored == 6 and summary.stripped == 6
    assert len(submissions(services)) == 6
    assert _receipts(world) == receipts_before + 6
    assert states(services) == ["stripped"] * 6
    _assert_each_original_or_its_one_stub(dovecot, raws)
    assert all(is_stub(raw) for _uid, _head, raw in dovecot.messages())


async def test_imap_strip_batch_is_the_setting_unless_a_seam_sets_it(
    world: World, dovecot: Dovecot
) -> None:
    services = world.gw.services
    assert services.settings.imap.strip_batch == 8
    assert runner(services, dovecot).puller.strip_batch == 8
    assert runner(services, dovecot, ImapSeams(strip_batch=1)).puller.strip_batch == 1
