"""Mail texts: `<name>.txt` templates, operator overrides first, packaged French defaults second."""

from __future__ import annotations

import os
import re
import stat
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from gateway.errors import ConfigError

_NAME_RE = re.compile(r"[a-z][a-z0-9_-]{0,63}")
_SUBJECT_PREFIX = "Subject:"


def _defaults() -> Traversable:
    return resources.files("gateway").joinpath("resources", "templates")


class Templates:
    """Renders `<name>.txt`: a first line `Subject: ...`, a blank line, then the body.

    Placeholders are `string.Template` ones (`$name`, `${name}`); every
    placeholder must be given a value: a missing one is a bug and raises
    KeyError rather than mailing a half-filled text to a guardian.
    """

    def __init__(self, override_dir: Path) -> None:
        self._override_dir = override_dir
        self._parsed: dict[str, tuple[tuple[int, ...], string.Template, string.Template]] = {}
        """Each template as last read, under the state of its override file then."""

    def source(self, name: str) -> str:
        """The text of template `name`: the operator's file if there is one, else the default."""
        if not _NAME_RE.fullmatch(name):
            # The name becomes a file name: never let it carry a path.
            raise KeyError(f"invalid template name {name!r}")
        file_name = f"{name}.txt"
        override = self._override_dir / file_name
        if override.is_file():
            try:
                return override.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                raise ConfigError(f"template {override} is unreadable (UTF-8 expected)") from None
        default = _defaults().joinpath(file_name)
        if not default.is_file():
            raise KeyError(f"no template named {name!r}")
        return default.read_text(encoding="utf-8")

    def render(self, name: str, /, **values: str) -> tuple[str, str]:
        """Return (subject, body) of template `name` filled with `values`."""
        subject_template, body_template = self._parse(name)
        return subject_template.substitute(values), body_template.substitute(values)

    def _parse(self, name: str) -> tuple[string.Template, string.Template]:
        """The template split and parsed, read again only when its override file changed.

        An edit takes effect at the next message without a restart, as when the
        file was read for every message; reading it costs more than composing.
        """
        if not _NAME_RE.fullmatch(name):
            raise KeyError(f"invalid template name {name!r}")
        state = self._override_state(name)
        found = self._parsed.get(name)
        if found is not None and found[0] == state:
            return found[1], found[2]
        subject, body = _split(name, self.source(name))
        parsed = (state, string.Template(subject), string.Template(body))
        self._parsed[name] = parsed  # two threads may both read it: either copy is right
        return parsed[1], parsed[2]

    def _override_state(self, name: str) -> tuple[int, ...]:
        """What tells an edited (added, removed, replaced) override file apart; () for none.

        Two writes of the same size within one tick of the file system's clock
        (milliseconds) would look alike: no one edits a template that fast.
        """
        try:
            info = os.stat(os.path.join(self._override_dir, f"{name}.txt"))
        except (OSError, ValueError):
            return ()
        if not stat.S_ISREG(info.st_mode):
            return ()
        return (info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def _split(name: str, text: str) -> tuple[str, str]:
    """Cut a template into its subject line and its body; refuse any other shape."""
    lines = text.replace("\r\n", "\n").split("\n")
    if len(lines) < 3 or not lines[0].startswith(_SUBJECT_PREFIX) or lines[1].strip():
        raise ConfigError(
            f"template {name}.txt: expected 'Subject: ...', a blank line, then the body"
        )
    subject = lines[0][len(_SUBJECT_PREFIX) :].strip()
    body = "\n".join(lines[2:]).rstrip("\n") + "\n"
    return subject, body


# Helpers that pre-render the values callers pass in, so every text shows
# times, sizes and lists the same way.

KIND_LABELS = {"requete": "requête", "compte": "compte de gestion", "inventaire": "inventaire"}
STATUS_LABELS = {
    "open": "ouverte (le numéro de saisie est valable)",
    "sealed": "close (en attente de prise en charge par le greffe)",
    "received": "prise en charge par le greffe",
    "accepted": "acceptée",
    "rejected": "rejetée",
}


@dataclass(frozen=True, slots=True)
class DocumentLine:
    """One document as a receipt or a state reply lists it."""

    name: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class SubmissionLine:
    """One submission of a request, for the state reply."""

    reference: str
    received_at: datetime
    documents: Sequence[DocumentLine]


def format_utc(moment: datetime) -> str:
    """`27/11/2026 à 14:05:09 UTC`: an unambiguous time for a French reader."""
    return moment.astimezone(UTC).strftime("%d/%m/%Y à %H:%M:%S UTC")


def format_size(size: int) -> str:
    """`1 234 567 octets` (thin groups, as French writes numbers)."""
    return f"{size:,} octet{'s' if size > 1 else ''}".replace(",", "\u00a0")


def format_documents(documents: Iterable[DocumentLine], indent: str = "    ") -> str:
    """The `$documents` block: a numbered entry per document with its size and SHA-256."""
    lines: list[str] = []
    for index, document in enumerate(documents, start=1):
        lines.append(f"{indent}{index}. {_one_line(document.name)}")
        lines.append(f"{indent}   taille  : {format_size(document.size)}")
        lines.append(f"{indent}   SHA-256 : {document.sha256}")
    return "\n".join(lines) if lines else f"{indent}(aucun document joint)"


def format_submissions(submissions: Iterable[SubmissionLine]) -> str:
    """The `$submissions` block of the state reply."""
    blocks = [
        f"    {item.reference}, reçu le {format_utc(item.received_at)}\n"
        + format_documents(item.documents, indent="      ")
        for item in submissions
    ]
    return "\n\n".join(blocks) if blocks else "    (aucun envoi reçu pour le moment)"


def _one_line(text: str) -> str:
    # A filename chosen by a sender must not forge extra lines in our text.
    return " ".join(text.split())
