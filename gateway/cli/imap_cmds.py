"""Commands about IMAP pulling: `imap pull --once` does one pass over every mailbox."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import click

from gateway.affinity import pin_as_configured
from gateway.app import mailbox_runner
from gateway.cli.context import CliContext, pass_cli
from gateway.errors import ConfigError, GatewayError
from gateway.imap.puller import PassSummary


class _Bar:
    """A click progress bar on a terminal, nothing elsewhere."""

    def __init__(self, label: str) -> None:
        self.label = label
        self._bar: Any = None

    def total(self, count: int) -> None:
        self.close()
        if count and sys.stderr.isatty():
            self._bar = click.progressbar(length=count, label=self.label, file=sys.stderr)
            self._bar.__enter__()

    def advance(self, count: int) -> None:
        if self._bar is not None:
            self._bar.update(count)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None


@click.group()
def imap() -> None:
    """Pulling submissions out of IMAP mailboxes."""


@imap.command("pull")
@click.option("--once", is_flag=True, required=True, help="One pass over every mailbox, then exit.")
@click.option("--mailbox", "names", multiple=True, help="Only this mailbox (repeatable).")
@pass_cli
def imap_pull(ctx: CliContext, once: bool, names: tuple[str, ...]) -> None:
    """Fetch, ingest and strip (or quarantine) new messages; print one summary line per mailbox."""
    mailboxes = [m for m in ctx.settings.imap.mailboxes if not names or m.name in names]
    if not mailboxes:
        raise ConfigError("no [[imap.mailboxes]] configured" + (" by that name" if names else ""))
    pin_as_configured(ctx.settings)  # the same pipeline as serve's, as cheaply
    services = ctx.migrating_services
    services.upgrade_database()
    failures: list[str] = []
    for mailbox in mailboxes:
        bar = _Bar(mailbox.name)
        try:
            summary: PassSummary = asyncio.run(mailbox_runner(services, mailbox).pull_once(bar))
        except GatewayError as exc:
            failures.append(f"{mailbox.name}: {exc.message}")
            continue
        finally:
            bar.close()
        click.echo(summary.line())
    if failures:
        for failure in failures[:-1]:
            click.echo(f"gateway: {failure}", err=True)
        raise click.ClickException(failures[-1])


def register(cli: click.Group) -> None:
    cli.add_command(imap)
