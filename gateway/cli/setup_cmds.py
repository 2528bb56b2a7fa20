"""Commands that set the gateway up and run it: init, db upgrade, serve, audit verify."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from gateway.audit.chain import verify_chain
from gateway.bootstrap import initialise
from gateway.cli.context import CliContext, pass_cli
from gateway.settings import parse_hostport
from gateway.storage.audit import AuditRepository

if TYPE_CHECKING:
    from gateway.app import Running


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
    ctx.migrating_services.upgrade_database()
    click.echo("database schema is up to date")


@click.command()
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Processes sharing the SMTP port (SO_REUSEPORT) and the database, each kept to "
    "a CPU of its own unless gateway.pin_cpu is false.",
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

    from gateway.affinity import pin_as_configured
    from gateway.app import run_gateway
    from gateway.logs import setup_logging
    from gateway.runtime import run_workers

    settings = ctx.settings
    setup_logging(settings.logging.level, settings.logging.format)
    services = ctx.migrating_services
    if workers == 1 and not outbox_process:
        pin_as_configured(settings)
        asyncio.run(run_gateway(services, on_ready=lambda running: print_banner(ctx, running)))
    else:
        run_workers(services, workers, outbox_process=outbox_process)


def print_banner(ctx: CliContext, running: Running) -> None:
    """Once listening: where everything is, and what to try next (stdout, for a person)."""
    settings = ctx.settings
    host = parse_hostport(settings.smtp.listen)[0]
    http_host = parse_hostport(settings.http.listen)[0]
    gateway = f"{_program()} --config {_shown_path(ctx.config_path)}"
    addresses = [settings.address("codes"), settings.address("submit"), settings.address("status")]
    smtp = f"{host}:{running.smtp_port}"
    lines = ["gateway listening", f"  SMTP       {smtp}  " + "  ".join(addresses)]
    if running.http_port is not None:
        lines.append(f"  HTTP       http://{http_host}:{running.http_port}/metrics")
    if settings.relay.mode == "capture":
        lines.append(
            f"  mail out   CAPTURED, not sent: maildir {_shown_path(settings.mail_dir)} "
            f"(relay.mode = \"capture\"; see `{gateway} outbox list`)"
        )
    else:
        lines.append(f"  mail out   relayed to {settings.relay.host}:{settings.relay.port}")
    lines += [
        f"  data       {_shown_path(settings.data_dir)}",
        "next, in another terminal:",
        f"  {gateway} courts add TJ-DEMO --name \"Tribunal de démonstration\"",
        f"  {gateway} outbox list",
        f"  {_program()} demo      # the whole flow on loopback, every party played",
        "stop with Ctrl-C",
    ]
    click.echo("\n".join(lines))
    sys.stdout.flush()


def _program() -> str:
    """How this program was started, to print commands that can be pasted."""
    invoked = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path("gateway")
    return _shown_path(invoked) if invoked.name == "gateway" else "gateway"


def _shown_path(path: Path) -> str:
    """A path as short as it can be said from here (relative under the working folder)."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


@click.group()
def audit() -> None:
    """The hash-chained audit trail."""


@audit.command("verify")
@pass_cli
def audit_verify(ctx: CliContext) -> None:
    """Walk the audit chain; exit 1 naming the first broken event."""
    with ctx.services.db.reading() as session:
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
    from gateway.audit.check import configuration_warnings, run_check

    services = ctx.services
    settings = ctx.settings
    capture_dir = settings.mail_dir if settings.relay.mode == "capture" else None
    findings = run_check(
        services.db,
        services.blobs,
        services.clock(),
        capture_dir=capture_dir,
        warnings=configuration_warnings(settings),
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
