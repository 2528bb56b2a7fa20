"""Commands for the operator: the retention purge, backups and restores."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from gateway.backup import Backup, read_manifest, restore
from gateway.cli.context import CliContext, pass_cli, print_rows
from gateway.ingest.manifest import rfc3339
from gateway.storage.requests import PurgeCandidate, PurgedRequest

PURGE_COLUMNS = ["reference", "court", "status", "final_at", "submissions", "blobs"]


@click.group()
def retention() -> None:
    """Requests past `retention.days`."""


@retention.command("purge")
@click.option("--dry-run", is_flag=True, help="List what would be purged; delete nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@pass_cli
def retention_purge(ctx: CliContext, dry_run: bool, as_json: bool) -> None:
    """Delete requests whose final status is older than retention.days, blobs included.

    Final: accepted, rejected, or sealed and never acknowledged. A held
    request (`gateway requests hold`) is kept. Each purge is audited.
    """
    services = ctx.services
    days = services.settings.retention.days
    if dry_run:
        rows = [_due_row(candidate) for candidate in services.retention.due()]
    else:
        report = services.retention.purge(ctx.actor)
        rows = [_purged_row(purged) for purged in report.purged]
    print_rows(rows, PURGE_COLUMNS, as_json)
    if as_json:
        return
    if days == 0:
        click.echo("retention.days is 0: requests are kept forever", err=True)
    elif dry_run:
        click.echo(f"{len(rows)} request(s) would be purged (older than {days} days)", err=True)
    else:
        click.echo(
            f"{len(rows)} request(s) purged, {report.blobs_deleted} blob(s) deleted", err=True
        )


def _due_row(candidate: PurgeCandidate) -> dict[str, Any]:
    return {
        "reference": candidate.reference,
        "court": candidate.court,
        "status": candidate.status,
        "final_at": rfc3339(candidate.final_at),
        "submissions": candidate.submissions,
    }


def _purged_row(purged: PurgedRequest) -> dict[str, Any]:
    return {
        "reference": purged.reference,
        "court": purged.court,
        "status": purged.status,
        "final_at": rfc3339(purged.final_at),
        "submissions": len(purged.submissions),
        "blobs": len(purged.blob_keys),
    }


@click.command()
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder to write (new or empty). It holds the gateway's secrets: protect it.",
)
@pass_cli
def backup(ctx: CliContext, out: Path) -> None:
    """Consistent online backup of the SQLite database, its blobs and the keys.

    Runs while `serve` keeps accepting. PostgreSQL: see the README (pg_dump
    plus a copy of the blobs).
    """
    services = ctx.services
    writer: Backup = services.backup()
    if sys.stderr.isatty():
        with click.progressbar(length=0, label="copying blobs", file=sys.stderr) as bar:
            summary = writer.write(out, bar.update)
    else:
        summary = writer.write(out)
    click.echo(f"backup written to {out}: {summary.blobs} blobs, {summary.files} files, "
               f"{summary.bytes} bytes")  # fmt: skip


@click.command("restore")
@click.argument("source", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option(
    "--to",
    "target",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The data directory to create (new or empty).",
)
def restore_cmd(source: Path, target: Path) -> None:
    """Rebuild a data directory from a backup, every SHA-256 checked first."""
    if sys.stderr.isatty():
        total = len(read_manifest(source))
        with click.progressbar(length=total, label="checking", file=sys.stderr) as bar:
            summary = restore(source, target, bar.update)
    else:
        summary = restore(source, target)
    database = (target / "gateway.db").resolve()
    click.echo(f"restored {summary.files} files ({summary.blobs} blobs) to {target}")
    click.echo("point the configuration at it:")
    click.echo(f'  [gateway] data_dir = "{target.resolve()}"')
    click.echo(f'  [database] url = "sqlite:///{database}"')


def register(cli: click.Group) -> None:
    cli.add_command(retention)
    cli.add_command(backup)
    cli.add_command(restore_cmd)
