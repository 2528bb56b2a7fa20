"""PDF inspection with qpdf (pikepdf): the document must parse, and its active content is named.

A PDF is opened from the bytes in memory (never from a path), every object
in its cross-reference table is walked once, and what a viewer could run or
unpack on the clerk's desktop is reported as short machine words. Nothing is
executed, decoded or rendered: only dictionary keys are read.

Memory, without the interpreter: given a Python stream, qpdf reads it through
the stream's methods, taking the interpreter lock back for each of its small
reads, seeks and tells (about 220 for a 4 KB document); under load every one
of them waits for the lock behind the other threads, which doubled the time a
document took to check. A document up to
``MAPPED_MAX_BYTES`` is therefore copied into an anonymous, sealed memory file
(``memfd_create``: no path, no disk) that qpdf maps and parses in C++ alone.
A larger one, where that copy would count against the memory budget of large
messages, and any system without memory files, goes through a ``BytesIO``.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import threading
from collections.abc import Iterable, Iterator
from typing import BinaryIO, TypeGuard

import pikepdf
from pikepdf import Object, ObjectType

from gateway.errors import DocumentRefused

# The words of a document's `warnings` (manifest and database): what a viewer could run
# or unpack. Machine words, never text from the document.
JAVASCRIPT = "javascript"
LAUNCH_ACTION = "launch-action"
EMBEDDED_FILE = "embedded-file"
OPEN_ACTION = "open-action"
XFA = "xfa"
WARNINGS = (JAVASCRIPT, LAUNCH_ACTION, EMBEDDED_FILE, OPEN_ACTION, XFA)

DEFAULT_MAX_OBJECTS = 100_000
# Direct (inline) dictionaries and arrays nested in the objects are walked too; a
# document needing more than this many steps per object allowed is refused, not half-read.
_NODES_PER_OBJECT = 8

# qpdf's limits are process-wide (see pikepdf.settings): set once, before the first
# document is opened, under a lock so that no worker thread opens one before.
# An object stream is inflated whole: cap what one Flate stream may grow to (qpdf
# writes at most 100 objects to one; real ones are a few hundred KB).
FLATE_MAX_MEMORY = 16 << 20
# A badly damaged file makes qpdf warn without end while it recovers.
_MAX_WARNINGS = 1_000
# Items in one array or dictionary (the page tree of a 100,000-page file fits).
_MAX_CONTAINER_SIZE = 500_000
_limits_lock = threading.Lock()
_limits_set = False
# Documents up to this size are parsed from a sealed memory file (see the module's text).
MAPPED_MAX_BYTES = 4 << 20

_DICTIONARY, _STREAM, _ARRAY = ObjectType.dictionary, ObjectType.stream, ObjectType.array
_CONTAINERS = (_DICTIONARY, _STREAM, _ARRAY)
_NAME_JAVASCRIPT = pikepdf.Name("/JavaScript")
_NAME_LAUNCH = pikepdf.Name("/Launch")
_NAME_EMBEDDED_FILE = pikepdf.Name("/EmbeddedFile")
_NAME_GOTO = pikepdf.Name("/GoTo")
_COMPRESSED = 2  # XrefEntry.type of an object stored in an object stream


class _TooComplex(Exception):
    """More objects than the walk is allowed to visit."""


class _Unreadable(Exception):
    """qpdf opened the file but could not read one of its objects."""


def limit_parser() -> None:
    """Apply the gateway's qpdf limits to this process (once; later calls do nothing)."""
    global _limits_set
    with _limits_lock:
        if not _limits_set:
            pikepdf.settings.set_qpdf_limits(
                flate_max_memory=FLATE_MAX_MEMORY,
                doc_max_warnings=_MAX_WARNINGS,
                parser_max_container_size=_MAX_CONTAINER_SIZE,
            )
            _limits_set = True


def inspect_pdf(data: bytes, *, max_objects: int = DEFAULT_MAX_OBJECTS) -> tuple[str, ...]:
    """Parse ``data`` with qpdf and return its warnings (sorted words from ``WARNINGS``).

    Raises DocumentRefused, with a reason fit for an SMTP reply (no parser
    text), when qpdf cannot read it, it needs a password, or it holds more
    than ``max_objects`` objects.
    """
    limit_parser()
    try:
        with (
            _readable(data) as (stream, mode),
            pikepdf.open(
                stream, conversion_mode="explicit", suppress_warnings=True, access_mode=mode
            ) as pdf,
        ):
            return _warnings(pdf, max_objects)
    except _TooComplex:
        raise DocumentRefused(f"the PDF has more than {max_objects} objects") from None
    except pikepdf.PasswordError:
        raise DocumentRefused("the PDF is protected by a password") from None
    except Exception:  # qpdf's errors name offsets and objects of the sender's file: not echoed
        raise DocumentRefused("not a readable PDF") from None


@contextlib.contextmanager
def _readable(data: bytes) -> Iterator[tuple[BinaryIO, pikepdf.AccessMode]]:
    """``data`` as qpdf should read it: a mapped memory file when small enough, else a stream."""
    memory = _memory_file(data) if len(data) <= MAPPED_MAX_BYTES else None
    if memory is None:
        with io.BytesIO(data) as stream:
            yield stream, pikepdf.AccessMode.stream
        return
    with memory:
        # `mmap` falls back to reading the file through its methods if it cannot be mapped.
        yield memory, pikepdf.AccessMode.mmap


