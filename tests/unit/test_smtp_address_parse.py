"""`HookedSMTP._getaddr` answers exactly what aiosmtpd's own parse answers."""

from __future__ import annotations

import pytest
from aiosmtpd.smtp import SMTP

from gateway.adapters.aiosmtpd import HookedSMTP

ARGS = [
    "<a@b.c>", "<>", "a@b.c SIZE=10", "<a@b.c> SIZE=5 BODY=8BITMIME", "<bad", '"x y"@b.c',
    "<@route:a@b.c>", "", " <a@b>", "<a@[1.2.3.4]>", '<"quoted"@x>', "<a@b.c", "a b",
    "<" + "x" * 70 + "@b.c>", "<tuteur@exemple.fr>", "<<a@b>>", "@", "<@>", "<é@b.fr>",
]  # fmt: skip


@pytest.mark.parametrize("limit", [0, 64])
@pytest.mark.parametrize("arg", ARGS)
def test_same_parse_as_aiosmtpd(arg: str, limit: int) -> None:
    ours, theirs = HookedSMTP.__new__(HookedSMTP), SMTP.__new__(SMTP)
    ours.local_part_limit = theirs.local_part_limit = limit
    assert ours._getaddr(arg) == SMTP._getaddr(theirs, arg)
    assert ours._getaddr(arg) == SMTP._getaddr(theirs, arg)  # the cached answer too
