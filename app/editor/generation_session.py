"""Runs Fill, Expand and Restyle jobs for the editor: request in, previews on the canvas, variants in the strip.

It sits between the widgets and the EngineController so the main window only wires signals.
"""
from __future__ import annotations

from dataclasses import replace

from PySide6.QtCore import QObject, Signal

from app.core import imageops
from app.core.geometry import Rect
from app.core.styles import Style
from app.editor.control_jobs import inpaint_control, layer_controls, structure_control
from app.editor.editor_state import EditorState
from app.engine.events import EngineEvent, EventKind, Variant
from app.engine.model_ids import server_model
from app.engine.registry import EngineRegistry
from app.engine.request import GenerationRequest
from app.engine.worker import EngineController
from app.editor.job_builder import JobSettings, build_expand_request, build_fill_request, build_restyle_request


class GenerationSession(QObject):
    busy_changed = Signal(bool)
    progress = Signal(int, int)              # step, total
    status = Signal(str, bool)               # text, is_error
    variants_ready = Signal(object)          # tuple[Variant, ...]

    def __init__(self, state: EditorState, styles: list[Style], registry: EngineRegistry | None = None,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.styles = styles
        self.controller = EngineController(registry, parent=self)
        self.controller.event.connect(self._on_event)
        self.request: GenerationRequest | None = None      # the job running or whose variants are shown
        self._held = None                  # (document, image) the request shares until its variants are gone
        self._focus: Rect | None = None    # what the variants' thumbnails show (focus())
        self.variants: tuple[Variant, ...] = ()
        self._busy = False
        self._notices: list[str] = []          # the running job's notices (EngineEvent.notice)
        self.library = None                # a ModelLibrary: its ControlNets (Keep structure, inpaint ControlNet)
        self.servers = None                # a ServerList: the servers a server model's variants spread over
        self.blocked = None                # request -> why it may not start now ("" = it may): a training's GPU

    @property
    def busy(self) -> bool:
        return self._busy

    def fill(self, settings: JobSettings) -> bool:
        doc = self.state.document
        if doc is None or not doc.has_mask():
            self.status.emit("Paint a mask over the area to fill first.", True)
            return False
        return self._start(lambda: build_fill_request(self._hold(doc), doc.shared_mask(),
                                                      self._with_controls(settings, doc, doc.image_rect), self.styles))

    def expand(self, settings: JobSettings) -> bool:
        doc = self.state.document
        if doc is None or not doc.is_extended():
            self.status.emit("Drag a canvas edge outward (or use the Canvas menu) first.", True)
            return False
        return self._start(lambda: build_expand_request(self._hold(doc), doc.canvas,
                                                        self._with_controls(settings, doc, doc.canvas), self.styles))

    def restyle(self, settings: JobSettings) -> bool:
        """Repaint the whole image (not the extended canvas) in the chosen style at the restyle strength."""
        doc = self.state.document
        if doc is None:
            self.status.emit("Open an image to restyle first.", True)
            return False
        return self._start(lambda: build_restyle_request(
            self._hold(doc), self._with_controls(settings, doc, doc.image_rect, restyle=True), self.styles))

    def _with_controls(self, settings: JobSettings, doc, output: Rect, restyle: bool = False) -> JobSettings:
        """`settings` with the document's control layers, and the library's ControlNets that apply: Keep
        structure for a Restyle, the inpaint ControlNet for a Fill or Expand with a base SD 1.x model; for a
        model on a ComfyUI server, every server added (with its token)."""
        controls = list(layer_controls(doc, output, restyle))
        entry = self.library.find(settings.model) if self.library is not None else None
        controlnets = self.library.controlnets() if self.library is not None else []
        family = entry.family if entry is not None else ""
        if restyle and settings.keep_structure and not controls:
            # A model of unknown family (a repo id) takes any canny ControlNet; the engine says if it is foreign.
            structure = structure_control(controlnets, family or None)
            if structure is None:
                raise ValueError("Keep structure needs a canny ControlNet for this model's family: add one in "
                                 "Models > Add ControlNet…, or switch Keep structure off")
            controls.append(structure)
        if not restyle and family and not any(c.kind == "inpaint" for c in controls):
            inpaint = inpaint_control(controlnets, family, "inpainting" in entry.label.lower())
            if inpaint is not None:
                controls.append(inpaint)
        servers = self.servers.servers() if self.servers is not None and server_model(settings.model) else ()
        return replace(settings, controls=tuple(controls), servers=servers)

    def _hold(self, doc):
        self._release()
        image = doc.shared_image()
        self._held = (doc, image)
        return image

    def _release(self) -> None:
        """The job's image is no longer needed (its variants were accepted or discarded, or it failed)."""
        if self._held is not None:
            doc, image = self._held
            self._held = None
            doc.release_image(image)

    def _start(self, build) -> bool:
        self.discard()
        try:
            request = build()
        except ValueError as exc:   # includes StyleError and bad settings
            self._release()
            self.status.emit(str(exc), True)
            return False
        reason = self.blocked(request) if self.blocked is not None else ""
        if reason:
            self._release()
            self.status.emit(reason, True)
            return False
        self.request = request
        self._notices = []
        self.controller.start(request)
        self._focus = self._focus_of(request)
        self._set_busy(True)
        self.progress.emit(0, request.sampling.steps)
        self.status.emit(f"{request.kind.value.capitalize()} started…", False)
        return True

    def focus(self) -> Rect | None:
        """Where the shown variants differ from the image, in the variants' pixels: the painted mask with
        its feather and some context around it (a Fill), None for everything (Expand, Restyle). Worked out
        when the job starts, so the result's arrival does not pay for it."""
        return self._focus

    @staticmethod
    def _focus_of(request: GenerationRequest) -> Rect | None:
        if request.mask is not None and request.kind.value == "fill":
            box = imageops.mask_bounds(request.mask)
            if box is None:
                return None
            margin = request.mask_options.feather + request.mask_options.grow + max(16, max(box.w, box.h) // 4)
            return box.grown(margin).intersect(request.image_rect)
        return None

    def cancel(self) -> None:
        if self._busy:
            self.controller.cancel()         # emits CANCELLED before it returns: the UI is idle at once

    def finish_early(self) -> None:
        """Stop after the current step and keep what it predicts as the result (Stop & keep)."""
        if self._busy:
            self.controller.finish()
            if self.request is not None and server_model(self.request.model):
                self.status.emit("Stopping: a server returns nothing of an interrupted variant, so the variants "
                                 "already finished are kept and the running ones stop.", False)
            else:
                self.status.emit("Stopping after this step…", False)

    def select(self, index: int) -> None:
        if self.request is not None and 0 <= index < len(self.variants):
            self.state.set_candidate(self.variants[index].image, self.request.output_rect)

    def accept(self, index: int, keep_all: bool = False) -> bool:
        """The chosen variant as a new generative layer; with keep_all the others stay in it to switch to."""
        if self.request is None or not 0 <= index < len(self.variants):
            return False
        variant = self.variants[index]
        # Let go of the job's image first: Accept reads it before it changes anything, and the composite is
        # then updated in place rather than copied (14 ms at 4096²).
        self._release()
        if not self.state.accept(self.request, self.variants, index, keep_all):
            self.status.emit("The image changed size since this job started: its result no longer fits. "
                             "Discard it, or undo back to that size.", True)
            return False
        count = len(self.variants)
        self._clear_results()
        kept = f"; all {count} variants kept in the layer" if keep_all and count > 1 else ""
        self.status.emit(f"Accepted variant {index + 1} (seed {variant.seed}) as a new layer{kept}.", False)
        return True

    def discard(self) -> None:
        had = bool(self.variants)
        self._clear_results()
        self.state.set_candidate(None, None)
        if had:
            self.status.emit("Discarded; the image is as it was.", False)

    def shutdown(self) -> None:
        self.controller.shutdown()

    def _clear_results(self) -> None:
        self.variants = ()
        self._release()
        self.variants_ready.emit(())

    def _set_busy(self, busy: bool) -> None:
        if busy != self._busy:
            self._busy = busy
            self.busy_changed.emit(busy)

    def _on_event(self, event: EngineEvent) -> None:
        if event.kind == EventKind.PROGRESS:
            self.progress.emit(event.step, event.total)
            if event.preview is not None and event.preview_rect is not None:
                self.state.set_preview(event.preview, event.preview_rect)
            if event.notice:
                self._notices.append(event.message)
                self.status.emit(event.message, True)
            elif event.message and not self._notices:     # a notice stays until the job ends
                self.status.emit(event.message, False)
            return
        self.state.set_preview(None, None)
        self._set_busy(False)
        if event.kind == EventKind.RESULT:
            self.variants = event.variants
            self.variants_ready.emit(event.variants)
            count = len(event.variants)
            notes = "".join(f" {note}." for note in self._notices)
            self.status.emit(f"{count} variant{'s' if count != 1 else ''} ready: pick one, then Accept "
                             f"or Discard.{notes}", bool(notes))
        elif event.kind == EventKind.CANCELLED:
            self._release()
            self.progress.emit(0, 1)
            self.status.emit("Cancelled; the image is as it was.", False)
        else:
            self._release()
            self.progress.emit(0, 1)
            self.status.emit(event.message, True)
