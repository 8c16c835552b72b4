"""The Help menu: a sheet of the keyboard shortcuts, read from the window's actions each time it is shown (so
it says what the keys do now, not what they did when it was written), and the About box with the versions
of what the editor runs on and the device it computes on.

The About box never imports torch on the UI thread: the libraries' versions come from their installed
metadata, and the compute device is found on a background thread (after the engine's background import,
since two threads importing torch at once can fail) while the box says it is looking.
"""
from __future__ import annotations

import platform
import re
import sys
from importlib import metadata
from typing import Callable, Iterable

import PySide6
from PySide6.QtCore import Qt, qVersion
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (QAbstractItemView, QDialog, QDialogButtonBox, QHeaderView, QLabel, QLineEdit,
                               QMainWindow, QMenu, QMenuBar, QTableWidget, QTableWidgetItem, QVBoxLayout,
                               QWidget)

import app
from app.editor.background import BackgroundCall

NO_MENU = "Other"
LIBRARIES = (("torch", "torch"), ("diffusers", "diffusers"), ("transformers", "transformers"))
LOOKING = "finding out…"


def plain_text(text: str) -> str:
    """A menu text as it reads: "Save &As…" -> "Save As…", "&&" -> "&"."""
    return re.sub(r"&(.)", r"\1", text)


def _menu_path(action: QAction) -> tuple[int, str]:
    """(position of its menu in the menu bar, "Canvas › Expand to Aspect Ratio") of the first menu holding
    `action`; actions in no menu come last, as NO_MENU."""
    menu = next((o for o in action.associatedObjects() if isinstance(o, QMenu)), None)
    titles: list[str] = []
    position = sys.maxsize
    while menu is not None and len(titles) < 16:
        titles.insert(0, plain_text(menu.title()))
        holders = menu.menuAction().associatedObjects()
        parent = next((o for o in holders if isinstance(o, QMenu)), None)
        bar = next((o for o in holders if isinstance(o, QMenuBar)), None)
        if parent is None and bar is not None:
            position = bar.actions().index(menu.menuAction())
        menu = parent
    return position, " › ".join(titles) or NO_MENU


def shortcut_rows(actions: Iterable[QAction]) -> list[tuple[str, str, str]]:
    """(menu, command, shortcuts) for every action with a shortcut, each action once: menus in menu-bar
    order, then commands alphabetically; the shortcuts of one action in native text ("Ctrl+O" here, "⌘O" on
    macOS), each once (a standard key can be one given beside it), joined by ", "."""
    rows, seen = [], set()
    for action in actions:
        if id(action) in seen or action.isSeparator():
            continue
        seen.add(id(action))
        keys = list(dict.fromkeys(key.toString(QKeySequence.SequenceFormat.NativeText)
                                  for key in action.shortcuts() if not key.isEmpty()))
        if keys:
            position, menu = _menu_path(action)
            rows.append((position, menu, plain_text(action.text()), ", ".join(keys)))
    rows.sort(key=lambda row: (row[0], row[1].casefold(), row[2].casefold()))
    return [(menu, text, keys) for _position, menu, text, keys in rows]


class ShortcutSheet(QDialog):
    """The shortcuts of `actions()` in a table, filtered by what is typed above it; non-modal. The rows are
    read again each time the sheet is shown (`refresh`)."""

    def __init__(self, actions: Callable[[], Iterable[QAction]], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("shortcutSheet")
        self.setAccessibleName("Keyboard shortcuts")
        self.setWindowTitle("Keyboard shortcuts")
        self.setModal(False)
        self._actions = actions
        self.filter_edit = QLineEdit()
        self.filter_edit.setObjectName("shortcutFilter")
        self.filter_edit.setAccessibleName("Filter the shortcuts")
        self.filter_edit.setPlaceholderText("Filter: a command, a menu or a key")
        self.filter_edit.setClearButtonEnabled(True)
        self.table = QTableWidget(0, 3)
        self.table.setObjectName("shortcutTable")
        self.table.setAccessibleName("Keyboard shortcuts")
        self.table.setHorizontalHeaderLabels(["Menu", "Command", "Shortcut"])
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.close)
        self.filter_edit.textChanged.connect(self.apply_filter)
        layout = QVBoxLayout(self)
        layout.addWidget(self.filter_edit)
        layout.addWidget(self.table)
        layout.addWidget(buttons)
        self.resize(560, 520)
        self.refresh()

    def refresh(self) -> None:
        rows = shortcut_rows(self._actions())
        self.table.setRowCount(len(rows))
        for row, values in enumerate(rows):
            for column, value in enumerate(values):
                self.table.setItem(row, column, QTableWidgetItem(value))
        self.table.resizeColumnToContents(0)
        self.table.resizeColumnToContents(2)
        self.apply_filter(self.filter_edit.text())

    def rows(self, visible_only: bool = True) -> list[tuple[str, str, str]]:
        """The rows the table shows (all of them with visible_only=False)."""
        return [tuple(self.table.item(row, column).text() for column in range(3))
                for row in range(self.table.rowCount()) if not (visible_only and self.table.isRowHidden(row))]

    def apply_filter(self, text: str) -> None:
        """Show the rows holding every word of `text` (in any column, any case)."""
        words = text.casefold().split()
        for row in range(self.table.rowCount()):
            line = " ".join(self.table.item(row, column).text() for column in range(3)).casefold()
            self.table.setRowHidden(row, not all(word in line for word in words))

    def showEvent(self, event) -> None:
        self.refresh()
        super().showEvent(event)


