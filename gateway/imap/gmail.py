"""Gmail: a stripped original is also removed from "All Mail", where Gmail would otherwise keep it.

What this relies on, from Google's documentation:

* https://developers.google.com/gmail/imap/imap-extensions — `X-GM-EXT-1`
  in CAPABILITY announces the extensions; `X-GM-MSGID` is a message's id,
  the same in every folder it shows in, and can be FETCHed and SEARCHed;
  every LIST answer carries the special-use attributes (`\\All` for
  "[Gmail]/All Mail", `\\Trash` for "[Gmail]/Trash", names that depend on
  the account's language, hence found by attribute, never by name).
* https://developers.google.com/gmail/api/reference/rest/v1/ImapSettings —
  what happens to a message "marked as deleted and expunged from the last
  visible IMAP folder" is the account's `expungeBehavior`: `archive` (the
  default: it stays in All Mail), `trash`, or `deleteForever`.

So expunging the original from its folder is not enough: it may stay in All
Mail with its attachments.  After the folder's expunge the original is
looked up in All Mail by X-GM-MSGID and moved to Trash, then looked up in
Trash (where the `trash` setting may already have put it) and expunged
there, which deletes it for good.  The stub appended in its place has an
id of its own and is never touched.  None of this ran against a real Gmail
(see the README): the sequence is unit-tested, and run against a Dovecot
with `\\All` and `\\Trash` folders, searching there by Message-ID.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from gateway.errors import ImapUnavailable
from gateway.imap.client import ImapClient

log = logging.getLogger("gateway.imap")
Criteria = Callable[[str], Sequence[str]]
"""The UID SEARCH criteria that find one original by its id."""


def by_gmail_msgid(msgid: str) -> Sequence[str]:
    return ("X-GM-MSGID", msgid)


async def remove_originals(
    client: ImapClient,
    folder: str,
    uidvalidity: int,
    ids: Sequence[str],
    criteria: Criteria = by_gmail_msgid,
) -> int:
    """Delete the originals `ids` (already expunged from `folder`) from All Mail and Trash.

    Returns how many were expunged from Trash.  `folder` is selected again
    afterwards, and must have kept its UIDVALIDITY, since the pass goes on
    in it.  Without a `\\All` or `\\Trash` folder (hidden from IMAP in the
    account's settings) nothing is done and a warning says so.
    """
    if not ids:
        return 0
    special = await client.special_folders()
    all_mail, trash = special.get("\\All"), special.get("\\Trash")
    if all_mail is None or trash is None:
        log.warning(
            "gmail: no \\All or \\Trash folder over IMAP; originals kept in All Mail",
            extra={"mailbox": client.name, "count": len(ids)},
        )
        return 0
    try:
        await client.select(all_mail)
        await client.move(await _find(client, ids, criteria), trash)
        await client.select(trash)
        found = await _find(client, ids, criteria)
        await client.delete(found)
    finally:
        state = await client.select(folder)
    if state.uidvalidity != uidvalidity:
        raise ImapUnavailable(f"imap {client.name}: UIDVALIDITY of {folder} changed")
    log.info("gmail: originals deleted", extra={"mailbox": client.name, "count": len(found)})
    return len(found)


async def _find(client: ImapClient, ids: Sequence[str], criteria: Criteria) -> list[int]:
    uids: set[int] = set()
    for one in ids:
        uids.update(await client.search(*criteria(one)))
    return sorted(uids)
