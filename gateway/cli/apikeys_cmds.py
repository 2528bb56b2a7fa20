"""Commands for API keys: create one (printed once), list, revoke."""

from __future__ import annotations

import click

from gateway.apikeys import Role
from gateway.cli.context import CliContext, pass_cli, print_rows


@click.group("api-keys")
def api_keys() -> None:
    """Bearer keys for the HTTP API (role admin, or greffe scoped to courts)."""


@api_keys.command("create")
@click.option("--role", required=True, type=click.Choice([role.value for role in Role]))
@click.option("--court", "courts", multiple=True, help="A court a greffe key sees (repeatable).")
@click.option("--name", default="", help="What the key is for, e.g. 'greffe-lyon sync'.")
@pass_cli
def api_keys_create(ctx: CliContext, role: str, courts: tuple[str, ...], name: str) -> None:
    """Create a key and print it once: it is stored only as a keyed hash."""
    issued = ctx.services.api_keys.create(role, list(courts), name, ctx.actor)
    scope = ",".join(issued.courts) if issued.courts else "every court"
    click.echo(f"API key {issued.key_id} ({issued.role}, {scope}); shown once:", err=True)
    click.echo(issued.key)


@api_keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@pass_cli
def api_keys_list(ctx: CliContext, as_json: bool) -> None:
    """List keys (never their secrets)."""
    rows = ctx.services.api_keys.list()
    if not as_json:
        for row in rows:
            row["courts"] = ",".join(row["courts"])
            row["revoked"] = "yes" if row["revoked_at"] else ""
    columns = ["id", "lookup_id", "role", "courts", "name", "created_at", "revoked"]
    print_rows(rows, columns, as_json)


@api_keys.command("revoke")
@click.argument("key_id", metavar="ID", type=click.IntRange(min=1))
@pass_cli
def api_keys_revoke(ctx: CliContext, key_id: int) -> None:
    """Revoke a key: it is refused from the next request on."""
    ctx.services.api_keys.revoke(key_id, ctx.actor)
    click.echo(f"API key {key_id} revoked")


def register(cli: click.Group) -> None:
    cli.add_command(api_keys)
