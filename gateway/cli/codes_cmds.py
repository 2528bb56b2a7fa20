"""Commands about codes: an administrator asks for one on a guardian's behalf."""

from __future__ import annotations

import click

from gateway.cli.context import CliContext, pass_cli
from gateway.errors import NotFound
from gateway.model import Mailbox, RequestKind, court_code, measure_number


@click.group()
def codes() -> None:
    """One-time codes (numéros de saisie)."""


@codes.command("request")
@click.option("--court", required=True, help="Court code.")
@click.option("--measure", required=True, help="Measure number.")
@click.option("--address", required=True, help="The registered mailbox.")
@click.option(
    "--kind",
    type=click.Choice([k.value for k in RequestKind]),
    default=RequestKind.REQUETE.value,
    show_default=True,
)
@pass_cli
def codes_request(ctx: CliContext, court: str, measure: str, address: str, kind: str) -> None:
    """Open a request and mail its code to the registered address (nothing secret is printed)."""
    mailbox = Mailbox.parse(address)
    reason = ctx.services.code_issuer.request(
        court_code(court), measure_number(measure), mailbox.key, RequestKind(kind), ctx.actor
    )
    if reason == "no such registration":
        raise NotFound(f"no active registration of {mailbox} for {court.upper()} {measure}")
    if reason:
        raise click.ClickException(f"code not issued: {reason}")
    click.echo(f"code mailed to {mailbox} (queued in the outbox)")


def register(cli: click.Group) -> None:
    cli.add_command(codes)
