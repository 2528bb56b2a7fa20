"""Commands for teletransmission: homologated software (Annexe III) and credentials (Annexe II)."""

from __future__ import annotations

import click

from gateway.cli.context import CliContext, pass_cli, print_rows
from gateway.ingest.manifest import rfc3339


@click.group()
def software() -> None:
    """Software homologated for teletransmission: only these can be named on a credential."""


@software.command("add")
@click.argument("name")
@click.option("--publisher", default="", help="Who publishes it.")
@pass_cli
def software_add(ctx: CliContext, name: str, publisher: str) -> None:
    """Record a homologated software (again, if its homologation was withdrawn)."""
    added = ctx.services.credentials.add_software(name, publisher, ctx.actor)
    click.echo(f"software {added.name!r} homologated")


@software.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@pass_cli
def software_list(ctx: CliContext, as_json: bool) -> None:
    """List homologated software, withdrawn ones included."""
    rows = ctx.services.credentials.list_software()
    print_rows(rows, ["name", "publisher", "status", "homologated_at", "revoked_at"], as_json)


@software.command("revoke")
@click.argument("name")
@pass_cli
def software_revoke(ctx: CliContext, name: str) -> None:
    """Withdraw a homologation: every credential issued for it is revoked."""
    count = ctx.services.credentials.revoke_software(name, ctx.actor)
    click.echo(f"software {name!r} revoked, and {count} credential(s) with it")


@click.group()
def credentials() -> None:
    """Teletransmission credentials: the password a homologated software logs in with."""


@credentials.command("issue")
@click.option("--address", required=True, help="The registered address it logs in as.")
@click.option("--software", "software_name", required=True, help="A homologated software.")
@pass_cli
def credentials_issue(ctx: CliContext, address: str, software_name: str) -> None:
    """Issue a credential; its secret is printed on stdout, this once and never again."""
    issued = ctx.services.credentials.issue(address, software_name, ctx.actor)
    click.echo(
        f"credential {issued.id} issued to {issued.address} for {issued.software!r}, "
        f"valid until {rfc3339(issued.expires_at)}; its secret follows and is not kept:",
        err=True,
    )
    click.echo(issued.secret)


@credentials.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@pass_cli
def credentials_list(ctx: CliContext, as_json: bool) -> None:
    """List credentials (never their secrets)."""
    rows = ctx.services.credentials.list_credentials()
    columns = ["id", "address", "software", "issued_at", "expires_at", "last_used_at", "status"]
    print_rows(rows, columns, as_json)


@credentials.command("revoke")
@click.argument("credential_id", metavar="ID", type=int)
@pass_cli
def credentials_revoke(ctx: CliContext, credential_id: int) -> None:
    """Revoke a credential: the software can no longer log in with it."""
    ctx.services.credentials.revoke(credential_id, ctx.actor)
    click.echo(f"credential {credential_id} revoked")


def register(cli: click.Group) -> None:
    cli.add_command(software)
    cli.add_command(credentials)
