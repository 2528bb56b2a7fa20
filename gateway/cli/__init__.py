"""The `gateway` command line: `gateway.cli.main` holds it, `run` here starts the program."""

from __future__ import annotations

import gc


def run(argv: list[str] | None = None) -> None:
    """Run the `gateway` program (the console script and `python -m gateway`).

    Its modules are imported with the cyclic garbage collector paused (the
    import builds some 110,000 objects that live as long as the process:
    collecting while they are built cost 15 % of the start, in vain), then
    frozen, so that no later collection scans them again.
    """
    gc.disable()
    try:
        from gateway.cli.main import main
    finally:
        gc.freeze()
        gc.enable()
    main(argv)
