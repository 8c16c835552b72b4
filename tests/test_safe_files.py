"""Atomic writes, batches of them, stale temporaries and bounded reads (app/core/safe_files.py)."""
import os
import subprocess
import sys
import time

import pytest

from app.core.safe_files import (TEMP_TAG, AtomicBatch, FileTooLarge, is_temporary, read_bounded,
                                 remove_stale_temporaries, temporary_for, write_atomically,
                                 write_text_atomically)


def test_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "a.json"
    target.write_text("old")
    os.chmod(target, 0o640)
    write_text_atomically(target, "new")
    assert target.read_text() == "new"
    assert os.stat(target).st_mode & 0o777 == 0o640          # the old file's permissions are kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_a_failing_writer_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "a.json"
    target.write_text("old")

    def fail(handle):
        handle.write(b"half")
        raise OSError(28, "No space left on device")
    with pytest.raises(OSError):
        write_atomically(target, fail)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_writing_through_a_symlink_replaces_the_file_it_points_at(tmp_path):
    real = tmp_path / "real.txt"
    real.write_text("old")
    link = tmp_path / "link.txt"
    link.symlink_to(real)
    write_text_atomically(link, "new")
    assert link.is_symlink() and real.read_text() == "new"


def test_temporaries_are_named_so_a_user_can_tell_what_they_are(tmp_path):
    temp = temporary_for(tmp_path / "photo.png")
    assert temp.name.startswith(".photo.png.") and TEMP_TAG in temp.name and temp.name.endswith(".tmp")
    assert is_temporary(temp) and not is_temporary(tmp_path / "photo.png")


def test_a_killed_writers_temporary_is_removed_by_the_next_write(tmp_path):
    # A process writes half a temporary and is killed: its pid is gone, so the next write cleans up.
    script = (f"import os, sys; sys.path.insert(0, {str(os.getcwd())!r});"
              "from pathlib import Path; from app.core.safe_files import temporary_for;"
              f"t = temporary_for(Path({str(tmp_path / 'photo.png')!r})); t.write_bytes(b'x' * 1000);"
              "print(t.name)")
    name = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.strip()
    assert (tmp_path / name).exists()
    (tmp_path / "other.txt").write_text("keep")
    write_text_atomically(tmp_path / "photo.png", "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.txt", "photo.png"]


def test_a_running_writers_temporary_is_kept_unless_it_is_old(tmp_path):
    mine = temporary_for(tmp_path / "a.png")          # this process: a write in progress
    mine.write_bytes(b"x")
    assert remove_stale_temporaries(tmp_path) == []
    old = time.time() - 2 * 3600
    os.utime(mine, (old, old))
    assert remove_stale_temporaries(tmp_path) == [mine]


def test_a_batch_writes_all_or_nothing(tmp_path):
    first, second = tmp_path / "a.png", tmp_path / "b.png"
    batch = AtomicBatch()
    batch.add(first, lambda h: h.write(b"1"))
    with pytest.raises(ValueError):
        batch.add(second, lambda h: (_ for _ in ()).throw(ValueError("cannot encode")))
    batch.commit()                                   # nothing left to commit after a failure
    assert list(tmp_path.iterdir()) == []

    batch = AtomicBatch()
    batch.add(first, lambda h: h.write(b"1"))
    batch.add(second, lambda h: h.write(b"2"))
    assert not first.exists() and not second.exists()     # nothing is in place until commit
    batch.commit()
    assert first.read_bytes() == b"1" and second.read_bytes() == b"2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png"]


def test_a_batch_whose_rename_fails_puts_back_the_files_it_had_replaced(tmp_path):
    first = tmp_path / "a.png"
    first.write_bytes(b"the user's old a.png")
    blocked = tmp_path / "b.png"
    blocked.mkdir()
    batch = AtomicBatch()
    batch.add(first, lambda h: h.write(b"new"))
    batch.add(blocked, lambda h: h.write(b"2"))
    with pytest.raises(OSError):
        batch.commit()
    assert first.read_bytes() == b"the user's old a.png"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png"]


def test_a_committed_batch_replaces_old_files_and_leaves_no_copy(tmp_path):
    first = tmp_path / "a.png"
    first.write_bytes(b"old")
    batch = AtomicBatch()
    batch.add(first, lambda h: h.write(b"new"))
    batch.commit()
    assert first.read_bytes() == b"new" and sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


def test_a_batch_whose_rename_fails_leaves_no_new_file(tmp_path):
    first = tmp_path / "a.png"
    blocked = tmp_path / "b.png"
    blocked.mkdir()                                   # os.replace of a file onto a folder fails
    (blocked / "inside").write_text("x")
    batch = AtomicBatch()
    batch.add(first, lambda h: h.write(b"1"))
    batch.add(blocked, lambda h: h.write(b"2"))
    with pytest.raises(OSError):
        batch.commit()
    assert not first.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.png"]


def test_read_bounded_refuses_before_reading(tmp_path):
    path = tmp_path / "big.json"
    path.write_bytes(b"x" * 1001)
    with pytest.raises(FileTooLarge):
        read_bounded(path, 1000)
    assert read_bounded(path, 1001) == b"x" * 1001
