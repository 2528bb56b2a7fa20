"""Operations' pure logic: settings keys, reply codes for logs, log lines, backup paths, mails."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest

from gateway.audit.check import Findings
from gateway.audit.daily import MAILED_PROBLEMS, report_values
from gateway.backup import _safe_path
from gateway.errors import ConfigError
from gateway.imap.puller import message_correlation_id
from gateway.logs import JsonFormatter, TextFormatter, correlation, current_correlation_id
from gateway.settings import load_settings
from gateway.smtp.replies import R451_INTERNAL, reply_code
from gateway.storage.imap import MessageKey


def _settings(tmp_path: Path, text: str) -> object:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return load_settings(path, {})


def test_settings_retention_days_and_logging_format(tmp_path: Path) -> None:
    settings = load_settings(tmp_path / "none.toml", {}, must_exist=False)
    assert settings.retention.days == 0  # keep forever
    assert settings.logging.format == "text"
    assert settings.gateway.operator_address == ""
    env = {"GATEWAY__RETENTION__DAYS": "3650", "GATEWAY__LOGGING__FORMAT": "json"}
    settings = load_settings(tmp_path / "none.toml", env, must_exist=False)
    assert settings.retention.days == 3650 and settings.logging.format == "json"


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('[retention]\nrequests = "3650d"\n', "retention.requests: unknown key"),
        ("[retention]\ndays = -1\n", "retention.days"),
        ("[logging]\njson = true\n", "logging.json: unknown key"),
        ('[logging]\nformat = "xml"\n', "logging.format"),
    ],
)
def test_settings_old_or_bad_operations_keys_named(tmp_path: Path, text: str, named: str) -> None:
    with pytest.raises(ConfigError) as info:
        _settings(tmp_path, text)
    assert named in info.value.message


@pytest.mark.parametrize(
    ("reply", "code"),
    [
        ('554 5.6.0 document 1 "compte secret.exe": type application/x-dosexec', "554 5.6.0"),
        ("250 2.0.0 Accepted TJ-LYON-2026-000001/1", "250 2.0.0"),
        (R451_INTERNAL.format(ref="0123456789ab"), "451 4.3.0"),
        ("421 Service not available", "421"),
    ],
)
def test_reply_code_keeps_no_text(reply: str, code: str) -> None:
    assert reply_code(reply) == code


def _line(formatter: logging.Formatter, **extra: object) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger = logging.getLogger("test.ops.logic")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("smtp transaction", extra=extra)
    finally:
        logger.removeHandler(handler)
    return stream.getvalue().strip()


def test_log_lines_carry_the_current_correlation_id() -> None:
    assert current_correlation_id() is None
    assert "correlation_id" not in json.loads(_line(JsonFormatter()))
    with correlation() as outer:
        line = json.loads(_line(JsonFormatter(), reply="250 2.0.0"))
        assert line["correlation_id"] == outer and line["event"] == "smtp transaction"
        assert {"time", "level", "logger"} <= set(line) and line["reply"] == "250 2.0.0"
        with correlation("given-id"):
            assert 'correlation_id="given-id"' in _line(TextFormatter())
        assert current_correlation_id() == outer
    assert current_correlation_id() is None


def test_imap_message_correlation_id_stable_and_distinct() -> None:
    same, other = MessageKey("intake", "INBOX", 7, 42), MessageKey("intake", "INBOX", 7, 43)
    again = MessageKey("intake", "INBOX", 7, 42)
    assert message_correlation_id(same) == message_correlation_id(again)
    assert message_correlation_id(same) != message_correlation_id(other)
    assert message_correlation_id(same).startswith("imap-")


@pytest.mark.parametrize(
    ("path", "safe"),
    [
        ("gateway.db", True),
        ("blobs/2026/11/30/0b9e4a52-3c59-4f6a-9a39-6b0d4c7d1e2f.raw.pgp", True),
        ("keys/server-secret", True),
        ("keys/dkim-private.pem", True),
        ("../gateway.db", False),
        ("/etc/passwd", False),
        ("blobs/../../etc/passwd", False),
        ("blobs/2026/11/30/x.raw.pgp", False),
        ("keys/../server-secret", False),
        ("keys", False),
        ("other.txt", False),
    ],
)
def test_backup_manifest_paths_limited_to_what_a_backup_holds(path: str, safe: bool) -> None:
    assert _safe_path(path) is safe


def test_check_report_mail_values_list_problems_in_one_line_each() -> None:
    findings = Findings(problems=["blob a\nis missing"] + [f"p{n}" for n in range(60)])
    values = report_values(findings, "25/11/2026 à 03:00:00 UTC")
    assert values["problem_count"] == "61"
    lines = values["problems"].splitlines()
    assert lines[0] == "    - blob a is missing"
    assert len(lines) == MAILED_PROBLEMS + 1
    assert "11 autre(s)" in lines[-1]