def _memory_file(data: bytes) -> BinaryIO | None:
    """A sealed anonymous memory file holding ``data``, or None where there is none to make."""
    try:
        # Nothing may change under qpdf's mapping (shrinking it would raise SIGBUS).
        seals = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL
        fd = os.memfd_create("gateway-pdf", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    except (AttributeError, OSError):  # not Linux, or memory files refused
        return None
    memory = open(fd, "rb", buffering=0)  # noqa: SIM115  # owns fd; the caller closes it
    try:
        view = memoryview(data)
        written = 0
        while written < len(view):
            written += os.write(fd, view[written:])
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
        os.lseek(fd, 0, os.SEEK_SET)  # read from the start should qpdf fall back to reading
    except OSError:
        memory.close()
        return None
    return memory


def _warnings(pdf: pikepdf.Pdf, max_objects: int) -> tuple[str, ...]:
    # Reading the page tree proves the document has a catalog a viewer can follow.
    len(pdf.pages)
    found = _walk(_objects(pdf, max_objects), max_objects * _NODES_PER_OBJECT)
    found |= _catalog_warnings(pdf.Root)
    return tuple(sorted(found))


def _objects(pdf: pikepdf.Pdf, max_objects: int) -> list[Object]:
    """Every object of the cross-reference table, or _Unreadable if one cannot be read.

    qpdf turns an object it cannot read into null and carries on; one from a
    compressed object stream that failed to inflate (over ``flate_max_memory``,
    say) would then hide its content from the walk, not from a viewer.
    """
    table = pdf.get_xref_table()
    if len(table) > max_objects:
        raise _TooComplex
    objects = []
    for (number, generation), entry in table.items():
        found = pdf.get_object(number, generation)
        if isinstance(found, Object):
            objects.append(found)
        elif entry.type == _COMPRESSED:
            raise _Unreadable
    return objects


def _walk(objects: Iterable[Object], max_nodes: int) -> set[str]:
    """Look at every object and at the direct containers nested in it, each once."""
    found: set[str] = set()
    pending: list[Object] = list(objects)
    visited = 0
    while pending:
        node = pending.pop()
        visited += 1
        if visited > max_nodes:
            raise _TooComplex
        kind = node._type_code
        if kind in (_DICTIONARY, _STREAM):
            keys = node.keys()
            found |= _dictionary_warnings(node, keys)
            if _holds_dictionary(node, kind):
                children = (node.get(key) for key in keys)
                pending.extend(value for value in children if _is_direct_container(value))
        elif kind == _ARRAY and _holds_dictionary(node, kind):
            pending.extend(item for item in node if _is_direct_container(item))
    return found


def _holds_dictionary(node: Object, kind: ObjectType) -> bool:
    """Whether a dictionary could be nested (directly) in ``node``: else no need to look.

    Most containers hold numbers, names and references only (widths, boxes,
    page lists, fonts); qpdf's own rendering of the node tells so at C++
    speed. A string that contains "<<" only costs a needless look.
    """
    if kind == _STREAM:
        rendered, own = node.stream_dict.unparse(), 1
    else:
        rendered, own = node.unparse(resolved=True), 1 if kind == _DICTIONARY else 0
    return rendered.count(b"<<") > own


def _is_direct_container(value: object) -> TypeGuard[Object]:
    # Indirect objects are in the object list already; numbers and null come back as
    # Python values even in explicit mode, and have nothing inside.
    return isinstance(value, Object) and not value.is_indirect and value._type_code in _CONTAINERS


def _dictionary_warnings(node: Object, keys: set[str]) -> set[str]:
    """Actions and embedded files, recognised by their keys (qpdf has decoded #xx names)."""
    found: set[str] = set()
    if "/JS" in keys:
        found.add(JAVASCRIPT)
    if "/EF" in keys:  # a file specification carrying the file itself
        found.add(EMBEDDED_FILE)
    if "/S" in keys:
        action = node.get("/S")
        if action == _NAME_JAVASCRIPT:
            found.add(JAVASCRIPT)
        elif action == _NAME_LAUNCH:
            found.add(LAUNCH_ACTION)
    if "/Type" in keys and node.get("/Type") == _NAME_EMBEDDED_FILE:
        found.add(EMBEDDED_FILE)
    return found


def _catalog_warnings(root: Object) -> set[str]:
    """What the catalog runs on opening, and XFA forms (whose scripts live in XML)."""
    found: set[str] = set()
    keys = root.keys()
    # An array is a destination (open at a page); a GoTo action is the same thing.
    action = root.get("/OpenAction") if "/OpenAction" in keys else None
    if _is_dictionary(action) and action.get("/S") != _NAME_GOTO:
        found.add(OPEN_ACTION)
    form = root.get("/AcroForm") if "/AcroForm" in keys else None
    if _is_dictionary(form) and "/XFA" in form:
        found.add(XFA)
    return found


def _is_dictionary(value: object) -> TypeGuard[Object]:
    return isinstance(value, Object) and value._type_code == _DICTIONARY
