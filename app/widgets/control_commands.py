"""What the editor does with control layers beyond showing their settings: adding one of a kind with a fitting
ControlNet, adding a ControlNet to the library (checked off the UI thread), importing a drawing or a map into
a layer, clearing it, picking a depth model, the pen's strokes on a layer, and the control image a ControlNet
will see (the Control panel's preview).

The functions that run on worker threads are module functions taking plain values: never a dialog's or the
window's bound method, whose last reference could then be that thread's (see app/editor/background.py).
"""
from __future__ import annotations

import logging
import weakref
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import QFileDialog, QWidget

from app.core.control_layers import DRAWN_KINDS, KIND_LABELS, MADE_FROM_THE_IMAGE, ControlSettings, \
    empty_control_pixels, placed_control_image
from app.core.geometry import Rect
from app.core.imageio import ImageLoadError, load_image
from app.core.layers import Layer
from app.editor.background import BackgroundCall
from app.editor.model_library import ModelEntry, describe_controlnet
from app.engine.events import EngineError
from app.widgets import canvas_tools as tools
from app.widgets.add_model_dialog import AddModelDialog, run_check

if TYPE_CHECKING:
    from app.widgets.main_window import MainWindow

log = logging.getLogger(__name__)
CONTROLNET_FILTER = "ControlNet files (*.safetensors);;All files (*)"
IMAGE_FILTER = "Images (*.png *.jpg *.jpeg *.webp *.bmp *.tif *.tiff);;All files (*)"
STROKE_LABEL = "Draw on control layer"
FAMILY_NAMES = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL"}


def controlnet_choice(controlnets: list[ModelEntry], family: str, kind: str) -> str:
    """The ControlNet a new `kind` layer starts with: the first made for `kind` of the model's `family`, else
    the first made for `kind` of any family, else "" (the user picks one)."""
    made_for = [entry for entry in controlnets if entry.control == kind]
    same_family = [entry for entry in made_for if entry.family == family] if family else []
    chosen = (same_family or made_for or [None])[0]
    return chosen.location if chosen is not None else ""


