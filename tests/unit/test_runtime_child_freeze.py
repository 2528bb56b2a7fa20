"""A spawned `serve` child freezes what it imported, as `gateway.cli.run` does for the parent."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import gateway.runtime

EXAMPLE = Path(gateway.runtime.__file__).parent / "resources" / "gateway.example.toml"


def _frozen_after_start(config: str) -> int:
    import gc

    import gateway.runtime as runtime

    before = gc.get_freeze_count()
    runtime._settings_for_child(config)
    return gc.get_freeze_count() - before


def test_a_spawned_child_freezes_the_modules_it_imported() -> None:
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        frozen = pool.apply(_frozen_after_start, (str(EXAMPLE),))
    # gateway.runtime imports gateway.app and what it needs: tens of thousands of objects.
    assert frozen > 20_000, frozen
