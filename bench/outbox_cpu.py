"""In-process CPU of the outbox per receipt: `OutboxWorker.run_once` against a separate sink.

    .venv/bin/python -m bench.outbox_cpu [--receipts 1000] [--db sqlite|URL]
                                         [--pipelining] [--profile]

(as a module: run as a script, `bench/` comes first on the path and its
`profile.py` hides the standard library's, which cProfile imports).

Builds a gateway home with `gateway init` in a temporary folder, starts an
aiosmtpd sink in a child process (so its CPU is not counted), queues the
receipts in batches of 20 (outside the measure), then times the passes that
deliver them with `time.process_time()` (every thread of this process:
claim, compose, send, record).  Also times claim, compose and record alone.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from gateway.app import Services
from gateway.cli.main import main as gateway_main
from gateway.outbox.receiptfacts import documents_json
from gateway.outbox.templates import DocumentLine, format_documents, format_utc
from gateway.settings import load_settings
from gateway.storage.outbox import enqueue

SINK = """
import asyncio, sys
from aiosmtpd.smtp import SMTP
PIPELINING = "PIPELINING" in sys.argv[2:]
class Sink:
    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        # aiosmtpd reads one command line at a time: pipelined commands just work.
        return responses[:-1] + ["250-PIPELINING"] + responses[-1:] if PIPELINING else responses
    async def handle_DATA(self, server, session, envelope):
        return "250 2.0.0 OK"
async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(Sink(), hostname="sink.test"), "127.0.0.1", int(sys.argv[1]))
    print("ready", flush=True)
    await server.serve_forever()
