"""Fetching a DownloadPlan into the standard Hugging Face cache, where diffusers and huggingface_hub find it
offline: blobs/<sha256 or blob id>, snapshots/<commit>/<path> linking to them, refs/main last.

huggingface_hub's own hf_hub_download deletes a partial file when it is interrupted; a model is gigabytes,
so this keeps each partial as blobs/<etag>.incomplete and goes on from it (an HTTP Range request) after a
dropped connection, a Pause, or the app closing. Every file's size, and an LFS file's sha256, is checked
against the Hub's metadata before it joins the cache; a file that fails is removed.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import quote

from app.core.pause_control import PauseControl
from app.engine.hub_files import DownloadError, DownloadPlan, HubFile, endpoint_now, hub_error

CHUNK = 1 << 20
RETRIES = 5
PARTIAL = ".incomplete"
DISK_MARGIN = 64 << 20            # left free beyond the download itself


class DownloadCancelled(Exception):
    """The user cancelled; the partial files of this download are removed."""


class DownloadStopped(Exception):
    """Stopped to go on later (the app closing, Ctrl+C): partial files are kept and resume next time."""


class DownloadControl(PauseControl):
    """Pause, resume, cancel (partial files removed) and stop (partial files kept) from another thread; the
    download checks it between chunks."""

    def __init__(self) -> None:
        super().__init__()
        self.stopped = False

    @property
    def paused(self) -> bool:
        return super().paused and not (self.cancelled or self.stopped)

    def stop(self) -> None:
        self.stopped = True
        self._running.set()

    def wait_while_paused(self, poll_s: float = 0.2) -> None:
        super().wait_while_paused(poll_s)
        self.check()

    def check(self) -> None:
        if self.cancelled:
            raise DownloadCancelled()
        if self.stopped:
            raise DownloadStopped()


@dataclass(frozen=True)
class DownloadProgress:
    repo_id: str
    done: int                 # bytes in the cache or in partial files
    total: int
    speed: float              # bytes a second, over the last few seconds
    file: str                 # the file being fetched
    paused: bool = False

    @property
    def eta(self) -> float | None:
        return (self.total - self.done) / self.speed if self.speed > 0 else None

    @property
    def pace(self) -> str:
        """" · 19.3 MB/s · 12 s left", or "" while paused or before a speed is measured."""
        from app.training.progress import describe_seconds

        if self.paused or self.speed <= 0:
            return ""
        return f" · {describe_bytes(self.speed)}/s · {describe_seconds(self.eta)} left"


def repo_folder(cache_dir: Path, repo_id: str) -> Path:
    return cache_dir / ("models--" + repo_id.replace("/", "--"))


def cache_root(cache_dir: str | Path | None = None) -> Path:
    from huggingface_hub import constants

    return Path(cache_dir or constants.HF_HUB_CACHE).expanduser()


def free_bytes(path: Path) -> int:
    """Free space on the disk that holds `path` (or its nearest existing parent)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free


