"""Files written so that nothing is lost, and files read within bounds. Qt-free.

Every writer of the editor (images, the model list, recovery manifests and arrays) goes through
`write_atomically`: the new contents go to a temporary file beside the target, are flushed and fsynced,
then renamed over the target (os.replace, atomic on one file system) and the folder is fsynced, so a crash,
a kill or a full disk at any moment leaves either the old file or the new one, never half of one.

A temporary file left behind by a process that was killed mid-write is named so a user can tell what it is
(".photo.png.latent-canvas-partial-<pid>-<hex>.tmp") and is removed by the next write into that folder once
its process is gone.

Readers use `read_bounded` (or `read_json_file` for the editor's own JSON files), which refuses a pipe, a
device or a socket without waiting, and a file over its size limit before reading it.
"""
from __future__ import annotations

import errno
import json
import os
import re
import secrets
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable

TEMP_TAG = "latent-canvas-partial"       # a file being written
KEPT_TAG = "latent-canvas-previous"      # the file a batch is replacing, kept until the batch is in place
_TEMP_NAME = re.compile(r"^\..+\.(" + TEMP_TAG + "|" + KEPT_TAG + r")-(\d+)-[0-9a-f]{12}\.tmp$")
STALE_AFTER_S = 3600.0          # untouched this long (ctime), a temporary is in no write, whatever its pid

Writer = Callable[[BinaryIO], None]


class FileTooLarge(OSError):
    """A file is over the size its reader accepts."""


class NotAFile(OSError):
    """A path names a pipe, a device, a socket (kind "special") or a link ("link") where a file belongs."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def temporary_for(target: Path, tag: str = TEMP_TAG) -> Path:
    return target.parent / f".{target.name}.{tag}-{os.getpid()}-{secrets.token_hex(6)}.tmp"


def is_temporary(path: Path) -> bool:
    return _TEMP_NAME.match(path.name) is not None


def real_target(target: Path) -> Path:
    """Writing through a symbolic link replaces the file it points at, not the link."""
    target = Path(target)
    return Path(os.path.realpath(target)) if target.is_symlink() else target


def write_atomically(target: Path, write: Writer) -> None:
    """Write `target` through `write(handle)` all or nothing. Exceptions (OSError, or whatever `write`
    raises) propagate after the temporary file is removed; the old target is untouched."""
    temp = prepare(target, write)
    try:
        os.replace(temp, real_target(target))
    except BaseException:
        _unlink(temp)
        raise
    sync_folder(real_target(target).parent)


def write_text_atomically(target: Path, text: str) -> None:
    write_atomically(target, lambda handle: handle.write(text.encode("utf-8")))


def prepare(target: Path, write: Writer) -> Path:
    """The first half of an atomic write: the new contents in a synced temporary file beside `target`,
    with the target's permissions. The caller renames it into place (os.replace) or removes it."""
    target = real_target(Path(target))
    remove_stale_temporaries(target.parent)
    try:
        existing_mode = stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        existing_mode = None
    temp = temporary_for(target)
    descriptor = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        if existing_mode is not None:
            os.chmod(temp, existing_mode)
    except BaseException:
        _unlink(temp)
        raise
    return temp


class AtomicBatch:
    """Several files written all or nothing: each is prepared in a temporary file, and only when every one
    is ready are they renamed into place. A failure at any point leaves no new file and no temporary."""

    def __init__(self) -> None:
        self._ready: list[tuple[Path, Path]] = []     # (temporary, target)

    def add(self, target: Path, write: Writer) -> None:
        try:
            self._ready.append((prepare(target, write), real_target(Path(target))))
        except BaseException:
            self.discard()
            raise

    def commit(self) -> None:
        """Rename every prepared file into place. A file one replaces is first given a second name (a hard
        link), so that if any rename fails, every target already replaced is put back as it was."""
        placed: list[tuple[Path, Path | None]] = []     # (target, what it was before, or None)
        try:
            for temp, target in self._ready:
                before = _keep_aside(target)
                try:
                    os.replace(temp, target)
                except BaseException:
                    if before is not None:
                        _unlink(before)  # this target was not replaced: it is still what it was
                    raise
                placed.append((target, before))
        except BaseException:
            for target, before in reversed(placed):
                try:
                    if before is not None:
                        os.replace(before, target)
                    else:
                        _unlink(target)
                except OSError:          # put back what can be; a kept file stays under its second name
                    continue
            self.discard()
            raise
        for _, before in placed:
            if before is not None:
                _unlink(before)
        for folder in {target.parent for _, target in self._ready}:
            sync_folder(folder)
        self._ready = []

    def discard(self) -> None:
        for temp, _ in self._ready:
            _unlink(temp)
        self._ready = []


