"""Generative Fill, Expand and Restyle on ComfyUI servers: model "CHECKPOINT@SERVER".

The job is planned here exactly as for the local engine (app.engine.job_plan: crop, prefill, windows, colour
drift, composite), so the seams are the same and every pixel outside the feathered mask stays bit-identical;
only each pass's crop (and its control images) travels. A request's variants spread over every server that
has the checkpoint (the model's own server and request.servers), one variant at a time per server, all the
windows of an Expand's variant in order on one server. A server that drops has its variant run again on
another and the user is told; a workflow a server refuses (a missing node, LoRA or ControlNet) is one line.

Stop & keep on a server keeps the variants already finished and stops the running ones: ComfyUI returns no
partial result of an interrupted job.
"""
from __future__ import annotations

import io
import logging
import queue
import threading
import uuid
from pathlib import Path

import cv2
import numpy as np

from app.engine.base import Emit, Engine, format_parameters
from app.engine.comfy.client import ComfyClient, Server, ServerError, ServerGone, decode_preview
from app.engine.comfy.workflow import NEEDED_NODES, PassInputs, build_graph, result_images
from app.engine.control_plan import pass_control_images
from app.engine.diffusion.samplers import find_sampler
from app.engine.events import CancelToken, Cancelled, Variant
from app.engine.job_plan import JobPlan, Pass, composite_pass, plan_job
from app.engine.model_ids import server_model
from app.engine.request import GenerationRequest, JobKind

log = logging.getLogger(__name__)

NATIVE_SIDE = 512             # SD 1.x / 2.x crops run at about 512², SDXL ones ("xl" in the name) at 1024²
NATIVE_SIDE_XL = 1024
MULTIPLE = 64                 # SD latents are 1/8 of the pixels and the UNet halves them three times


class ComfyEngine(Engine):
    def __init__(self, model_id: str) -> None:
        parsed = server_model(model_id)
        if parsed is None:
            raise ServerError(f"{model_id} is no model on a server: write it NAME@HOST:PORT")
        self.id = model_id
        self.checkpoint, self.server_text = parsed
        self.label = f"{self.checkpoint} @ {self.server_text}"

    def generate(self, request: GenerationRequest, job_id: int, emit: Emit,
                 cancel: CancelToken) -> tuple[Variant, ...]:
        if any(control.kind == "inpaint" for control in request.controls):
            raise ServerError("the inpaint ControlNet runs on this machine only: remove the inpaint control "
                              "layer for a server model")
        if request.references:
            raise ServerError("reference images (IP-Adapter) run on this machine only for now: remove them "
                              "for a server model")
        servers = servers_for(self.server_text, request)
        self.report(emit, cancel, job_id, 0, request.sampling.steps,
                    message=f"connecting to {', '.join(server.name for server in servers)}")
        clients = [ComfyClient(server) for server in servers]
        try:
            ready, problems = self._ready(clients, request, cancel)
            if not ready:
                raise ServerError(problems[0])
            for problem in problems:
                self.report(emit, cancel, job_id, 0, request.sampling.steps, message=f"{problem}: not used",
                            notice=True)
            native = NATIVE_SIDE_XL if "xl" in self.checkpoint.lower() else NATIVE_SIDE
            plan = plan_job(request, native, MULTIPLE)
            return _Run(self, request, plan, ready, job_id, emit, cancel).variants()
        finally:
            for client in clients:
                client.close()

    def _ready(self, clients: list[ComfyClient], request: GenerationRequest,
               cancel: CancelToken) -> tuple[list[tuple[ComfyClient, PassInputs]], list[str]]:
        """The clients whose server can run the job, with the names they use; one line per server left out."""
        ready, problems = [], []
        for client in clients:
            cancel.check()
            try:
                ready.append((client, self._inputs(client, request)))
            except ServerError as exc:
                problems.append(str(exc))
        return ready, problems

    def _inputs(self, client: ComfyClient, request: GenerationRequest) -> PassInputs:
        name = client.server.name
        client.require_checkpoint(self.checkpoint)
        for node in NEEDED_NODES:
            if not client.object_info(node):
                raise ServerError(f"{name} lacks the node {node}: update ComfyUI there")
        lora = ""
        if request.style.lora and request.style.effective_lora_weight != 0:
            lora = _server_file(client.loras(), request.style.lora)
            if not lora:
                raise ServerError(f"{name} has no LoRA {Path(request.style.lora).name} (the style "
                                  f"{request.style.name}): copy it into its models/loras")
        controls = []
        if request.controls:
            available = client.controlnets()
            for control in request.controls:
                found = _server_file(available, control.model)
                if not found:
                    raise ServerError(f"{name} has no ControlNet {Path(control.model).name}: copy the file into "
                                      "its models/controlnet")
                controls.append((found, ""))
        inpaint = "inpaint" in self.checkpoint.lower()
        return PassInputs("", 0, self.checkpoint, inpaint, lora, tuple(controls))


