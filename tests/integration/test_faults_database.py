"""The database connection lost in the middle of a group commit: a temporary fault, not a crash."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from gateway.errors import StorageUnavailable
from gateway.storage import migrate
from gateway.storage.db import Database
from gateway.storage.groupcommit import Batch, GroupCommitter
from tests.fixtures.postgres import PostgresCluster
from tests.integration.test_group_commit import add_court, court_codes, run_batch

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg(postgres_cluster: PostgresCluster) -> Iterator[Database]:
    database = Database.from_url(postgres_cluster.create_database())
    migrate.upgrade(database)
    yield database
    database.dispose()


def cut_connection(session: Session, batch: Batch) -> str:
    """What a database crash does to the writer's connection, in the middle of a batch."""
    session.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))
    return "unreachable"


def test_connection_lost_mid_batch_fails_every_unit_with_storage_unavailable(pg: Database) -> None:
    """It used to leak OperationalError and PendingRollbackError: a traceback per message."""
    committer = GroupCommitter(pg)
    results = run_batch(committer, [add_court("TJ-A"), cut_connection, add_court("TJ-B")])
    assert all(isinstance(result, StorageUnavailable) for result in results), results
    assert court_codes(pg) == ["TJ-GATE"]  # the gate's own batch; nothing of this one
    # The writer carries on with a new connection once the database answers again.
    assert committer.run(add_court("TJ-C")) == "TJ-C"
    committer.close()
    assert court_codes(pg) == ["TJ-C", "TJ-GATE"]
