"""What every command shares: the config path, lazily loaded settings and services."""

from __future__ import annotations

import getpass
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from gateway.app import Services
from gateway.escaping import printable
from gateway.settings import Settings, load_settings, resolve_config_path


class CliContext:
    def __init__(self, config_path: Path | None) -> None:
        self._config_arg = config_path
        self._settings: Settings | None = None
        self._services: Services | None = None

    @property
    def config_path(self) -> Path:
        return resolve_config_path(self._config_arg, dict(os.environ))

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self._config_arg)
        return self._settings

    @property
    def services(self) -> Services:
        """The services of a command that uses the database `gateway init` made.

        A database without the schema is refused ("database not initialised")
        before anything is opened, so the command creates nothing.
        """
        if self._services is None:
            services = Services(self.settings)
            services.require_schema()
            self._services = services
        return self._services

    @property
    def migrating_services(self) -> Services:
        """The services of a command that makes or upgrades the schema (serve, db upgrade)."""
        if self._services is None:
            self._services = Services(self.settings)
        return self._services

    @property
    def actor(self) -> str:
        try:
            return f"cli:{getpass.getuser()}"
        except (KeyError, OSError):
            return "cli:unknown"

    def close(self) -> None:
        if self._services is not None:
            self._services.close()


pass_cli = click.make_pass_decorator(CliContext)


def print_rows(rows: Sequence[dict[str, Any]], columns: Sequence[str], as_json: bool) -> None:
    """A list command's output: a JSON array, or an aligned table."""
    if as_json:
        json.dump(list(rows), sys.stdout, ensure_ascii=False, indent=1)
        sys.stdout.write("\n")
        return
    # A cell may hold what a user typed (a reason, a name): one safe line each.
    cells = [
        ["" if row.get(col) is None else printable(str(row[col]), None) for col in columns]
        for row in rows
    ]
    widths = [max([len(col)] + [len(r[i]) for r in cells]) for i, col in enumerate(columns)]
    click.echo(
        "  ".join(col.upper().ljust(w) for col, w in zip(columns, widths, strict=True)).rstrip()
    )
    for row in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
