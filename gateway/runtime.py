"""`serve --workers N` and `--outbox-process`: the gateway in several processes, one supervisor.

The parent spawns the processes (each builds its own gateway through
`gateway.app`), serves the HTTP API with /metrics for all of them, and
forwards SIGTERM.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path

from gateway.affinity import pin_as_configured
from gateway.app import Services, build_supervisor_http, run_gateway, run_outbox
from gateway.settings import Settings

log = logging.getLogger("gateway.serve")
OUTBOX_PROCESS_POLL = 0.25
"""How often an outbox process looks for due rows (no wake-up crosses processes)."""


def _settings_for_child(config_path: str) -> Settings:
    """A spawned child's settings and logging; what it has imported frozen.

    Unpickling its target imported the gateway's modules with the collector on
    (`gateway.cli.run` did that work for the parent): freezing them now keeps the
    collections during the load from scanning them again, as in the parent.
    """
    from gateway.logs import setup_logging
    from gateway.settings import load_settings

    gc.freeze()
    settings = load_settings(Path(config_path))
    setup_logging(settings.logging.level, settings.logging.format)
    return settings


def _worker_main(config_path: str, deliver: bool = True, index: int = 0) -> None:
    """One SMTP worker process of `serve` (spawned: a fresh interpreter), kept to the
    `index`-th CPU."""
    settings = _settings_for_child(config_path)
    pin_as_configured(settings, index)
    asyncio.run(run_gateway(Services(settings), reuse_port=True, serve_http=False, deliver=deliver))


def _outbox_main(config_path: str, index: int = 0) -> None:
    """The outbox process of `serve --outbox-process` (spawned: a fresh interpreter), kept
    to the `index`-th CPU."""
    settings = _settings_for_child(config_path)
    pin_as_configured(settings, index)
    asyncio.run(run_outbox(Services(settings), OUTBOX_PROCESS_POLL))


def run_workers(services: Services, workers: int, *, outbox_process: bool = False) -> None:
    """N processes share the SMTP socket (SO_REUSEPORT) and the database; the parent serves
    the HTTP API, with /metrics for all of them. With `outbox_process`, one more process
    delivers the outbox and the SMTP workers only accept."""
    settings = services.settings
    assert settings.config_path is not None
    metrics_dir = Path(tempfile.mkdtemp(prefix="gateway-metrics-"))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    services.upgrade_database()
    # The API first: a port in use or a bad certificate fails before any child is started.
    metrics_server = build_supervisor_http(services)
    asyncio.run(metrics_server.start())
    context = multiprocessing.get_context("spawn")
    config = str(settings.config_path)
    children = [
        context.Process(
            target=_worker_main, args=(config, not outbox_process, i), name=f"worker-{i}"
        )
        for i in range(workers)
    ]
    if outbox_process:  # the CPU after the workers' (gateway.pin_cpu)
        children.append(
            context.Process(target=_outbox_main, args=(config, workers), name="outbox")
        )
    for child in children:
        child.start()
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
