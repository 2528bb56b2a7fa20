"""The database connection lost in the middle of a group commit: a temporary fault, not a crash."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import Connection, event, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from gateway.errors import StorageUnavailable
from gateway.storage import migrate
from gateway.storage.blobsweep import sweep_blobs
from gateway.storage.db import READ_ONLY, Database
from gateway.storage.groupcommit import Batch, GroupCommitter
from tests.fixtures.gatewayserver import World
from tests.fixtures.pdfs import plain_pdf
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


def test_commit_answer_lost_leaves_the_blobs_for_the_retry_or_the_sweep(
    world: World, db_url: str
) -> None:
    """A COMMIT whose answer is lost may have stored the rows: the files they name must stay.

    The client is told 451 and sends again; here the commit did not land, so
    the retry stores a new submission, and the first attempt's blobs (named
    by no row) are removed by the blob sweep once they are an hour old.
    """
    gw = world.gw
    raw = gw.message(
        subject=f"Compte [{world.request_code()}]",
        attachments=[("compte.pdf", "application/pdf", plain_pdf(filler=500))],
    )
    blob_dir = gw.services.settings.blob_dir

    def lose_the_commit(conn: Connection) -> None:
        if not conn.get_execution_options().get(READ_ONLY):  # the group commit's, not a read's
            raise OperationalError("COMMIT", {}, ConnectionError("server closed the connection"))

    event.listen(gw.services.db.engine, "commit", lose_the_commit)
    try:
        code, text_ = gw.send(raw)
    finally:
        event.remove(gw.services.db.engine, "commit", lose_the_commit)
    assert code == 451, text_
    left = sorted(p for p in blob_dir.rglob("*.pgp"))
    assert len(left) == 3  # raw, document, manifest: kept, the rows might name them

    code, text_ = gw.send(raw)
    assert code == 250, text_
    report = sweep_blobs(gw.services.db, gw.services.blobs, gw.clock() + timedelta(hours=2))
    assert len(report.orphans) == 3
    assert all(not path.exists() for path in left)
    assert len(list(blob_dir.rglob("*.pgp"))) == 3  # the stored submission's own
