"""What a model id is: a Hugging Face repo id ("owner/name"), a path, or neither (a built-in engine's id).

Shared by the registry and the backends, which import nothing of each other for it."""
from __future__ import annotations

import re
from pathlib import Path

WEIGHT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".onnx", ".gguf")
_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")


def looks_like_repo_id(text: str) -> bool:
    """True for a Hugging Face repo id such as "owner/name" (not a relative path to a weights file)."""
    return (_REPO_ID.fullmatch(text) is not None and not text.lower().endswith(WEIGHT_SUFFIXES)
            and ".." not in text)


def looks_like_path(text: str) -> bool:
    return ("/" in text or "\\" in text or text.startswith(("~", "."))
            or text.lower().endswith(WEIGHT_SUFFIXES))


def path_exists(text: str) -> bool:
    try:
        return Path(text).expanduser().exists()
    except (OSError, ValueError):
        return False


_SERVER = re.compile(r"(https?://)?(\[[0-9a-fA-F:]+\]|[A-Za-z0-9._-]+)(:\d{1,5})?(/[\w./-]*)?")


def server_model(text: str) -> tuple[str, str] | None:
    """(checkpoint name, server) of a model on a ComfyUI server, written "NAME@SERVER" (SERVER: a URL or
    HOST:PORT, e.g. "sd15.safetensors@127.0.0.1:8188"); None for anything else, a local path with an @ too."""
    name, at, server = text.rpartition("@")
    if not at or not name.strip() or path_exists(text):
        return None
    server = server.strip()
    match = _SERVER.fullmatch(server)
    if match is None or not (match.group(1) or match.group(3) or server == "localhost"):
        return None
    return name.strip(), server
