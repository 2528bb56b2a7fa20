"""The HTTP listener of a real `serve`: health, readiness, bad input, internal faults, HTTPS,
and the parent of `serve --workers` serving the API."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import warnings
from pathlib import Path

import httpx
import pytest

from gateway.cli.main import main
from tests.fixtures.apiclient import api, base_url, file_request, new_key
from tests.fixtures.dnsserver import DnsServer
from tests.fixtures.gatewayserver import COURT, MEASURE, GatewayFactory, World, make_world
from tests.fixtures.gpgkeys import CourtKey
from tests.fixtures.ports import free_port
from tests.fixtures.smtpsink import SmtpSink

sqlite_only = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def test_health_metrics_and_openapi_need_no_key(world: World) -> None:
    with api(world, None) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz").json()
        assert ready == {
            "status": "ready",
            "checks": {"database": "ok", "blob_store": "ok", "disk": "ok", "keys": "ok"},
        }
        assert "gateway_messages_total" in client.get("/metrics").text
        schema = client.get("/openapi.json").json()
        assert "/api/v1/requests/{reference}/reject" in schema["paths"]
        assert client.get("/docs").status_code == 404  # no page that loads a CDN's scripts


def test_readyz_names_the_failing_check(
    smtp_sink: SmtpSink, gateway_factory: GatewayFactory, court_key: CourtKey
) -> None:
    world = make_world(
        smtp_sink, gateway_factory, court_key, {"GATEWAY__LIMITS__DISK_RESERVE_BYTES": str(10**18)}
    )
    with api(world, None) as client:
        answer = client.get("/readyz")
        assert client.get("/healthz").status_code == 200
    assert answer.status_code == 503
    assert answer.headers["content-type"] == "application/problem+json"
    body = answer.json()
    assert body["detail"] == "failing: disk" and body["checks"]["database"] == "ok"
    assert "below the reserve" in body["checks"]["disk"]


def test_bad_input_is_a_4xx_problem_naming_it(world: World) -> None:
    with api(world, new_key(world, "admin")) as admin:
        malformed = admin.post(
            "/api/v1/courts",
            content=b'{"code": "TJ-X", ',
            headers={"content-type": "application/json"},
        )
        assert malformed.status_code == 400 and malformed.json()["type"].endswith(":malformed-json")
        unknown = admin.post("/api/v1/courts", json={"code": "TJ-X", "name": "X", "extra": 1})
        assert unknown.status_code == 422
        assert unknown.json()["errors"] == [
            {"in": "body", "field": "extra", "problem": "unknown field"}
        ]
        not_object = admin.post("/api/v1/courts", json=["TJ-X"])
        assert not_object.status_code == 422
        no_route = admin.get("/api/v1/nothing-here")
        assert no_route.status_code == 404 and no_route.json()["detail"] == "no such endpoint"
        wrong_method = admin.delete("/api/v1/courts")
        assert wrong_method.status_code == 405 and "allow" in wrong_method.headers
        bad_number = admin.get("/api/v1/submissions/TJ-LYON-2026-000001/zero/message")
        assert bad_number.status_code == 422
        bad_court = admin.get("/api/v1/courts/-x-")
        assert bad_court.status_code == 422 and "court code" in bad_court.json()["detail"]
        big = admin.post("/api/v1/courts", json={"code": "TJ-X", "name": "x" * 20_000_000})
        assert big.status_code == 413
        for answer in (malformed, unknown, not_object, no_route, wrong_method, big):
            assert answer.headers["content-type"] == "application/problem+json"
            assert "Traceback" not in answer.text
        assert admin.get("/api/v1/courts/TJ-X").status_code == 404  # nothing half-written


def test_internal_fault_is_503_with_a_correlation_id_and_no_exception_text(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    with api(world, new_key(world, "admin")) as admin:
        reference = file_request(world, admin, COURT, MEASURE)
        raw_key = admin.get(f"/api/v1/requests/{reference}").json()["submissions"][0]
        assert raw_key
        for path in world.gw.services.settings.blob_dir.rglob("*.raw.pgp"):
            path.unlink()  # a row whose blob has gone: our fault, not the client's
        with caplog.at_level(logging.ERROR, logger="gateway.api"):
            answer = admin.get(f"/api/v1/submissions/{reference}/1/message")
    assert answer.status_code == 503
    body = answer.json()
    assert body["type"].endswith(":internal") and body["correlation_id"] in body["detail"]
    assert "blob" not in answer.text and "Traceback" not in answer.text
    logged = [r for r in caplog.records if getattr(r, "correlation_id", None)]
    assert logged and logged[0].correlation_id == body["correlation_id"]  # type: ignore[attr-defined]


@sqlite_only
def test_https_when_a_certificate_is_set(
    smtp_sink: SmtpSink,
    gateway_factory: GatewayFactory,
    court_key: CourtKey,
    tls_files: tuple[Path, Path],
) -> None:
    cert, key = tls_files
    world = make_world(
        smtp_sink, gateway_factory, court_key,
        {"GATEWAY__HTTP__TLS_CERT": str(cert), "GATEWAY__HTTP__TLS_KEY": str(key)},
    )  # fmt: skip
    url = base_url(world).replace("http://", "https://")
    context = ssl.create_default_context(cafile=str(cert))
    with httpx.Client(base_url=url, verify=context, timeout=10) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
    old = ssl.create_default_context(cafile=str(cert))
    with warnings.catch_warnings():  # TLS 1.1 is deprecated: that is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    port = world.gw.running.http_port
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        pytest.raises((ssl.SSLError, ConnectionError)),
    ):
        old.wrap_socket(raw, server_hostname="localhost")
    with pytest.raises(httpx.RemoteProtocolError), httpx.Client(base_url=base_url(world)) as plain:
        plain.get("/healthz")  # plain HTTP on the TLS port


def test_plain_http_off_loopback_is_a_config_error(
    gateway_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    os.environ["GATEWAY__HTTP__LISTEN"] = "0.0.0.0:8025"
    try:
        with pytest.raises(SystemExit) as exit_info:
            main(["--config", str(gateway_config), "courts", "list"])
    finally:
        del os.environ["GATEWAY__HTTP__LISTEN"]
    assert exit_info.value.code == 1
    assert "http.listen" in capsys.readouterr().err


@sqlite_only
def test_workers_parent_serves_the_api_with_aggregated_metrics(
    gateway_config: Path, dns_server: DnsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main(["--config", str(gateway_config), "api-keys", "create", "--role", "admin"])
    key = capsys.readouterr().out.strip()
    smtp_port, http_port = free_port(), free_port()
    env = {
        **os.environ,
        "GATEWAY__SMTP__LISTEN": f"127.0.0.1:{smtp_port}",
        "GATEWAY__HTTP__LISTEN": f"127.0.0.1:{http_port}",
        "GATEWAY__DNS__NAMESERVERS": json.dumps([dns_server.address]),
    }
    command = [sys.executable, "-m", "gateway", "--config", str(gateway_config), "serve",
               "--workers", "2"]  # fmt: skip
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        url = f"http://127.0.0.1:{http_port}"
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the parent's API did not come up"
            time.sleep(0.2)
        headers = {"Authorization": f"Bearer {key}"}
        created = httpx.post(
            f"{url}/api/v1/courts", json={"code": "TJ-W", "name": "W"}, headers=headers
        )
        assert created.status_code == 201, created.text
        # Empty until a worker counts something (test_smtp_session sends mail through it).
        metrics = httpx.get(f"{url}/metrics")
        assert metrics.status_code == 200 and metrics.headers["content-type"].startswith(
            "text/plain"
        )
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            # SIGTERM first: the parent forwards it to its workers (a SIGKILL would orphan them).
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
