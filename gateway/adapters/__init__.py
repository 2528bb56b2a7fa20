"""Adapters: every private internal of a library the gateway relies on, one module per library.

Each module names the library (`LIBRARY`) and the version its code was
written against (`WRITTEN_AGAINST`); pyproject.toml pins the library below
its next release, and tests/unit/test_adapters_pinned.py fails, naming the
adapter to re-read, when the installed version differs.  Code elsewhere
never touches a library's private names: it calls these functions.
"""