def fitted(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """An imported image at `width` x `height` (stretched when its size differs), RGB or RGBA as it was."""
    if pixels.shape[1] == width and pixels.shape[0] == height:
        return pixels
    shrinking = pixels.shape[1] * pixels.shape[0] > width * height
    return cv2.resize(np.ascontiguousarray(pixels), (width, height),
                      interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def has_drawing(pixels: np.ndarray) -> bool:
    return bool(pixels[..., 3].any()) if pixels.shape[2] == 4 else True


# -- the pen on a control layer -----------------------------------------------------------------------------

class ControlStroke:
    """A pen stroke on a control layer: painted with the mask brush into a working copy of the layer's alpha,
    in the layer's own coordinates, and handed back as the layer's new pixels, white where the pen went (its
    coverage is the alpha); the eraser lowers the alpha and leaves the colour."""

    def __init__(self, layer: Layer) -> None:
        self.layer_id = layer.id
        self.x, self.y = layer.x, layer.y
        self.before = layer.pixels
        if layer.has_alpha:
            self.alpha = np.array(layer.pixels[..., 3], order="C")
        else:
            self.alpha = np.full(layer.pixels.shape[:2], 255, np.uint8)
        self.dirty = tools.EMPTY                  # in the layer's coordinates

    @staticmethod
    def on_layer(doc, layer_id: int) -> ControlStroke | None:
        """A stroke on the layer when it is a control layer that is drawn on (not made from the image)."""
        try:
            layer = doc.layers.get(layer_id)
        except KeyError:
            return None
        if layer.control is None or not layer.control.uses_layer_pixels:
            return None
        return ControlStroke(layer)

    def paint(self, a: tuple[float, float], b: tuple[float, float], diameter: float, softness: float,
              erase: bool) -> Rect:
        """Paint (or erase) from a to b, both in document coordinates; what changed, in document coordinates."""
        dirty = tools.paint_segment(self.alpha, (a[0] - self.x, a[1] - self.y), (b[0] - self.x, b[1] - self.y),
                                    diameter, softness, erase)
        if dirty.is_empty():
            return dirty
        self.dirty = self.dirty.union(dirty)
        return Rect(dirty.x + self.x, dirty.y + self.y, dirty.w, dirty.h)

    def pixels_in(self, rect: Rect) -> np.ndarray:
        """The layer as the stroke has it so far over `rect` (layer coordinates), RGBA."""
        rows, cols = rect.slices()
        before = self.before[rows, cols]
        alpha = self.alpha[rows, cols]
        out = np.empty((rect.h, rect.w, 4), np.uint8)
        old = before[..., 3] if before.shape[2] == 4 else np.full(alpha.shape, 255, np.uint8)
        out[..., :3] = np.where((alpha > old)[..., None], np.uint8(255), before[..., :3])
        out[..., 3] = alpha
        return out

    def result(self) -> np.ndarray | None:
        """The layer's new pixels, None when the stroke changed nothing."""
        if self.dirty.is_empty():
            return None
        rows, cols = self.dirty.slices()
        old = self.before[rows, cols, 3] if self.before.shape[2] == 4 else None
        if old is not None and np.array_equal(old, self.alpha[rows, cols]):
            return None
        if old is None and bool((self.alpha[rows, cols] == 255).all()):
            return None
        if self.before.shape[2] == 4:
            pixels = np.array(self.before, order="C")
        else:
            pixels = np.dstack([self.before, np.full(self.alpha.shape, 255, np.uint8)])
        pixels[rows, cols] = self.pixels_in(self.dirty)
        return pixels


# -- the preview: what the ControlNet will see --------------------------------------------------------------

def preview_note(settings: ControlSettings) -> str:
    """Why no preview can be shown for these settings ("" when one can)."""
    if settings.kind == "inpaint":
        return "An inpaint control is made from the mask when you Fill or Expand: there is nothing to preview."
    if settings.kind in ("depth", "normal") and not settings.uses_layer_pixels and not settings.annotator:
        return f"Pick a depth model to see the {settings.label.lower()} it makes, or import a map."
    if settings.kind == "pose" and not settings.uses_layer_pixels and not settings.annotator:
        return "Pick a pose model (VitPose) to see the skeletons it finds, or import a pose image."
    return ""


def control_preview(settings: ControlSettings, image: np.ndarray, layer: np.ndarray, device: str = "cpu") \
        -> np.ndarray | None:
    """The control image these settings give over the whole image (H x W x 3 uint8), as a job makes it: from
    `layer` (the control layer's pixels placed on the image) or from `image` (the composite). None when no
    preview can be made (preview_note says why). Loads a depth or pose model: for a worker thread."""
    from app.engine import annotators

    if preview_note(settings):
        return None
    if settings.uses_layer_pixels:
        return annotators.make_control_image(settings.kind, layer, blur=settings.blur, imported=True)
    from app.engine import preload
    from app.engine.control_plan import load_annotator

    if settings.kind in ("depth", "normal", "pose"):
        preload.wait_if_started()
    annotator = load_annotator(settings.kind, settings.annotator, settings.detector, device)
    return annotators.make_control_image(settings.kind, image, low=settings.low, high=settings.high,
                                         blur=settings.blur, annotator=annotator)


def preview_inputs(doc, layer: Layer) -> tuple[np.ndarray, np.ndarray]:
    """(the composite, the layer placed on the image), the inputs of control_preview."""
    image = doc.image
    placed = placed_control_image(layer.pixels, layer.x, layer.y, doc.image_rect)
    return image, placed


def _make_preview(settings: ControlSettings, image: np.ndarray, layer: np.ndarray, generation: int) \
        -> tuple[int, np.ndarray | None, str]:
    """On the worker thread: (generation, the preview or None, "" or the one line that says why it failed)."""
    try:
        return generation, control_preview(settings, image, layer), ""
    except EngineError as exc:
        return generation, None, " ".join(str(exc).split())
    except Exception as exc:  # noqa: BLE001 - a bug must not take the window down: one line, logged
        log.error("making a control preview failed", exc_info=exc)
        line = " ".join(str(exc).split())[:200]
        return generation, None, f"Could not make the control preview ({type(exc).__name__}: {line})"


def _find_annotators() -> list:
    from app.engine.annotators import find_annotators

    return find_annotators()


def _describe_controlnet(text: str, config: str) -> ModelEntry:
    """describe_controlnet for a worker thread: after the engine's background import, since two threads
    importing torch at once can fail."""
    from app.engine import preload

    preload.wait_if_started()
    return describe_controlnet(text)


# -- adding a ControlNet ------------------------------------------------------------------------------------

class AddControlNetDialog(AddModelDialog):
    """A ControlNet file, diffusers folder or repo id. OK checks it on a background thread: a refusal keeps the
    dialog open with its one line (in red); an accepted one closes it, with `entry` holding what the check found."""
    WHAT = "ControlNet"
    TITLE = "Add ControlNet"
    NAME = "addControlNetDialog"
    INTRO = ("Pick a ControlNet for SD 1.x, 2.x or SDXL: a .safetensors file, a diffusers folder, or type a "
             "Hugging Face repo id such as lllyasviel/control_v11p_sd15_canny. Its name tells which kind of "
             "control it is for.")
    FILE_FILTER = CONTROLNET_FILTER
    FOLDER_TITLE = "Choose a diffusers ControlNet folder"
    WITH_CONFIG = False

    def __init__(self, start_dir: str, parent: QWidget | None = None) -> None:
        super().__init__(start_dir, parent, check=_describe_controlnet)
        self.resize(600, self.sizeHint().height())

    def accept(self) -> None:
        if self.location():                 # Enter on an empty line adds nothing
            super().accept()

    def _say(self, text: str, checking: bool = False, problem: bool = False) -> None:
        super()._say(text, checking, problem)
        self.check_label.setStyleSheet("color: #e06060;" if problem else "")


# -- the commands -------------------------------------------------------------------------------------------

class ControlCommands(QObject):
    """The control-layer commands of the main window; `status` carries one line for the status bar."""
    status = Signal(str, bool)
    controlnets_changed = Signal()              # the library's ControlNets changed
    controlnet_check_finished = Signal(object)  # the ModelEntry added (or already listed), None if refused
    annotators_found = Signal()                 # `annotators` holds what the Hugging Face cache has

    def __init__(self, window: "MainWindow") -> None:
        super().__init__(window)
        self._window = weakref.ref(window)      # the window owns this object
        self.annotators: list | None = None     # AnnotatorInfo of the cached annotator models, once looked for
        self._looking = False

    @property
    def window(self) -> "MainWindow":
        return self._window()

    def model_family(self) -> str:
        """The family ("sd1", "sd2", "sdxl") of the model chosen in the Generate panel, "" for an engine."""
        model = self.window.panel.selected_model()
        entry = self.window.library.find(model) if model else None
        return entry.family if entry is not None else ""

    def add_control_layer(self, kind: str) -> bool:
        """A `kind` control layer on top with the ControlNet that fits it best, selected."""
        window = self.window
        model = controlnet_choice(window.library.controlnets(), self.model_family(), kind)
        # Line art and soft edge start as drawings (the pen draws on them); "Made from the image" switches.
        settings = ControlSettings(kind, model=model, from_image=not (kind in DRAWN_KINDS and kind in MADE_FROM_THE_IMAGE))
        if not window.state.add_control_layer(settings):
            return False
        how = ("draw on it with the Brush (B), erase with the Eraser (E), or import an image"
               if settings.uses_layer_pixels else "it is made from the image when you generate")
        pick = "" if model else "; pick a ControlNet for it in the Control panel"
        self.status.emit(f"Added a {KIND_LABELS[kind]} control layer: {how}{pick}.", False)
        return True

    def merge_down(self) -> bool:
        """Merge the selected layer down (Layer > Merge Down), saying why not when a control layer is in it."""
        state = self.window.state
        if state.merge_down(state.active_layer):
            return True
        doc = state.document
        try:
            index = doc.layers.index_of(state.active_layer) if doc is not None else 0
        except KeyError:
            return False
        if index and any(layer.control is not None for layer in doc.layers.layers[index - 1:index + 1]):
            self.status.emit("Control layers guide generation: they cannot be merged.", True)
        return False

    # -- ControlNets ----------------------------------------------------------------------------------------
    def add_controlnet_dialog(self, for_layer: int = 0) -> AddControlNetDialog:
        """Open "Add ControlNet" (window-modal, non-blocking); OK adds the checked ControlNet, and gives it to
        the control layer `for_layer` when one is named."""
        start = self.window.settings.get("last_model_dir") or str(Path.home())
        dialog = AddControlNetDialog(start, self.window)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.accepted.connect(lambda: self._controlnet_checked(dialog.entry, None, for_layer))
        dialog.open()
        return dialog

    def add_controlnet_from_text(self, text: str, for_layer: int = 0) -> None:
        """Check a ControlNet on a background thread, then add it; `controlnet_check_finished` says how it went."""
        existing = self.window.library.find(text.strip())
        if existing is not None and existing.is_controlnet:
            self._controlnet_checked(existing, None, for_layer)
            return
        call = BackgroundCall(run_check, _describe_controlnet, text, "", 0, "ControlNet", parent=self)
        call.finished.connect(lambda outcome, error: self._outcome_checked(outcome, error, for_layer))
        self.status.emit(f"Checking {Path(text.strip()).name or text.strip()}…", False)
        call.start()

    def _outcome_checked(self, outcome, error: Exception | None, for_layer: int) -> None:
        if outcome is not None and outcome[2]:
            error = EngineError(outcome[2])
        self._controlnet_checked(outcome[1] if outcome is not None else None, error, for_layer)

    def _controlnet_checked(self, entry: ModelEntry | None, error: Exception | None, for_layer: int) -> None:
        """Add a checked ControlNet to the library (and to the layer `for_layer`), or say in one line why not."""
        window = self.window
        try:
            if error is not None:
                raise error
            if entry is None:
                raise EngineError("no ControlNet was given")
            entry = window.library.add_checked(entry)
        except EngineError as exc:
            window.show_error(" ".join(str(exc).split()))
            self.controlnet_check_finished.emit(None)
            return
        if entry.kind != "controlnet-repo":
            window.settings.set("last_model_dir", str(Path(entry.location).parent))
        self.controlnets_changed.emit()
        layer = self.control_layer(for_layer)
        if layer is not None:
            window.state.set_control_settings(layer.id, replace(layer.control, model=entry.location))
        family = self.model_family()
        other = (f" It is for {FAMILY_NAMES.get(entry.family, entry.family)} models; the chosen model is "
                 f"{FAMILY_NAMES.get(family, family)}." if family and entry.family and entry.family != family else "")
        self.status.emit(f"Added the ControlNet {entry.label}.{other}", False)
        self.controlnet_check_finished.emit(entry)

    def control_layer(self, layer_id: int) -> Layer | None:
        doc = self.window.state.document
        if doc is None or not layer_id:
            return None
        try:
            layer = doc.layers.get(layer_id)
        except KeyError:
            return None
        return layer if layer.control is not None else None

    # -- pixels ----------------------------------------------------------------------------------------------
    def import_image(self, layer_id: int) -> bool:
        """Load a drawing, depth, normal or pose map into the control layer (scaled to its size), one undo
        step; a kind made from the image then uses the imported map instead."""
        layer = self.control_layer(layer_id)
        if layer is None:
            return False
        window = self.window
        start = window.settings.get("last_dir") or str(Path.home())
        path, _ = QFileDialog.getOpenFileName(window, f"Import into '{layer.name}'", start, IMAGE_FILTER)
        if not path:
            return False
        try:
            loaded = load_image(path)
        except ImageLoadError as exc:
            window.show_error(" ".join(str(exc).split()))
            return False
        width, height = layer.rect.w, layer.rect.h
        pixels = fitted(loaded.pixels, width, height)
        settings = layer.control
        if settings.kind in MADE_FROM_THE_IMAGE and settings.from_image:
            settings = replace(settings, from_image=False)
        stack = window.state.document.layers.changed(layer.id, pixels=pixels, control=settings)
        window.state.change_layers(stack, "Import control image")
        text = f"Imported {Path(path).name} into '{layer.name}'"
        if (loaded.width, loaded.height) != (width, height):
            text += f", scaled from {loaded.width} x {loaded.height} to {width} x {height} px"
        self.status.emit(text + ".", False)
        return True

    def clear_drawing(self, layer_id: int) -> bool:
        layer = self.control_layer(layer_id)
        if layer is None or not has_drawing(layer.pixels):
            return False
        empty = empty_control_pixels(layer.rect.w, layer.rect.h)
        return self.window.state.set_layer_pixels(layer.id, empty, "Clear control drawing")

    # -- annotator models ------------------------------------------------------------------------------------
    def find_annotators(self) -> None:
        """Look for depth, pose and person-detection models in the HF cache once, off the UI thread
        (`annotators_found`)."""
        if self.annotators is not None or self._looking:
            return
        self._looking = True
        call = BackgroundCall(_find_annotators, parent=self)
        call.finished.connect(self._annotators_listed)
        call.start()

    def _annotators_listed(self, found, error: Exception | None) -> None:
        self._looking = False
        self.annotators = list(found or [])
        if error is not None:
            log.info("looking for annotator models failed: %s", error)
        self.annotators_found.emit()

    def choose_annotator_folder(self, layer_id: int, kind: str = "depth") -> bool:
        """Pick a local model folder of `kind` (depth, pose or detector) for the layer; one line when it is
        none. A detector goes to the layer's detector, the others to its annotator."""
        from app.engine.annotators import MODEL_KINDS, describe_annotator_folder

        layer = self.control_layer(layer_id)
        if layer is None:
            return False
        start = self.window.settings.get("last_model_dir") or str(Path.home())
        what = MODEL_KINDS[kind].split(" (")[0]
        path = QFileDialog.getExistingDirectory(self.window, f"Choose a {what} folder", start)
        if not path:
            return False
        try:
            info = describe_annotator_folder(path, kind)
        except EngineError as exc:
            self.status.emit(" ".join(str(exc).split()), True)
            return False
        self.annotators = [*(self.annotators or []), info]
        self.annotators_found.emit()
        field = "detector" if kind == "detector" else "annotator"
        return self.window.state.set_control_settings(layer.id, replace(layer.control, **{field: info.source}))


class ControlPreview(QObject):
    """Makes the control image of a layer's settings (control_preview) when asked, 150 ms after the last ask,
    off the UI thread for an image over a megapixel or a depth model; `changed` carries it (None: nothing)."""
    changed = Signal(object)
    status = Signal(str, bool)
    OFF_THREAD_PIXELS = 1_000_000

    def __init__(self, parent: QObject | None = None) -> None:
        from PySide6.QtCore import QTimer

        super().__init__(parent)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(150)
        self._timer.timeout.connect(self._make)
        self._inputs: tuple | None = None
        self._generation = 0
        self.image: np.ndarray | None = None
        self.busy = False

    def request(self, settings: ControlSettings | None, doc=None, layer: Layer | None = None) -> None:
        """Make the preview of `settings` for `layer` of `doc` soon; None clears it now."""
        self._generation += 1
        if settings is None or doc is None or layer is None:
            self._timer.stop()
            self._inputs = None
            self._show(None)
            return
        self._inputs = (settings, *preview_inputs(doc, layer))
        self._timer.start()

    def _make(self) -> None:
        if self._inputs is None:
            return
        settings, image, layer = self._inputs
        self._inputs = None
        if preview_note(settings):
            self._show(None)
            return
        slow = settings.kind in ("depth", "normal", "pose") and not settings.uses_layer_pixels
        if not slow and image.shape[0] * image.shape[1] <= self.OFF_THREAD_PIXELS:
            self._done(_make_preview(settings, image, layer, self._generation), None)
            return
        image = np.array(image)                   # the composite may be updated in place meanwhile
        if slow:
            self.status.emit(f"Making the {settings.label.lower()} preview with {settings.annotator}…", False)
        self.busy = True
        call = BackgroundCall(_make_preview, settings, image, layer, self._generation, parent=self)
        call.finished.connect(self._done)
        call.start()

    def _done(self, outcome, error: Exception | None) -> None:
        self.busy = False
        if outcome is None:
            self.status.emit(f"Could not make the control preview ({error!r})", True)
            return
        generation, image, problem = outcome
        if generation != self._generation:
            return
        if problem:
            self.status.emit(problem, True)
        self._show(image)

    def _show(self, image: np.ndarray | None) -> None:
        if image is None and self.image is None:
            return
        self.image = image
        self.changed.emit(image)