asyncio.run(main())
"""

DOCUMENTS = [DocumentLine("compte-rendu-de-gestion-2025.pdf", 48213, "ab" * 32)]
VALUES = {  # what `gateway.ingest.submit.queue_receipt` queues
    "court": "TJ-LYON",
    "court_name": "Tribunal judiciaire de Lyon",
    "measure": "24/01234",
    "request_reference": "R-7K3QD-M2X9A",
    "submission_reference": "S-7K3QD-M2X9A-01",
    "received_at": format_utc(datetime(2026, 11, 25, 8, 0, tzinfo=UTC)),
    "documents": format_documents(DOCUMENTS),
    "message_sha256": "cd" * 32,
    "documents_json": documents_json(DOCUMENTS),
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def build(home: Path, db_url: str, port: int) -> Services:
    os.environ["GATEWAY__DATABASE__URL"] = db_url
    os.environ.pop("GATEWAY_CONFIG", None)
    config = home / "gateway.toml"
    try:
        gateway_main(["--config", str(config), "init"])
    except SystemExit as exit_info:
        assert exit_info.code == 0, exit_info.code
    env = {
        **os.environ,
        "GATEWAY__RELAY__MODE": "smtp",
        "GATEWAY__RELAY__HOST": "127.0.0.1",
        "GATEWAY__RELAY__PORT": str(port),
    }
    return Services(load_settings(config, env))


def queue(services: Services, count: int) -> None:
    now = datetime.now(UTC)
    for start in range(0, count, 20):
        with services.db.transaction() as session:
            for index in range(start, min(start + 20, count)):
                enqueue(
                    session,
                    kind="receipt",
                    recipient=f"tuteur{index}@famille.example",
                    # As the gateway numbers them: a request's reference, a slash, a number.
                    values={**VALUES, "submission_reference": f"TJ-LYON-2026-{index // 20 + 1:06d}"
                            f"/{index % 20 + 1}"},
                    now=now,
                    related_reference=f"S-BENCH-{index:06d}",
                )


def deliver(services: Services, profile: cProfile.Profile | None) -> tuple[int, float, float]:
    worker = services.outbox

    # As `run` does: the relay sessions kept from pass to pass, closed at the end
    # (`run_once` alone closes them after each pass; code before 2026-12-02 had no `_pass`).
    one_pass = getattr(worker, "_pass", None) or worker.run_once

    async def passes() -> int:
        sent = 0
        try:
            while True:
                done = await one_pass()
                if not done:
                    return sent
                sent += done
        finally:
            close = getattr(worker, "close_connections", None)
            if close is not None:
                await close()

    if profile is not None:
        profile.enable()
    cpu, wall = time.process_time(), time.perf_counter()
    sent = asyncio.run(passes())
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    if profile is not None:
        profile.disable()
    return sent, cpu, wall


def phases(services: Services, count: int) -> None:
    """claim / compose / record alone, per row (the worker's private steps, as it calls them)."""
    from gateway.outbox.worker import SENT_OUTCOME, Delivered

    worker = services.outbox
    prepare = getattr(worker, "_ready", None) or worker._compose_now  # before: 557ce2d
    queue(services, count)
    claimed_all = []
    cpu = time.process_time()
    while True:
        claimed = worker._claim()
        if not claimed:
            break
        claimed_all.append(claimed)
    claim = time.process_time() - cpu
    rows = sum(len(batch) for batch in claimed_all)
    cpu = time.process_time()
    for batch in claimed_all:
        for item in batch:
            prepare(item)
    compose = time.process_time() - cpu
    now = datetime.now(UTC)
    cpu = time.process_time()
    for batch in claimed_all:
        worker._record_batch([Delivered(item, SENT_OUTCOME, now) for item in batch])
    record = time.process_time() - cpu
    print(
        f"phases over {rows} rows: claim {claim / rows * 1000:.3f} ms, "
        f"compose {compose / rows * 1000:.3f} ms, record {record / rows * 1000:.3f} ms per row"
    )


def sends(services: Services, count: int) -> None:
    """`RelayConnection.send` alone, on one open session: one receipt's bytes, `count` times."""
    from gateway.outbox.worker import Claimed, RelayConnection, relay_tls_context

    composed = services.compose_mail("receipt", "tuteur@famille.example", dict(VALUES))
    item = Claimed(0, "receipt", "tuteur@famille.example", None, {}, datetime.now(UTC))

    async def run() -> float:
        connection = RelayConnection(services.settings.relay, relay_tls_context(), None)
        assert await connection.open() is None
        for _ in range(50):
            await connection.send(item, composed)
        cpu = time.process_time()
        for _ in range(count):
            outcome = await connection.send(item, composed)
        cpu = time.process_time() - cpu
        assert outcome.result == "sent", outcome
        await connection.close()
        return cpu

    cpu = asyncio.run(run())
    print(f"send alone: {cpu / count * 1000:.3f} ms CPU per message ({len(composed.data)} bytes)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--receipts", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--db", default="sqlite")
    parser.add_argument("--pipelining", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--phases", action="store_true")
    parser.add_argument("--sends", action="store_true")
    parser.add_argument("--no-deliver", dest="deliver", action="store_false")
    args = parser.parse_args()
    if args.profile and not args.deliver:
        parser.error("--profile profiles the deliveries: drop --no-deliver")
    port = free_port()
    flags = ["PIPELINING"] if args.pipelining else []
    sink = subprocess.Popen(
        [sys.executable, "-c", SINK, str(port), *flags], stdout=subprocess.PIPE, text=True
    )
    try:
        assert sink.stdout is not None and sink.stdout.readline().strip() == "ready"
        with tempfile.TemporaryDirectory(prefix="outbox-bench-") as tmp:
            url = f"sqlite:///{tmp}/db/gateway.db" if args.db == "sqlite" else args.db
            services = build(Path(tmp) / "home", url, port)
            queue(services, 40)
            deliver(services, None)  # warm up: connections, caches, imports
            profile = cProfile.Profile() if args.profile else None
            figures = [0.0]
            for _ in range(args.rounds if args.deliver else 0):
                queue(services, args.receipts)
                sent, cpu, wall = deliver(services, profile)
                assert sent == args.receipts, sent
                figures.append(cpu / sent * 1000)
                print(f"{sent} receipts: {cpu / sent * 1000:.3f} ms CPU, "
                      f"{wall / sent * 1000:.3f} ms wall per receipt")
            if args.deliver:
                print(f"best {min(figures[1:]):.3f} ms CPU per receipt")
            if args.sends:
                for _ in range(args.rounds):
                    sends(services, args.receipts)
            if args.phases:
                for _ in range(args.rounds):
                    phases(services, args.receipts)
            if profile is not None:
                pstats.Stats(profile).sort_stats("cumulative").print_stats(45)
            services.db.dispose()
    finally:
        sink.terminate()
        sink.wait(timeout=10)


if __name__ == "__main__":
    main()
