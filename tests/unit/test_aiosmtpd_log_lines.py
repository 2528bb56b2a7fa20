"""aiosmtpd's command-line log calls: masked as upstream does when logged, skipped when not."""

from __future__ import annotations

import logging

import aiosmtpd.smtp
import pytest

from gateway.adapters import aiosmtpd as adapter

LINE = b"AUTH PLAIN AGFsaWNlAHNlY3JldA=="


def test_aiosmtpd_lines_masked_when_the_logger_takes_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    adapter.escape_library_log()
    log = logging.getLogger(adapter.LOGGER_NAME)
    with caplog.at_level(logging.INFO, logger=adapter.LOGGER_NAME):
        aiosmtpd.smtp.sanitized_log(log.info, "%r >> %r", ("127.0.0.1", 1), LINE)
    [record] = [r for r in caplog.records if r.name == adapter.LOGGER_NAME]
    assert "********" in record.getMessage() and "AGFsaWNl" not in record.getMessage()


def test_aiosmtpd_lines_not_masked_for_nothing_when_the_logger_drops_them(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    adapter.escape_library_log()
    masked: list[bytes] = []
    upstream = aiosmtpd.smtp.sanitize

    def counting(text: bytes) -> bytes:
        masked.append(text)
        return upstream(text)

    monkeypatch.setattr(aiosmtpd.smtp, "sanitize", counting)
    log = logging.getLogger(adapter.LOGGER_NAME)
    with caplog.at_level(logging.WARNING, logger=adapter.LOGGER_NAME):
        aiosmtpd.smtp.sanitized_log(log.debug, "_handle_client readline: %r", LINE)
        aiosmtpd.smtp.sanitized_log(log.info, "%r >> %r", ("127.0.0.1", 1), LINE)
        assert masked == []
        aiosmtpd.smtp.sanitized_log(log.warning, "%r", LINE)  # taken: masked as upstream
    assert masked == [LINE]
    assert [r.levelno for r in caplog.records if r.name == adapter.LOGGER_NAME] == [
        logging.WARNING
    ]
