"""Commands for the greffe: requests, their review, submissions, and the decrypting export."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from gateway.cli.context import CliContext, pass_cli, print_rows
from gateway.errors import InputError
from gateway.escaping import printable
from gateway.greffe.export import Exporter, list_requests, list_submissions
from gateway.greffe.syncfolder import SyncFolder
from gateway.model import RequestStatus
from gateway.review import RequestView
from gateway.storage.crypto import GpgKeyring

if TYPE_CHECKING:  # the HTTP client (httpx) is imported by `greffe sync` alone
    from gateway.greffe.sync import Syncer, SyncReport


@click.group()
def requests() -> None:
    """Requests (requêtes) and their status."""


@requests.command("list")
@click.option("--court", default=None, help="Only this court.")
@click.option("--status", type=click.Choice([s.value for s in RequestStatus]), default=None)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@pass_cli
def requests_list(ctx: CliContext, court: str | None, status: str | None, as_json: bool) -> None:
    """List requests; a rejected one with the reason the greffe gave."""
    rows = list_requests(ctx.services.db, court, status)
    columns = ["reference", "court", "measure", "kind", "status", "submissions", "held", "reason"]
    if not as_json:  # the table keeps one short line a request; --json gives the whole reason
        rows = [{**row, "reason": _shortened(row["reason"], REASON_SHOWN)} for row in rows]
    print_rows(rows, columns, as_json)


REASON_SHOWN = 60
"""Characters of a rejection's reason in the `requests list` table."""


def _shortened(text: str | None, limit: int) -> str | None:
    return None if text is None else printable(text, limit)


@requests.command("hold")
@click.argument("reference")
@pass_cli
def requests_hold(ctx: CliContext, reference: str) -> None:
    """Keep a request from the retention purge, whatever its age."""
    changed = ctx.services.retention.set_held(reference, True, ctx.actor)
    click.echo(f"{reference.upper()} {'held' if changed else 'was already held'}")


@requests.command("unhold")
@click.argument("reference")
@pass_cli
def requests_unhold(ctx: CliContext, reference: str) -> None:
    """Let the retention purge delete a request again once it is old enough."""
    changed = ctx.services.retention.set_held(reference, False, ctx.actor)
    click.echo(f"{reference.upper()} {'released' if changed else 'was not held'}")


@requests.command("acknowledge")
@click.argument("reference")
@pass_cli
def requests_acknowledge(ctx: CliContext, reference: str) -> None:
    """Take up a request (open or sealed -> received); mails the avis d'enregistrement."""
    _done(ctx.services.review.acknowledge(reference, ctx.actor))


@requests.command("accept")
@click.argument("reference")
@pass_cli
def requests_accept(ctx: CliContext, reference: str) -> None:
    """Accept a received request (received -> accepted)."""
    _done(ctx.services.review.accept(reference, ctx.actor))


@requests.command("reject")
@click.argument("reference")
@click.option("--reason", required=True, help="Why, as the guardian will read it (French).")
@click.option(
    "--note",
    "notes",
    multiple=True,
    metavar="KEY=TEXT",
    help="A note on one document; KEY is <submission>/<document>, e.g. 2/1 (repeatable).",
)
@pass_cli
def requests_reject(ctx: CliContext, reference: str, reason: str, notes: tuple[str, ...]) -> None:
    """Reject a request (open, sealed or received -> rejected); mails the reason and notes."""
    _done(ctx.services.review.reject(reference, ctx.actor, reason, notes=_parse_notes(notes)))


def _parse_notes(notes: tuple[str, ...]) -> dict[str, str]:
    parsed: dict[str, str] = {}
    for item in notes:
        key, sep, text = item.partition("=")
        if not sep:
            raise InputError(f"--note {item[:40]!r}: expected KEY=TEXT, e.g. 2/1=illisible")
        if key.strip() in parsed:
            raise InputError(f"--note {key.strip()!r} is given twice")
        parsed[key.strip()] = text
    return parsed


def _done(view: RequestView) -> None:
    click.echo(f"request {view.reference} is now {view.status}")


@click.group()
def submissions() -> None:
    """Accepted messages."""


