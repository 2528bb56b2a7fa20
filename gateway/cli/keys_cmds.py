"""`gateway keys export`: the gateway's public keys, to hand to the greffe, guardians and DNS."""

from __future__ import annotations

import click

from gateway.bootstrap import dkim_record
from gateway.cli.context import CliContext, pass_cli
from gateway.errors import ConfigError


@click.group()
def keys() -> None:
    """The gateway's own public keys."""


@keys.command("export")
@click.option("--dkim", is_flag=True, help="Print the DKIM TXT record instead (as `init` does).")
@pass_cli
def keys_export(ctx: CliContext, dkim: bool) -> None:
    """Print the armoured public key that signs receipts (or, with --dkim, the DKIM record).

    The same key is served by Web Key Directory for the receipts' From address;
    `gateway receipts verify --key FILE` checks receipts against it.
    """
    settings = ctx.settings
    if dkim:
        click.echo(dkim_record(settings))
        return
    try:
        armored = settings.signing_pub_file.read_text("utf-8")
    except (OSError, UnicodeDecodeError):
        raise ConfigError(
            f"public signing key {settings.signing_pub_file} is unreadable (run `gateway init`)"
        ) from None
    click.echo(armored.rstrip("\n"))


def register(cli: click.Group) -> None:
    cli.add_command(keys)