def servers_for(model_server: str, request: GenerationRequest) -> list[Server]:
    """The model's server first (with its token when request.servers lists it), then the others, once each."""
    given = [Server.parse(server.url, server.token) for server in request.servers]
    first = Server.parse(model_server)
    first = next((server for server in given if server.url == first.url), first)
    return [first, *[server for server in dict.fromkeys(given) if server.url != first.url]]


def _server_file(available: list[str], local: str) -> str:
    """The server's name for a local model file: the same file name, in any of its subfolders."""
    wanted = Path(str(local).replace("\\", "/")).name.lower()
    for name in available:
        if name.replace("\\", "/").rsplit("/", 1)[-1].lower() == wanted:
            return name
    return ""


def _png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


class _Run:
    """One request's variants over the ready servers: a thread per server, events to the engine's thread."""

    def __init__(self, engine: ComfyEngine, request: GenerationRequest, plan: JobPlan,
                 ready: list[tuple[ComfyClient, PassInputs]], job_id: int, emit: Emit, cancel: CancelToken):
        self.engine, self.request, self.plan, self.ready = engine, request, plan, ready
        self.job_id, self.emit, self.cancel = job_id, emit, cancel
        s = request.sampling
        self.seeds = [(s.seed + index) % 2**32 for index in range(s.variants)]
        self.todo = list(self.seeds)
        self.lock = threading.Condition()
        self.events: queue.Queue = queue.Queue()
        self.results: dict[int, Variant] = {}
        self.steps: dict[int, int] = {}                 # seed -> steps done (all its passes)
        self.running: dict[str, tuple[int, int]] = {}   # server -> (variant number, its steps done): the queue view
        self.total = s.steps * len(plan.passes) * len(self.seeds)
        self.stop = threading.Event()
        self.failure: ServerError | None = None
        self.serving = len(ready)             # servers still taking variants
        self.in_flight = 0                    # variants running now

    def variants(self) -> tuple[Variant, ...]:
        threads = [threading.Thread(target=self._serve, args=(client, inputs), daemon=True,
                                    name=f"comfy {client.server.name}") for client, inputs in self.ready]
        for thread in threads:
            thread.start()
        try:
            while any(thread.is_alive() for thread in threads) or not self.events.empty():
                try:
                    event = self.events.get(timeout=0.1)
                except queue.Empty:
                    self.cancel.check()
                    continue
                self._show(*event)
        except Cancelled:
            self.stop.set()
            for thread in threads:
                thread.join(timeout=10)
            raise
        for thread in threads:
            thread.join()
        if self.failure is not None and not self.results:
            raise self.failure
        if not self.results:
            raise Cancelled()
        return tuple(self.results[seed] for seed in self.seeds if seed in self.results)

    def _show(self, kind: str, *values) -> None:
        if kind == "step":
            seed, done, server = values
            self.steps[seed] = done
            self.running[server] = (self.seeds.index(seed) + 1, done)
            self.engine.report(self.emit, self.cancel, self.job_id, sum(self.steps.values()), self.total,
                               message=self._line())
        elif kind == "preview":
            image, rect = values
            self.engine.report(self.emit, self.cancel, self.job_id, sum(self.steps.values()), self.total, image,
                               rect, message=self._line())
        elif kind == "notice":
            text, server = values
            self.running.pop(server, None)
            self.engine.report(self.emit, self.cancel, self.job_id, sum(self.steps.values()), self.total,
                               message=text, notice=True)

    def _line(self) -> str:
        """The progress line, with what each server runs: "step 5/16 · a:8188 variant 1 3/4 · b:8188 variant 2 2/4"."""
        per_variant = self.total // len(self.seeds)
        return " · ".join([f"step {sum(self.steps.values())}/{self.total}",
                           *(f"{server} variant {number} {done}/{per_variant}"
                             for server, (number, done) in self.running.items())])

    def _cancelled(self) -> bool:
        return self.stop.is_set() or self.cancel.cancelled or self.cancel.finish_requested

    def _serve(self, client: ComfyClient, inputs: PassInputs) -> None:
        """Run variants on one server until none is left; a variant another server dropped is taken up."""
        while not self._cancelled():
            with self.lock:
                while not self.todo and self.in_flight and not self._cancelled():
                    self.lock.wait(0.2)              # a running variant may come back from a dropped server
                if not self.todo or self._cancelled():
                    break
                seed = self.todo.pop(0)
                self.in_flight += 1
            try:
                canvas = self._variant(client, inputs, seed)
            except Cancelled:
                self._finished(None)
                break
            except ServerGone as exc:
                self._dropped(client, seed, exc)
                return
            except ServerError as exc:            # refused as asked: another server would refuse it too
                self._finished(exc)
                return
            except Exception as exc:  # noqa: BLE001 - a bug: one line, never a silent thread death
                log.error("server job failed", exc_info=exc)
                self._finished(ServerError(f"{client.server.name}: {type(exc).__name__}: {exc}"))
                return
            parameters = format_parameters(self.request, seed, f"{self.engine.checkpoint} @ {client.server.name}",
                                           sampler=find_sampler(self.request.sampling.sampler).label)
            with self.lock:
                self.results[seed] = Variant(canvas, seed, parameters)
            self._finished(None)

    def _finished(self, failure: ServerError | None) -> None:
        with self.lock:
            self.in_flight -= 1
            if failure is not None:
                self.failure = self.failure or failure
                self.todo.clear()
                self.stop.set()
            self.lock.notify_all()

    def _dropped(self, client: ComfyClient, seed: int, exc: ServerGone) -> None:
        """The server is gone: its variant goes back to the others, or the job fails when none is left."""
        with self.lock:
            self.in_flight -= 1
            self.serving -= 1
            self.steps[seed] = 0
            if self.serving > 0:
                self.todo.insert(0, seed)
                note = f"{exc}: its variant runs again on another server"
            else:
                self.failure = self.failure or exc
                self.todo.clear()
                note = str(exc)
            self.lock.notify_all()
        self.events.put(("notice", note, client.server.name))
        log.warning("%s", note)

    def _variant(self, client: ComfyClient, inputs: PassInputs, seed: int) -> np.ndarray:
        """One variant: every pass in order on this server, each composited into the variant's canvas."""
        plan, request = self.plan, self.request
        canvas = plan.base
        steps_before = 0
        for p in plan.passes:
            image = self._upload_pass(client, canvas, p)
            controls = tuple((name, self._upload(client, control, "control"))
                             for (name, _), control in zip(inputs.controls, pass_control_images(
                                 request, plan, p, "cpu", canvas)))
            graph = build_graph(request, PassInputs(image, seed, inputs.checkpoint, inputs.inpaint_model,
                                                    inputs.lora, controls))
            rect = p.region.translated(*plan.offset)
            alpha = p.alpha

            def on_step(value: int, total: int, base=steps_before) -> None:
                self.events.put(("step", seed, base + min(value, request.sampling.steps), client.server.name))

            def on_preview(data: bytes) -> None:
                preview = decode_preview(data)
                if preview is not None:
                    size = (preview.shape[1], preview.shape[0])
                    shown = np.rint(255 * cv2.resize(alpha, size, interpolation=cv2.INTER_AREA)).astype(np.uint8)
                    self.events.put(("preview", np.dstack([preview, shown]), rect))

            outputs = client.run(graph, on_step, on_preview, self._cancelled)
            images = result_images(outputs)
            if not images:
                raise ServerError(f"{client.server.name} finished the pass without an image")
            generated = client.fetch_image(images[0], p.size)
            canvas = composite_pass(plan, p, canvas, generated, in_place=canvas is not plan.base)
            steps_before += request.sampling.steps
            self.events.put(("step", seed, steps_before, client.server.name))
        return canvas

    def _upload_pass(self, client: ComfyClient, canvas: np.ndarray, p: Pass) -> str:
        """The pass's crop at its size; for Fill and Expand its alpha is 255 - the hole (LoadImage's mask)."""
        pixels = self.plan.pass_pixels(canvas, p)
        if self.request.kind != JobKind.RESTYLE:
            hole = cv2.resize(p.hole, p.size, interpolation=cv2.INTER_NEAREST)
            pixels = np.dstack([pixels, 255 - hole])
        return self._upload(client, pixels, "pass")

    @staticmethod
    def _upload(client: ComfyClient, pixels: np.ndarray, what: str) -> str:
        return client.upload_image(_png(pixels), f"latent-canvas-{what}-{uuid.uuid4().hex[:12]}.png")

