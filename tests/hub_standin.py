"""A stand-in for the Hugging Face Hub's HTTP API on 127.0.0.1, for huggingface_hub and the app's downloader.

It answers what they ask of the real Hub: GET /api/models/REPO[/revision/REV] (?blobs=true: sizes, blob ids,
LFS sha256s) and HEAD/GET /REPO/resolve/REV/PATH (X-Repo-Commit, ETag / X-Linked-Etag, X-Linked-Size,
Range requests), with the Hub's error codes (X-Error-Code: RepoNotFound, GatedRepo, EntryNotFound).
Faults a test can set: drop the connection once after N bytes of a file, send other bytes than the
metadata's hash, send fewer bytes than its size.

Tiny models with fp32 and fp16 variants are built by `tiny_pipeline_repo`.
"""
from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt")
REPO = "stand-in/tiny-inpainting"
FP32_ONLY = "stand-in/tiny-fp32"
FP16_ONLY = "stand-in/tiny-fp16"
GATED = "stand-in/tiny-gated"
SD15 = "stable-diffusion-v1-5/stable-diffusion-inpainting"        # the recommended entries' repo ids
TAESD = "madebyollin/taesd"
UNET16 = "unet/diffusion_pytorch_model.fp16.safetensors"
_RESOLVE = re.compile(r"/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)")
_INFO = re.compile(r"/api/models/(?P<repo>[^/]+/[^/]+)(/revision/(?P<rev>[^/]+))?")


@dataclass
class StandInRepo:
    files: dict[str, bytes]
    gated: bool = False
    commit: str = ""

    def __post_init__(self) -> None:
        if not self.commit:
            digest = hashlib.sha1()
            for name in sorted(self.files):
                digest.update(name.encode() + hashlib.sha1(self.files[name]).digest())
            self.commit = digest.hexdigest()


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def is_lfs(path: str) -> bool:
    return path.endswith(LFS_SUFFIXES)


@dataclass
class Faults:
    drop_after: dict[str, int] = field(default_factory=dict)    # "repo/path": bytes sent before dropping, once
    wrong_bytes: set[str] = field(default_factory=set)          # "repo/path": other bytes, same size
    short: set[str] = field(default_factory=set)                # "repo/path": the last bytes never sent
    rate: int = 0                                               # bytes per second for every file; 0: at once


class StandInHub:
    """The server; `endpoint` is what HF_ENDPOINT (or endpoint=) takes. `served` lists each GET of a file."""

    def __init__(self) -> None:
        self.repos: dict[str, StandInRepo] = {}
        self.faults = Faults()
        self.served: list[tuple[str, str, str]] = []            # (repo, path, Range header or "")
        self.bytes_sent = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def add(self, repo_id: str, files: dict[str, bytes], gated: bool = False) -> StandInRepo:
        repo = StandInRepo(dict(files), gated)
        self.repos[repo_id] = repo
        return repo

    def start(self) -> "StandInHub":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def fetched(self, repo_id: str) -> list[str]:
        return sorted({path for repo, path, _ in self.served if repo == repo_id})

    # -- answers -----------------------------------------------------------------------------------------

    def info(self, repo_id: str) -> dict:
        repo = self.repos[repo_id]
        siblings = []
        for path, data in sorted(repo.files.items()):
            entry = {"rfilename": path, "size": len(data), "blobId": git_blob_id(data)}
            if is_lfs(path):
                entry["lfs"] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "pointerSize": 134}
            siblings.append(entry)
        return {"_id": repo.commit[:24], "id": repo_id, "modelId": repo_id, "sha": repo.commit, "private": False,
                "gated": "manual" if repo.gated else False, "disabled": False, "downloads": 0, "likes": 0,
                "tags": ["diffusers"], "siblings": siblings}

    def etag(self, path: str, data: bytes) -> str:
        return hashlib.sha256(data).hexdigest() if is_lfs(path) else git_blob_id(data)


