"""The selection commands of the Mask menu (grow, shrink, feather, colour range, keep the mask after Accept,
masks saved under a name), with the small dialogs that ask for their numbers and names. The tools that need
the canvas (magic wand, Select object) are canvas tools; their settings (tolerance, contiguous) are here too."""
from __future__ import annotations

from PySide6.QtGui import QAction, QColor
from PySide6.QtWidgets import QColorDialog, QInputDialog, QLineEdit, QMainWindow, QMenu

from app.core.document import MAX_MASK_NAME
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
    menu.addSeparator()
    save = add("save_mask", "Sa&ve Mask As…", lambda: ask_mask_name(window, commands, state))
    save.setToolTip("Keep the mask under a name, in the document and its project file, to load it again later")
    for name, text, run in (("load_mask", "Loa&d Mask", load_mask), ("delete_mask", "Delete Saved &Mask",
                                                                     delete_mask)):
        submenu = menu.addMenu(text)
        submenu.setObjectName(f"{name}Menu")
        submenu.aboutToShow.connect(lambda m=submenu, r=run: fill_mask_menu(m, state, commands, r))
        actions[name] = submenu.menuAction()
    return actions


def ask_mask_name(window: QMainWindow, commands: SelectionCommands, state) -> None:
    doc = state.document
    if doc is None or not doc.has_mask():
        commands.status.emit("Paint or select a mask first, then save it under a name.", True)
        return
    names = {m.name for m in doc.named_masks}
    suggestion = next(f"Mask {n}" for n in range(1, len(names) + 2) if f"Mask {n}" not in names)
    text, ok = QInputDialog.getText(window, "Save mask", f"Name (a saved mask of that name is replaced; up to "
                                    f"{MAX_MASK_NAME} characters):", QLineEdit.EchoMode.Normal, suggestion)
    if ok:
        save_mask(state, commands, text)


def save_mask(state, commands: SelectionCommands, name: str) -> bool:
    """Save the mask as `name` (replacing a mask saved under that name), with a line in the status bar."""
    doc = state.document
    replacing = doc is not None and doc.named_mask(" ".join(str(name).split())) is not None
    try:
        name = state.save_named_mask(name)
    except ValueError as exc:
        commands.status.emit(str(exc), True)
        return False
    commands.status.emit(f"Replaced the mask saved as '{name}'." if replacing else f"Saved the mask as '{name}'.",
                         False)
    return True


def load_mask(state, commands: SelectionCommands, name: str) -> bool:
    try:
        changed = state.load_named_mask(name)
    except ValueError as exc:
        commands.status.emit(str(exc), True)
        return False
    commands.status.emit(f"Loaded the mask '{name}'." if changed else f"The mask is '{name}' already.", False)
    return changed


def delete_mask(state, commands: SelectionCommands, name: str) -> bool:
    try:
        state.delete_named_mask(name)
    except ValueError as exc:
        commands.status.emit(str(exc), True)
        return False
    commands.status.emit(f"Deleted the saved mask '{name}' (Undo brings it back).", False)
    return True


def fill_mask_menu(menu: QMenu, state, commands: SelectionCommands, run) -> None:
    """One entry per saved mask of the document, in the order they were saved; run(state, commands, name)."""
    menu.clear()
    masks = state.document.named_masks if state.document is not None else ()
    if not masks:
        menu.addAction("No saved masks").setEnabled(False)
        return
    for named in masks:
        action = menu.addAction(named.name.replace("&", "&&"))
        action.setData(named.name)
        action.triggered.connect(lambda _checked=False, n=named.name: run(state, commands, n))


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
