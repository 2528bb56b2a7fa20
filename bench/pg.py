"""A throwaway PostgreSQL cluster for the bench, durable (fsync on), on a Unix socket."""

from __future__ import annotations

from tests.fixtures.postgres import PostgresCluster


class DurableCluster(PostgresCluster):
    """The test fixture's cluster with fsync and synchronous_commit left on: a fair comparison."""

    server_options = "-c max_connections=200 -c shared_buffers=256MB"

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
