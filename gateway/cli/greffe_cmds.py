"""Commands for the greffe: requests, their review, submissions, and the decrypting export."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from gateway.cli.context import CliContext, pass_cli, print_rows
from gateway.errors import InputError
from gateway.greffe.export import Exporter, list_requests, list_submissions
from gateway.model import RequestStatus
from gateway.review import RequestView
from gateway.storage.crypto import GpgKeyring


@click.group()
def requests() -> None:
    """Requests (requêtes) and their status."""


@requests.command("list")
@click.option("--court", default=None, help="Only this court.")
@click.option("--status", type=click.Choice([s.value for s in RequestStatus]), default=None)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@pass_cli
def requests_list(ctx: CliContext, court: str | None, status: str | None, as_json: bool) -> None:
    """List requests."""
    rows = list_requests(ctx.services.db, court, status)
    columns = ["reference", "court", "measure", "kind", "status", "submissions", "held"]
    print_rows(rows, columns, as_json)


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


def register(cli: click.Group) -> None:
    cli.add_command(requests)
    cli.add_command(submissions)
