"""The ComfyUI servers the user added (Models ▸ ComfyUI Servers…), and their tokens. Qt-free.

servers.json (beside models.json) holds the addresses only. A token goes to the OS keyring when the keyring
package is installed and finds a usable backend, else into secrets/server_tokens.json in a folder only the
user can open (0700, the file 0600): never into servers.json, settings, projects or PNG parameters. A
damaged servers.json is set aside and the list starts empty, as the model library does.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from app.core.safe_files import read_json_file, set_aside, write_text_atomically
from app.engine.request import ServerInput

log = logging.getLogger(__name__)

MAX_FILE_BYTES = 1 << 20
MAX_SERVERS = 64
KEYRING_SERVICE = "latent-canvas-comfyui"


class ServerList:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.tokens_path = self.path.parent / "secrets" / "server_tokens.json"
        self.problems: list[str] = []
        self._urls = self._read_urls()

    # -- the list -------------------------------------------------------------------------------------------
    def urls(self) -> list[str]:
        return list(self._urls)

    def servers(self) -> tuple[ServerInput, ...]:
        """Every server with its token: what a job on a server model may spread its variants over."""
        return tuple(ServerInput(url, self.token(url)) for url in self._urls)

    def add(self, url: str, token: str = "") -> str:
        """Add (or update the token of) the server at `url`; returns its normalised address. ServerError
        (one line) for an address that is none."""
        from app.engine.comfy.client import Server

        server = Server.parse(url)
        if server.url not in self._urls:
            if len(self._urls) >= MAX_SERVERS:
                raise ValueError(f"at most {MAX_SERVERS} servers")
            self._urls.append(server.url)
            self._save_urls()
        self._set_token(server.url, token.strip())
        return server.url

    def remove(self, url: str) -> None:
        if url in self._urls:
            self._urls.remove(url)
            self._save_urls()
        self._set_token(url, "")

    # -- tokens ---------------------------------------------------------------------------------------------
    def token(self, url: str) -> str:
        ring = _keyring()
        if ring is not None:
            try:
                return ring.get_password(KEYRING_SERVICE, url) or ""
            except Exception as exc:  # noqa: BLE001 - a locked or broken keyring: no token, said in the log
                log.warning("reading a server token from the keyring failed: %s", exc)
                return ""
        value = self._read_tokens().get(url)
        return value if isinstance(value, str) else ""

    def _set_token(self, url: str, token: str) -> None:
        ring = _keyring()
        if ring is not None:
            try:
                if token:
                    ring.set_password(KEYRING_SERVICE, url, token)
                elif ring.get_password(KEYRING_SERVICE, url):
                    ring.delete_password(KEYRING_SERVICE, url)
                return
            except Exception as exc:  # noqa: BLE001 - fall back to the private file
                log.warning("the keyring refused the server token (%s): kept in %s", exc, self.tokens_path)
        tokens = self._read_tokens()
        if (tokens.get(url) or "") == token:
            return
        if token:
            tokens[url] = token
        else:
            tokens.pop(url, None)
        folder = self.tokens_path.parent
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(folder, 0o700)              # only the user can open it: its temporary files are private too
        write_text_atomically(self.tokens_path, json.dumps(tokens, indent=1))
        os.chmod(self.tokens_path, 0o600)

    def _read_tokens(self) -> dict:
        found = read_json_file(self.tokens_path, MAX_FILE_BYTES)
        data = found.data if isinstance(found.data, dict) else {}
        return {key: value for key, value in data.items() if isinstance(key, str) and isinstance(value, str)}

    # -- servers.json ---------------------------------------------------------------------------------------
    def _read_urls(self) -> list[str]:
        from app.engine.comfy.client import Server, ServerError

        found = read_json_file(self.path, MAX_FILE_BYTES)
        if found.missing:
            return []
        if found.unreadable:
            self.problems.append(f"{self.path.name} could not be read ({found.unreadable}): no servers listed")
            return []
        items = found.data.get("servers") if isinstance(found.data, dict) else None
        if not isinstance(items, list):
            self._set_aside(found.damaged or "it holds no server list")
            return []
        urls = []
        for item in items[:MAX_SERVERS]:
            try:
                url = Server.parse(item.get("url", "") if isinstance(item, dict) else "").url
            except ServerError:
                self.problems.append(f"{self.path.name}: a server entry that is no address was left out")
                continue
            if url not in urls:
                urls.append(url)
        return urls

    def _set_aside(self, why: str) -> None:
        try:
            kept = set_aside(self.path)
            self.problems.append(f"{self.path.name} was unusable ({why}); kept as {kept.name}")
        except OSError as exc:
            self.problems.append(f"{self.path.name} was unusable ({why}) and could not be set aside ({exc})")

    def _save_urls(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomically(self.path, json.dumps({"servers": [{"url": url} for url in self._urls]}, indent=1))


def _keyring():
    """The keyring module when it is installed and has a usable backend, else None."""
    try:
        import keyring
        from keyring.backends import fail
    except Exception:  # noqa: BLE001 - not installed, or broken on import
        return None
    try:
        backend = keyring.get_keyring()
        if isinstance(backend, fail.Keyring) or getattr(backend, "priority", 1) <= 0:
            return None
    except Exception:  # noqa: BLE001
        return None
    return keyring
