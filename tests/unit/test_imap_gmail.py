"""Gmail's All-Mail removal: the exact IMAP command sequence on a scripted session (no Gmail)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aioimaplib import Response

from gateway.errors import ImapUnavailable
from gateway.imap.client import GMAIL, ImapClient, parse_fetch, special_uses
from gateway.imap.gmail import remove_originals

GMAIL_CAPABILITIES = {"IMAP4rev1", "UIDPLUS", "MOVE", "IDLE", GMAIL}
# The LIST answer of Google's IMAP extensions page, as aioimaplib hands it over.
GMAIL_LIST = [
    b'(\\HasNoChildren) "/" "INBOX"',
    b'(\\Noselect \\HasChildren) "/" "[Gmail]"',
    b'(\\HasNoChildren \\All) "/" "[Gmail]/All Mail"',
    b'(\\HasNoChildren \\Drafts) "/" "[Gmail]/Drafts"',
    b'(\\HasNoChildren \\Sent) "/" "[Gmail]/Sent Mail"',
    b'(\\HasNoChildren \\Trash) "/" "[Gmail]/Trash"',
    b"Success",
]
VALIDITY = {"INBOX": 7, "[Gmail]/All Mail": 11, "[Gmail]/Trash": 13}


class ScriptedGmail:
    """Stands for an aioimaplib session: records each command, answers from a script."""

    def __init__(self, found: dict[str, list[int]], listing: list[bytes] = GMAIL_LIST) -> None:
        self.lost = asyncio.Event()
        self.sent: list[str] = []
        self.found = found  # folder -> UIDs that UID SEARCH X-GM-MSGID finds there
        self.listing = listing
        self.folder = "INBOX"

    def has_capability(self, capability: str) -> bool:
        return capability in GMAIL_CAPABILITIES

    async def list(self, reference: str, pattern: str) -> Response:
        self.sent.append(f"LIST {reference} {pattern}")
        return Response("OK", self.listing)

    async def select(self, folder: str) -> Response:
        self.sent.append(f"SELECT {folder}")
        self.folder = folder.strip('"')
        return Response("OK", [f"OK [UIDVALIDITY {VALIDITY[self.folder]}] x".encode(), b"done"])

    async def uid_search(self, *criteria: str, charset: str | None = None) -> Response:
        self.sent.append("UID SEARCH " + " ".join(criteria))
        uids = " ".join(str(uid) for uid in self.found.get(self.folder, []))
        return Response("OK", [f"SEARCH {uids}".encode(), b"done"])

    async def uid(self, command: str, *args: str) -> Response:
        self.sent.append(f"UID {command.upper()} {' '.join(args)}")
        return Response("OK", [b"done"])


def client(session: Any) -> ImapClient:
    return ImapClient(session, "intake")


async def test_imap_gmail_original_trashed_from_all_mail_then_expunged() -> None:
    session = ScriptedGmail({"[Gmail]/All Mail": [41], "[Gmail]/Trash": [9]})

    removed = await remove_originals(client(session), "INBOX", 7, ["1278455344230334865"])

    assert removed == 1
    assert session.sent == [
        'LIST "" "*"',
        'SELECT "[Gmail]/All Mail"',
        "UID SEARCH X-GM-MSGID 1278455344230334865",
        'UID MOVE 41 "[Gmail]/Trash"',
        'SELECT "[Gmail]/Trash"',
        "UID SEARCH X-GM-MSGID 1278455344230334865",
        "UID STORE 9 +FLAGS.SILENT (\\Deleted)",
        "UID EXPUNGE 9",
        'SELECT "INBOX"',  # the pass goes on in its folder
    ]


async def test_imap_gmail_already_archived_nothing_in_all_mail_still_checks_trash() -> None:
    """The account's expunge behaviour put it in Trash already, or deleted it: no MOVE."""
    session = ScriptedGmail({})
    assert await remove_originals(client(session), "INBOX", 7, ["5"]) == 0
    assert session.sent == [
        'LIST "" "*"',
        'SELECT "[Gmail]/All Mail"',
        "UID SEARCH X-GM-MSGID 5",
        'SELECT "[Gmail]/Trash"',
        "UID SEARCH X-GM-MSGID 5",
        'SELECT "INBOX"',
    ]


async def test_imap_gmail_without_all_mail_over_imap_does_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    session = ScriptedGmail({}, listing=[GMAIL_LIST[0], GMAIL_LIST[5], b"Success"])
    assert await remove_originals(client(session), "INBOX", 7, ["5"]) == 0
    assert session.sent == ['LIST "" "*"']
    assert "originals kept in All Mail" in caplog.text


async def test_imap_gmail_folder_changed_meanwhile_stops_the_pass() -> None:
    session = ScriptedGmail({"[Gmail]/Trash": [9]})
    with pytest.raises(ImapUnavailable, match="UIDVALIDITY of INBOX changed"):
        await remove_originals(client(session), "INBOX", 6, ["5"])


async def test_imap_gmail_fetch_asks_for_msgid_only_on_gmail() -> None:
    session = ScriptedGmail({})
    await client(session).fetch([3])
    assert session.sent == ["UID FETCH 3 (UID FLAGS INTERNALDATE X-GM-MSGID BODY.PEEK[])"]
    [message] = parse_fetch(
        [b"1 FETCH (X-GM-MSGID 1278455344230334865 UID 3 FLAGS () BODY[] {2}", bytearray(b"hi")]
    )
    assert message.gm_msgid == 1278455344230334865


def test_imap_special_use_attributes_parsed() -> None:
    assert special_uses(GMAIL_LIST) == {
        "\\All": "[Gmail]/All Mail",
        "\\Drafts": "[Gmail]/Drafts",
        "\\Sent": "[Gmail]/Sent Mail",
        "\\Trash": "[Gmail]/Trash",
    }
    localised = [
        b'(\\HasNoChildren \\TRASH) "/" {17}',
        bytearray(b"[Gmail]/Corbeille"),
        b'(\\all) "/" "[Gmail]/Tous les \\"messages\\""',
        b"(\\Junk) NIL Spam",
    ]
    assert special_uses(localised) == {
        "\\Trash": "[Gmail]/Corbeille",
        "\\All": '[Gmail]/Tous les "messages"',
        "\\Junk": "Spam",
    }