def _keep_aside(target: Path) -> Path | None:
    """A second name for the file at `target` (a hard link), or None when there is none to keep."""
    if not target.is_file():
        return None
    aside = temporary_for(target, KEPT_TAG)
    try:
        os.link(target, aside)
    except OSError:                     # no hard links here (FAT, some network shares): a copy does
        import shutil

        try:
            shutil.copy2(target, aside)
        except BaseException:
            _unlink(aside)
            raise
    return aside


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Remove the temporaries of our naming in `folder` whose writer is gone, or which nothing has touched for
    an hour (a pid can be reused). Best effort: a folder that cannot be listed, or a file that cannot be
    removed, is left alone."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        match = _TEMP_NAME.match(entry.name)
        if match is None:
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            # ctime: when the file was last written, or given its second name (a kept file keeps its mtime)
            old = now - entry.stat(follow_symlinks=False).st_ctime > STALE_AFTER_S
        except OSError:
            continue
        pid = int(match.group(2))
        if old or (pid != os.getpid() and not process_running(pid)):
            if _unlink(Path(entry.path)):
                removed.append(Path(entry.path))
    return removed


def open_regular(path: Path, follow_links: bool = True) -> BinaryIO:
    """`path` opened for reading if it is a regular file. A FIFO, a device or a socket named like a file is
    refused (NotAFile, kind "special") without waiting for a writer, and so is a link when `follow_links` is
    False (kind "link"); a folder raises IsADirectoryError; else OSError as os.open raises it."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    if not follow_links:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        mode = (os.stat if follow_links else os.lstat)(path).st_mode
    except OSError:
        mode = None                     # os.open says what is wrong
    if mode is not None and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode)):
        raise NotAFile("special", f"{Path(path).name} is not a regular file (a pipe, a device or a socket)")
    try:
        descriptor = os.open(path, flags)
    except OSError as exc:
        if not follow_links and exc.errno in (errno.ELOOP, getattr(errno, "EMLINK", None)) \
                and os.path.islink(path):
            raise NotAFile("link", f"{Path(path).name} is a link, not a file") from None
        raise
    try:
        mode = os.fstat(descriptor).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, "Is a directory", str(path))
        if not stat.S_ISREG(mode):
            raise NotAFile("special", f"{Path(path).name} is not a regular file (a pipe, a device or a socket)")
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def read_bounded(path: Path, limit: int) -> bytes:
    """The bytes of the regular file `path`; FileTooLarge when it is over `limit` bytes (checked before
    reading), NotAFile for anything but a regular file, OSError as open raises it otherwise."""
    with open_regular(path) as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > limit:
            raise FileTooLarge(f"{size:,} bytes; at most {limit:,} are read")
        data = handle.read(size + 1)
        while len(data) > size and len(data) <= limit:    # it grew, or its size was not told (/proc)
            more = handle.read(1 << 20)
            if not more:
                break
            data += more
    if len(data) > limit:
        raise FileTooLarge(f"over {limit:,} bytes")
    return data


@dataclass(frozen=True)
class JsonFile:
    """A small JSON file of the editor's own, as read: exactly one of the four is set."""
    data: object = None               # its contents
    missing: bool = False             # there is none yet: nothing to keep
    unreadable: str = ""              # it could not be read: leave it as it is, never overwrite it
    damaged: str = ""                 # it was read but is no JSON (or too large): set it aside


def read_json_file(path: Path, limit: int) -> JsonFile:
    try:
        raw = read_bounded(path, limit)
    except (FileNotFoundError, NotADirectoryError):
        return JsonFile(missing=True)
    except FileTooLarge as exc:
        return JsonFile(damaged=f"it is too large ({exc})")
    except OSError as exc:
        return JsonFile(unreadable=str(exc.strerror or exc))
    try:
        return JsonFile(data=json.loads(raw.decode("utf-8")))
    except UnicodeDecodeError:
        return JsonFile(damaged="it is not UTF-8 text")
    except (ValueError, RecursionError) as exc:
        detail = " ".join(str(exc).split())[:80] or type(exc).__name__
        return JsonFile(damaged=f"it is not valid JSON: {detail}")


def writable_text(text: str) -> bool:
    """False for text with lone surrogates ("\\ud800" is valid JSON): it cannot be written back as UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def set_aside(path: Path, tag: str = "damaged") -> Path:
    """Rename `path` to an unused `<name>.<tag>-<date>-<time>` beside it (a counter added when that is taken)
    and return the new path; OSError when it cannot be renamed."""
    path = Path(path)
    base = path.with_name(f"{path.name}.{tag}-{time.strftime('%Y%m%d-%H%M%S')}")
    candidate, number = base, 1
    while candidate.exists() or candidate.is_symlink():
        number += 1
        candidate = base.with_name(f"{base.name}-{number}")
    os.replace(path, candidate)
    return candidate


def sync_folder(folder: Path) -> None:
    """fsync a folder so a rename in it survives a power cut (POSIX; a no-op elsewhere)."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    try:
        descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def process_running(pid: int) -> bool:
    """Whether process `pid` exists (another user's process counts as running)."""
    if pid == os.getpid():
        return True
    if pid <= 0:
        return False
    if os.name == "nt":            # os.kill(pid, 0) would send Ctrl+C there
        return _running_windows(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OSError, OverflowError):
        return False
    return True


def _running_windows(pid: int) -> bool:
    import ctypes

    kernel32 = ctypes.windll.kernel32
    handle = kernel32.OpenProcess(0x1000, False, pid)       # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return False
    try:
        code = ctypes.c_ulong()
        return bool(kernel32.GetExitCodeProcess(handle, ctypes.byref(code))) and code.value == 259  # STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)


def _unlink(path: Path) -> bool:
    try:
        os.unlink(path)
        return True
    except OSError:
        return False
