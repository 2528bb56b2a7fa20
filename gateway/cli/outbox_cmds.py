"""`gateway outbox list | show | retry`: the outgoing mail, sent, captured or waiting."""

from __future__ import annotations

import sys

import click

from gateway.cli.context import CliContext, pass_cli, print_rows
from gateway.outbox.operator import STATUSES, captured_mail, list_outbox, retry_now

COLUMNS = ["id", "kind", "recipient", "status", "attempts", "last_error", "next_retry"]


@click.group()
def outbox() -> None:
    """Outgoing mail: codes, receipts and notices, with their delivery attempts."""


@outbox.command("list")
@click.option("--status", type=click.Choice(STATUSES), default=None, help="Only this status.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@pass_cli
def outbox_list(ctx: CliContext, status: str | None, as_json: bool) -> None:
    """List every outgoing mail: kind, recipient, status, attempts, last error, next retry."""
    print_rows(list_outbox(ctx.services.db, status), COLUMNS, as_json)


@outbox.command("show")
@click.argument("outbox_id", metavar="ID", type=click.IntRange(min=1))
@pass_cli
def outbox_show(ctx: CliContext, outbox_id: int) -> None:
    """Print a captured mail as it was kept (relay.mode = "capture"), e.g. `> accuse.eml`."""
    data = captured_mail(ctx.services.db, ctx.settings.mail_dir, outbox_id)
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


@outbox.command("retry")
@click.argument("outbox_id", metavar="ID", type=click.IntRange(min=1))
@pass_cli
def outbox_retry(ctx: CliContext, outbox_id: int) -> None:
    """Make a waiting mail due now instead of at the end of its back-off."""
    services = ctx.services
    row = retry_now(services.db, outbox_id, services.clock(), ctx.actor)
    click.echo(
        f"outbox {row.id} ({row.kind} to {row.recipient}) is due now: "
        "a running gateway sends it within seconds"
    )


def register(cli: click.Group) -> None:
    cli.add_command(outbox)
