"""Entry point of the `gateway` program: global options, error reporting, command groups."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from gateway.cli import (
    admin_cmds,
    apikeys_cmds,
    codes_cmds,
    credentials_cmds,
    demo_cmds,
    doctor_cmds,
    greffe_cmds,
    imap_cmds,
    keys_cmds,
    ops_cmds,
    outbox_cmds,
    receipts_cmds,
    setup_cmds,
    users_cmds,
)
from gateway.cli.context import CliContext
from gateway.errors import GatewayError, ImportRefused

log = logging.getLogger("gateway.cli")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Configuration file (default: $GATEWAY_CONFIG, else config/gateway.toml).",
)
@click.version_option(package_name="greffe-gateway")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None) -> None:
    """Greffe mail gateway: authenticated, encrypted email intake for court clerks."""
    ctx.obj = CliContext(config_path)
    ctx.call_on_close(ctx.obj.close)


for group in (
    setup_cmds,
    admin_cmds,
    codes_cmds,
    greffe_cmds,
    imap_cmds,
    doctor_cmds,
    keys_cmds,
    receipts_cmds,
    ops_cmds,
    outbox_cmds,
    demo_cmds,
    credentials_cmds,
    apikeys_cmds,
    users_cmds,
):
    group.register(cli)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; every failure is one line on stderr and a non-zero exit."""
    try:
        cli.main(args=argv, standalone_mode=False, prog_name="gateway")
        sys.exit(0)
    except SystemExit:
        raise
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("gateway: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        click.echo(f"gateway: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except ImportRefused as exc:
        for line, problem in exc.problems:
            click.echo(f"line {line}: {problem}", err=True)
        click.echo(f"gateway: {exc.message}", err=True)
        sys.exit(1)
    except GatewayError as exc:
        click.echo(f"gateway: {exc.message}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # the last line of defence: no traceback for users
        if os.environ.get("GATEWAY_DEBUG"):
            raise
        log.debug("internal error", exc_info=True)
        click.echo(
            f"gateway: internal error ({type(exc).__name__}); "
            "rerun with GATEWAY_DEBUG=1 for details",
            err=True,
        )
        sys.exit(70)