# -- About ------------------------------------------------------------------------------------------------

def library_version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def about_text(device: str = LOOKING) -> str:
    """What the About box says, as plain lines: the app, what it runs on, and the compute device."""
    lines = [f"Latent Canvas {app.__version__}",
             "A desktop image editor built around Generative Fill with latent diffusion.", "",
             f"Python {platform.python_version()}",
             f"Qt {qVersion()}, PySide6 {PySide6.__version__}"]
    lines += [f"{name} {library_version(distribution)}" for name, distribution in LIBRARIES]
    lines += ["", f"Compute device: {device}"]
    return "\n".join(lines)


def compute_device() -> str:
    """The device Generative Fill runs on by default ("cuda float16, NVIDIA H200"), or why there is none;
    imports torch, so for a background thread."""
    from app.engine import preload
    from app.engine.diffusion.devices import plan_device
    from app.engine.events import EngineError

    preload.wait_if_started()
    try:
        plan = plan_device()
    except (EngineError, RuntimeError, ImportError) as exc:
        return f"none found ({' '.join(str(exc).split())})"
    if plan.device != "cuda":
        return plan.describe()
    import torch

    return f"{plan.describe()}, {torch.cuda.get_device_name(0)}"


class AboutDialog(QDialog):
    """Non-modal; the compute device line fills in when `find_device` (run on a background thread) returns."""

    def __init__(self, parent: QWidget | None = None, find_device: Callable[[], str] = compute_device) -> None:
        super().__init__(parent)
        self.setObjectName("aboutDialog")
        self.setAccessibleName("About Latent Canvas")
        self.setWindowTitle("About Latent Canvas")
        self.setModal(False)
        self.device = LOOKING
        self.label = QLabel(about_text())
        self.label.setObjectName("aboutText")
        self.label.setTextFormat(Qt.TextFormat.PlainText)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.close)
        layout = QVBoxLayout(self)
        layout.addWidget(self.label)
        layout.addWidget(buttons)
        call = BackgroundCall(_find, find_device, parent=self)
        call.finished.connect(self._device_found)
        call.start()

    def text(self) -> str:
        return self.label.text()

    def _device_found(self, device: str | None, error: Exception | None) -> None:
        self.device = device or f"none found ({type(error).__name__})"
        self.label.setText(about_text(self.device))


def _find(find_device: Callable[[], str]) -> str:
    """On the worker thread; not a method of the dialog, whose last reference must not be this thread's."""
    try:
        return find_device()
    except Exception as exc:  # noqa: BLE001 - the About box says so and the editor goes on
        return f"none found ({type(exc).__name__}: {' '.join(str(exc).split())})"


# -- the menu ---------------------------------------------------------------------------------------------

def show_shortcut_sheet(window: QMainWindow) -> ShortcutSheet:
    sheet = window.findChild(ShortcutSheet, "shortcutSheet")
    if sheet is None:
        sheet = ShortcutSheet(lambda: window.findChildren(QAction), window)
    sheet.show()
    sheet.raise_()
    sheet.activateWindow()
    return sheet


def show_about(window: QMainWindow) -> AboutDialog:
    about = window.findChild(AboutDialog, "aboutDialog")
    if about is None:
        about = AboutDialog(window)
    about.show()
    about.raise_()
    about.activateWindow()
    return about


def build_help_menu(window: QMainWindow, menu_bar: QMenuBar) -> QMenu:
    """Add "&Help" to `menu_bar`: Keyboard Shortcuts (F1; Cmd+? on macOS, as its Help key goes) and About."""
    menu = menu_bar.addMenu("&Help")
    menu.setObjectName("helpMenu")
    shortcuts = QAction("&Keyboard Shortcuts", window)
    shortcuts.setObjectName("shortcutsAction")
    shortcuts.setShortcut(QKeySequence(QKeySequence.StandardKey.HelpContents))
    shortcuts.triggered.connect(lambda _checked=False: show_shortcut_sheet(window))
    about = QAction("&About Latent Canvas", window)
    about.setObjectName("aboutAction")
    about.setMenuRole(QAction.MenuRole.AboutRole)
    about.triggered.connect(lambda _checked=False: show_about(window))
    menu.addAction(shortcuts)
    menu.addSeparator()
    menu.addAction(about)
    window.addActions([shortcuts, about])
    return menu
