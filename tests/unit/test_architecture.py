"""The shape the code keeps: SQL only in storage/, running parts built only by the composition root.

These read the package's source, so a change that breaks the shape fails
here with the file and line to look at.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import gateway

PACKAGE = Path(gateway.__file__).parent
# A call of select( / insert( / update( / delete( that is not a method call (`x.update(`):
# SQLAlchemy's statement builders are imported and called as plain functions.
SQL_BUILDER = re.compile(r"(?<![.\w])(select|insert|update|delete)\(")
RUNNING_PARTS = ("SmtpListener", "LoopingPart", "MetricsServer", "Supervisor", "ApiServer")


def _modules(outside: str | None = None) -> list[Path]:
    paths = sorted(PACKAGE.rglob("*.py"))
    if outside is None:
        return paths
    return [p for p in paths if not p.is_relative_to(PACKAGE / outside)]


def _code_lines(path: Path) -> list[tuple[int, str]]:
    """Source lines without comments, docstrings or `def` lines."""
    tree = ast.parse(path.read_text("utf-8"))
    docstrings = {
        node.body[0].lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
        and isinstance(node.body[0].value.value, str)
    }
    lines = []
    for number, line in enumerate(path.read_text("utf-8").splitlines(), start=1):
        text = line.split("#", 1)[0]
        if number in docstrings or text.lstrip().startswith(("def ", "async def ")):
            continue
        lines.append((number, text))
    return lines


def test_architecture_no_sqlalchemy_outside_storage() -> None:
    offenders = []
    for path in _modules(outside="storage"):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(name.split(".")[0] == "sqlalchemy" for name in names):
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert offenders == [], f"sqlalchemy imported outside gateway/storage/: {offenders}"


def test_architecture_no_sql_statement_built_outside_storage() -> None:
    offenders = [
        f"{path.relative_to(PACKAGE)}:{number}: {text.strip()}"
        for path in _modules(outside="storage")
        for number, text in _code_lines(path)
        if SQL_BUILDER.search(text)
    ]
    assert offenders == [], f"SQL statements built outside gateway/storage/: {offenders}"


def test_architecture_only_the_composition_root_builds_running_parts() -> None:
    pattern = re.compile(rf"(?<![\w.])({'|'.join(RUNNING_PARTS)})\(")
    offenders = [
        f"{path.relative_to(PACKAGE)}:{number}: {text.strip()}"
        for path in _modules()
        if path != PACKAGE / "app.py"
        for number, text in _code_lines(path)
        if pattern.search(text) and not text.lstrip().startswith("class ")
    ]
    assert offenders == [], f"running parts built outside gateway/app.py: {offenders}"
