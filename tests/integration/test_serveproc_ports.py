"""The `serve` fixture: a port another process took before `serve` bound it is not a failure."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.fixtures.dnsserver import DnsServer
from tests.fixtures.serveproc import GatewayHome, base_env
from tests.fixtures.smtpsink import SmtpSink


def test_a_first_start_on_a_taken_port_moves_to_free_ones(
    tmp_path: Path, dns_server: DnsServer, smtp_sink: SmtpSink
) -> None:
    node = GatewayHome.create(tmp_path / "home", base_env(dns_server, smtp_sink)).node()
    taken = node.http_port
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
        try:
            node.start()
            assert node.alive and node.http_port != taken
            assert b"Address already in use" in node.log_path.read_bytes()
        finally:
            node.stop()


def test_a_restart_keeps_its_ports_even_when_one_is_taken(
    tmp_path: Path, dns_server: DnsServer, smtp_sink: SmtpSink
) -> None:
    node = GatewayHome.create(tmp_path / "home", base_env(dns_server, smtp_sink)).node()
    node.start()
    node.stop()
    ports = (node.smtp_port, node.http_port, node.submission_port)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", node.http_port))
        squatter.listen()
        try:
            node.start()
        except AssertionError as exc:
            assert "Address already in use" in str(exc)
        else:
            raise AssertionError("a restart moved to other ports")
        finally:
            node.stop()
    assert (node.smtp_port, node.http_port, node.submission_port) == ports
