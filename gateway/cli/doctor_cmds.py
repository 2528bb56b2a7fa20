"""`gateway doctor`: check the deployment (DNS records, TLS, relay, disk, court keys)."""

from __future__ import annotations

import click

from gateway.cli.context import CliContext, pass_cli, print_rows
from gateway.doctor import Deployment, Status, run_doctor, summary
from gateway.ingest.dns import TxtResolver


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the findings as a JSON array.")
@pass_cli
def doctor(ctx: CliContext, as_json: bool) -> None:
    """Check DNS (MX, DKIM, SPF, DMARC), TLS, relay, disk and court keys; exit 1 on an error.

    One line per finding (ok, warning, error) saying what to do; warnings
    alone exit 0.
    """
    services = ctx.services
    dns = ctx.settings.dns
    deployment = Deployment(
        settings=ctx.settings,
        resolver=TxtResolver(list(dns.nameservers), dns.timeout),
        db=services.db,
        blobs=services.blobs,
        now=services.clock(),
    )
    findings = run_doctor(deployment)
    if as_json:
        print_rows([f.as_dict() for f in findings], [], as_json=True)
    else:
        for finding in findings:
            click.echo(finding.line())
        click.echo(summary(findings))
    errors = sum(f.status is Status.ERROR for f in findings)
    if errors:
        raise click.ClickException(f"doctor found {errors} error(s)")


def register(cli: click.Group) -> None:
    cli.add_command(doctor)
