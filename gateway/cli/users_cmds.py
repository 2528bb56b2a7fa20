"""Commands for console accounts: add one (prints its enrolment link), list, disable, reset."""

from __future__ import annotations

import click

from gateway.apikeys import Role
from gateway.cli.context import CliContext, pass_cli, print_rows
from gateway.users import Enrolment


@click.group("users")
def users() -> None:
    """Personal accounts of the clerks' console (password and TOTP)."""


def _print_link(ctx: CliContext, enrolment: Enrolment) -> None:
    link = f"{ctx.settings.public_url}/console/inscription/{enrolment.token}"
    expires = enrolment.expires_at.isoformat(timespec="seconds")
    click.echo(
        f"user {enrolment.user_id} ({enrolment.email}): enrolment link, valid until {expires}, "
        "for that person only; shown once:",
        err=True,
    )
    click.echo(link)


@users.command("add")
@click.option("--email", required=True, help="The person's address: their login.")
@click.option("--role", required=True, type=click.Choice([role.value for role in Role]))
@click.option("--court", "courts", multiple=True, help="A court a greffe user sees (repeatable).")
@pass_cli
def users_add(ctx: CliContext, email: str, role: str, courts: tuple[str, ...]) -> None:
    """Create an account and print its one-time enrolment link (password and TOTP are set there)."""
    _print_link(ctx, ctx.services.users.add(email, role, list(courts), ctx.actor))


@users.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@pass_cli
def users_list(ctx: CliContext, as_json: bool) -> None:
    """List accounts (never a password, a TOTP secret or a link)."""
    rows = ctx.services.users.accounts()
    if not as_json:
        for row in rows:
            row["courts"] = ",".join(row["courts"]) or "every court"
    columns = ["id", "email", "role", "courts", "state", "created_at", "last_login_at"]
    print_rows(rows, columns, as_json)


@users.command("disable")
@click.argument("user_id", metavar="ID", type=click.IntRange(min=1))
@pass_cli
def users_disable(ctx: CliContext, user_id: int) -> None:
    """Disable an account: it can no longer log in, and its open sessions end now."""
    ctx.services.users.disable(user_id, ctx.actor)
    click.echo(f"user {user_id} disabled")


@users.command("reset")
@click.argument("user_id", metavar="ID", type=click.IntRange(min=1))
@pass_cli
def users_reset(ctx: CliContext, user_id: int) -> None:
    """A new enrolment link (lost phone or password): the old password and TOTP stop working."""
    _print_link(ctx, ctx.services.users.reset(user_id, ctx.actor))


def register(cli: click.Group) -> None:
    cli.add_command(users)
