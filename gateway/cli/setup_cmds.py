"""Commands that set the gateway up and run it: init, db upgrade, serve, audit verify."""

from __future__ import annotations

import click

from gateway.audit.chain import verify_chain
from gateway.bootstrap import initialise
from gateway.cli.context import CliContext, pass_cli
from gateway.storage.audit import AuditRepository


@click.command()
@pass_cli
def init(ctx: CliContext) -> None:
    """Create what is missing: config (never overwritten), data dir, secret, keys, database."""
    settings, report = initialise(ctx.config_path)
    from gateway.app import Services

    services = Services(settings)
    try:
        services.upgrade_database()
    finally:
        services.close()
    for line in report.created:
        click.echo(f"created {line}")
    if not report.created:
        click.echo("nothing to create: everything is in place")
    click.echo("publish this DKIM record for outgoing mail:")
    click.echo(report.dkim_record)


@click.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@pass_cli
def db_upgrade(ctx: CliContext) -> None:
    """Apply the database migrations (serve does it too)."""
    ctx.services.upgrade_database()
    click.echo("database schema is up to date")


@click.command()
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Processes sharing the SMTP port (SO_REUSEPORT) and the database.",
)
@click.option(
    "--outbox-process",
    is_flag=True,
    help="Deliver the outbox (compose, sign, relay receipts) in a process of its own, "
    "so the SMTP processes only accept.",
)
@pass_cli
def serve(ctx: CliContext, workers: int, outbox_process: bool) -> None:
    """Run SMTP, metrics, the outbox and the background workers until SIGTERM."""
    import asyncio

    from gateway.app import run_gateway
    from gateway.logs import setup_logging
    from gateway.runtime import run_workers

    settings = ctx.settings
    setup_logging(settings.logging.level, settings.logging.json_lines)
    if workers == 1 and not outbox_process:
        asyncio.run(run_gateway(ctx.services))
    else:
        run_workers(ctx.services, workers, outbox_process=outbox_process)


@click.group()
def audit() -> None:
    """The hash-chained audit trail."""


@audit.command("verify")
@pass_cli
def audit_verify(ctx: CliContext) -> None:
    """Walk the audit chain; exit 1 naming the first broken event."""
    with ctx.services.db.transaction() as session:
        report = verify_chain(AuditRepository(session))
    if not report.ok:
        raise click.ClickException(
            f"audit chain broken at event {report.broken_seq}: {report.reason}"
        )
    click.echo(f"audit chain intact: {report.events} events")


@click.command()
@pass_cli
def check(ctx: CliContext) -> None:
    """Daily consistency check: blobs vs rows, audit chain, stuck requests; exit 1 on a fault."""
    import sys

    from gateway.audit.check import configuration_warnings, run_check

    services = ctx.services
    findings = run_check(
        services.db,
        services.blobs,
        services.clock(),
        warnings=configuration_warnings(services.settings),
    )
    for problem in findings.problems:
        click.echo(f"problem: {problem}", err=True)
    for warning in findings.warnings:
        click.echo(f"warning: {warning}", err=True)
    for name, count in sorted(findings.counts.items()):
        click.echo(f"{name}: {count}")
    if not findings.ok:
        click.echo(f"gateway: check found {len(findings.problems)} problem(s)", err=True)
        sys.exit(1)
    click.echo("check passed")


def register(cli: click.Group) -> None:
    cli.add_command(init)
    cli.add_command(db)
    cli.add_command(serve)
    cli.add_command(check)
    cli.add_command(audit)
