"""Models ▸ Manage Models…: every installed model in one table, with rename, remove from the list, delete from
disk, show in the file manager, and adding a whole folder of .safetensors files.

A view of app.editor.model_inventory (what is installed, what deleting removes) and app.editor.model_scan
(what a folder's files are). Listing and scanning run on worker threads, so the window never waits on a
large folder or cache. Every question goes through a hook (`ask_yes_no`, `ask_text`, `ask_sd2_variant`,
`choose_folder`, `open_url`) that defaults to a Qt dialog and that tests replace.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

from PySide6.QtCore import QUrl, Qt, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (QAbstractItemView, QDialog, QDialogButtonBox, QFileDialog, QHBoxLayout,
                               QHeaderView, QInputDialog, QLabel, QMessageBox, QPushButton, QTableWidget,
                               QTableWidgetItem, QVBoxLayout, QWidget)

from app.editor.background import BackgroundCall
from app.editor.model_inventory import (SOURCE_HUB, SOURCE_SERVER, InstalledModel, delete_from_disk, delete_plan,
                                        format_size, inventory)
from app.editor.model_library import ModelLibrary
from app.editor.model_scan import SD2_LABELS, ScanResult, scan_folder
from app.engine.events import EngineError, first_line
from app.widgets.widget_tools import named

log = logging.getLogger(__name__)
COLUMNS = ("Name", "Family", "Kind", "Size", "Source")
MAX_REPORTED = 8                     # left-out files named after a scan; the rest are counted


def _ask_yes_no(parent: QWidget, title: str, text: str) -> bool:
    answer = QMessageBox.question(parent, title, text, QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                  QMessageBox.StandardButton.No)
    return answer == QMessageBox.StandardButton.Yes


def _ask_text(parent: QWidget, title: str, label: str, text: str) -> str | None:
    value, ok = QInputDialog.getText(parent, title, label, text=text)
    return value if ok else None


def _ask_sd2_variant(parent: QWidget, name: str) -> str | None:
    box = QMessageBox(QMessageBox.Icon.Question, "Which SD 2.x model?",
                      f"{name} is a Stable Diffusion 2.x model, but its file does not say which kind it is.",
                      parent=parent)
    box.setInformativeText("Models made at 768 px (like stable-diffusion-2-1) are v-models; those made at 512 px "
                           "(like stable-diffusion-2-1-base) are base models. The answer is remembered for this "
                           "file.")
    base = box.addButton(SD2_LABELS["base"], QMessageBox.ButtonRole.AcceptRole)
    v_model = box.addButton(SD2_LABELS["v"], QMessageBox.ButtonRole.AcceptRole)
    box.addButton("Skip This File", QMessageBox.ButtonRole.RejectRole)
    box.exec()
    return {id(base): "base", id(v_model): "v"}.get(id(box.clickedButton()))


def _size_text(model: InstalledModel) -> str:
    if model.on_disk:
        return format_size(model.size_on_disk)
    if model.source == SOURCE_SERVER:
        return "on the server"
    return "not downloaded" if model.source == SOURCE_HUB else "missing"


class ModelManagerDialog(QDialog):
    models_changed = Signal()            # the model list was changed: the window refreshes its model picker

    def __init__(self, library: ModelLibrary, styles_provider: Callable[[], object] = lambda: (),
                 parent: QWidget | None = None, cache_dir=None) -> None:
        super().__init__(parent)
        self.library = library
        self.styles_provider = styles_provider
        self.cache_dir = cache_dir
        self.models: list[InstalledModel] = []
        self.last_scan: ScanResult | None = None
        self._generation = 0             # the listing whose outcome counts
        self._listing = self._scanning = False
        self._keep_selected = ""
        self.ask_yes_no: Callable[[str, str], bool] = lambda title, text: _ask_yes_no(self, title, text)
        self.ask_text: Callable[[str, str, str], str | None] = \
            lambda title, label, text: _ask_text(self, title, label, text)
        self.ask_sd2_variant: Callable[[str], str | None] = lambda name: _ask_sd2_variant(self, name)
        self.choose_folder: Callable[[], str] = lambda: QFileDialog.getExistingDirectory(
            self, "Add a folder of models", str(Path.home()))
        self.open_url: Callable[[QUrl], bool] = QDesktopServices.openUrl

        self.setObjectName("modelManagerDialog")
        self.setAccessibleName("Models")
        self.setWindowTitle("Models")
        self.table = named(QTableWidget(0, len(COLUMNS)), "modelTable", "Installed models")
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().hide()
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for column in range(1, len(COLUMNS)):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
        self.rename_button = named(QPushButton("Rename…"), "renameModelButton", "Rename the model")
        self.remove_button = named(QPushButton("Remove from List"), "removeModelButton", "Remove from the list",
                                   "Forget the model; its files stay on disk")
        self.delete_button = named(QPushButton("Delete from Disk…"), "deleteModelButton", "Delete from disk",
                                   "Delete the model's files (you are asked first)")
        self.reveal_button = named(QPushButton("Show in File Manager"), "revealModelButton", "Show in file manager")
        self.add_folder_button = named(QPushButton("Add Folder…"), "addModelFolderButton", "Add a folder of models",
                                       "Add every model file in a folder (and its subfolders, one level down)")
        self.status_label = named(QLabel(""), "modelManagerStatus", "Status")
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        close = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        close.rejected.connect(self.reject)

        self.table.itemSelectionChanged.connect(self._update_buttons)
        self.rename_button.clicked.connect(self.rename_selected)
        self.remove_button.clicked.connect(self.remove_selected)
        self.delete_button.clicked.connect(self.delete_selected)
        self.reveal_button.clicked.connect(self.reveal_selected)
        self.add_folder_button.clicked.connect(lambda: self.add_folder())

        buttons = QHBoxLayout()
        for button in (self.rename_button, self.remove_button, self.delete_button, self.reveal_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        buttons.addWidget(self.add_folder_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.table, 1)
        layout.addLayout(buttons)
        layout.addWidget(self.status_label)
        layout.addWidget(close)
        self.resize(820, 460)
        self._update_buttons()
        self.refresh()

    # -- state the window and tests read ------------------------------------------------------------------

    def listing(self) -> bool:
        """True while the table is being (re)filled."""
        return self._listing

    def scanning(self) -> bool:
        """True while a folder is being scanned."""
        return self._scanning

    def status(self) -> str:
        return self.status_label.text()

    def selected_model(self) -> InstalledModel | None:
        rows = self.table.selectionModel().selectedRows()
        return self.models[rows[0].row()] if rows and rows[0].row() < len(self.models) else None

    def select(self, location: str) -> bool:
        """Select the row of the model at `location`; False when it is not listed."""
        for row, model in enumerate(self.models):
            if model.location == location:
                self.table.selectRow(row)
                return True
        return False

    # -- listing -------------------------------------------------------------------------------------------

    def refresh(self) -> None:
        """List the installed models again, on a worker thread."""
        selected = self.selected_model()
        self._keep_selected = selected.location if selected else self._keep_selected
        self._generation += 1
        self._listing = True
        styles = self._styles()
        entries = self.library.entries() + self.library.controlnets()
        call = BackgroundCall(inventory, entries, styles, self.cache_dir, parent=self)
        call.finished.connect(lambda models, error, generation=self._generation: self._listed(generation, models,
                                                                                              error))
        call.start()

    def _styles(self) -> list:
        try:
            styles = self.styles_provider()
        except Exception as exc:  # noqa: BLE001 - a styles file problem must not hide the models
            log.warning("could not read the styles for their LoRAs", exc_info=exc)
            return []
        return list(getattr(styles, "styles", styles) or [])

    def _listed(self, generation: int, models: list[InstalledModel] | None, error: Exception | None) -> None:
        if generation != self._generation:
            return                         # an earlier listing; a later one is on its way
        self._listing = False
        if models is None:
            log.error("listing the installed models failed", exc_info=error)
            self._say(f"Could not list the models: {type(error).__name__}: {first_line(error)}")
            models = []
        self.models = models
        self.table.setRowCount(len(models))
        for row, model in enumerate(models):
            cells = (model.name, model.family, model.kind, _size_text(model), model.source)
            for column, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setToolTip(model.location if model.listed else
                                f"{model.location} (not in the model list: "
                                f"{'used by a style' if model.used_by else 'found in the Hugging Face cache'})")
                self.table.setItem(row, column, item)
        if not (self._keep_selected and self.select(self._keep_selected)):
            self.table.clearSelection()
        self._keep_selected = ""
        self._update_buttons()

    def _update_buttons(self) -> None:
        model = self.selected_model()
        self.rename_button.setEnabled(bool(model and model.listed))
        self.remove_button.setEnabled(bool(model and model.listed))
        self.delete_button.setEnabled(bool(model and model.on_disk and model.source != SOURCE_SERVER))
        self.reveal_button.setEnabled(bool(model and model.on_disk))
        self.add_folder_button.setEnabled(not self._scanning)

    def _say(self, text: str) -> None:
        self.status_label.setText(text)
        self.status_label.setAccessibleDescription(text)

    def _changed(self) -> None:
        self.models_changed.emit()
        self.refresh()

    # -- actions on the selected model ---------------------------------------------------------------------

    def rename_selected(self) -> None:
        model = self.selected_model()
        if model is None or not model.listed:
            return
        name = self.ask_text("Rename Model", "The name the model list shows:", model.name)
        if name is None or name.strip() == model.name:
            return
        try:
            self.library.rename(model.location, name)
        except EngineError as exc:
            self._say(first_line(exc))
            return
        self._say(f"Renamed {model.name} to {' '.join(name.split())}.")
        self._keep_selected = model.location
        self._changed()

    def remove_selected(self) -> None:
        model = self.selected_model()
        if model is None or not model.listed:
            return
        try:
            self.library.remove(model.location)
        except EngineError as exc:
            self._say(first_line(exc))
            return
        self._say(f"Removed {model.name} from the list; its files are still on disk.")
        self._changed()

    def delete_selected(self) -> None:
        model = self.selected_model()
        if model is None:
            return
        plan = delete_plan(model, self.cache_dir)
        if plan.problem:
            self._say(plan.problem)
            return
        if not self.ask_yes_no("Delete from Disk", plan.question()):
            self._say(f"Nothing was deleted; {model.name} is kept.")
            return
        try:
            delete_from_disk(model, self.library, self.cache_dir)
        except EngineError as exc:
            self._say(first_line(exc))
            self.refresh()
            return
        self._say(f"Deleted {model.name} ({format_size(plan.size)} freed).")
        if model.listed:
            self._changed()
        else:
            self.refresh()

    def reveal_selected(self) -> None:
        model = self.selected_model()
        folder = model.reveal_path(self.cache_dir) if model else None
        if folder is None:
            return
        if not self.open_url(QUrl.fromLocalFile(str(folder))):
            self._say(f"Could not open a file manager at {folder}.")

    # -- adding a folder -----------------------------------------------------------------------------------

    def add_folder(self, folder: str | Path | None = None) -> None:
        """Scan `folder` (asked for when None) on a worker thread, then add what it holds."""
        if self._scanning:
            return
        folder = folder if folder is not None else self.choose_folder()
        if not folder:
            return
        self._scanning = True
        self._update_buttons()
        self._say(f"Scanning {folder}…")
        call = BackgroundCall(scan_folder, Path(folder), parent=self)
        call.finished.connect(self._scanned)
        call.start()

    def _scanned(self, result: ScanResult | None, error: Exception | None) -> None:
        self._scanning = False
        self._update_buttons()
        if result is None:
            log.error("scanning a folder failed", exc_info=error)
            self._say(f"Could not scan the folder: {type(error).__name__}: {first_line(error)}")
            return
        self.last_scan = result
        if not self.isVisible():
            return                         # closed meanwhile: nothing is added or asked
        if result.problem:
            self._say(result.problem)
            return
        try:
            added, known, skipped = self._add_found(result)
        except EngineError as exc:
            self._say(first_line(exc))
            self.refresh()
            return
        self._say(self._report(result, added, known, skipped))
        if added or known:
            self._changed()

    def _add_found(self, result: ScanResult) -> tuple[int, int, list[str]]:
        """Add the usable models of `result`, asking about each SD 2.x file not answered for yet:
        (models added, those already listed, the files the user skipped)."""
        added = known = 0
        skipped = []
        for item in result.addable:
            existing = self.library.find(item.entry.location)
            if item.asks_variant and not (existing and existing.config):
                variant = self.ask_sd2_variant(item.path.name)
                if variant is None:
                    skipped.append(item.path.name)
                    continue
                item = item.with_variant(variant)
                if existing is not None:
                    self.library.set_config(existing.location, item.entry.config)
            if existing is not None:
                known += 1
                continue
            self.library.add_checked(item.entry)
            added += 1
        return added, known, skipped

    @staticmethod
    def _report(result: ScanResult, added: int, known: int, skipped: list[str]) -> str:
        lines = [f"{result.summary()}: added {added} model{'s' if added != 1 else ''}"
                 + (f", {known} already listed" if known else "") + "."]
        if skipped:
            lines.append(f"Skipped (not answered): {', '.join(skipped)}.")
        left_out = result.left_out
        lines += [f"Not added: {item.reason}" for item in left_out[:MAX_REPORTED]]
        if len(left_out) > MAX_REPORTED:
            lines.append(f"… and {len(left_out) - MAX_REPORTED} more not added.")
        return "\n".join(lines)


def open_model_manager(parent: QWidget | None, library: ModelLibrary, styles_provider: Callable[[], object],
                       cache_dir=None) -> ModelManagerDialog:
    """Show the model manager (non-modal), or bring the one `parent` has open for `library` to the front."""
    if parent is not None:
        for dialog in parent.findChildren(ModelManagerDialog, "modelManagerDialog"):
            if dialog.library is library and dialog.cache_dir == cache_dir:
                dialog.show()
                dialog.raise_()
                dialog.activateWindow()
                dialog.refresh()
                return dialog
    dialog = ModelManagerDialog(library, styles_provider, parent, cache_dir)
    dialog.show()
    return dialog
