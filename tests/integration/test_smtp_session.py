"""SMTP session behaviour: STARTTLS, limits, the log line, metrics, the CLI, graceful shutdown."""

from __future__ import annotations

import json
import logging
import os
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bench.gatewayproc import GatewayInstance
from gateway.storage.models import Outbox
from tests.fixtures.dkimkeys import generate_key
from tests.fixtures.dnsserver import DnsServer
from tests.fixtures.gatewayserver import (
    COURT,
    DOMAIN,
    GUARDIAN,
    MEASURE,
    GatewayFactory,
    World,
    make_world,
)
from tests.fixtures.gpgkeys import CourtKey
from tests.fixtures.pdfs import plain_pdf
from tests.fixtures.ports import free_port
from tests.fixtures.smtpsink import SmtpSink


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
def test_starttls_offered_and_tls12_minimum(
    gateway_factory: GatewayFactory, tls_files: tuple[Path, Path]
) -> None:
    cert, key = tls_files
    gw = gateway_factory({"GATEWAY__SMTP__TLS_CERT": str(cert), "GATEWAY__SMTP__TLS_KEY": str(key)})
    with smtplib.SMTP("127.0.0.1", gw.port, timeout=10) as client:
        client.ehlo("client.test")
        assert client.has_extn("starttls")
        assert client.has_extn("size") and client.esmtp_features["size"] == "26214400"
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.maximum_version = ssl.TLSVersion.TLSv1_1
        context.minimum_version = ssl.TLSVersion.TLSv1
        with pytest.raises((ssl.SSLError, smtplib.SMTPServerDisconnected, ConnectionError)):
            client.starttls(context=context)
    with smtplib.SMTP("127.0.0.1", gw.port, timeout=10) as client:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        client.starttls(context=context)
        assert client.sock.version() in ("TLSv1.2", "TLSv1.3")  # type: ignore[union-attr]
        assert client.ehlo()[0] == 250


