"""Retry policy: back-off doubling under a cap, and which relay replies are permanent."""

from __future__ import annotations

from datetime import timedelta

import aiosmtplib
import pytest

from gateway.outbox.worker import classify, retry_delay


@pytest.mark.parametrize(
    ("failures", "seconds"), [(1, 30), (2, 60), (3, 120), (5, 480), (7, 1920), (8, 3600)]
)
def test_retry_delay_doubles_up_to_the_cap(failures: int, seconds: int) -> None:
    assert retry_delay(failures, timedelta(hours=1)) == timedelta(seconds=seconds)


def test_retry_delay_survives_huge_attempt_counts() -> None:
    assert retry_delay(10_000, timedelta(hours=1)) == timedelta(hours=1)


def test_classify_5xx_data_reply_is_permanent() -> None:
    outcome = classify(aiosmtplib.SMTPDataError(550, "5.1.1 no such user"))

    assert (outcome.result, outcome.detail) == ("permanent", "550 5.1.1 no such user")


def test_classify_4xx_reply_is_temporary() -> None:
    assert classify(aiosmtplib.SMTPDataError(451, "4.3.0 later")).result == "temporary"


def test_classify_refused_recipient_5xx_is_permanent() -> None:
    error = aiosmtplib.SMTPRecipientsRefused(
        [aiosmtplib.SMTPRecipientRefused(550, "unknown", "a@b.example")]
    )

    assert classify(error).result == "permanent"


def test_classify_relay_auth_failure_is_temporary() -> None:
    # A wrong relay password is the operator's to fix: never give up the mail over it.
    assert classify(aiosmtplib.SMTPAuthenticationError(535, "bad creds")).result == "temporary"


def test_classify_unreachable_relay_is_temporary() -> None:
    outcome = classify(ConnectionRefusedError(111, "Connection refused"))

    assert (outcome.result, outcome.detail) == ("temporary", "ConnectionRefusedError")


def test_classify_detail_is_one_short_line() -> None:
    outcome = classify(aiosmtplib.SMTPDataError(451, "x" * 500 + "\r\nmore"))

    assert "\n" not in outcome.detail and len(outcome.detail) <= 200


def test_classify_5xx_greeting_is_temporary() -> None:
    # A relay refusing the session says nothing about the message: retry, never give up.
    error = aiosmtplib.SMTPConnectResponseError(554, "5.3.2 no service")
    assert classify(error).result == "temporary"
