"""Gmail's All-Mail removal, run against a Dovecot made to look like Gmail as far as it can.

Dovecot has `\\All` and `\\Trash` special-use folders here ("All Mail",
"Trash"), but neither X-GM-EXT-1 nor X-GM-MSGID: the original is put in All
Mail by hand (as Gmail shows every message there) and found by Message-ID
instead of X-GM-MSGID.  That stand-in would not do on Gmail, where the stub
(same Message-ID) is in All Mail too; the X-GM-MSGID command sequence is
unit-tested in tests/unit/test_imap_gmail.py.
"""

from __future__ import annotations

import email

import pytest

from gateway.imap.client import ImapClient, quote
from gateway.imap.gmail import remove_originals
from gateway.imap.stub import STUB_HEADER
from tests.fixtures.dovecot import Dovecot, mailbox_for, runner, submission_message
from tests.fixtures.gatewayserver import World

pytestmark = pytest.mark.dovecot


def by_message_id(message_id: str) -> tuple[str, ...]:
    return ("HEADER", quote("Message-ID"), quote(message_id))


def message_id(raw: bytes) -> str:
    return str(email.message_from_bytes(raw)["Message-ID"])


async def test_imap_gmail_like_original_deleted_from_all_mail_and_trash(
    world: World, dovecot_gmail_like: Dovecot
) -> None:
    server = dovecot_gmail_like
    raw = submission_message(world, world.request_code())
    server.append(raw)
    server.append(raw, folder="All Mail")  # where Gmail keeps it whatever INBOX says
    kept = world.gw.message(subject="autre courrier")
    server.append(kept, folder="All Mail")

    summary = await runner(world.gw.services, server).pull_once()

    assert summary.stripped == 1
    # No X-GM-EXT-1: the puller touches no folder but the one it pulls.
    assert sorted(m for _u, _h, m in server.messages("All Mail")) == sorted([raw, kept])

    client = await ImapClient.connect(mailbox_for(server), server.password)
    try:
        assert await client.special_folders() == {"\\All": "All Mail", "\\Trash": "Trash"}
        inbox = await client.select("INBOX")
        removed = await remove_originals(
            client, "INBOX", inbox.uidvalidity, [message_id(raw)], criteria=by_message_id
        )
        assert removed == 1
        [stub_uid] = await client.uids_after(0)  # INBOX is selected again
    finally:
        await client.close()

    assert [m for _u, _h, m in server.messages("All Mail")] == [kept]
    assert server.messages("Trash") == []
    [(uid, _head, stub)] = server.messages()
    assert uid == stub_uid and STUB_HEADER.encode() in stub


async def test_imap_gmail_like_original_already_in_trash_is_expunged_there(
    world: World, dovecot_gmail_like: Dovecot
) -> None:
    """An account whose expunge behaviour is "move to Trash": the original waits there."""
    server = dovecot_gmail_like
    raw = world.gw.message(subject="déjà à la corbeille")
    server.append(raw, folder="Trash")

    client = await ImapClient.connect(mailbox_for(server), server.password)
    try:
        inbox = await client.select("INBOX")
        removed = await remove_originals(
            client, "INBOX", inbox.uidvalidity, [message_id(raw)], criteria=by_message_id
        )
    finally:
        await client.close()

    assert removed == 1
    assert server.messages("Trash") == [] and server.messages("All Mail") == []