def _handler(hub: StandInHub):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_args) -> None:
            pass

        def do_GET(self) -> None:
            self._answer(body=True)

        def do_HEAD(self) -> None:
            self._answer(body=False)

        def _error(self, status: int, code: str, message: str) -> None:
            body = json.dumps({"error": message}).encode()
            self.send_response(status)
            self.send_header("X-Error-Code", code)
            self.send_header("X-Error-Message", message)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _answer(self, body: bool) -> None:
            path = unquote(urlsplit(self.path).path)
            info = _INFO.fullmatch(path)
            if info:
                repo_id = info.group("repo")
                if repo_id not in hub.repos:
                    return self._error(401, "RepoNotFound", f"Repository Not Found for url: {self.path}.")
                data = json.dumps(hub.info(repo_id)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)
                return None
            resolve = _RESOLVE.fullmatch(path)
            if not resolve:
                return self._error(404, "EntryNotFound", f"no route {path}")
            repo_id, name = resolve.group("repo"), resolve.group("path")
            repo = hub.repos.get(repo_id)
            if repo is None:
                return self._error(401, "RepoNotFound", f"Repository Not Found for url: {self.path}.")
            if repo.gated and "authorization" not in {k.lower() for k in self.headers}:
                return self._error(401, "GatedRepo", f"Access to model {repo_id} is restricted. You must have access "
                                                     "to it and be authenticated to access it. Please log in.")
            if name not in repo.files:
                return self._error(404, "EntryNotFound", f"{name} does not exist on main")
            self._send_file(repo_id, repo, name, body)
            return None

        def _send_file(self, repo_id: str, repo: StandInRepo, name: str, body: bool) -> None:
            data = repo.files[name]
            key = f"{repo_id}/{name}"
            etag = hub.etag(name, data)
            if key in hub.faults.wrong_bytes:
                data = bytes(b ^ 0x5A for b in data)
            start = 0
            wanted = self.headers.get("Range", "")
            match = re.fullmatch(r"bytes=(\d+)-", wanted)
            if match:
                start = int(match.group(1))
            payload = data[start:]
            if key in hub.faults.short:
                payload = payload[:-1] if payload else payload
            self.send_response(206 if start else 200)
            self.send_header("X-Repo-Commit", repo.commit)
            self.send_header("ETag", f'"{etag}"')
            if is_lfs(name):
                self.send_header("X-Linked-Etag", f'"{etag}"')
                self.send_header("X-Linked-Size", str(len(data)))
            self.send_header("Accept-Ranges", "bytes")
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if not body:
                return
            with hub._lock:
                hub.served.append((repo_id, name, wanted))
                drop = hub.faults.drop_after.pop(key, None)
            if drop is not None and drop < len(payload):
                self.wfile.write(payload[:drop])
                self.wfile.flush()
                hub.bytes_sent += drop
                self.close_connection = True
                self.connection.shutdown(2)
                return
            self._write(payload)

        def _write(self, payload: bytes) -> None:
            rate = hub.faults.rate
            chunk = max(rate // 10, 1) if rate else len(payload) or 1
            try:
                for start in range(0, len(payload), chunk):
                    self.wfile.write(payload[start:start + chunk])
                    hub.bytes_sent += len(payload[start:start + chunk])
                    if rate:
                        self.wfile.flush()
                        time.sleep(0.1)
            except (BrokenPipeError, ConnectionResetError):     # the client stopped reading: a pause, a cancel
                self.close_connection = True

    return Handler


# -- tiny models with two weight variants ------------------------------------------------------------------

def folder_files(folder: Path, prefix: str = "") -> dict[str, bytes]:
    return {prefix + p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def tiny_pipeline_repo(work: Path, family: str = "sd15", inpaint: bool = True, fp32: bool = True,
                       fp16: bool = True) -> dict[str, bytes]:
    """A diffusers repo as the Hub lists one: fp32 and/or fp16 weights of a tiny model, plus what a model
    repo also carries that the editor never needs (a README, a .ckpt, a safety checker, .bin copies)."""
    import torch

    from tests.model_factory import build_components, make_pipeline, save_diffusers_folder

    components = build_components(family, inpaint)
    plain = save_diffusers_folder(components, work / "plain")
    files = folder_files(plain)
    if not fp32:
        files = {k: v for k, v in files.items() if not k.endswith(".safetensors")}
    if fp16:
        half = work / "half"
        pipe = make_pipeline(components).to(torch.float16)
        pipe.save_pretrained(half, safe_serialization=True, variant="fp16")
        files.update({k: v for k, v in folder_files(half).items() if ".fp16." in k})
    if fp32:
        files["unet/diffusion_pytorch_model.bin"] = b"\x80\x02 a pickle the editor must never fetch"
    files["README.md"] = b"# a tiny model\n"
    files["sd-tiny-inpainting.ckpt"] = b"a single-file checkpoint beside the folders"
    files["safety_checker/config.json"] = b"{}"
    files["safety_checker/model.safetensors"] = b"not fetched"
    return files


def standin_with_tiny_models(work: Path) -> StandInHub:
    """The stand-in serving the tests' repos: a tiny SD 1.5 inpainting model with both variants (also under the
    recommended entry's repo id), one with only fp32 and one with only fp16 weights, a gated repo, TAESD."""
    from tests.test_model_sources import _tiny_taesd

    server = StandInHub()
    server.add(REPO, tiny_pipeline_repo(work / "both"))
    server.add(FP32_ONLY, tiny_pipeline_repo(work / "fp32", fp16=False))
    server.add(FP16_ONLY, tiny_pipeline_repo(work / "fp16", fp32=False))
    server.add(GATED, {"config.json": b"{}", "model.safetensors": b"x" * 100}, gated=True)
    server.add(SD15, server.repos[REPO].files)
    _tiny_taesd(work / "taesd")
    server.add(TAESD, folder_files(work / "taesd"))
    return server.start()


def main() -> None:
    """Serve the tests' tiny models (as the recommended entries' repo ids too) until Ctrl+C, for trying the
    welcome page and `latent-canvas models download` by hand: HF_ENDPOINT=<the printed address>."""
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--rate", type=int, default=0, help="bytes per second per file (0: as fast as it can)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        server = standin_with_tiny_models(Path(work))
        server.faults.rate = args.rate
        print(server.endpoint, flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            server.stop()


if __name__ == "__main__":
    main()
