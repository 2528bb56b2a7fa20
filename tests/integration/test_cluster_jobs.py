"""The daily purge and check in `serve`: once per cluster, their metrics, the operator's mail."""

from __future__ import annotations

import logging
import re
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.policy import default as default_policy

import pytest
from sqlalchemy import func, select, update

from gateway.jobs import ClusterJob, Schedule
from gateway.storage.db import Database
from gateway.storage.leases import DbLease
from gateway.storage.models import AuditEvent, CheckReport, Outbox, Request
from gateway.storage.submissions import BlobRepository
from tests.fixtures.gatewayserver import (
    FakeClock,
    GatewayFactory,
    GatewayUnderTest,
    World,
    make_world,
)
from tests.fixtures.gpgkeys import CourtKey
from tests.fixtures.pdfs import plain_pdf
from tests.fixtures.smtpsink import SmtpSink

FAST = Schedule(period=timedelta(hours=1), poll=0.2)
OPERATOR = "exploitation@exemple.fr"


def _events(gw: GatewayUnderTest, action: str) -> int:
    with gw.services.db.reading() as session:
        count = session.scalar(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.action == action)
        )
    return int(count or 0)


def _wait(
    condition: Callable[[], bool], timeout: float = 30, state: Callable[[], object] = str
) -> None:
    """Poll `condition`; on a timeout the assertion shows what `state()` returns."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met in time; {state()}")
        time.sleep(0.05)


def _mail_state(gw: GatewayUnderTest, sink: SmtpSink) -> str:
    """The outbox rows, the check events and who the sink received mail for."""
    with gw.services.db.reading() as session:
        rows = session.execute(
            select(Outbox.kind, Outbox.recipient, Outbox.status, Outbox.attempts)
        ).all()
        events = session.execute(
            select(AuditEvent.action, AuditEvent.data).where(
                AuditEvent.action.like("check.%") | AuditEvent.action.like("blob.%")
            )
        ).all()
    return f"outbox {rows}, events {events}, sink {[m[1] for m in sink.messages]}"


def _metrics(gw: GatewayUnderTest) -> dict[str, float]:
    url = f"http://127.0.0.1:{gw.running.http_port}/metrics"
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return {
        name: float(value)
        for name, value in re.findall(r"^(gateway_check_\w+) (\S+)$", text, re.MULTILINE)
    }


def _old_sealed_request(world: World) -> str:
    code = world.request_code()
    raw = world.gw.message(
        subject=f"[{code}]", attachments=[("a.pdf", "application/pdf", plain_pdf())]
    )
    status, reply = world.gw.send(raw)
    assert status == 250, reply
    reference = reply.split()[-1].split("/")[0]
    with world.gw.services.db.transaction() as session:
        session.execute(
            update(Request)
            .where(Request.reference == reference)
            .values(status="sealed", updated_at=datetime.now(UTC) - timedelta(days=60))
        )
    return reference


def _relay(sink: SmtpSink) -> dict[str, str]:
    return {"GATEWAY__RELAY__HOST": "127.0.0.1", "GATEWAY__RELAY__PORT": str(sink.port)}


def test_cluster_jobs_two_nodes_on_one_database_run_each_job_once(
    smtp_sink: SmtpSink,
    gateway_factory: GatewayFactory,
    court_key: CourtKey,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.jobs")
    world = make_world(smtp_sink, gateway_factory, court_key)  # default schedule: idle here
    reference = _old_sealed_request(world)
    overrides = {**_relay(smtp_sink), "GATEWAY__RETENTION__DAYS": "30"}
    nodes = [gateway_factory(overrides, schedule=FAST) for _ in range(2)]

    _wait(lambda: _events(world.gw, "check.completed") >= 1)
    _wait(lambda: _events(world.gw, "retention.purged") >= 1)
    time.sleep(10 * FAST.poll)  # ten more polls on each node: nobody runs them again

    ran = [r for r in caplog.records if r.getMessage() == "cluster job ran"]
    assert sorted(r.job for r in ran) == ["check", "retention"]  # type: ignore[attr-defined]
    assert _events(world.gw, "check.completed") == 1
    assert _events(world.gw, "retention.purged") == 1
    with world.gw.services.db.reading() as session:
        assert session.scalar(select(Request).where(Request.reference == reference)) is None
    # Every node shows the check's result, whichever ran it.
    _wait(lambda: all(_metrics(node).get("gateway_check_last_success_timestamp") for node in nodes))
    with world.gw.services.db.reading() as session:
        [report] = session.scalars(select(CheckReport.report)).all()
    assert report["problems"] == [], report  # what the check found, should it ever find some
    for node in nodes:
        metrics = _metrics(node)
        assert metrics["gateway_check_problems"] == 0
        assert abs(metrics["gateway_check_last_success_timestamp"] - time.time()) < 120


def test_daily_check_mails_the_operator_about_a_problem(
    smtp_sink: SmtpSink, gateway_factory: GatewayFactory, court_key: CourtKey
) -> None:
    world = make_world(smtp_sink, gateway_factory, court_key)
    code = world.request_code()
    raw = world.gw.message(
        subject=f"[{code}]", attachments=[("a.pdf", "application/pdf", plain_pdf())]
    )
    status, reply = world.gw.send(raw)
    assert status == 250, reply
    # A stored blob damaged on disk: a problem nothing but the operator repairs. (An orphan
    # blob would not do here: every node's blob sweep removes those, at its start too, and
    # it raced the check under load.)
    with world.gw.services.db.reading() as session:
        damaged = sorted(BlobRepository(session).hashes())[0]
    (world.gw.services.settings.blob_dir / damaged).write_bytes(b"not what was written")
    before = len(smtp_sink.messages)
    node = gateway_factory(
        {**_relay(smtp_sink), "GATEWAY__GATEWAY__OPERATOR_ADDRESS": OPERATOR}, schedule=FAST
    )

    _wait(
        lambda: any(rcpts == [OPERATOR] for _, rcpts, _ in smtp_sink.messages[before:]),
        state=lambda: _mail_state(world.gw, smtp_sink),
    )
    mail = next(m for m in smtp_sink.messages[before:] if m[1] == [OPERATOR])
    message = message_from_bytes(mail[2], policy=default_policy)
    assert "1 anomalie" in str(message["Subject"])
    assert "DKIM-Signature" in message
    body = message.get_content()
    assert f"blob {damaged} does not match its recorded SHA-256" in body
    _wait(lambda: _metrics(node).get("gateway_check_problems") == 1)


def test_cluster_job_lease_once_per_period_and_given_back_on_failure(db: Database) -> None:
    clock = FakeClock()
    runs: list[str] = []

    def job(holder: str, work: Callable[[], object] | None = None) -> ClusterJob:
        lease = DbLease(db, "check", holder, timedelta(hours=1), clock)
        return ClusterJob("check", lease, work or (lambda: runs.append(holder)), poll=1)

    def broken() -> None:
        raise RuntimeError("disk went away")

    first, second, failing = job("a"), job("b"), job("c", broken)
    assert first.run_if_due()
    assert not first.run_if_due() and not second.run_if_due()  # held for the period, by anyone
    clock.advance(timedelta(hours=1, seconds=1))
    assert second.run_if_due() and not first.run_if_due()
    assert runs == ["a", "b"]
    clock.advance(timedelta(hours=1, seconds=1))
    with pytest.raises(RuntimeError):
        failing.run_if_due()
    assert first.run_if_due()  # the failed run gave the lease back: no wait for a period
    assert runs == ["a", "b", "a"]
