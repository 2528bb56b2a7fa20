"""Rendering the console's pages: Jinja2 templates (operator overrides first), always escaped.

Autoescaping is on for every template, so anything that came from a
sender (a DKIM domain, an address) or a clerk is shown as text, never as
HTML.  An operator overrides a page by putting a file of the same name in
`<config folder>/templates/console/`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import ChoiceLoader, Environment, FileSystemLoader, PackageLoader, StrictUndefined

from gateway.console import french
from gateway.console.security import csrf_token, take_flashes
from gateway.users import Account

try:
    PARIS: Any = ZoneInfo("Europe/Paris")
except ZoneInfoNotFoundError:  # a system without tzdata: UTC, said so on the page
    PARIS = UTC


def local_time(moment: datetime | str | None, with_seconds: bool = False) -> str:
    """`02/12/2026 14:05` in Paris time."""
    if moment is None or moment == "":
        return "—"
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment.replace("Z", "+00:00"))
    shown = moment.astimezone(PARIS)
    return shown.strftime("%d/%m/%Y %H:%M:%S" if with_seconds else "%d/%m/%Y %H:%M")


def human_size(size: int) -> str:
    """`12,3 Ko`: sizes as a French reader writes them (1 Ko = 1024 octets)."""
    value = float(size)
    for unit in ("octets", "Ko", "Mo", "Go"):
        if value < 1024 or unit == "Go":
            text = f"{value:.0f}" if unit == "octets" else f"{value:.1f}".replace(".", ",")
            return f"{text} {unit}"
        value /= 1024
    return f"{size} octets"


class Pages:
    def __init__(self, override_dir: Path) -> None:
        self.env = Environment(
            loader=ChoiceLoader(
                [FileSystemLoader(str(override_dir)), PackageLoader("gateway.console", "templates")]
            ),
            autoescape=True,
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters.update(when=local_time, size=human_size)
        self.env.globals.update(
            STATUS=french.STATUS, KIND=french.KIND, CHANNEL=french.CHANNEL,
            OUTBOX_KIND=french.OUTBOX_KIND, OUTBOX_STATUS=french.OUTBOX_STATUS, ROLE=french.ROLE,
            USER_STATE=french.USER_STATE, ACTION=french.ACTION,
            REGISTRATION_STATUS=french.REGISTRATION_STATUS,
            SOFTWARE_STATUS=french.SOFTWARE_STATUS, CREDENTIAL_STATUS=french.CREDENTIAL_STATUS,
        )  # fmt: skip

    def render(
        self,
        request: Request,
        name: str,
        context: dict[str, Any] | None = None,
        *,
        account: Account | None = None,
        status: int = 200,
    ) -> HTMLResponse:
        values = {
            "root": request.scope.get("root_path", ""),
            "account": account,
            "csrf": csrf_token(request),
            "flashes": take_flashes(request),
            "path": request.url.path,
            **(context or {}),
        }
        return HTMLResponse(self.env.get_template(name).render(values), status_code=status)
