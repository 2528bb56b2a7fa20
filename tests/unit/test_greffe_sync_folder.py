"""The folder `greffe sync` writes: atomic request folders, a killed run's leftovers, the lock."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from gateway.errors import InputError
from gateway.greffe.syncfolder import STATE_FILE, SyncFolder, SyncFolderBusy

REF = "TJ-LYON-2026-000001"


def manifest(submissions: int) -> bytes:
    return json.dumps({"reference": REF, "submissions": [{}] * submissions}).encode()


def names(root: Path) -> list[str]:
    return sorted(entry.name for entry in root.iterdir() if entry.name != ".sync.lock")


def test_request_folder_appears_whole_or_not_at_all(tmp_path: Path) -> None:
    folder = SyncFolder(tmp_path / "out")
    with pytest.raises(RuntimeError), folder.building(REF) as partial:
        partial.write("1/message.eml", b"x")
        assert names(folder.root)[0].startswith(f".{REF}.partial-")
        raise RuntimeError("a check failed half-way")
    assert names(folder.root) == []
    with folder.building(REF) as partial:
        partial.write("1/documents/01-a.pdf", b"%PDF")
        partial.write("manifest.json", manifest(1))
    assert names(folder.root) == [REF]
    assert folder.synced_count(REF) == 1
    assert (folder.root / REF / "1" / "documents" / "01-a.pdf").read_bytes() == b"%PDF"


def test_rewritten_request_replaces_the_old_folder_in_one_rename(tmp_path: Path) -> None:
    folder = SyncFolder(tmp_path)
    for count in (1, 2):
        with folder.building(REF) as partial:
            partial.write("manifest.json", manifest(count))
    assert folder.synced_count(REF) == 2 and names(tmp_path) == [REF]


def test_settle_deletes_partials_and_restores_an_old_folder_whose_new_one_never_came(
    tmp_path: Path,
) -> None:
    folder = SyncFolder(tmp_path)
    (tmp_path / f".{REF}.partial-abc123").mkdir()
    (tmp_path / f".{REF}.partial-abc123" / "message.eml").write_bytes(b"half")
    orphan = tmp_path / ".TJ-LYON-2026-000002.old-x1y2"  # killed between the two renames
    orphan.mkdir()
    (orphan / "manifest.json").write_bytes(manifest(1))
    (tmp_path / REF).mkdir()  # swapped in, the old one not yet deleted
    (tmp_path / f".{REF}.old-zz9").mkdir()
    (tmp_path / f".{STATE_FILE}.tmp1").write_text("{")
    (tmp_path / ".unrelated").mkdir()
    settled = folder.settle()
    assert len(settled) == 3
    assert names(tmp_path) == [".unrelated", REF, "TJ-LYON-2026-000002"]
    assert folder.synced_count("TJ-LYON-2026-000002") == 1


@pytest.mark.parametrize(
    "relative", ["../x", "1/../../x", "/etc/passwd", "1//x", "1/./x", "a\\..\\b", "x\0y"]
)
def test_partial_refuses_a_name_leaving_its_folder(tmp_path: Path, relative: str) -> None:
    folder = SyncFolder(tmp_path)
    with pytest.raises(InputError), folder.building(REF) as partial:
        partial.write(relative, b"x")
    assert names(tmp_path) == []


def test_partial_refuses_two_files_under_one_name(tmp_path: Path) -> None:
    folder = SyncFolder(tmp_path)
    with pytest.raises(FileExistsError), folder.building(REF) as partial:
        partial.write("1/documents/01-a.pdf", b"a")
        partial.write("1/documents/01-a.pdf", b"b")
    assert names(tmp_path) == []


@pytest.mark.parametrize("reference", ["../etc", ".hidden", "a/b", "TJ LYON", "x" * 80, ""])
def test_reference_from_the_wire_must_look_like_one(tmp_path: Path, reference: str) -> None:
    with pytest.raises(InputError):
        SyncFolder(tmp_path).building(reference).__enter__()


def test_second_run_on_the_same_folder_is_refused(tmp_path: Path) -> None:
    first, second = SyncFolder(tmp_path), SyncFolder(tmp_path)
    with first.locked(), pytest.raises(SyncFolderBusy), second.locked():
        pass
    with second.locked():
        pass


def test_state_round_trips_and_a_broken_one_is_named(tmp_path: Path) -> None:
    folder = SyncFolder(tmp_path)
    assert folder.load_state() == {"version": 1, "since": {}}
    folder.save_state({"version": 1, "since": {"*": "2026-01-01T00:00:00+00:00"}})
    assert folder.load_state()["since"] == {"*": "2026-01-01T00:00:00+00:00"}
    assert [n for n in os.listdir(tmp_path) if n.startswith("..")] == []
    (tmp_path / STATE_FILE).write_text("{not json")
    with pytest.raises(InputError, match="unreadable"):
        folder.load_state()


def test_synced_count_of_a_folder_without_manifest_is_none(tmp_path: Path) -> None:
    folder = SyncFolder(tmp_path)
    (tmp_path / REF).mkdir()
    assert folder.synced_count(REF) is None
    (tmp_path / REF / "manifest.json").write_text("[]")
    assert folder.synced_count(REF) is None
