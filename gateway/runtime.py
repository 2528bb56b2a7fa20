"""`gateway serve`: start every listener and worker, stop them gracefully on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gateway.app import Services
from gateway.imap.watch import run_pullers
from gateway.ingest.pipeline import Outcome
from gateway.metrics import MetricsServer, multiprocess_registry
from gateway.otp.service import seal_expired
from gateway.outbox.worker import OutboxWorker
from gateway.settings import Settings, parse_hostport
from gateway.smtp.server import GatewayHandler, SmtpLimits, SmtpListener, make_tls_context

log = logging.getLogger("gateway.serve")
SWEEP_INTERVAL = 60.0
SWITCH_INTERVAL = 0.001
OUTBOX_PROCESS_POLL = 0.25
"""How often an outbox process looks for due rows (no wake-up crosses processes)."""


@dataclass
class Running:
    """What a started gateway exposes (tests read the real ports from here)."""

    smtp_port: int
    stop: asyncio.Event
    http_port: int | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


def smtp_limits(services: Services) -> SmtpLimits:
    smtp, limits = services.settings.smtp, services.settings.limits
    return SmtpLimits(
        max_message_bytes=limits.max_message_bytes,
        max_recipients=limits.max_recipients,
        max_connections=smtp.max_connections,
        max_connections_per_client=smtp.max_connections_per_client,
        max_messages_per_client=smtp.max_messages_per_client,
        client_window=smtp.client_window.total_seconds(),
        max_commands=smtp.max_commands,
        idle_timeout=smtp.idle_timeout.total_seconds(),
        min_data_rate=smtp.min_data_rate,
    )


def new_outbox_worker(services: Services) -> OutboxWorker:
    return OutboxWorker(
        services.db,
        services.settings.relay,
        services.clock,
        compose=services.compose_mail,
        count=services.metrics.count_delivery,
    )


async def _sweep(services: Services, stop: asyncio.Event) -> None:
    """Seal requests whose code expired (the daily check comes on top of this)."""

    def seal() -> list[str]:
        with services.db.transaction() as session:
            return seal_expired(session, services.clock())

    while not stop.is_set():
        try:
            sealed = await asyncio.to_thread(seal)
            if sealed:
                log.info("sealed expired requests", extra={"count": len(sealed)})
        except Exception:
            log.exception("sweeper failed; will retry")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=SWEEP_INTERVAL)


async def run_gateway(
    services: Services,
    on_ready: Callable[[Running], None] | None = None,
    *,
    reuse_port: bool = False,
    serve_http: bool = True,
    deliver: bool = True,
) -> None:
    """Run until SIGTERM/SIGINT (or `Running.stop` is set), then shut down in order.

    With `deliver=False` the outbox is left to an outbox process (`run_outbox`).
    """
    settings = services.settings
    # The event loop and the group commit's writer give the interpreter lock up at
    # every socket or SQLite call and must get it back from threads busy parsing
    # and encrypting: a shorter switch interval than Python's 5 ms shortens each wait.
    sys.setswitchinterval(SWITCH_INTERVAL)
    await asyncio.to_thread(services.upgrade_database)
    metrics_server = None
    if serve_http:
        http_host, http_port = parse_hostport(settings.http.listen)
        metrics_server = MetricsServer(http_host, http_port, services.metrics.registry)
    if not settings.auth.require_dkim:
        log.warning("auth.require_dkim is FALSE: senders are NOT authenticated by DKIM")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        # Only the main thread can take signals; tests run the gateway in another one.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, stop.set)

    outbox = None
    if deliver:
        await asyncio.to_thread(lambda: services.composer)  # a bad DKIM or signing key fails now
        outbox = new_outbox_worker(services)
    handler = GatewayHandler(
        await asyncio.to_thread(lambda: services.pipeline),
        services.recipients,
        smtp_limits(services),
        services.clock,
    )
    if outbox is not None:
        handler.on_outcome = _wake_outbox(outbox)
    handler.count_message = services.metrics.count_message
    tls = None
    if settings.smtp.tls_cert and settings.smtp.tls_key:
        tls = make_tls_context(str(settings.smtp.tls_cert), str(settings.smtp.tls_key))
    listener = SmtpListener(
        handler, hostname=settings.smtp.hostname or settings.gateway.domain, tls_context=tls
    )
    host, port = parse_hostport(settings.smtp.listen)
    running = Running(
        smtp_port=await listener.start(host, port, reuse_port=reuse_port),
        stop=stop,
        http_port=metrics_server.port if metrics_server else None,
    )
    running.tasks = [
        asyncio.create_task(_sweep(services, stop), name="sweeper"),
        asyncio.create_task(run_pullers(services, stop), name="imap"),
    ]
    if outbox is not None:
        running.tasks.append(asyncio.create_task(outbox.run(stop), name="outbox"))
    log.info("gateway listening", extra={"smtp": f"{host}:{running.smtp_port}", "tls": bool(tls)})
    if on_ready is not None:
        on_ready(running)
    await stop.wait()
    log.info("shutting down")
    await listener.stop(settings.smtp.shutdown_grace.total_seconds())
    await asyncio.gather(*running.tasks, return_exceptions=True)
    if metrics_server is not None:
        metrics_server.close()
    services.close()
    log.info("stopped")


def _wake_outbox(outbox: OutboxWorker) -> Callable[[Outcome], None]:
    def wake(outcome: Outcome) -> None:
        outbox.wake()

    return wake


async def run_outbox(services: Services, interval: float = OUTBOX_PROCESS_POLL) -> None:
    """Deliver the outbox until SIGTERM/SIGINT: the outbox process of `serve`.

    Composing and signing receipts is CPU work: in a process of its own it
    does not take the accepting process's interpreter lock.
    """
    await asyncio.to_thread(services.upgrade_database)
    await asyncio.to_thread(lambda: services.composer)  # a bad DKIM or signing key fails now
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, stop.set)
    outbox = new_outbox_worker(services)
    log.info("outbox process delivering")
    await outbox.run(stop, interval=interval)
    services.close()


def _settings_for_child(config_path: str) -> Settings:
    from gateway.logs import setup_logging
    from gateway.settings import load_settings

    settings = load_settings(Path(config_path))
    setup_logging(settings.logging.level, settings.logging.json_lines)
    return settings


def _worker_main(config_path: str, deliver: bool = True) -> None:
    """One SMTP worker process of `serve` (spawned: a fresh interpreter)."""
    settings = _settings_for_child(config_path)
    asyncio.run(run_gateway(Services(settings), reuse_port=True, serve_http=False, deliver=deliver))


def _outbox_main(config_path: str) -> None:
    """The outbox process of `serve --outbox-process` (spawned: a fresh interpreter)."""
    asyncio.run(run_outbox(Services(_settings_for_child(config_path))))


def run_workers(services: Services, workers: int, *, outbox_process: bool = False) -> None:
    """N processes share the SMTP socket (SO_REUSEPORT) and the database; the parent serves
    /metrics for all of them. With `outbox_process`, one more process delivers the outbox
    and the SMTP workers only accept."""
    settings = services.settings
    assert settings.config_path is not None
    metrics_dir = Path(tempfile.mkdtemp(prefix="gateway-metrics-"))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    services.upgrade_database()
    context = multiprocessing.get_context("spawn")
    config = str(settings.config_path)
    children = [
        context.Process(target=_worker_main, args=(config, not outbox_process), name=f"worker-{i}")
        for i in range(workers)
    ]
    if outbox_process:
        children.append(context.Process(target=_outbox_main, args=(config,), name="outbox"))
    for child in children:
        child.start()
    http_host, http_port = parse_hostport(settings.http.listen)
    metrics_server = MetricsServer(http_host, http_port, multiprocess_registry())
    stopping = threading.Event()

    def forward(signum: int, _frame: object) -> None:
        stopping.set()
        for child in children:
            if child.pid is not None and child.is_alive():
                os.kill(child.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    log.info("started workers", extra={"workers": workers, "outbox_process": outbox_process})
    while not stopping.is_set() and all(child.is_alive() for child in children):
        stopping.wait(0.5)
    forward(signal.SIGTERM, None)
    for child in children:
        child.join(timeout=settings.smtp.shutdown_grace.total_seconds() + 10)
    metrics_server.close()
    shutil.rmtree(metrics_dir, ignore_errors=True)
