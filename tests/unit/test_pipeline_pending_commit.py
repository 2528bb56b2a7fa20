"""A message waiting for its group commit: the pipeline awaits the writer's future."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from gateway.ingest.pipeline import Action, Outcome, PendingCommit, Pipeline


def _pipeline() -> Pipeline:
    # Only the waiting half is exercised: no stages needed, only its threads and observer.
    pipeline = Pipeline.__new__(Pipeline)
    pipeline._threads = ThreadPoolExecutor(max_workers=2)
    pipeline.observe = lambda stage, seconds: None
    return pipeline


def _recorded(settled: list[Exception]) -> PendingCommit:
    committed: Future[Outcome] = Future()

    def settle(error: Exception) -> Outcome:
        settled.append(error)
        return Outcome(Action.SUBMITTED)

    return PendingCommit(committed, settle)


def test_the_outcome_is_the_committed_one() -> None:
    pipeline = _pipeline()
    settled: list[Exception] = []
    pending = _recorded(settled)

    async def main() -> Outcome:
        waiting = asyncio.ensure_future(pipeline._settled(pending))
        await asyncio.sleep(0)
        outcome = Outcome(Action.SUBMITTED, "R/1")
        threading.Thread(target=pending.committed.set_result, args=(outcome,)).start()
        return await waiting

    assert asyncio.run(main()).reference == "R/1"
    assert settled == []


def test_a_failed_commit_is_settled_in_a_thread() -> None:
    pipeline = _pipeline()
    committed: Future[Outcome] = Future()
    where: list[str] = []

    def settle(error: Exception) -> Outcome:
        where.append(threading.current_thread().name)
        raise error

    async def main() -> None:
        waiting = asyncio.ensure_future(pipeline._settled(PendingCommit(committed, settle)))
        await asyncio.sleep(0)
        committed.set_exception(OSError("disk gone"))
        with pytest.raises(OSError, match="disk gone"):
            await waiting

    asyncio.run(main())
    assert where and where[0] != threading.main_thread().name


def test_a_session_gone_while_waiting_still_has_its_failed_commit_undone() -> None:
    pipeline = _pipeline()
    committed: Future[Outcome] = Future()
    undone = threading.Event()

    def settle(error: Exception) -> Outcome:
        undone.set()
        raise error

    async def main() -> None:
        waiting = asyncio.ensure_future(pipeline._settled(PendingCommit(committed, settle)))
        await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting

    asyncio.run(main())
    assert not committed.cancelled()  # the unit is not withdrawn: it commits or fails
    committed.set_exception(OSError("commit failed"))
    assert undone.wait(5)


def test_a_session_gone_while_waiting_leaves_a_committed_message_alone() -> None:
    pipeline = _pipeline()
    settled: list[Exception] = []
    pending = _recorded(settled)

    async def main() -> None:
        waiting = asyncio.ensure_future(pipeline._settled(pending))
        await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting

    asyncio.run(main())
    pending.committed.set_result(Outcome(Action.SUBMITTED, "R/1"))
    pipeline._threads.shutdown(wait=True)
    assert settled == []
