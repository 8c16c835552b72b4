"""One ComfyUI server over its HTTP and websocket API (httpx, websockets' sync client), Qt-free.

Everything a server sends is untrusted: JSON is read within MAX_JSON_BYTES and checked before use, images
within MAX_IMAGE_BYTES and decoded by our own bounded reader (app.core.imageio) only when their header
says the size we asked for, previews only up to MAX_PREVIEW_SIDE. Every call has a timeout; a job is
followed on the websocket, reconnecting with backoff, and polled in /history when the socket is quiet.
Problems are ServerError (an EngineError): one line naming the server.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import struct
import time
import uuid
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlsplit

import numpy as np

from app.engine.events import Cancelled, EngineError, first_line

log = logging.getLogger(__name__)

MAX_JSON_BYTES = 64 << 20          # /object_info of a server with many custom nodes is a few MB
MAX_IMAGE_BYTES = 256 << 20
MAX_PREVIEW_SIDE = 2048
CONNECT_SECONDS = 5.0
CALL_SECONDS = 60.0
QUIET_SECONDS = 15.0               # no websocket message this long: look in /history
RECORD_SECONDS = 10.0             # a finished job's /history record may follow its last message by a moment
RECONNECTS = 4                     # websocket reconnects per job (backoff 0.5, 1, 2, 4 s)
PREVIEW_EVENT = 1                  # binary frame: u32 event, u32 format (1 JPEG, 2 PNG), the image


class ServerError(EngineError):
    """A server problem the user can act on, in one line."""


class ServerGone(ServerError):
    """The server cannot be reached, stopped answering or dropped the job: another server may run it."""


@dataclass(frozen=True)
class Server:
    url: str                        # http(s)://host[:port][/prefix], no trailing slash
    token: str = ""                 # sent as "Authorization: Bearer <token>" (or as given if it has a scheme)

    @staticmethod
    def parse(text: str, token: str = "") -> "Server":
        """A Server from what a user typed ("127.0.0.1:8188", "https://gpu.example/comfy"); ServerError
        when it is no http(s) address."""
        raw = str(text).strip()
        if raw and "://" not in raw:
            raw = "http://" + raw
        parts = urlsplit(raw)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ServerError(f"{str(text)[:100]!r} is no server address: give http://HOST:PORT or https://HOST")
        if parts.username or parts.password or parts.query or parts.fragment:
            raise ServerError(f"give the server as http(s)://HOST[:PORT][/path], without user, query or #: "
                              f"{str(text)[:100]}")
        try:
            parts.port
        except ValueError:
            raise ServerError(f"{str(text)[:100]}: the port is no number from 1 to 65535") from None
        return Server(f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}", token.strip())

    @property
    def name(self) -> str:
        """host:port, how the model picker and messages name the server."""
        parts = urlsplit(self.url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return f"{parts.hostname}:{port}{parts.path}"

    @property
    def headers(self) -> dict[str, str]:
        if not self.token:
            return {}
        return {"Authorization": self.token if " " in self.token else f"Bearer {self.token}"}


class ComfyClient:
    """Calls to one server. Not thread-safe: one job at a time per client."""

    def __init__(self, server: Server, client_id: str | None = None) -> None:
        import httpx

        self.server = server
        self.client_id = client_id or uuid.uuid4().hex
        self._http = httpx.Client(base_url=server.url, headers=server.headers, follow_redirects=False,
                                  trust_env=False, timeout=httpx.Timeout(CALL_SECONDS, connect=CONNECT_SECONDS))

    def close(self) -> None:
        self._http.close()

    # -- plain calls --------------------------------------------------------------------------------------
    def _request(self, method: str, path: str, limit: int = MAX_JSON_BYTES, **kwargs) -> tuple[int, bytes]:
        import httpx

        try:
            with self._http.stream(method, path, **kwargs) as response:
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > limit:
                        raise ServerError(f"{self.server.name} sent more than {limit >> 20} MB for {path}: refused")
                return response.status_code, bytes(body)
        except httpx.TimeoutException:
            raise ServerGone(f"{self.server.name} did not answer {path} in time") from None
        except httpx.HTTPError as exc:
            raise ServerGone(f"cannot reach the ComfyUI server at {self.server.url} ({first_line(exc)})") from None

    def _json(self, method: str, path: str, **kwargs):
        status, body = self._request(method, path, **kwargs)
        if status in (401, 403):
            raise ServerError(f"{self.server.name} refused the request (HTTP {status}): check its token")
        if status != 200:
            raise ServerError(f"{self.server.name} answered {path} with HTTP {status}{_error_text(body)}")
        try:
            return json.loads(body)
        except ValueError:
            raise ServerError(f"{self.server.name} sent no JSON for {path}: is it a ComfyUI server?") from None

    def system_stats(self) -> dict:
        stats = self._json("GET", "/system_stats")
        if not isinstance(stats, dict) or not isinstance(stats.get("system"), dict):
            raise ServerError(f"{self.server.name} is no ComfyUI server (its /system_stats has no system)")
        return stats

    def object_info(self, node: str) -> dict:
        info = self._json("GET", f"/object_info/{node}")
        if not isinstance(info, dict):
            raise ServerError(f"{self.server.name} sent an unusable /object_info/{node}")
        return info.get(node) if isinstance(info.get(node), dict) else {}

    def choices(self, node: str, name: str) -> list[str] | None:
        """The values a node's list input accepts (e.g. the checkpoints), None when the server lacks the node."""
        info = self.object_info(node)
        if not info:
            return None
        spec = (info.get("input") or {}).get("required", {}).get(name) if isinstance(info.get("input"), dict) \
            else None
        values = spec[0] if isinstance(spec, list) and spec else None
        if isinstance(values, list):
            return [value for value in values if isinstance(value, str)]
        if isinstance(values, str) and isinstance(spec, list) and len(spec) > 1 and isinstance(spec[1], dict):
            options = spec[1].get("options")             # the newer "COMBO" form
            return [value for value in options if isinstance(value, str)] if isinstance(options, list) else []
        return []

    def checkpoints(self) -> list[str]:
        return self.choices("CheckpointLoaderSimple", "ckpt_name") or []

    def require_checkpoint(self, name: str) -> None:
        """ServerError naming what the server has, unless it lists the checkpoint `name`."""
        checkpoints = self.checkpoints()
        if name not in checkpoints:
            listed = ", ".join(checkpoints[:5]) + (" …" if len(checkpoints) > 5 else "") or "none"
            raise ServerError(f"{self.server.name} has no checkpoint {name} (it has: {listed})")

    def loras(self) -> list[str]:
        return self.choices("LoraLoader", "lora_name") or []

    def controlnets(self) -> list[str]:
        return self.choices("ControlNetLoader", "control_net_name") or []

    def upload_image(self, png: bytes, name: str) -> str:
        """Upload a PNG into the server's input folder; the name a LoadImage node takes."""
        answer = self._json("POST", "/upload/image", files={"image": (name, png, "image/png")},
                            data={"overwrite": "true", "type": "input"})
        uploaded = answer.get("name") if isinstance(answer, dict) else None
        if not isinstance(uploaded, str) or not uploaded:
            raise ServerError(f"{self.server.name} did not take the uploaded image")
        subfolder = answer.get("subfolder")
        return f"{subfolder}/{uploaded}" if isinstance(subfolder, str) and subfolder else uploaded

    def queue_prompt(self, graph: dict) -> str:
        status, body = self._request("POST", "/prompt", json={"prompt": graph, "client_id": self.client_id})
        if status == 400:
            raise ServerError(f"{self.server.name} cannot run it: {_refusal(body)}")
        if status != 200:
            raise ServerError(f"{self.server.name} answered /prompt with HTTP {status}{_error_text(body)}")
        try:
            prompt_id = json.loads(body).get("prompt_id")
        except (ValueError, AttributeError):
            prompt_id = None
        if not isinstance(prompt_id, str) or not prompt_id:
            raise ServerError(f"{self.server.name} queued nothing (no prompt_id in its answer)")
        return prompt_id

    def history(self, prompt_id: str) -> dict | None:
        """The finished job's record, None while it is not finished."""
        record = self._json("GET", f"/history/{prompt_id}")
        entry = record.get(prompt_id) if isinstance(record, dict) else None
        return entry if isinstance(entry, dict) else None

    def cancel(self, prompt_id: str) -> None:
        """Take the job off the queue if it waits, interrupt it if it runs; errors are only logged."""
        for path, body in (("/queue", {"delete": [prompt_id]}), ("/interrupt", {"prompt_id": prompt_id})):
            try:
                self._request("POST", path, json=body)
            except ServerError as exc:
                log.info("cancelling on %s: %s", self.server.name, exc)

    def fetch_image(self, ref: dict, size: tuple[int, int]) -> np.ndarray:
        """An output image (a /history images entry) as RGB uint8; refused unless it is `size` (w, h)."""
        from PIL import Image

        from app.core.imageio import ImageLoadError, load_image_bytes

        params = {key: ref.get(key) for key in ("filename", "subfolder", "type")}
        if not isinstance(params["filename"], str) or not all(isinstance(v, str) for v in params.values()):
            raise ServerError(f"{self.server.name} named its result oddly: refused")
        status, body = self._request("GET", "/view", limit=MAX_IMAGE_BYTES, params=params)
        if status != 200:
            raise ServerError(f"{self.server.name} answered /view with HTTP {status}")
        try:
            with Image.open(io.BytesIO(body)) as header:
                found = header.size
        except Exception:  # noqa: BLE001 - anything Pillow cannot identify is no image
            raise ServerError(f"{self.server.name} sent a result that is no image") from None
        if found != tuple(size):
            raise ServerError(f"{self.server.name} sent a {found[0]}x{found[1]} result for a {size[0]}x{size[1]} "
                              "pass: refused")
        try:
            pixels = load_image_bytes(body, f"the result from {self.server.name}").pixels
        except ImageLoadError as exc:
            raise ServerError(str(exc)) from None
        return np.ascontiguousarray(pixels[..., :3]) if pixels.ndim == 3 else np.dstack([pixels] * 3)

    # -- following a job ----------------------------------------------------------------------------------
    def run(self, graph: dict, on_step: Callable[[int, int], None], on_preview: Callable[[bytes], None],
            cancelled: Callable[[], bool]) -> dict:
        """Queue `graph` and follow it to the end: on_step(step, total) per step, on_preview(image bytes)
        per preview frame. Returns the job's /history outputs. Cancelled when cancelled() turns true (the
        job is removed or interrupted on the server), ServerError for a failed job or a server gone."""
        with contextlib.ExitStack() as sockets:
            socket = sockets.enter_context(self._connect())
            prompt_id = self.queue_prompt(graph)
            return self._follow(sockets, socket, prompt_id, on_step, on_preview, cancelled)

    def _connect(self, attempts: int = 1):
        from websockets.sync.client import connect

        scheme = "wss" if self.server.url.startswith("https") else "ws"
        url = f"{scheme}{self.server.url[self.server.url.index(':'):]}/ws?clientId={self.client_id}"
        delay = 0.5
        for attempt in range(attempts):
            try:
                return connect(url, additional_headers=self.server.headers, open_timeout=CONNECT_SECONDS,
                               close_timeout=2, max_size=MAX_IMAGE_BYTES // 16, proxy=None)
            except Exception as exc:  # noqa: BLE001 - refused, reset, handshake failed, timed out
                if attempt + 1 == attempts:
                    raise ServerGone(f"cannot open the progress channel of {self.server.name} "
                                     f"({first_line(exc)})") from None
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    def _follow(self, sockets: contextlib.ExitStack, socket, prompt_id: str, on_step, on_preview,
                cancelled) -> dict:
        from websockets.exceptions import ConnectionClosed

        reconnects = 0
        mine = False                # the progress frames that follow belong to this job
        quiet_since = time.monotonic()
        while True:
            if cancelled():
                self.cancel(prompt_id)
                raise Cancelled()
            try:
                message = socket.recv(timeout=0.25)
            except TimeoutError:
                if time.monotonic() - quiet_since >= QUIET_SECONDS:
                    quiet_since = time.monotonic()
                    done = self.history(prompt_id)
                    if done is not None:
                        return self._outputs(done, prompt_id)
                continue
            except ConnectionClosed:
                reconnects += 1
                if reconnects > RECONNECTS:
                    raise ServerGone(f"{self.server.name} dropped the connection during the job") from None
                done = self._history_or_none(prompt_id)
                if done is not None:
                    return self._outputs(done, prompt_id)
                socket = sockets.enter_context(self._connect(attempts=3))
                continue
            quiet_since = time.monotonic()
            if isinstance(message, bytes):
                if mine and len(message) > 8 and struct.unpack(">I", message[:4])[0] == PREVIEW_EVENT:
                    on_preview(message[8:])
                continue
            event = _event(message)
            if event is None:
                continue
            kind, data = event
            if data.get("prompt_id") not in (None, prompt_id):
                mine = False
                continue
            if kind == "progress" and data.get("prompt_id", prompt_id) == prompt_id:
                value, total = data.get("value"), data.get("max")
                if isinstance(value, int) and isinstance(total, int) and 0 <= value <= total <= 10_000:
                    mine = True
                    on_step(value, total)
            elif kind == "execution_error":
                raise ServerError(f"{self.server.name} failed in {str(data.get('node_type'))[:60]}: "
                                  f"{first_line(str(data.get('exception_message', 'no message')))}")
            elif kind == "execution_interrupted":
                raise ServerGone(f"the job was interrupted on {self.server.name} (by another client?)")
            elif kind == "execution_success" or (kind == "executing" and data.get("node") is None
                                                  and data.get("prompt_id") == prompt_id):
                return self._outputs(self._finished_record(prompt_id), prompt_id)

    def _finished_record(self, prompt_id: str) -> dict:
        """The record of a job the server says is done: it files the record just after saying so."""
        deadline = time.monotonic() + RECORD_SECONDS
        while True:
            done = self.history(prompt_id)
            if done is not None:
                return done
            if time.monotonic() > deadline:
                raise ServerError(f"{self.server.name} finished the job but keeps no record of it")
            time.sleep(0.05)

    def _history_or_none(self, prompt_id: str) -> dict | None:
        try:
            return self.history(prompt_id)
        except ServerError:
            return None

    def _outputs(self, record: dict, prompt_id: str) -> dict:
        status = record.get("status")
        if isinstance(status, dict) and status.get("status_str") == "error":
            raise ServerError(f"{self.server.name} could not run the job ({_status_error(status)})")
        outputs = record.get("outputs")
        if not isinstance(outputs, dict):
            raise ServerError(f"{self.server.name} kept no outputs of the job")
        return outputs


def decode_preview(data: bytes) -> np.ndarray | None:
    """A preview frame's image as RGB uint8, None when it is no small JPEG/PNG."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format not in ("JPEG", "PNG") or max(image.size) > MAX_PREVIEW_SIDE:
                return None
            return np.asarray(image.convert("RGB"))
    except Exception:  # noqa: BLE001 - a damaged preview is skipped, not fatal
        return None


def _event(message: str) -> tuple[str, dict] | None:
    try:
        event = json.loads(message)
    except ValueError:
        return None
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        return None
    data = event.get("data")
    return event["type"], data if isinstance(data, dict) else {}


def _refusal(body: bytes) -> str:
    """A /prompt HTTP 400 in one line: the first node error's message and details, else the error's."""
    try:
        answer = json.loads(body)
    except ValueError:
        return "the workflow was refused"
    if not isinstance(answer, dict):
        return "the workflow was refused"
    for node in (answer.get("node_errors") or {}).values() if isinstance(answer.get("node_errors"), dict) else ():
        errors = node.get("errors") if isinstance(node, dict) else None
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            first = errors[0]
            detail = first.get("details") or first.get("message") or ""
            if first.get("type") == "value_not_in_list":
                return f"it has no {first_line(str(detail))}"
            return first_line(f"{first.get('message', '')}: {detail}")
    error = answer.get("error")
    if isinstance(error, dict):
        return first_line(str(error.get("message") or error.get("type") or "the workflow was refused"))
    return "the workflow was refused"


def _status_error(status: dict) -> str:
    for message in status.get("messages") or ():
        if isinstance(message, list) and len(message) == 2 and message[0] == "execution_error" \
                and isinstance(message[1], dict):
            return first_line(str(message[1].get("exception_message", "an error")))
    return "an error"


def _error_text(body: bytes) -> str:
    text = body[:300].decode("utf-8", "replace").strip()
    return f": {first_line(text)}" if text else ""
