"""The selection commands of the Mask menu (grow, shrink, feather, colour range, keep the mask after Accept),
with the small dialogs that ask for their numbers. The tools that need the canvas (magic wand, Select object)
are canvas tools; their settings (tolerance, contiguous) are here too."""
from __future__ import annotations

from PySide6.QtGui import QAction, QColor
from PySide6.QtWidgets import QColorDialog, QInputDialog, QMainWindow, QMenu

from app.editor.selection_commands import SelectionCommands


def build_selection_actions(window: QMainWindow, menu: QMenu, commands: SelectionCommands, settings,
                            state) -> dict[str, QAction]:
    actions: dict[str, QAction] = {}

    def add(name: str, text: str, slot, shortcut: str | None = None) -> QAction:
        action = QAction(text, window)
        action.setObjectName(f"{name}Action")
        if shortcut:
            action.setShortcut(shortcut)
        action.triggered.connect(slot)
        menu.addAction(action)
        actions[name] = action
        return action

    def ask_px(title: str, run) -> None:
        px, ok = QInputDialog.getInt(window, title, "By how many pixels:", 8, 1, 256)
        if ok:
            run(px)

    menu.addSeparator()
    add("grow_mask", "&Grow Mask…", lambda: ask_px("Grow mask", commands.grow))
    add("shrink_mask", "Shri&nk Mask…", lambda: ask_px("Shrink mask", commands.shrink))
    add("feather_mask", "&Feather Mask…", lambda: ask_px("Feather mask", commands.feather))
    add("colour_range", "Select Colour &Range…", lambda: ask_colour_range(window, commands))
    add("wand_settings", "Magic Wand &Tolerance…", lambda: ask_wand(window, commands))
    menu.addSeparator()
    keep = add("keep_mask", "&Keep Mask After Accept", lambda checked=False: _keep_mask(settings, state, checked))
    keep.setCheckable(True)
    keep.setChecked(bool(state.keep_mask_after_accept))
    keep.setToolTip("After Accept the mask stays, so the same region can be filled again")
    return actions


def _keep_mask(settings, state, checked: bool) -> None:
    state.keep_mask_after_accept = bool(checked)
    settings.set("editor/keep_mask", bool(checked))


def ask_colour_range(window: QMainWindow, commands: SelectionCommands) -> None:
    colour = QColorDialog.getColor(QColor(128, 128, 128), window, "Select the colour to mask")
    if not colour.isValid():
        return
    tolerance, ok = QInputDialog.getInt(window, "Colour range", "Tolerance (0-255):", commands.tolerance, 0, 255)
    if ok:
        commands.colour_range((colour.red(), colour.green(), colour.blue()), tolerance, softness=8)


def ask_wand(window: QMainWindow, commands: SelectionCommands) -> None:
    tolerance, ok = QInputDialog.getInt(window, "Magic wand", "Tolerance (0-255):", commands.tolerance, 0, 255)
    if not ok:
        return
    commands.tolerance = tolerance
    choice, ok = QInputDialog.getItem(window, "Magic wand", "Select:", ["Touching pixels only (contiguous)",
                                                                        "Every matching pixel"],
                                      0 if commands.contiguous else 1, False)
    if ok:
        commands.contiguous = choice.startswith("Touching")
