"""`gateway demo [--keep]`: the whole flow on loopback, every party played, in a new folder."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import click

from gateway.errors import ConfigError

if TYPE_CHECKING:  # the demo's parties are imported when it runs, not by every command
    from gateway.demo.flow import DemoReport

SABOTAGE_ENV = "GATEWAY_DEMO_SABOTAGE"
"""Spoils one step on purpose (tests): `submission` or `receipt`."""


@click.command()
@click.option("--keep", is_flag=True, help="Keep the folder and say how to explore it.")
def demo(keep: bool) -> None:
    """Play the court, the guardian and the gateway on loopback, and walk the whole flow.

    Registration, a code asked for by mail, the code as mailed, a PDF
    submitted, the receipt as mailed and its signature checked, the greffe's
    export and the document's SHA-256: every step is printed with the real
    SMTP replies.  It uses a new folder of its own (never --config's), and
    exits 1 naming the step that did not hold.
    """
    from gateway.demo.flow import SABOTAGES, DemoFailed, run_demo
    from gateway.logs import setup_logging

    sabotage = os.environ.get(SABOTAGE_ENV) or None
    if sabotage is not None and sabotage not in SABOTAGES:
        raise ConfigError(f"{SABOTAGE_ENV}: expected one of {', '.join(sorted(SABOTAGES))}")
    setup_logging("WARNING", "text")
    folder = Path(tempfile.mkdtemp(prefix="gateway-demo-"))
    click.echo(f"gateway demo: a court, a guardian and the gateway, all on loopback, in {folder}")
    try:
        report = run_demo(folder, click.echo, sabotage=sabotage)
    except DemoFailed:
        click.echo("")
        if not keep:
            click.echo("(rerun with --keep to look at what the demo left)")
        raise
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)
    click.echo("\nevery step held.")
    if keep:
        _explore(report)
    else:
        click.echo("(the folder is removed; `gateway demo --keep` keeps it to explore)")


def _explore(report: DemoReport) -> None:
    from gateway.demo.parties import PDF_NAME

    gateway = f"gateway --config {report.config}"
    receipt = report.guardian_dir / "accuse-de-reception.eml"
    lines = [
        f"kept {report.folder}. Explore it with the CLI:",
        f"  {gateway} outbox list",
        f"  {gateway} outbox show {report.outbox_ids.get('receipt', 2)}   # the receipt as mailed",
        f"  {gateway} requests list",
        f"  {gateway} submissions list",
        f"  {gateway} submissions export {report.request} --out {report.folder}/export-2 "
        f"--gnupghome {report.greffe_home}",
        f"  {gateway} receipts verify {receipt} --document {report.guardian_dir / PDF_NAME}",
        f"  {gateway} audit verify",
        f"  {gateway} check",
        f"  {gateway} serve      # the same gateway, on ports the system picks",
        f"and remove the folder: rm -r {report.folder}",
    ]
    click.echo("\n".join(lines))


def register(cli: click.Group) -> None:
    cli.add_command(demo)
