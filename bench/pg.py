"""A throwaway PostgreSQL cluster for the bench, durable (fsync on), on a Unix socket."""

from __future__ import annotations

from tests.fixtures.postgres import PostgresCluster


class DurableCluster(PostgresCluster):
    """The test fixture's cluster with fsync and synchronous_commit left on: a fair comparison."""

    def start(self) -> None:
        import os
        import pwd

        from tests.fixtures.postgres import _user_exists

        if os.geteuid() == 0:
            self._user = "postgres" if _user_exists("postgres") else "nobody"
            entry = pwd.getpwnam(self._user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self.socket_dir.mkdir()
        if self._user:
            entry = pwd.getpwnam(self._user)
            os.chown(self.socket_dir, entry.pw_uid, entry.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", "gateway", "--auth=trust", "-E", "UTF8")
        options = (
            f"-k {self.socket_dir} -c listen_addresses='' -p {self.port} "
            "-c max_connections=200 -c shared_buffers=256MB"
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-o", options, "-w", "-l", str(self.root / "log"),
            "start",
        )

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
