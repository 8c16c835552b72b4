"""The editor window: canvas in the middle, generation panel on the right, variants strip below."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
from PySide6.QtCore import QByteArray, QStandardPaths, Qt, Signal
from PySide6.QtGui import QCloseEvent, QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import (QDockWidget, QLabel, QMainWindow, QMessageBox, QScrollArea, QToolBar,
                               QVBoxLayout, QWidget)

from app.editor.autosave import Autosave
from app.editor.background import BackgroundCall
from app.core.recovery import RecoveryError, RecoveryStore
from app.core.recovery import load as recovery_load
from app.core.geometry import expand_by_fraction, expand_to_aspect
from app.core.styles import read_all_styles
from app.editor.editor_state import EditorState
from app.engine import preload
from app.engine.events import EngineError
from app.engine.registry import EngineRegistry
from app.editor.generation_session import GenerationSession
from app.editor.model_library import ModelEntry, ModelLibrary, describe_model
from app.editor.selection_commands import SelectionCommands, mode_for
from app.editor.server_list import ServerList
from app.editor.stored_settings import SettingsStore, checked_values, migrate_qt_settings
from app.widgets.actions import build_actions
from app.widgets.add_model_dialog import AddModelDialog
from app.widgets.canvas import CanvasView
from app.widgets.control_panel import install_control_layers
from app.widgets.file_commands import FileCommands
from app.widgets.generate_panel import GeneratePanel, ValueSlider
from app.widgets.help_dialogs import build_help_menu
from app.widgets.qt_image import from_qimage
from app.widgets.layers_panel import LayersPanel
from app.widgets.selection_menu import build_selection_actions
from app.editor.user_folders import config_folder, model_list_path, user_styles_path
from app.widgets.servers_dialog import ServersDialog
from app.widgets.model_commands import ModelCommands
from app.widgets.training_commands import TrainingCommands
from app.widgets.variants_strip import VariantsStrip

log = logging.getLogger(__name__)



def default_library_path() -> Path:
    return model_list_path()


def default_settings_path() -> Path:
    return config_folder() / "settings.json"


def default_recovery_root() -> Path:
    """Where autosaved work for crash recovery goes: the per-user data folder."""
    folder = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppLocalDataLocation)
    return Path(folder or Path.home() / ".local" / "share" / "latent-canvas") / "recovery"


def _describe_model(text: str, config: str) -> ModelEntry:
    """describe_model for a background thread: after the engine's background import, since two threads
    importing torch at once can fail (a .ckpt is read with torch)."""
    preload.wait_if_started()
    return describe_model(text, config)


class MainWindow(QMainWindow):
    model_check_finished = Signal(object)      # the ModelEntry added (or already listed), None if refused

    def __init__(self, settings: SettingsStore | Path | str | None = None, registry: EngineRegistry | None = None,
                 parent: QWidget | None = None, library: ModelLibrary | None = None,
                 recovery_root: Path | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("mainWindow")
        self.setAccessibleName("Latent Canvas")
        if settings is None:
            settings = SettingsStore(default_settings_path())
            if sys.platform.startswith("linux"):     # an older version's QSettings file, read as plain text
                migrate_qt_settings(settings, config_folder().with_suffix(".conf"))
        elif not isinstance(settings, SettingsStore):
            settings = SettingsStore(settings)
        self.settings = settings
        self.last_error = ""
        self.state = EditorState(self)
        styles = read_all_styles(user_styles_path())
        self.registry = registry or EngineRegistry()
        self.library = library if library is not None else ModelLibrary(default_library_path())
        self.servers = ServerList(Path(self.library.path).parent / "servers.json")
        self.startup_notes = [*settings.problems, *styles.problems, *self.library.problems, *self.servers.problems]
        styles = styles.styles
        self.session = GenerationSession(self.state, styles, self.registry, self)
        self.session.library = self.library
        self.session.servers = self.servers
        self.recovery = RecoveryStore(recovery_root if recovery_root is not None else default_recovery_root())
        self.files = FileCommands(self)
        self.selection = SelectionCommands(self.state, self)
        self.autosave = Autosave(self.state, self.recovery, parent=self)
        self.autosave.failed.connect(lambda text: self.statusBar().showMessage(text, 10000))
        self.canvas = CanvasView(self.state, self)
        self.setCentralWidget(self._centre())
        self.panel = GeneratePanel(styles, self.registry.entries(), self, self.library.entries())
        self.autosave.settings = self.panel.saved_values      # Recover brings the panel's settings back too
        dock = QDockWidget("Generate", self)
        dock.setObjectName("generateDock")
        dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable
                         | QDockWidget.DockWidgetFeature.DockWidgetClosable)
        scroll = QScrollArea()
        scroll.setObjectName("generateScroll")
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.panel)
        dock.setWidget(scroll)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)
        self.generate_dock = dock
        self.layers_panel = LayersPanel(self.state, self)
        layers_dock = QDockWidget("Layers", self)
        layers_dock.setObjectName("layersDock")
        layers_dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable
                                | QDockWidget.DockWidgetFeature.DockWidgetClosable)
        layers_dock.setWidget(self.layers_panel)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, layers_dock)
        self.layers_dock = layers_dock
        self.controls = install_control_layers(self)       # the Control panel, Add control layer, Add ControlNet
        self.training = TrainingCommands(self)              # Styles ▸ Learn a Style…
        self.models = ModelCommands(self)                   # Models ▸ Get Models…, Manage Models…
        self.action_set = build_actions(
            self, self._handlers(), self.state.history.stack.createUndoAction(self, "&Undo"),
            self.state.history.stack.createRedoAction(self, "&Redo"), self.state.set_tool,
            self._expand_preset, self._aspect_preset)
        self.action_set.by_name.update(build_selection_actions(
            self, self.action_set.menus["mask"], self.selection, self.settings, self.state))
        view_menu = self.action_set.menus["view"]
        view_menu.addSeparator()
        for dock_widget, name in ((self.generate_dock, "show_generate"), (self.layers_dock, "show_layers")):
            toggle = dock_widget.toggleViewAction()
            toggle.setObjectName(f"{name}Action")
            view_menu.addAction(toggle)
            self.action_set.by_name[name] = toggle
        self.addActions(list(self.action_set.by_name.values()))
        self.help_menu = build_help_menu(self, self.menuBar())   # last: it lists View's additions too
        self._build_toolbar()
        self.zoom_label = QLabel("")
        self.cursor_label = QLabel("")
        self.statusBar().addPermanentWidget(self.cursor_label)
        self.statusBar().addPermanentWidget(self.zoom_label)
        self._connect()
        self.setAcceptDrops(True)
        self.resize(1400, 900)
        self._restore_settings()
        self._refresh()
        if self.startup_notes:     # damaged files: the editor starts anyway, and says what it set aside
            self._show_status(" ".join(self.startup_notes), True)

    # -- construction -----------------------------------------------------------------------------
    def _centre(self) -> QWidget:
        centre = QWidget()
        layout = QVBoxLayout(centre)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.canvas, 1)
        self.strip = VariantsStrip(centre)
        layout.addWidget(self.strip)
        return centre

    def _handlers(self) -> dict:
        c = self.canvas
        f, s = self.files, self.state
        return {"open": f.open_dialog, "save": f.save, "save_as": f.save_as_dialog, "export": f.export_dialog,
                "quit": self.close, "copy": f.copy, "paste": f.paste,
                "delete_layer": self._delete_layer, "merge_down": self.controls.merge_down, "flatten": s.flatten,
                "keep_all": self._accept_keeping_all,
                "discard": self.session.discard, "finish": self.session.finish_early,
                "clear_mask": self.state.clear_mask,
                "brush_smaller": self.state.shrink_brush, "brush_larger": self.state.grow_brush,
                "invert_mask": self.state.invert_mask,
                "select_all": self._mask_everything, "reset_canvas": self._reset_canvas,
                "fill": self.fill, "expand": self.expand, "restyle": self.restyle, "cancel": self._escape,
                "accept": self.accept_current, "zoom_in": c.zoom_in, "zoom_out": c.zoom_out,
                "zoom_fit": c.fit, "zoom_100": c.zoom_100,
                "add_model": self.add_model_dialog, "remove_model": self.remove_selected_model,
                "add_controlnet": self.controls.add_controlnet_dialog, "comfy_servers": self.servers_dialog,
                "learn_style": self.training.learn_style, "get_models": self.models.get_models,
                "manage_models": self.models.manage,
                "add_control_layer": self.controls.add_control_layer}

    def _build_toolbar(self) -> None:
        bar = QToolBar("Tools", self)
        bar.setObjectName("toolsToolbar")
        for action in self.action_set.tools.values():
            bar.addAction(action)
        bar.addSeparator()
        bar.addWidget(QLabel(" Size "))
        self.size_slider = ValueSlider("{} px", 1, 512)
        self.size_slider.setObjectName("brushSizeSlider")
        self.size_slider.setAccessibleName("Brush size")
        self.size_slider.setFixedWidth(140)
        self.size_slider.show_value(self.state.brush_size)
        self.size_slider.valueChanged.connect(lambda v: self.state.set_brush(size=v))
        bar.addWidget(self.size_slider)
        bar.addWidget(self.size_slider.value_label)
        bar.addWidget(QLabel(" Softness "))
        self.softness_slider = ValueSlider("{} %", 0, 100)
        self.softness_slider.setObjectName("brushSoftnessSlider")
        self.softness_slider.setAccessibleName("Brush softness")
        self.softness_slider.setFixedWidth(100)
        self.softness_slider.show_value(round(self.state.brush_softness * 100))
        self.softness_slider.valueChanged.connect(lambda v: self.state.set_brush(softness=v / 100))
        bar.addWidget(self.softness_slider)
        bar.addWidget(self.softness_slider.value_label)
        bar.addSeparator()
        for name in ("clear_mask", "invert_mask", "undo", "redo", "zoom_fit"):
            bar.addAction(self.action_set[name])
        self.addToolBar(Qt.ToolBarArea.TopToolBarArea, bar)

    def _connect(self) -> None:
        s, p = self.state, self.panel
        for signal in (s.document_replaced, s.image_changed, s.mask_changed, s.canvas_changed):
            signal.connect(self._refresh)
        s.tool_changed.connect(self._tool_changed)
        s.brush_changed.connect(self._brush_changed)
        s.history.stack.cleanChanged.connect(self._update_title)
        s.history.failed.connect(self.show_error)
        p.fill_requested.connect(self.fill)
        p.expand_requested.connect(self.expand)
        p.restyle_requested.connect(self.restyle)
        p.cancel_requested.connect(self.session.cancel)
        p.finish_requested.connect(self.session.finish_early)
        p.add_model_requested.connect(self.add_model_dialog)
        p.capabilities_changed.connect(self._refresh)
        p.model_combo.currentIndexChanged.connect(self._update_model_actions)
        self.session.busy_changed.connect(self._refresh)
        self.session.progress.connect(p.set_progress)
        self.session.status.connect(self._show_status)
        self.selection.status.connect(self._show_status)
        self.canvas.wand_clicked.connect(self._magic_wand)
        self.canvas.object_boxed.connect(self._select_object)
        self.session.variants_ready.connect(self._show_variants)
        self.strip.variant_selected.connect(self.session.select)
        self.strip.accepted.connect(self.accept_current)
        self.strip.accepted_all.connect(self._accept_keeping_all)
        self.strip.discarded.connect(self.session.discard)
        self.canvas.zoom_changed.connect(lambda z: self.zoom_label.setText(f"{z * 100:.0f}%"))
        self.canvas.cursor_moved.connect(lambda x, y: self.cursor_label.setText(f"{x}, {y}"))

    # -- documents: app/widgets/file_commands.py ---------------------------------------------------------
    def open_image(self, path: str | Path) -> bool:
        """Open an image (a new one-layer document) or an .ora project."""
        return self.files.open(path)

    def save_image(self, path: str | Path) -> bool:
        """Save: a .ora path writes the project, any other suffix exports the flattened image."""
        return self.files.save_to(path)

    def save(self) -> bool:
        return self.files.save()

    def save_as_dialog(self) -> bool:
        return self.files.save_as_dialog()

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        mime = event.mimeData()
        if (mime.hasUrls() and any(u.isLocalFile() for u in mime.urls())) or mime.hasImage():
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        """Dropped images become layers of the open document (or open, with none); a project opens."""
        mime = event.mimeData()
        files = [u.toLocalFile() for u in mime.urls() if u.isLocalFile()]
        event.acceptProposedAction()
        if files:
            for path in files[:16]:
                if not self.files.add_file(path):
                    break
        elif mime.hasImage():
            self.files.add_image(from_qimage(mime.imageData()), "Dropped image", "drop")

    # -- generation -----------------------------------------------------------------------------------
    def fill(self) -> None:
        self.session.fill(self.panel.job_settings())

    def expand(self) -> None:
        self.session.expand(self.panel.job_settings())

    def restyle(self) -> None:
        self.session.restyle(self.panel.job_settings())

    def accept_current(self, keep_all: bool = False) -> None:
        self.session.accept(self.strip.list.currentRow(), keep_all)

    def _show_variants(self, variants) -> None:
        self.strip.set_variants(variants, self.session.focus() if variants else None)
        self._update_staging_actions()

    def _update_staging_actions(self) -> None:
        for name in ("accept", "keep_all", "discard"):
            self.action_set[name].setEnabled(bool(self.session.variants))

    # The staging keys, while variants wait: Left/Right show the others, Enter accepts, holding backslash
    # shows the image before (Esc discards: the Cancel action). Text fields keep these keys for themselves.
    def keyPressEvent(self, event) -> None:
        if self.session.variants and not event.modifiers() & ~Qt.KeyboardModifier.KeypadModifier:
            key = event.key()
            if key in (Qt.Key.Key_Left, Qt.Key.Key_Right):
                self.strip.step(1 if key == Qt.Key.Key_Right else -1)
                event.accept()
                return
            if key in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
                self.accept_current()
                event.accept()
                return
            if key == Qt.Key.Key_Backslash:
                if not event.isAutoRepeat():
                    self.state.set_candidate(None, None)
                    self._show_status("The image before (release \\ to see the variant again)", False)
                event.accept()
                return
        super().keyPressEvent(event)

    def keyReleaseEvent(self, event) -> None:
        if event.key() == Qt.Key.Key_Backslash and not event.isAutoRepeat() and self.session.variants:
            self.session.select(max(self.strip.list.currentRow(), 0))
            event.accept()
            return
        super().keyReleaseEvent(event)

    def _magic_wand(self, x: int, y: int, modifiers) -> None:
        self.selection.magic_wand(x, y, mode_for(modifiers))

    def _select_object(self, box, modifiers) -> None:
        self.selection.select_object(box, mode_for(modifiers))

    def _accept_keeping_all(self) -> None:
        self.accept_current(keep_all=True)

    def _delete_layer(self) -> None:
        self.state.remove_layer(self.state.active_layer)

    def _escape(self) -> None:
        if self.session.busy:
            self.session.cancel()
        elif self.session.variants:
            self.session.discard()

    # -- models ---------------------------------------------------------------------------------------------
    def add_model_dialog(self) -> AddModelDialog:
        """Open the "Add model" dialog (window-modal, non-blocking). It checks the model itself (a refusal is
        one line in the dialog, which stays open); OK adds the checked entry."""
        start = self.settings.get("last_model_dir") or str(Path.home())
        dialog = AddModelDialog(start, self, check=_describe_model)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.accepted.connect(lambda: self._model_checked(dialog.entry, None))
        dialog.open()
        return dialog

    def servers_dialog(self) -> ServersDialog:
        """Models ▸ ComfyUI Servers… (window-modal, non-blocking); checkpoints it adds join the Model list."""
        dialog = ServersDialog(self.servers, self.library, self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.models_added.connect(lambda location: self._rebuild_models(select=location))
        dialog.open()
        return dialog

    def add_model_from_text(self, text: str, config: str = "") -> None:
        """Check a model file, diffusers folder or repo id on a background thread, then add and select it;
        `model_check_finished` carries the entry, or None after one line through show_error."""
        existing = self.library.find(text.strip())
        if existing is not None:
            self._model_checked(existing, None)
            return
        name = Path(text.strip()).name or text.strip()
        self._show_status(f"Checking {name}…", False)
        call = BackgroundCall(_describe_model, text, config, parent=self)
        call.finished.connect(self._model_checked)
        call.start()

    def _model_checked(self, entry: ModelEntry | None, error: Exception | None) -> None:
        try:
            if error is not None:
                raise error
            entry = self.library.add_checked(entry)
        except EngineError as exc:
            self.show_error(" ".join(str(exc).split()))
            self.model_check_finished.emit(None)
            return
        except Exception as exc:  # noqa: BLE001 - a bug must not take the window down: one line, logged
            log.error("checking a model failed", exc_info=exc)
            self.show_error(f"Could not check the model: internal error ({type(exc).__name__}: "
                            f"{' '.join(str(exc).split())})")
            self.model_check_finished.emit(None)
            return
        if entry.kind in ("file", "folder"):        # not a repo id, not a checkpoint on a server
            self.settings.set("last_model_dir", str(Path(entry.location).parent))
        self._rebuild_models(select=entry.location)
        self._show_status(f"Added {entry.label}.", False)
        self.model_check_finished.emit(entry)

    def remove_selected_model(self) -> bool:
        """Take the chosen model off the list (its files stay where they are)."""
        location = self.panel.selected_library_model()
        if location is None:
            self._show_status("Only models you added can be removed; pick one in the Model list.", True)
            return False
        entry = self.library.find(location)
        try:
            self.library.remove(location)
        except EngineError as exc:
            self.show_error(" ".join(str(exc).split()))
            return False
        self._rebuild_models(select=self.registry.default_id)
        label = entry.label if entry is not None else location
        self._show_status(f"Removed {label} from the list; its files are untouched.", False)
        return True

    def _rebuild_models(self, select: str | None = None) -> None:
        self.panel.set_models(self.registry.entries(), self.library.entries(), select)
        self._update_model_actions()

    def _update_model_actions(self, *_args) -> None:
        self.action_set["remove_model"].setEnabled(self.panel.selected_library_model() is not None)

    # -- canvas and mask helpers -----------------------------------------------------------------------
    def _expand_preset(self, fraction: float, sides: str) -> None:
        doc = self.state.document
        if doc is not None:
            self.state.set_canvas(expand_by_fraction(doc.image_rect, fraction, sides))

    def _aspect_preset(self, rw: int, rh: int) -> None:
        doc = self.state.document
        if doc is not None:
            self.state.set_canvas(expand_to_aspect(doc.image_rect, rw, rh))

    def _reset_canvas(self) -> None:
        doc = self.state.document
        if doc is not None:
            self.state.set_canvas(doc.image_rect)

    def _mask_everything(self) -> None:
        doc = self.state.document
        if doc is not None:
            self.state.set_mask(np.full_like(doc.mask, 255), "Mask everything")

    # -- view state -------------------------------------------------------------------------------------
    def _refresh(self, *_args) -> None:
        doc = self.state.document
        has_doc = doc is not None
        for action in self.action_set.document_actions:
            action.setEnabled(has_doc)
        busy = self.session.busy
        can_fill = has_doc and doc.has_mask()
        can_expand = has_doc and doc.is_extended()
        self.panel.set_state(can_fill, can_expand, busy, can_restyle=has_doc)
        self.action_set["fill"].setEnabled(can_fill and not busy)
        self.action_set["expand"].setEnabled(can_expand and not busy)
        self.action_set["restyle"].setEnabled(has_doc and not busy and self.panel.engine_can_restyle())
        self.action_set["cancel"].setEnabled(has_doc)
        self._update_staging_actions()
        self.action_set["finish"].setEnabled(busy)
        layers = len(doc.layers) if has_doc else 0
        self.action_set["delete_layer"].setEnabled(layers > 1)
        self.action_set["flatten"].setEnabled(layers > 1)
        self.action_set["merge_down"].setEnabled(layers > 1)
        self._update_model_actions()
        self._update_title()

    def _tool_changed(self, tool: str) -> None:
        if tool in self.action_set.tools:
            self.action_set.tools[tool].setChecked(True)

    def _brush_changed(self) -> None:
        self.size_slider.show_value(self.state.brush_size)
        self.softness_slider.show_value(round(self.state.brush_softness * 100))

    def _update_title(self, *_args) -> None:
        doc = self.state.document
        if doc is None:
            self.setWindowTitle("Latent Canvas")
            return
        name = doc.path.name if doc.path else "Untitled"
        modified = "" if self.state.history.stack.isClean() else " *"
        self.setWindowTitle(f"{name}{modified} ({doc.width} x {doc.height}) — Latent Canvas")

    def _show_status(self, text: str, error: bool) -> None:
        self.panel.set_status(text, error)
        self.statusBar().showMessage(text, 0 if error else 8000)
        if error:
            self.last_error = text

    def show_error(self, text: str) -> None:
        """One line, non-blocking: the status bar, the panel and a window-modal message box."""
        self._show_status(text, True)
        if self.isVisible():
            box = QMessageBox(QMessageBox.Icon.Warning, "Latent Canvas", text, QMessageBox.StandardButton.Ok,
                              self)
            box.setWindowModality(Qt.WindowModality.WindowModal)
            box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
            box.open()

    # -- lifetime ---------------------------------------------------------------------------------------
    def has_unsaved_changes(self) -> bool:
        return self.state.document is not None and not self.state.history.stack.isClean()

    def _confirm_discard_changes(self) -> bool:
        """Ask before throwing away unsaved work; True means go ahead."""
        if not self.has_unsaved_changes() or not self.isVisible():
            return True
        answer = QMessageBox.question(
            self, "Latent Canvas", "The image has unsaved changes. Save them first?",
            QMessageBox.StandardButton.Save | QMessageBox.StandardButton.Discard
            | QMessageBox.StandardButton.Cancel, QMessageBox.StandardButton.Save)
        if answer == QMessageBox.StandardButton.Save:
            return self.save_as_dialog() if self.state.document.path is None else self.save_image(
                self.state.document.path)
        return answer == QMessageBox.StandardButton.Discard

    def closeEvent(self, event: QCloseEvent) -> None:
        if not self._confirm_discard_changes():
            event.ignore()
            return
        self._save_settings()
        self.training.shutdown()
        self.models.shutdown()
        self.session.shutdown()
        self.autosave.close()          # saved or knowingly discarded: nothing to recover
        event.accept()

    # -- crash recovery ---------------------------------------------------------------------------------
    def offer_recovery(self, ask=None) -> bool:
        """If an editor crashed with unsaved work, offer it back. `ask(text) -> "recover" | "discard" |
        "later"` (default: a dialog). Returns True when a session was recovered."""
        crashed = self.recovery.crashed()
        if not crashed:
            return False
        folder = crashed[0]
        try:
            found = recovery_load(folder)
        except RecoveryError as exc:
            kept = RecoveryStore.set_aside(folder)
            self.startup_notes.append(f"Could not recover the last session: {exc}; it was set aside as "
                                      f"{kept.name}.")
            self._show_status(" ".join(self.startup_notes), True)
            return False
        text = (f"Latent Canvas did not close properly last time. Recover the unsaved work?\n\n"
                f"{found.describe()}")
        answer = (ask or self._ask_recovery)(text)
        if answer == "discard":
            RecoveryStore.discard(folder)
        if answer != "recover":
            return False
        if not self._confirm_discard_changes():
            return False
        self.autosave.close()                        # this editor's own unsaved work was just discarded
        try:
            self.recovery.adopt(found)                # the crashed folder becomes this editor's
        except OSError as exc:
            self._show_status(f"Could not take over the recovery data in {folder}: {exc}", True)
            return False
        self.state.set_document(found.document)
        self.state.history.restore(found.changes, found.index)
        if found.settings:
            self.panel.restore_values(checked_values("panel/", found.settings))
        self.state.image_changed.emit()
        self.autosave.save_now()
        self.statusBar().showMessage(f"Recovered {found.describe()}.", 10000)
        return True

    def _ask_recovery(self, text: str) -> str:
        box = QMessageBox(QMessageBox.Icon.Question, "Latent Canvas", text, parent=self)
        recover = box.addButton("Recover", QMessageBox.ButtonRole.AcceptRole)
        discard = box.addButton("Discard", QMessageBox.ButtonRole.DestructiveRole)
        box.addButton("Not now", QMessageBox.ButtonRole.RejectRole)
        box.setDefaultButton(recover)
        box.exec()
        clicked = box.clickedButton()
        return "recover" if clicked is recover else "discard" if clicked is discard else "later"

    def _restore_settings(self) -> None:
        s = self.settings
        self.panel.restore_values(s.stored("panel/"))
        brush = s.stored("brush/")
        self.state.set_brush(size=brush.get("size"), softness=brush.get("softness"))
        self.state.keep_mask_after_accept = bool(s.get("editor/keep_mask"))
        self.action_set["keep_mask"].setChecked(self.state.keep_mask_after_accept)
        geometry = s.get("window/geometry")
        if geometry:
            self.restoreGeometry(QByteArray(geometry))         # False (and no change) when it is not valid

    def _save_settings(self) -> None:
        s = self.settings
        for key, value in self.panel.saved_values().items():
            s.set(f"panel/{key}", value)
        s.set("brush/size", self.state.brush_size)
        s.set("brush/softness", self.state.brush_softness)
        s.set("window/geometry", self.saveGeometry().data())
        try:
            s.save()
        except (OSError, ValueError) as exc:     # closing goes on: the engine and autosave must still stop
            log.warning("could not save the settings to %s: %s", s.path, exc)
