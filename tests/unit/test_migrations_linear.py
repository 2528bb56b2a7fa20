"""The Alembic revisions form one line: one head, each revision's parent exists."""

from __future__ import annotations

from alembic.script import ScriptDirectory

import gateway.storage.migrate as migrate_module


def test_migrations_have_a_single_head() -> None:
    script = ScriptDirectory.from_config(migrate_module._config())

    heads = script.get_heads()

    assert len(heads) == 1, f"several migration heads, chain them: {heads}"
    revisions = list(script.walk_revisions())
    assert revisions[-1].down_revision is None  # the walk reaches the first revision


def test_head_constant_is_the_newest_revision() -> None:
    head = ScriptDirectory.from_config(migrate_module._config()).get_current_head()

    assert head == migrate_module.HEAD, f"set gateway.storage.migrate.HEAD to {head!r}"
