"""Each adapter of a library's internals names the version it was written against: it must match.

A mismatch means the library was upgraded under an adapter that relies on
its private names: re-read the adapter (its docstring says what to compare)
before changing WRITTEN_AGAINST.
"""

from __future__ import annotations

import importlib
import pkgutil
from importlib import metadata

import pytest

import gateway.adapters
from gateway.adapters import asyncio_streams

ADAPTERS = sorted(
    info.name for info in pkgutil.iter_modules(gateway.adapters.__path__) if not info.ispkg
)


def test_adapters_pinned_every_library_adapter_is_checked() -> None:
    assert set(ADAPTERS) == {"aioimaplib", "aiosmtpd", "asyncio_streams", "dkimpy"}


@pytest.mark.parametrize("name", [n for n in ADAPTERS if n != "asyncio_streams"])
def test_adapters_pinned_installed_version_is_the_one_written_against(name: str) -> None:
    adapter = importlib.import_module(f"gateway.adapters.{name}")
    installed = metadata.version(adapter.LIBRARY)

    assert installed == adapter.WRITTEN_AGAINST, (
        f"gateway/adapters/{name}.py was written against {adapter.LIBRARY} "
        f"{adapter.WRITTEN_AGAINST} but {installed} is installed: re-read the adapter "
        "against the new release, then update WRITTEN_AGAINST and the pin in pyproject.toml"
    )


def test_adapters_pinned_python_streams_adapter_knows_this_python() -> None:
    installed = asyncio_streams.installed_version()

    assert installed in asyncio_streams.KNOWN_VERSIONS, (
        f"gateway/adapters/asyncio_streams.py relies on StreamReader._limit and was checked "
        f"on Python {sorted(asyncio_streams.KNOWN_VERSIONS)}, not {installed}: re-read it"
    )


@pytest.mark.parametrize("name", [n for n in ADAPTERS if n != "asyncio_streams"])
def test_adapters_pinned_pyproject_bounds_the_library(name: str) -> None:
    adapter = importlib.import_module(f"gateway.adapters.{name}")
    requirements = metadata.requires("greffe-gateway") or []
    pins = [r for r in requirements if r.lower().startswith(adapter.LIBRARY.lower())]

    assert pins and all("<" in pin for pin in pins), (
        f"{adapter.LIBRARY} must be pinned below its next release in pyproject.toml "
        f"(gateway/adapters/{name}.py relies on its internals): {pins}"
    )
