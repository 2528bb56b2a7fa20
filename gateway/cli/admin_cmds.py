"""Commands for administrators: courts, court keys and registrations."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from gateway.cli.context import CliContext, pass_cli, print_rows
from gateway.errors import InputError

MAX_KEY_BYTES = 1024 * 1024


@click.group()
def courts() -> None:
    """Courts and their OpenPGP encryption keys."""


@courts.command("add")
@click.argument("code")
@click.option("--name", required=True, help="The court's name, e.g. 'Tribunal judiciaire de Lyon'.")
@pass_cli
def courts_add(ctx: CliContext, code: str, name: str) -> None:
    """Add a court (CODE: 2-16 of A-Z, 0-9, '-')."""
    court = ctx.services.admin.add_court(code, name, ctx.actor)
    click.echo(f"court {court.code} added")


@courts.command("add-key")
@click.argument("code")
@click.argument("keyfile", type=click.Path(dir_okay=False, path_type=Path))
@pass_cli
def courts_add_key(ctx: CliContext, code: str, keyfile: Path) -> None:
    """Add an armoured OpenPGP public key that stored data will be encrypted to."""
    try:
        with keyfile.open("rb") as handle:
            data = handle.read(MAX_KEY_BYTES + 1)
    except OSError as exc:
        raise InputError(f"cannot read {keyfile}: {exc.strerror}") from None
    if len(data) > MAX_KEY_BYTES:
        raise InputError(f"{keyfile} is larger than {MAX_KEY_BYTES} bytes")
    added = ctx.services.admin.add_court_key(code, data, ctx.actor)
    click.echo(f"key {added.fingerprint} added to court {added.court}")
    for uid in added.user_ids:
        click.echo(f"  {uid}")


@courts.command("retire-key")
@click.argument("code")
@click.argument("fingerprint")
@click.option(
    "--force",
    is_flag=True,
    help="Retire the court's only active key anyway: its filings get 451 until a key is added.",
)
@pass_cli
def courts_retire_key(ctx: CliContext, code: str, fingerprint: str, force: bool) -> None:
    """Stop encrypting the court's new data to a key.

    What is already stored stays encrypted to it: the greffe keeps the private
    key until retention has purged that data. A retired key is not taken back.
    """
    retired = ctx.services.admin.retire_court_key(code, fingerprint, ctx.actor, last=force)
    left = retired.active_keys_left
    click.echo(
        f"key {retired.fingerprint} retired from court {retired.court} "
        f"({left} active key{'' if left == 1 else 's'} left)"
    )
    if not retired.active_keys_left:
        click.echo(
            f"gateway: court {retired.court} has no active key: its filings are refused "
            "with 451 until one is added",
            err=True,
        )


@courts.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@pass_cli
def courts_list(ctx: CliContext, as_json: bool) -> None:
    """List courts and their active keys (--json: every key, retired ones too, with its status)."""
    rows = ctx.services.admin.list_courts()
    if not as_json:
        for row in rows:
            row["active_keys"] = ",".join(
                k["fingerprint"] for k in row["keys"] if k["status"] == "active"
            )
    print_rows(rows, ["code", "name", "active_keys"], as_json)


@click.group()
def registrations() -> None:
    """Registered guardian mailboxes (court, measure, address)."""


def _registration_options(func: click.decorators.FC) -> click.decorators.FC:
    func = click.option("--address", required=True, help="The guardian's mailbox.")(func)
    func = click.option("--measure", required=True, help="The measure number.")(func)
    return click.option("--court", required=True, help="Court code.")(func)


@registrations.command("add")
@_registration_options
@pass_cli
def registrations_add(ctx: CliContext, court: str, measure: str, address: str) -> None:
    """Register a mailbox for a court and a measure."""
    reg = ctx.services.admin.add_registration(court, measure, address, ctx.actor)
    click.echo(f"registration {reg.id} added: {reg.address} for {court.upper()} {reg.measure}")


@registrations.command("revoke")
@_registration_options
@pass_cli
def registrations_revoke(ctx: CliContext, court: str, measure: str, address: str) -> None:
    """Revoke a registration (it stays in the history)."""
    ctx.services.admin.revoke_registration(court, measure, address, ctx.actor)
    click.echo("registration revoked")


@registrations.command("list")
@click.option("--court", default=None, help="Only this court.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@pass_cli
def registrations_list(ctx: CliContext, court: str | None, as_json: bool) -> None:
    """List registrations, revoked ones included."""
    rows = ctx.services.admin.list_registrations(court)
    print_rows(rows, ["id", "court", "measure", "address", "status", "registered_at"], as_json)


@registrations.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--no-notices",
    is_flag=True,
    help="Do not mail each address its registration notice (registrations already announced).",
)
@pass_cli
def registrations_import(ctx: CliContext, file: Path, no_notices: bool) -> None:
    """Import a CSV (header: court,measure,address): all lines or none.

    Each imported address is mailed a registration notice, unless --no-notices.
    """
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {file}: {exc.strerror}") from None
    if sys.stderr.isatty():
        total = max(data.count(b"\n") - 1, 1)
        with click.progressbar(length=total, label="importing", file=sys.stderr) as bar:
            count = ctx.services.admin.import_registrations(
                data, ctx.actor, bar.update, notify=not no_notices
            )
    else:
        count = ctx.services.admin.import_registrations(data, ctx.actor, notify=not no_notices)
    click.echo(f"{count} registrations imported")


@registrations.command("export")
@click.option("--court", default=None, help="Only this court.")
@pass_cli
def registrations_export(ctx: CliContext, court: str | None) -> None:
    """Write the active registrations as CSV on stdout (re-importable)."""
    sys.stdout.write(ctx.services.admin.export_registrations(court))


def register(cli: click.Group) -> None:
    cli.add_command(courts)
    cli.add_command(registrations)