def test_too_many_connections_per_client_421(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory({"GATEWAY__SMTP__MAX_CONNECTIONS_PER_CLIENT": "2"})
    first = smtplib.SMTP("127.0.0.1", gw.port, timeout=10)
    second = smtplib.SMTP("127.0.0.1", gw.port, timeout=10)
    try:
        with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as third:
            assert third.recv(200).startswith(b"421 4.7.0")
    finally:
        first.quit()
        second.quit()
    with smtplib.SMTP("127.0.0.1", gw.port, timeout=10) as again:
        assert again.noop()[0] == 250


def test_too_many_messages_per_client_450(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory({"GATEWAY__SMTP__MAX_MESSAGES_PER_CLIENT": "2"})
    with smtplib.SMTP("127.0.0.1", gw.port, timeout=10) as client:
        client.ehlo("client.test")
        for _ in range(2):
            assert client.mail(GUARDIAN)[0] == 250
            client.rset()
        code, text = client.mail(GUARDIAN)
        assert (code, text[:5]) == (450, b"4.7.1")


def test_too_many_recipients_452(world: World) -> None:
    with smtplib.SMTP("127.0.0.1", world.gw.port, timeout=10) as client:
        client.ehlo("client.test")
        client.mail(GUARDIAN)
        replies = [client.rcpt(f"depot+{i}@{DOMAIN}")[0] for i in range(12)]
    assert replies[:1] == [250]
    assert 452 in replies


def test_one_line_per_transaction_logged(world: World, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gateway.smtp")
    raw = world.gw.message(subject="x", sign_domain=None)
    world.gw.send(raw)
    records = [r for r in caplog.records if r.getMessage() == "smtp transaction"]
    assert len(records) == 1
    record = records[0]
    assert record.reply.startswith("550 5.7.1")  # type: ignore[attr-defined]
    assert record.peer == "127.0.0.1"  # type: ignore[attr-defined]
    assert record.size == len(raw)  # type: ignore[attr-defined]
    assert record.duration_ms >= 0  # type: ignore[attr-defined]


def test_metrics_endpoint_counts_stages(world: World) -> None:
    code = world.request_code()
    raw = world.gw.message(
        subject=f"[{code}]", attachments=[("a.pdf", "application/pdf", plain_pdf())]
    )
    assert world.gw.send(raw)[0] == 250
    port = world.gw.running.http_port
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    for stage in ("parse", "dkim", "code", "documents", "encrypt", "blob_write", "commit"):
        assert f'gateway_stage_seconds_count{{stage="{stage}"}}' in text, stage
    assert 'gateway_messages_total{outcome="accepted"} 2.0' in text  # codes@ and depot@


def test_cli_codes_request_prints_nothing_secret(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    from gateway.cli.main import main

    config = str(world.gw.services.settings.config_path)
    before = len(world.sink.messages)
    with pytest.raises(SystemExit) as info:
        main(
            [
                "--config",
                config,
                "codes",
                "request",
                "--court",
                COURT,
                "--measure",
                MEASURE,
                "--address",
                GUARDIAN,
                "--kind",
                "compte",
            ]
        )
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "mailed" in out and "-" not in out.split("mailed")[0]
    mail = world.sink.wait_for(before + 1, timeout=20)[-1]
    assert mail[1] == [GUARDIAN]
    with pytest.raises(SystemExit) as info:
        main(
            [
                "--config",
                config,
                "codes",
                "request",
                "--court",
                COURT,
                "--measure",
                "nope",
                "--address",
                GUARDIAN,
            ]
        )
    assert info.value.code == 1
    assert "no active registration" in capsys.readouterr().err
    with world.gw.services.db.transaction() as session:
        assert (session.scalar(select(func.count(Outbox.id))) or 0) >= 1


def _wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("gateway serve did not listen")


def _stops_listening(port: int, within: float = 20.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        except OSError:
            return True
        time.sleep(0.1)
    return False


def test_sigterm_finishes_transaction_in_flight(
    gateway_config: Path, dns_server: DnsServer
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "GATEWAY__SMTP__LISTEN": f"127.0.0.1:{port}",
        "GATEWAY__HTTP__LISTEN": "127.0.0.1:0",
        "GATEWAY__DNS__NAMESERVERS": json.dumps([dns_server.address]),
        "GATEWAY__LOGGING__FORMAT": "json",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "--config", str(gateway_config), "serve"],
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(port, process)
        client = smtplib.SMTP("127.0.0.1", port, timeout=30)
        client.ehlo("client.test")
        client.mail(GUARDIAN)
        assert client.rcpt(f"depot@{DOMAIN}")[0] == 250
        process.send_signal(signal.SIGTERM)
        assert _stops_listening(port), "still accepting connections after SIGTERM"
        code, _ = client.data(b"From: " + GUARDIAN.encode() + b"\r\nSubject: x\r\n\r\nhello\r\n")
        assert code == 550  # the pipeline's own answer (unsigned), not a 421
        client.close()
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    stderr = process.stderr.read().decode() if process.stderr else ""
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert any(line["event"] == "smtp transaction" for line in lines)
    assert lines[-1]["event"] == "stopped"


def test_refused_connection_leaves_no_loop_error(
    gateway_factory: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    gw = gateway_factory({"GATEWAY__SMTP__MAX_CONNECTIONS_PER_CLIENT": "1"})
    with smtplib.SMTP("127.0.0.1", gw.port, timeout=10):
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as extra:
                assert extra.recv(200).startswith(b"421 4.7.0")
        time.sleep(0.2)
    assert not [r for r in caplog.records if r.name == "asyncio" and r.levelno >= logging.ERROR]


def test_oversized_message_552_534(gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory({"GATEWAY__LIMITS__MAX_MESSAGE_BYTES": "4096"})
    with smtplib.SMTP("127.0.0.1", gw.port, timeout=10) as client:
        client.ehlo("client.test")
        assert client.esmtp_features["size"] == "4096"
        code, text = client.mail(GUARDIAN, ["SIZE=5000"])
        assert (code, text[:5]) == (552, b"5.3.4")
        assert client.mail(GUARDIAN)[0] == 250
        assert client.rcpt(f"depot@{DOMAIN}")[0] == 250
        code, text = client.data(b"Subject: x\r\n\r\n" + (b"y" * 70 + b"\r\n") * 100)
        assert (code, text[:5]) == (552, b"5.3.4")


def test_disk_below_reserve_452_431(
    smtp_sink: SmtpSink, gateway_factory: GatewayFactory, court_key: CourtKey
) -> None:
    world = make_world(
        smtp_sink, gateway_factory, court_key, {"GATEWAY__LIMITS__DISK_RESERVE_BYTES": str(10**18)}
    )
    code = world.request_code()
    raw = world.gw.message(
        subject=f"[{code}]", attachments=[("a.pdf", "application/pdf", plain_pdf())]
    )
    status, text = world.gw.send(raw)
    assert (status, text[:5]) == (452, "4.3.1")
    assert list(world.gw.services.settings.blob_dir.rglob("*.pgp")) == []


def test_serve_with_two_workers_shares_port_and_metrics(
    gateway_config: Path, dns_server: DnsServer
) -> None:
    port, http_port = free_port(), free_port()
    env = {
        **os.environ,
        "GATEWAY__SMTP__LISTEN": f"127.0.0.1:{port}",
        "GATEWAY__HTTP__LISTEN": f"127.0.0.1:{http_port}",
        "GATEWAY__DNS__NAMESERVERS": json.dumps([dns_server.address]),
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway",
            "--config",
            str(gateway_config),
            "serve",
            "--workers",
            "2",
        ],
        env=env,
        stderr=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(port, process)
        for _ in range(6):  # several connections: the kernel spreads them over both workers
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
                client.ehlo("client.test")
                client.mail(GUARDIAN)
                client.rcpt(f"depot@{DOMAIN}")
                code, _ = client.data(
                    b"From: " + GUARDIAN.encode() + b"\r\nSubject: x\r\n\r\nhi\r\n"
                )
                assert code == 550  # unsigned: refused by whichever worker took it
        url = f"http://127.0.0.1:{http_port}/metrics"
        text = urllib.request.urlopen(url, timeout=10).read().decode()
        assert 'gateway_messages_total{outcome="refused"} 6.0' in text
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_serve_with_an_outbox_process_accepts_and_delivers(
    tmp_path: Path, dns_server: DnsServer, smtp_sink: SmtpSink, court_key: CourtKey
) -> None:
    """`serve --outbox-process`: the SMTP worker accepts, the outbox process relays the mail."""
    instance = GatewayInstance(tmp_path / "gw", dns_server, smtp_sink, generate_key())
    instance.setup(court_key.armored_public, ["OUTBOX/1"])
    instance.start(outbox_process=True)
    try:
        assert instance.proc is not None
        children = subprocess.run(
            ["pgrep", "-f", "-P", str(instance.proc.pid), "spawn_main"],
            capture_output=True,
            check=False,
        ).stdout.split()
        assert len(children) == 2  # one SMTP worker, one outbox process
        (code,) = instance.request_codes(["OUTBOX/1"])  # the code mail came through the outbox
        assert len(code) == 11
        url = f"http://127.0.0.1:{instance.http_port}/metrics"
        sent = 'gateway_outbox_deliveries_total{result="sent"} 1.0'
        deadline = time.monotonic() + 20
        while True:  # the outbox process records the attempt just after the relay's 250
            text = urllib.request.urlopen(url, timeout=10).read().decode()
            if sent in text or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert 'gateway_messages_total{outcome="accepted"} 1.0' in text
        assert sent in text
        instance.proc.send_signal(signal.SIGTERM)
        assert instance.proc.wait(timeout=60) == 0
    finally:
        instance.stop()
