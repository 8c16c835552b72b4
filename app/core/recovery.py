"""Crash recovery: the open document, its mask and its undo history, written to disk so a killed editor
loses at most the last few seconds of work. Qt-free; app/widgets/autosave.py schedules it.

Each running editor writes into its own folder, recovery/<pid>/: one `.npy` file per pixel array (images,
masks, mask patches) and a `session.json` manifest naming them, replaced atomically (written aside, then
os.replace) so a crash mid-write leaves the previous manifest and every file it names intact. Arrays are
written once and reused by later saves while the history still holds them: document images are never
mutated in place, so an unchanged array object has unchanged pixels. The live mask is painted in place, so it
is copied at every snapshot. Arrays are read back with allow_pickle=False: a recovery file can hold nothing
but numbers.

A folder whose process is no longer running is a crashed session: the next editor offers to restore it.
A clean exit (or a document saved with nothing left to lose) removes the folder.
"""
from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

try:
    import fcntl
except ImportError:                 # Windows: liveness falls back to the process id
    fcntl = None

from app.core.changes import CanvasChange, Change, DocumentChange, MaskPatchChange
from app.core.document import Document, DocumentState, read_only
from app.core.geometry import Rect

MANIFEST = "session.json"
FORMAT = 1
_CLAIMED: set[Path] = set()         # folders this process writes
DAMAGED = ".damaged"                # suffix of folders whose data could not be read back
LOCK = ".lock"                      # held (flock) by the editor writing the folder, for as long as it runs


class RecoveryError(ValueError):
    """Recovery data that cannot be used, in one line."""


@dataclass(frozen=True)
class Snapshot:
    """What one save writes, taken on the UI thread (cheap: references, plus a copy of the live mask)."""
    document: Document
    changes: tuple[Change, ...]
    index: int                      # undo position: changes[:index] are applied
    saved_at: float


@dataclass
class Recovered:
    """A crashed session read back: the document as it was and its undo history."""
    document: Document
    changes: list[Change]
    index: int
    saved_at: float
    folder: Path
    arrays: dict[str, np.ndarray]       # file name -> the array read from it (shared with the history)

    def describe(self) -> str:
        name = self.document.path.name if self.document.path else "an unsaved image"
        when = time.strftime("%H:%M", time.localtime(self.saved_at))
        steps = f"{self.index} undo step{'s' if self.index != 1 else ''}"
        return f"{name}, {self.document.width}x{self.document.height}, {steps}, last saved at {when}"


def take_snapshot(document: Document, changes: list[Change], index: int) -> Snapshot:
    live = Document(document.image, document.mask.copy(), document.canvas, document.path, document.parameters)
    return Snapshot(live, tuple(changes), index, time.time())


class RecoveryStore:
    """The recovery folder of this process (recovery/<pid>) and the folders crashed editors left behind."""

    def __init__(self, root: Path, pid: int | None = None) -> None:
        self.root = Path(root)
        self.pid = os.getpid() if pid is None else pid
        self.folder = self.root / str(self.pid)
        self._written: dict[int, tuple[np.ndarray, str]] = {}     # id(array) -> (array, file name)
        self._lock = None
        if self.folder.is_dir() and self.folder not in _CLAIMED:
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

        doc = snapshot.document
        manifest = {
            "format": FORMAT, "saved_at": snapshot.saved_at, "pid": self.pid,
            "document": {"image": ref(doc.image), "mask": ref(doc.mask), "canvas": _rect(doc.canvas),
                         "path": str(doc.path) if doc.path else None, "parameters": doc.parameters},
            "changes": [_change_entry(change, ref) for change in snapshot.changes],
            "index": snapshot.index,
        }
        temporary = self.folder / f".{MANIFEST}.{uuid.uuid4().hex}"
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(manifest, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.folder / MANIFEST)
        self._written = used
        keep = {name for _, name in used.values()} | {MANIFEST, LOCK}
        for path in self.folder.iterdir():
            if path.name not in keep and not path.name.startswith(f".{MANIFEST}"):
                path.unlink(missing_ok=True)
        return self.folder / MANIFEST

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
        handle = open(self.folder / LOCK, "a+")
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
        """Folders of editors that are no longer running and left a manifest, newest first."""
        if not self.root.is_dir():
            return []
        found = []
        for folder in self.root.iterdir():
            if not folder.is_dir() or folder == self.folder or folder.name.endswith(DAMAGED):
                continue
            if not (folder / MANIFEST).is_file():
                continue
            alive = _locked_by_another(folder)
            if alive is None:            # no lock to ask (Windows, or written by an older version): the pid
                alive = folder.name.isdigit() and _running(int(folder.name))
            if not alive:
                found.append(folder)
        return sorted(found, key=lambda f: (f / MANIFEST).stat().st_mtime, reverse=True)

    @staticmethod
    def discard(folder: Path) -> None:
        shutil.rmtree(folder, ignore_errors=True)


