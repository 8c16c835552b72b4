"""A real ComfyUI server for the integration tests, found through the environment:

    LATENT_CANVAS_COMFY_URL    the address of a running server (http://127.0.0.1:PORT), or
    LATENT_CANVAS_COMFY_START  a start script (../shared/comfyui/start.sh): `START PORT` starts a server on
                               127.0.0.1 and prints COMFY_URL=...; `START --stop PORT` stops it.

With neither, every test here is skipped with that reason printed. Only loopback addresses are used."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from urllib.parse import urlsplit

import pytest

NO_SERVER = ("no ComfyUI server: set LATENT_CANVAS_COMFY_URL to a running server on 127.0.0.1 or "
             "LATENT_CANVAS_COMFY_START to its start script (../shared/comfyui/start.sh)")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class StartedServer:
    def __init__(self, script: str, port: int) -> None:
        self.script, self.port = script, port
        done = subprocess.run([script, str(port)], capture_output=True, text=True, timeout=900,
                              env={**os.environ, "COMFY_EXTRA_ARGS": "--cache-none"})
        if done.returncode != 0:
            raise RuntimeError(f"{script} {port} failed: {done.stderr[-2000:]}")
        values = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
        self.url = values["COMFY_URL"]

    def stop(self) -> None:
        subprocess.run([self.script, "--stop", str(self.port)], capture_output=True, timeout=60)


def _loopback(url: str) -> str:
    host = urlsplit(url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        pytest.fail(f"integration tests use loopback servers only, not {host}")
    return url.rstrip("/")


@pytest.fixture(scope="session")
def comfy_url():
    url = os.environ.get("LATENT_CANVAS_COMFY_URL", "").strip()
    if url:
        yield _loopback(url)
        return
    script = os.environ.get("LATENT_CANVAS_COMFY_START", "").strip()
    if not script:
        print(f"\nskipping: {NO_SERVER}", file=sys.stderr)
        pytest.skip(NO_SERVER)
    server = StartedServer(script, _free_port())
    try:
        yield _loopback(server.url)
    finally:
        server.stop()


@pytest.fixture
def second_server():
    """A second server this test may kill; only with a start script."""
    script = os.environ.get("LATENT_CANVAS_COMFY_START", "").strip()
    if not script:
        pytest.skip("a second server needs LATENT_CANVAS_COMFY_START")
    server = StartedServer(script, _free_port())
    try:
        yield server
    finally:
        server.stop()