def describe_bytes(count: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{int(count)} bytes"


class HubDownload:
    """One plan fetched into the cache; `run` returns the snapshot folder the model loads from."""

    def __init__(self, plan: DownloadPlan, cache_dir: str | Path | None = None,
                 progress: Callable[[DownloadProgress], None] | None = None,
                 control: DownloadControl | None = None, endpoint: str | None = None,
                 token: str | bool | None = None) -> None:
        self.plan = plan
        self.root = repo_folder(cache_root(cache_dir), plan.repo_id)
        self.progress = progress or (lambda _p: None)
        self.control = control or DownloadControl()
        self.endpoint = endpoint_now(endpoint)
        self.token = token
        self._done = 0
        self._samples: deque[tuple[float, int]] = deque(maxlen=64)
        self._written: list[Path] = []          # blobs this download added (removed on cancel)
        self._last_report = 0.0
        self._last_file = ""

    @property
    def snapshot(self) -> Path:
        return self.root / "snapshots" / self.plan.commit

    def remaining_bytes(self) -> int:
        return sum(f.size - self._partial_size(f) for f in self.plan.files if not self._have(f))

    def check_disk(self) -> None:
        needed = self.remaining_bytes()
        free = free_bytes(self.root)
        if needed and free < needed + DISK_MARGIN:
            raise DownloadError(f"not enough disk space for {self.plan.repo_id}: it needs {describe_bytes(needed)}"
                                f" more, the disk holding {self.root.parent} has {describe_bytes(free)} free")

    def run(self) -> Path:
        if not self.plan.commit:
            raise DownloadError(f"the Hub gave no revision for {self.plan.repo_id}; try again later")
        self.check_disk()
        self._done = sum(f.size if self._have(f) else self._partial_size(f) for f in self.plan.files)
        try:
            for file in self.plan.files:
                if not self._have(file):
                    self._fetch(file)
                self._link(file)
        except DownloadCancelled:
            self._discard()
            raise
        self._write_ref()
        self._report(self.plan.files[-1].path, force=True)
        return self.snapshot

    # -- one file ----------------------------------------------------------------------------------------

    def _blob(self, file: HubFile) -> Path:
        return self.root / "blobs" / file.etag

    def _partial(self, file: HubFile) -> Path:
        return self.root / "blobs" / (file.etag + PARTIAL)

    def _have(self, file: HubFile) -> bool:
        blob = self._blob(file)
        return blob.is_file() and blob.stat().st_size == file.size

    def _partial_size(self, file: HubFile) -> int:
        part = self._partial(file)
        return min(part.stat().st_size, file.size) if part.is_file() else 0

    def _fetch(self, file: HubFile) -> None:
        part = self._partial(file)
        part.parent.mkdir(parents=True, exist_ok=True)
        if part.is_file() and part.stat().st_size > file.size:
            self._done -= self._partial_size(file)
            part.unlink()
        failures = 0
        while True:
            self.control.wait_while_paused()
            try:
                if self._stream(file, part):
                    break
                failures = 0                       # paused mid-file: the connection is closed, go on later
            except (DownloadError, DownloadCancelled):
                raise
            except Exception as exc:  # noqa: BLE001 - a dropped connection: go on from where it stopped
                if not _from_the_network(exc):
                    if isinstance(exc, OSError):       # writing the partial file: a full disk, say
                        raise DownloadError(f"could not write {part} ({exc.strerror or exc}); what arrived is "
                                            "kept, so the download goes on from there") from None
                    raise
                failures += 1
                if failures > RETRIES or not _transient(exc):
                    raise hub_error(exc, self.plan.repo_id) from None
                time.sleep(min(0.2 * 2 ** failures, 5.0))
        self._verify(file, part)
        os.replace(part, self._blob(file))
        self._written.append(self._blob(file))

    def _stream(self, file: HubFile, part: Path) -> bool:
        """Append the rest of `file` to `part`; False when a pause stopped it first. A connection that drops
        raises (and is retried); one the server ends early is checked, and refused, by _verify."""
        from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

        offset = part.stat().st_size if part.is_file() else 0
        if offset >= file.size:
            return True
        headers = build_hf_headers(token=self.token)
        headers["Accept-Encoding"] = "identity"
        if offset:
            headers["Range"] = f"bytes={offset}-"
        url = f"{self.endpoint}/{self.plan.repo_id}/resolve/{quote(self.plan.commit, safe='')}/{quote(file.path)}"
        with get_session().stream("GET", url, headers=headers, follow_redirects=True, timeout=30) as response:
            if response.status_code >= 400:
                response.read()
                hf_raise_for_status(response)
            mode = "ab"
            if offset and response.status_code != 206:      # the server sent the whole file again
                self._done -= offset
                offset, mode = 0, "wb"
            with open(part, mode) as out:
                for chunk in response.iter_bytes():
                    self.control.check()
                    offset += len(chunk)
                    if offset > file.size:
                        out.close()
                        self._refuse(file, part, f"the Hub sent more than the {file.size:,} bytes its metadata "
                                                 "gives")
                    out.write(chunk)
                    self._done += len(chunk)
                    self._report(file.path)
                    if self.control.paused:
                        out.flush()
                        self._report(file.path, force=True)
                        return False
        return True                             # all the Hub sent: _verify checks it is the whole file

    def _verify(self, file: HubFile, part: Path) -> None:
        size = part.stat().st_size
        if size != file.size:
            self._refuse(file, part, f"{size:,} bytes arrived, the Hub's metadata gives {file.size:,}")
        if file.sha256:
            digest = hashlib.sha256()
            with open(part, "rb") as data:
                for block in iter(lambda: data.read(CHUNK), b""):
                    digest.update(block)
            if digest.hexdigest() != file.sha256:
                self._refuse(file, part, "its sha256 is not the one the Hub's metadata gives")

    def _refuse(self, file: HubFile, part: Path, why: str) -> None:
        self._done -= part.stat().st_size if part.is_file() else 0
        part.unlink(missing_ok=True)
        raise DownloadError(f"{self.plan.repo_id}/{file.path} is damaged ({why}); the partial file is removed, "
                            "try again")

    # -- the cache's layout ------------------------------------------------------------------------------

    def _link(self, file: HubFile) -> None:
        link = self.snapshot / file.path
        blob = self._blob(file)
        if link.is_file() and link.stat().st_size == file.size:
            return
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        try:
            os.symlink(os.path.relpath(blob, link.parent), link)
        except OSError:                            # no symlinks (Windows without developer mode): a copy
            shutil.copyfile(blob, link)

    def _write_ref(self) -> None:
        refs = self.root / "refs"
        refs.mkdir(parents=True, exist_ok=True)
        temp = refs / ".main.tmp"
        temp.write_text(self.plan.commit)
        os.replace(temp, refs / "main")

    def _discard(self) -> None:
        """Remove what this download left: partial files, the blobs it added and the links to them."""
        for file in self.plan.files:
            self._partial(file).unlink(missing_ok=True)
        for blob in self._written:
            blob.unlink(missing_ok=True)
        if self.snapshot.is_dir():
            for link in sorted(self.snapshot.rglob("*"), reverse=True):
                if link.is_symlink() and not link.exists():
                    link.unlink()
                elif link.is_dir() and not any(link.iterdir()):
                    link.rmdir()
            if not any(self.snapshot.iterdir()):
                self.snapshot.rmdir()
        if not (self.root / "refs").is_dir() and self.root.is_dir():
            shutil.rmtree(self.root, ignore_errors=True)     # nothing of this repo was complete before

    def _report(self, name: str, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_report < 0.1 and name == self._last_file:
            return
        self._last_report, self._last_file = now, name
        self._samples.append((now, self._done))
        first_time, first_done = self._samples[0]
        while len(self._samples) > 2 and now - self._samples[0][0] > 5:
            first_time, first_done = self._samples.popleft()
        span = now - first_time
        speed = (self._done - first_done) / span if span > 0.2 else 0.0
        self.progress(DownloadProgress(self.plan.repo_id, self._done, self.plan.total_bytes, max(speed, 0.0),
                                       name, self.control.paused))


def _from_the_network(exc: BaseException) -> bool:
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    return isinstance(exc, (httpx2.HTTPError, httpx2.StreamError, HfHubHTTPError))


def _transient(exc: BaseException) -> bool:
    """A connection that dropped or timed out (worth going on from), not an answer the Hub gave."""
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    if isinstance(exc, HfHubHTTPError):
        status = getattr(getattr(exc, "response", None), "status_code", 0) or 0
        return status >= 500 or status == 429
    return isinstance(exc, httpx2.TransportError)


def download_model(repo_id: str, cache_dir: str | Path | None = None,
                   progress: Callable[[DownloadProgress], None] | None = None,
                   control: DownloadControl | None = None, endpoint: str | None = None) -> Path:
    """Plan and fetch `repo_id` (one variant of its weights); the snapshot folder. DownloadError in one line;
    DownloadCancelled when `control` cancelled it."""
    from app.engine.hub_files import plan_download

    plan = plan_download(repo_id, endpoint)
    return HubDownload(plan, cache_dir, progress, control, endpoint).run()