@submissions.command("list")
@click.option("--court", default=None, help="Only this court.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@pass_cli
def submissions_list(ctx: CliContext, court: str | None, as_json: bool) -> None:
    """List submissions."""
    rows = list_submissions(ctx.services.db, court)
    print_rows(rows, ["reference", "court", "channel", "received_at", "size", "documents"], as_json)


@submissions.command("export")
@click.argument("reference")
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder to write (new or empty).",
)
@click.option(
    "--gnupghome",
    default=None,
    type=click.Path(file_okay=False, path_type=Path),
    help="GnuPG home holding the court's private key (default: $GNUPGHOME, ~/.gnupg).",
)
@pass_cli
def submissions_export(ctx: CliContext, reference: str, out: Path, gnupghome: Path | None) -> None:
    """Decrypt a request or a submission: manifest.json, message.eml and the documents.

    Every SHA-256 is checked against the manifest and the database first;
    nothing is written if one does not match.
    """
    home = gnupghome or Path(os.environ.get("GNUPGHOME", Path.home() / ".gnupg"))
    with GpgKeyring(home) as keyring:
        exporter = Exporter(ctx.services.db, ctx.services.blobs, keyring)
        if sys.stderr.isatty():
            with click.progressbar(length=0, label="decrypting", file=sys.stderr) as bar:
                files = exporter.export(reference, out, bar.update)
        else:
            files = exporter.export(reference, out)
    click.echo(f"{len(files)} files written to {out}")


@click.group()
def greffe() -> None:
    """On the greffe's own machine: pull and decrypt filings over the HTTP API."""


# Test-only: seconds `greffe sync` sleeps after each file it writes, so that a
# test can SIGKILL it half-way through a request. Never set it in production.
TEST_PAUSE_ENV = "GATEWAY_SYNC_TEST_PAUSE"


@greffe.command("sync")
@click.option("--url", required=True, help="The gateway's HTTP API, e.g. https://greffe.example")
@click.option(
    "--api-key-file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="File holding a greffe API key (gateway api-keys create --role greffe).",
)
@click.option(
    "--gnupghome",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="GnuPG home holding the court's private key (gpg-agent or a smartcard).",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder to write: one folder per request.",
)
@click.option("--court", "courts", multiple=True, help="Only this court (repeatable).")
@click.option("--acknowledge", is_flag=True, help="Acknowledge each request fully written.")
@click.option("--full", is_flag=True, help="List every request, not only those changed since.")
@click.option(
    "--ca-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="CA certificate(s) to trust for the gateway's HTTPS (default: the system's).",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
def greffe_sync(
    url: str,
    api_key_file: Path,
    gnupghome: Path,
    out: Path,
    courts: tuple[str, ...],
    acknowledge: bool,
    full: bool,
    ca_file: Path | None,
    as_json: bool,
) -> None:
    """Fetch what is new, verify every SHA-256, write REF/ folders atomically.

    Needs no gateway configuration or database: only the API and the key.
    Exit 1 when a request could not be synced (named on stderr); the others
    are written all the same.
    """
    from gateway.greffe.apiclient import GreffeApi
    from gateway.greffe.sync import Syncer

    key = _read_key(api_key_file)
    pause = float(os.environ.get(TEST_PAUSE_ENV) or 0)
    folder = SyncFolder(out)
    with (
        folder.locked(),
        GreffeApi(url, key, ca_file=ca_file) as api,
        GpgKeyring(gnupghome) as keyring,
    ):
        syncer = Syncer(api, keyring, folder, acknowledge=acknowledge, pause=pause)
        items = syncer.listing(courts, full=full)
        report = _run_with_progress(syncer, courts, items, as_json)
    _report(report, as_json)
    if report.errors:
        sys.exit(1)


def _read_key(path: Path) -> str:
    try:
        key = path.read_text("utf-8").strip()
    except (OSError, UnicodeDecodeError):
        raise InputError(f"cannot read the API key file {path}") from None
    if not key or any(ch.isspace() for ch in key):
        raise InputError(f"{path} does not hold one API key")
    return key


def _run_with_progress(
    syncer: Syncer, courts: tuple[str, ...], items: list[dict[str, Any]], as_json: bool
) -> SyncReport:
    if as_json or not sys.stderr.isatty() or not items:
        return syncer.run(courts, items)
    with click.progressbar(length=len(items), label="syncing", file=sys.stderr) as bar:
        return syncer.run(courts, items, lambda _reference: bar.update(1))


def _report(report: SyncReport, as_json: bool) -> None:
    for error in report.errors:
        click.echo(f"gateway: {error['error']}", err=True)
    if as_json:
        json.dump(report.as_dict(), sys.stdout, ensure_ascii=False, indent=1)
        sys.stdout.write("\n")
    else:
        click.echo(report.summary())


def register(cli: click.Group) -> None:
    cli.add_command(requests)
    cli.add_command(submissions)
    cli.add_command(greffe)