def load(folder: Path) -> Recovered:
    """Read a crashed session back; raises RecoveryError (one line) if the folder is unusable."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        if manifest.get("format") != FORMAT:
            raise RecoveryError(f"recovery format {manifest.get('format')!r} is not {FORMAT}")
        arrays: dict[str, np.ndarray] = {}

        def array(name: str) -> np.ndarray:
            if name not in arrays:
                if "/" in name or "\\" in name or name.startswith("."):
                    raise RecoveryError(f"bad array name {name!r}")
                arrays[name] = np.load(folder / name, allow_pickle=False)
            return arrays[name]

        d = manifest["document"]
        image = read_only(array(d["image"]))
        mask = np.array(array(d["mask"]), dtype=np.uint8)
        _check_image(image, mask)
        document = Document(image, mask, Rect(*d["canvas"]), Path(d["path"]) if d["path"] else None,
                            d.get("parameters", ""))
        changes = [_change_from(entry, array) for entry in manifest["changes"]]
        index = int(manifest["index"])
        if not 0 <= index <= len(changes):
            raise RecoveryError(f"undo position {index} outside 0..{len(changes)}")
        return Recovered(document, changes, index, float(manifest["saved_at"]), folder, arrays)
    except RecoveryError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever is in the folder, the editor must still start
        detail = str(exc).splitlines()[0] if str(exc) else ""
        raise RecoveryError(f"the recovery data in {folder} is damaged ({type(exc).__name__}: {detail})") from None


# -- serialisation --------------------------------------------------------------------------------------------

def _write_array(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as handle:
        np.save(handle, np.ascontiguousarray(array), allow_pickle=False)
        handle.flush()
        os.fsync(handle.fileno())


def _rect(rect: Rect) -> list[int]:
    return [rect.x, rect.y, rect.w, rect.h]


def _state_entry(state: DocumentState, ref) -> dict:
    return {"image": ref(state.image), "mask": ref(state.mask), "canvas": _rect(state.canvas),
            "parameters": state.parameters}


def _change_entry(change: Change, ref) -> dict:
    if isinstance(change, MaskPatchChange):
        return {"kind": "mask", "label": change.label, "rect": _rect(change.rect),
                "before": ref(change.before), "after": ref(change.after)}
    if isinstance(change, CanvasChange):
        return {"kind": "canvas", "label": change.label, "before": _rect(change.before),
                "after": _rect(change.after)}
    if isinstance(change, DocumentChange):
        return {"kind": "document", "label": change.label, "before": _state_entry(change.before, ref),
                "after": _state_entry(change.after, ref)}
    raise TypeError(f"cannot save a {type(change).__name__} for recovery")


def _state_from(entry: dict, array) -> DocumentState:
    image, mask = read_only(array(entry["image"])), array(entry["mask"])
    _check_image(image, mask)
    return DocumentState(image, mask, Rect(*entry["canvas"]), entry.get("parameters", ""))


def _change_from(entry: dict, array) -> Change:
    kind = entry["kind"]
    if kind == "mask":
        rect = Rect(*entry["rect"])
        before, after = array(entry["before"]), array(entry["after"])
        if before.shape != (rect.h, rect.w) or after.shape != (rect.h, rect.w):
            raise RecoveryError("a mask patch does not match its rectangle")
        return MaskPatchChange(rect, before, after, entry["label"])
    if kind == "canvas":
        return CanvasChange(Rect(*entry["before"]), Rect(*entry["after"]), entry["label"])
    if kind == "document":
        return DocumentChange(_state_from(entry["before"], array), _state_from(entry["after"], array),
                              entry["label"])
    raise RecoveryError(f"unknown change kind {kind!r}")


def _check_image(image: np.ndarray, mask: np.ndarray) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (3, 4):
        raise RecoveryError("a recovered image is not H x W x 3 or 4 uint8")
    if mask.dtype != np.uint8 or mask.shape != image.shape[:2]:
        raise RecoveryError("a recovered mask does not match its image")


def _locked_by_another(folder: Path) -> bool | None:
    """Whether a running editor holds the folder's lock; None when that cannot be told (no lock file, or no
    flock). A lock dies with its process, so unlike a process id it cannot be fooled by a reused pid."""
    lock = folder / LOCK
    if fcntl is None or not lock.is_file():
        return None
    try:
        with open(lock, "a+") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
            return False
    except OSError:
        return None


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    if os.name == "nt":            # os.kill(pid, 0) would send Ctrl+C there
        return _running_windows(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True          # someone else's process
    except OSError:
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
