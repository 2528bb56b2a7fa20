"""The docs stay true to the code: every SMTP refusal is in the guardians' guide; links resolve."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway import errors
from gateway.smtp import french, replies

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
GUIDE = DOCS / "guardians.md"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
_LINK = re.compile(r"\]\(([^)\s]+)\)")
_CONSTANT_REFUSAL = re.compile(r"([45][0-9]{2}(?: [45]\.[0-9]{1,3}\.[0-9]{1,3})?) ([^(]+) \(")


def _subclasses(root: type[errors.GatewayError]) -> set[type[errors.GatewayError]]:
    found = {root}
    for sub in root.__subclasses__():
        found |= _subclasses(sub)
    return found


def _refusals() -> list[tuple[str, str]]:
    """(code, French words) of every refusal replies.py and french.py can give."""
    pairs = []
    for name in dir(replies):
        if re.fullmatch(r"R[45][0-9]{2}_[A-Z0-9_]+", name):
            found = _CONSTANT_REFUSAL.match(getattr(replies, name))
            assert found, name
            pairs.append((found.group(1), found.group(2)))
    for cls in french.FRENCH:
        pairs.append((replies.code_for(cls()), french.FRENCH[cls]))
    for cls, finer in french._FINER.items():
        pairs.extend((replies.code_for(cls()), words) for _, words in finer)
    document = replies.code_for(errors.DocumentRefused())
    pairs.append((document, "trop de documents"))
    pairs.append((document, "document N refuse"))
    pairs.extend((document, f"document N refuse: {words}") for _, words in french._DOCUMENT_REASONS)
    return sorted(set(pairs))


def test_the_refusal_list_reaches_every_class_and_constant() -> None:
    # The list above must not shrink silently: each class with French words, each constant.
    codes = {code for code, _ in _refusals()}
    assert {"550 5.7.0", "550 5.7.1", "554 5.6.0", "451 4.3.0", "421 4.7.0", "500"} <= codes
    assert len(_refusals()) >= len(french.FRENCH) + 20


@pytest.mark.parametrize(("code", "words"), _refusals(), ids=lambda value: str(value))
def test_every_refusal_is_in_the_guardians_guide_with_its_code(code: str, words: str) -> None:
    rows = [line for line in GUIDE.read_text("utf-8").splitlines() if line.startswith("| `")]
    assert any(f"| `{code}` | `{words}` |" in row for row in rows), (
        f"docs/guardians.md has no row for `{code} {words}`: add it to the refusal table "
        "with what a guardian should do"
    )


def test_no_row_of_the_guide_names_a_refusal_the_gateway_never_gives() -> None:
    known = set(_refusals())
    rows = re.findall(r"^\| `([^`]+)` \| `([^`]+)` \|", GUIDE.read_text("utf-8"), re.MULTILINE)
    assert rows
    assert [row for row in rows if row not in known] == []


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_link_stays_in_the_repository_and_resolves(page: Path) -> None:
    for target in _LINK.findall(page.read_text("utf-8")):
        assert "://" not in target and not target.startswith("mailto:"), (page.name, target)
        path = target.split("#", 1)[0]
        if path:
            resolved = (page.parent / path).resolve()
            assert resolved.is_relative_to(ROOT), (page.name, target)
            assert resolved.exists(), (page.name, target)


def test_readme_links_to_each_doc() -> None:
    readme = (ROOT / "README.md").read_text("utf-8")
    for doc in sorted(DOCS.glob("*.md")):
        assert f"](docs/{doc.name}" in readme, f"README.md does not link to docs/{doc.name}"
