"""The daily check inside `serve`: run it, mail the operator about problems, publish its result.

`serve` runs it once a day for the whole cluster (`gateway.jobs`).  When it
finds a problem, a `check_report` mail to `gateway.operator_address` is
queued in the outbox in the transaction that records the report, so the
report and its mail commit together.  The metrics are read back from the
latest recorded report at every poll, on every node: whichever node (or a
`gateway check` at the command line) ran it, each one shows the same result.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from gateway.audit.check import Findings, run_check
from gateway.model import Clock
from gateway.outbox.templates import format_utc
from gateway.storage.audit import AuditRepository
from gateway.storage.blobstore import BlobStorage
from gateway.storage.db import Database, Session
from gateway.storage.outbox import enqueue

log = logging.getLogger("gateway.check")
MAILED_PROBLEMS = 50
"""Problems listed in the operator's mail; `gateway check` shows them all."""

SetMetrics = Callable[[float, int], None]
"""(completion time as Unix time, problems found)."""


class DailyCheck:
    """The check `serve` runs daily, with the operator's address and where its result goes."""

    def __init__(
        self,
        db: Database,
        blobs: BlobStorage,
        clock: Clock,
        *,
        operator_address: str,
        set_metrics: SetMetrics,
        capture_dir: Path | None = None,
    ) -> None:
        self.db = db
        self.capture_dir = capture_dir
        """Where captured mail goes (`relay.mode = "capture"`): the check reports it."""
        self.blobs = blobs
        self.clock = clock
        self.operator_address = operator_address.strip()
        self.set_metrics = set_metrics

    def run(self) -> Findings:
        """One check (blocking): the report, its audit event, the operator's mail if needed."""
        findings = run_check(
            self.db, self.blobs, self.clock(), notify=self._notify, capture_dir=self.capture_dir
        )
        if findings.ok:
            log.info("daily check passed", extra={"counts": findings.counts})
        else:
            log.warning("daily check found problems", extra={"problems": len(findings.problems)})
        self.refresh()
        return findings

    def refresh(self) -> None:
        """Set the metrics from the latest recorded report, if there is one."""
        with self.db.reading() as session:
            last = AuditRepository(session).last_check()
        if last is not None:
            completed_at, problems = last
            self.set_metrics(completed_at.timestamp(), problems)

    def _notify(self, session: Session, findings: Findings) -> None:
        if findings.ok or not self.operator_address:
            return
        now = self.clock()
        enqueue(
            session,
            kind="check_report",
            recipient=self.operator_address,
            now=now,
            values=report_values(findings, format_utc(now)),
        )


def report_values(findings: Findings, checked_at: str) -> dict[str, str]:
    """The `check_report` template's values: the problems are keys, references, folders."""
    shown = [" ".join(problem.split()) for problem in findings.problems[:MAILED_PROBLEMS]]
    lines = [f"    - {problem}" for problem in shown]
    hidden = len(findings.problems) - len(shown)
    if hidden > 0:
        lines.append(f"    (et {hidden} autre(s) : voir « gateway check »)")
    return {
        "problem_count": str(len(findings.problems)),
        "checked_at": checked_at,
        "problems": "\n".join(lines),
    }
