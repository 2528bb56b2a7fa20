"""`gateway serve` on a port another process holds: one line naming the setting, no traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.dnsserver import DnsServer
from tests.fixtures.serveproc import GatewayHome, base_env, free_port
from tests.fixtures.smtpsink import SmtpSink


@pytest.mark.parametrize("setting", ["listen", "submission_listen"])
def test_port_already_taken_names_the_setting_and_exits_1(
    tmp_path: Path, dns_server: DnsServer, smtp_sink: SmtpSink, setting: str
) -> None:
    home = GatewayHome.create(tmp_path, base_env(dns_server, smtp_sink))
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        ports = {"listen": free_port(), "submission_listen": free_port(), setting: taken}
        env = {
            **os.environ,
            **home.env,
            "GATEWAY__SMTP__LISTEN": f"127.0.0.1:{ports['listen']}",
            "GATEWAY__SMTP__SUBMISSION_LISTEN": f"127.0.0.1:{ports['submission_listen']}",
            "GATEWAY__HTTP__LISTEN": f"127.0.0.1:{free_port()}",
        }
        proc = subprocess.run(
            [sys.executable, "-m", "gateway", "--config", str(home.config), "serve"],
            capture_output=True, text=True, env=env, timeout=120, check=False,
        )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert f"smtp.{setting}: cannot listen on 127.0.0.1:{taken}" in proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
