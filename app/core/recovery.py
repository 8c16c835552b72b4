"""Crash recovery: the open document, its mask and its undo history, written to disk so a killed editor
loses at most the last few seconds of work. Qt-free; app/editor/autosave.py schedules it.

Each running editor writes into its own folder, recovery/<pid>/: one `.npy` file per pixel array (images,
masks, mask patches) and a `session.json` manifest naming them (app/core/recovery_manifest.py), each written
atomically (app/core/safe_files.py: a temporary file beside it, fsynced, renamed into place) so a crash
mid-write leaves the previous manifest and every file it names intact. Arrays are written once and reused by
later saves while the history still holds them: document images are never mutated in place, so an unchanged
array object has unchanged pixels. The live mask is painted in place, so it is copied at every snapshot.

A folder whose process is no longer running is a crashed session: the next editor offers to restore it, after
`load` has checked all of it. A clean exit (or a document saved with nothing left to lose) removes the folder.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import stat
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

try:
    import fcntl
except ImportError:                 # Windows: liveness falls back to the process id
    fcntl = None

from app.core.changes import Change
from app.core.document import Document
from app.core.recovery_manifest import FORMAT, MANIFEST, Recovered, RecoveryError, manifest_for, read
from app.core.safe_files import is_temporary, process_running, write_atomically, write_text_atomically

__all__ = ["FORMAT", "MANIFEST", "Recovered", "RecoveryError", "RecoveryStore", "Snapshot", "load",
           "take_snapshot"]

_CLAIMED: set[Path] = set()         # folders this process writes
DAMAGED = ".damaged"                # suffix of folders whose data could not be read back
LOCK = ".lock"                      # held (flock) by the editor writing the folder, for as long as it runs
# The folders editors write: <pid>, or <pid>-<hex> beside a folder of the same pid. Nothing else in the
# recovery folder is looked at.
FOLDER_NAME = re.compile(r"[0-9]{1,10}(-[0-9a-f]{8})?")


@dataclass(frozen=True)
class Snapshot:
    """What one save writes, taken on the UI thread (cheap: references, plus a copy of the live mask)."""
    document: Document
    changes: tuple[Change, ...]
    index: int                      # undo position: changes[:index] are applied
    saved_at: float
    settings: dict | None = None    # the Generate panel's settings


def take_snapshot(document: Document, changes: list[Change], index: int, settings: dict | None = None) -> Snapshot:
    live = Document(document.layers, document.shared_mask(), document.canvas, document.path, document.parameters,
                    document.named_masks)
    return Snapshot(live, tuple(changes), index, time.time(), settings)


def load(folder: Path) -> Recovered:
    """Read a crashed session back, every part of it checked; raises RecoveryError (one line) otherwise."""
    return read(Path(folder))


class RecoveryStore:
    """The recovery folder of this process (recovery/<pid>) and the folders crashed editors left behind."""

    def __init__(self, root: Path, pid: int | None = None) -> None:
        self.root = Path(root)
        self.pid = os.getpid() if pid is None else pid
        self.folder = self.root / str(self.pid)
        self._written: dict[int, tuple[np.ndarray, str]] = {}     # id(array) -> (array, file name)
        self._lock = None
        if os.path.isdir(self.folder) and self.folder not in _CLAIMED:
            aside = self.root / f"{self.pid}-{uuid.uuid4().hex[:8]}"
            if _locked_by_another(self.folder):
                self.folder = aside          # a live editor with the same pid (another pid namespace)
            else:
                try:                         # a crashed editor had this pid: its work goes where crashed() looks
                    self.folder.rename(aside)
                except OSError:
                    self.folder = aside      # it cannot be moved: leave it to crashed(), write beside it
        _CLAIMED.add(self.folder)

    # -- writing ------------------------------------------------------------------------------------------
    def save(self, snapshot: Snapshot) -> Path:
        """Write the snapshot; the previous one stays readable until the new manifest replaces it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self._hold_lock()
        used: dict[int, tuple[np.ndarray, str]] = {}

        def ref(array: np.ndarray) -> str:
            key = id(array)
            if key in used:
                return used[key][1]
            known = self._written.get(key)
            if known is not None and known[0] is array:
                name = known[1]
            else:
                name = f"{uuid.uuid4().hex}.npy"
                _write_array(self.folder / name, array)
            used[key] = (array, name)
            return name

        manifest = manifest_for(snapshot.document, snapshot.changes, snapshot.index, snapshot.saved_at,
                                self.pid, ref, snapshot.settings)
        write_text_atomically(self.folder / MANIFEST, json.dumps(manifest))
        self._written = used
        self._remove_unused({name for _, name in used.values()} | {MANIFEST, LOCK})
        return self.folder / MANIFEST

    def _remove_unused(self, keep: set[str]) -> None:
        """Remove the arrays no manifest names any more. Temporary files are left to safe_files, which removes
        them once their writer is gone (this editor's own are gone by now: its writes have ended)."""
        try:
            entries = list(os.scandir(self.folder))
        except OSError:
            return
        for entry in entries:
            if entry.name in keep or is_temporary(Path(entry.name)):
                continue
            try:
                if not entry.is_dir(follow_symlinks=False):
                    os.unlink(entry.path)
            except OSError:
                pass

    def adopt(self, recovered: "Recovered") -> None:
        """Continue a recovered session in this editor's folder: the crashed folder is renamed (no copy, no
        moment without a recovery copy) and its files are reused by the next save."""
        self._release_lock()
        if self.folder.exists():
            shutil.rmtree(self.folder)
        recovered.folder.rename(self.folder)
        recovered.folder = self.folder
        self._hold_lock()
        self._written = {id(array): (array, name) for name, array in recovered.arrays.items()}

    @staticmethod
    def set_aside(folder: Path) -> Path:
        """Unusable recovery data is kept (renamed, never offered again) rather than deleted."""
        target = folder.with_name(folder.name + DAMAGED)
        if os.path.lexists(target):          # set aside before, under the same pid
            target = folder.with_name(f"{folder.name}-{uuid.uuid4().hex[:8]}{DAMAGED}")
        try:
            folder.rename(target)
        except OSError:
            return folder
        return target

    def clear(self) -> None:
        """Nothing left to lose (clean exit, or the document saved): remove this process's folder."""
        self._written = {}
        self._release_lock()
        shutil.rmtree(self.folder, ignore_errors=True)

    def _hold_lock(self) -> None:
        if self._lock is not None or fcntl is None:
            return
        try:
            handle = open(self.folder / LOCK, "a+")
        except OSError:
            return                           # no lock: crashed() falls back to the process id
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return
        self._lock = handle

    def _release_lock(self) -> None:
        """Let go of the folder (tests use it to stand for this process's death)."""
        if self._lock is not None:
            try:
                fcntl.flock(self._lock.fileno(), fcntl.LOCK_UN)
            except OSError:
                pass
            self._lock.close()
            self._lock = None

    # -- crashed sessions ------------------------------------------------------------------------------------
    def crashed(self) -> list[Path]:
        """Folders of editors that are no longer running and left a manifest, newest first. Never raises: a
        folder that cannot be read is skipped, and one whose manifest is unusable is for load() to refuse."""
        try:
            entries = list(os.scandir(self.root))
        except OSError:
            return []
        found = []
        for entry in entries:
            folder = Path(entry.path)
            if not FOLDER_NAME.fullmatch(entry.name) or folder == self.folder:
                continue
            try:
                if not entry.is_dir(follow_symlinks=False):
                    continue
                saved = os.lstat(folder / MANIFEST).st_mtime
            except OSError:
                continue
            if not self._running(folder):
                found.append((saved, folder))
        found.sort(key=lambda item: item[0], reverse=True)
        return [folder for _, folder in found]

    @staticmethod
    def _running(folder: Path) -> bool:
        alive = _locked_by_another(folder)
        if alive is None:                # no lock to ask (Windows, or written by an older version): the pid
            alive = folder.name.isdigit() and process_running(int(folder.name))
        return alive

    @staticmethod
    def discard(folder: Path) -> None:
        shutil.rmtree(folder, ignore_errors=True)


# -- files --------------------------------------------------------------------------------------------------

def _write_array(path: Path, array: np.ndarray) -> None:
    write_atomically(path, lambda handle: np.save(handle, np.ascontiguousarray(array), allow_pickle=False))


def _locked_by_another(folder: Path) -> bool | None:
    """Whether a running editor holds the folder's lock; None when that cannot be told (no lock file, or no
    flock). A lock dies with its process, so unlike a process id it cannot be fooled by a reused pid."""
    if fcntl is None:
        return None
    flags = os.O_RDWR | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        descriptor = os.open(folder / LOCK, flags)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            return None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(descriptor, fcntl.LOCK_UN)
        return False
    except OSError:
        return None
    finally:
        os.close(descriptor)
