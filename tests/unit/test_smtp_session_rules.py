"""Pure rules of the front door: postmaster@ resolution, the DATA rate deadline."""

from __future__ import annotations

import pytest

from gateway.errors import UnknownRecipient
from gateway.ingest.recipients import Recipient, RecipientPolicy, Role
from gateway.smtp.limits import SessionBounds

BASE = {Role.CODES: "codes", Role.SUBMIT: "depot", Role.STATUS: "etat"}


@pytest.mark.parametrize(
    "address",
    ["postmaster@greffe.example", "<PostMaster@Greffe.Example.>", "Postmaster", "<postmaster>"],
)
def test_postmaster_resolves_when_configured(address: str) -> None:
    policy = RecipientPolicy("greffe.example", {**BASE, Role.POSTMASTER: "postmaster"})
    assert policy.resolve(address) == Recipient(Role.POSTMASTER, "")


@pytest.mark.parametrize("address", ["postmaster@greffe.example", "Postmaster", "postmaster@x.org"])
def test_postmaster_refused_without_an_operator(address: str) -> None:
    with pytest.raises(UnknownRecipient):
        RecipientPolicy("greffe.example", BASE).resolve(address)


def test_other_bare_local_parts_still_refused() -> None:
    policy = RecipientPolicy("greffe.example", {**BASE, Role.POSTMASTER: "postmaster"})
    for address in ("depot", "<abuse>", "postmaster@other.example"):
        with pytest.raises(UnknownRecipient):
            policy.resolve(address)


def test_data_deadline_is_grace_then_rate() -> None:
    bounds = SessionBounds(min_data_rate=1000, data_rate_grace=10.0)
    assert bounds.data_deadline(100.0, 0) == 110.0
    assert bounds.data_deadline(100.0, 5000) == 115.0  # 5 s more for 5000 bytes at 1000 B/s


def test_no_rate_no_deadline() -> None:
    assert SessionBounds().data_deadline(0.0, 10) is None
