"""Atomic writes, batches of them, stale temporaries and bounded reads (app/core/safe_files.py)."""
import os
import subprocess
import sys
import time
from pathlib import Path

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


def test_a_running_writers_temporary_is_kept_unless_it_is_old(tmp_path, monkeypatch):
    from app.core import safe_files

    mine = temporary_for(tmp_path / "a.png")          # this process: a write in progress
    mine.write_bytes(b"x")
    kept = temporary_for(tmp_path / "b.png", safe_files.KEPT_TAG)
    (tmp_path / "b.png").write_bytes(b"old")
    old = time.time() - 10 * 3600
    os.utime(tmp_path / "b.png", (old, old))
    os.link(tmp_path / "b.png", kept)                 # a batch's second name of a file last changed long ago
    assert remove_stale_temporaries(tmp_path) == []
    later = time.time() + 2 * 3600                     # the pid may have been reused: age decides
    monkeypatch.setattr(safe_files.time, "time", lambda: later)
    assert sorted(remove_stale_temporaries(tmp_path)) == sorted([mine, kept])
    assert (tmp_path / "b.png").read_bytes() == b"old"


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


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_pipe_named_like_a_file_is_refused_without_waiting(tmp_path):
    from app.core.safe_files import NotAFile, open_regular

    os.mkfifo(tmp_path / "settings.json")            # nobody ever writes to it: a plain open() would block
    start = time.perf_counter()
    with pytest.raises(NotAFile) as refused:
        read_bounded(tmp_path / "settings.json", 1000)
    assert refused.value.kind == "special" and time.perf_counter() - start < 1
    with pytest.raises(NotAFile):
        read_bounded(Path("/dev/zero"), 1000)
    (tmp_path / "real").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert open_regular(tmp_path / "link").read() == b"x"
    with pytest.raises(NotAFile) as refused:
        open_regular(tmp_path / "link", follow_links=False)
    assert refused.value.kind == "link"
    with pytest.raises(IsADirectoryError):
        open_regular(tmp_path)


def test_a_write_beside_a_batch_never_removes_the_files_it_keeps(tmp_path, monkeypatch):
    """The batch keeps the files it replaces under a second name that has their old time; another write into
    the folder meanwhile (which cleans up stale temporaries) must leave them, or a failed batch loses them."""
    from app.core import safe_files

    first, second = tmp_path / "out.png", tmp_path / "out-2.png"
    for path in (first, second):
        path.write_bytes(b"old " + path.name.encode())
        os.utime(path, (time.time() - 10 * 3600,) * 2)
    batch = AtomicBatch()
    batch.add(first, lambda h: h.write(b"new 1"))
    batch.add(second, lambda h: h.write(b"new 2"))
    replace = os.replace

    def second_rename_fails(source, target):
        if Path(target) == second:
            remove_stale_temporaries(tmp_path)                           # as another write into the folder
            raise OSError(28, "No space left on device")
        return replace(source, target)
    monkeypatch.setattr(safe_files.os, "replace", second_rename_fails)
    with pytest.raises(OSError):
        batch.commit()
    monkeypatch.undo()
    assert first.read_bytes() == b"old out.png" and second.read_bytes() == b"old out-2.png"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out-2.png", "out.png"]


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="no /proc here")
def test_a_socket_is_refused_and_a_file_of_untold_size_is_read_whole(tmp_path):
    import socket

    from app.core.safe_files import NotAFile

    server = socket.socket(socket.AF_UNIX)
    server.bind(str(tmp_path / "settings.json"))
    try:
        with pytest.raises(NotAFile):
            read_bounded(tmp_path / "settings.json", 1000)
    finally:
        server.close()
    status = read_bounded(Path("/proc/self/status"), 1 << 20)     # st_size 0, yet kilobytes long
    assert status.startswith(b"Name:") and b"\nPid:" in status


def test_a_batch_without_hard_links_that_cannot_keep_a_copy_leaves_nothing(tmp_path, monkeypatch):
    import shutil

    from app.core import safe_files

    target = tmp_path / "a.png"
    target.write_bytes(b"old")
    batch = AtomicBatch()
    batch.add(target, lambda h: h.write(b"new"))

    def no_links(*args):
        raise OSError(1, "Operation not permitted")

    def half_a_copy(source, destination):
        Path(destination).write_bytes(b"ol")
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(safe_files.os, "link", no_links)
    monkeypatch.setattr(shutil, "copy2", half_a_copy)
    with pytest.raises(OSError):
        batch.commit()
    monkeypatch.undo()
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]
