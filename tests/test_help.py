"""The Help menu: the shortcut sheet is read from the window's own actions, and About says what runs."""
from __future__ import annotations

import PySide6
import pytest
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QDialog, QMainWindow, QMenu

import app
from app import MainWindow
from app.editor.model_library import ModelLibrary
from app.widgets.help_dialogs import (LOOKING, AboutDialog, ShortcutSheet, about_text, build_help_menu,
                                      plain_text, shortcut_rows)


def native(key) -> str:
    return QKeySequence(key).toString(QKeySequence.SequenceFormat.NativeText)


@pytest.fixture
def window(qtbot, tmp_path):
    window = MainWindow(settings=tmp_path / "settings.json", library=ModelLibrary(tmp_path / "models.json"),
                        recovery_root=tmp_path / "recovery")
    qtbot.addWidget(window)
    if window.findChild(QMenu, "helpMenu") is None:          # until the window builds its own
        build_help_menu(window, window.menuBar())
    return window


def open_sheet(qtbot, window) -> ShortcutSheet:
    window.findChild(QAction, "shortcutsAction").trigger()
    sheet = window.findChild(QDialog, "shortcutSheet")
    assert sheet is not None
    qtbot.waitUntil(sheet.isVisible, timeout=2000)
    return sheet


def keys_of(action: QAction) -> str:
    return ", ".join(dict.fromkeys(native(k) for k in action.shortcuts()))


def expected_rows(window) -> set[tuple[str, str]]:
    """(command, shortcuts) of every action the window declares with a shortcut, and of Help's."""
    declared = list(window.action_set.by_name.values()) + [window.findChild(QAction, "shortcutsAction")]
    return {(plain_text(a.text()), keys_of(a)) for a in declared if a.shortcuts()}


def test_the_help_menu_is_last_and_holds_shortcuts_and_about(window):
    menus = [a.text() for a in window.menuBar().actions()]
    assert menus[-1] == "&Help"
    help_menu = window.findChild(QMenu, "helpMenu")
    assert [a.text() for a in help_menu.actions() if not a.isSeparator()] == ["&Keyboard Shortcuts",
                                                                              "&About Latent Canvas"]
    assert window.findChild(QAction, "shortcutsAction").shortcut() == QKeySequence(
        QKeySequence.StandardKey.HelpContents)


def test_the_help_shortcut_takes_no_key_another_action_has(window):
    keys = [key for a in window.findChildren(QAction) for key in dict.fromkeys(native(k) for k in a.shortcuts())]
    assert len(keys) == len(set(keys)), sorted(k for k in keys if keys.count(k) > 1)


def test_the_sheet_lists_every_action_with_a_shortcut_once(qtbot, window):
    sheet = open_sheet(qtbot, window)
    rows = sheet.rows()
    assert {(command, keys) for _menu, command, keys in rows} == expected_rows(window)
    assert len(rows) == len(expected_rows(window))
    opening, brush, redo = (window.action_set[name] for name in ("open", "tool_brush", "redo"))
    assert ("File", plain_text(opening.text()), native(QKeySequence.StandardKey.Open)) in rows
    assert ("Mask", plain_text(brush.text()), "B") in rows
    assert ("Help", "Keyboard Shortcuts", native(QKeySequence.StandardKey.HelpContents)) in rows
    assert ("Edit", "Redo", keys_of(redo)) in rows and native("Ctrl+Y") in keys_of(redo)


def test_rows_follow_the_menu_bar_then_the_commands_alphabetically(qtbot, window):
    rows = open_sheet(qtbot, window).rows()
    menus = [plain_text(a.text()) for a in window.menuBar().actions()]
    positions = [menus.index(menu) for menu, _command, _keys in rows]
    assert positions == sorted(positions)
    for menu in {m for m, _c, _k in rows}:
        commands = [c for m, c, _k in rows if m == menu]
        assert commands == sorted(commands, key=str.casefold)


def test_a_changed_shortcut_shows_up_changed(qtbot, window):
    sheet = open_sheet(qtbot, window)
    fill = ("Generate", plain_text(window.action_set["fill"].text()))
    clear = plain_text(window.action_set["clear_mask"].text())
    assert [r[2] for r in sheet.rows() if r[:2] == fill] == [native("Ctrl+Return")]
    sheet.close()
    window.action_set["fill"].setShortcuts([QKeySequence("Ctrl+G"), QKeySequence("F5")])
    window.action_set["clear_mask"].setShortcut(QKeySequence())
    sheet = open_sheet(qtbot, window)
    assert [r[2] for r in sheet.rows() if r[:2] == fill] == [f"{native('Ctrl+G')}, {native('F5')}"]
    assert not [r for r in sheet.rows() if r[1] == clear]


def test_an_action_added_later_is_listed(qtbot, window):
    extra = QAction("&Sharpen", window)
    extra.setShortcut(QKeySequence("Ctrl+Shift+K"))
    window.addAction(extra)
    assert ("Other", "Sharpen", native("Ctrl+Shift+K")) in open_sheet(qtbot, window).rows()


def test_the_filter_narrows_the_rows_by_every_word_in_any_column(qtbot, window):
    sheet = open_sheet(qtbot, window)
    everything = sheet.rows()
    sheet.filter_edit.setText("MASK")
    masked = sheet.rows()
    assert 0 < len(masked) < len(everything)
    assert all("mask" in " ".join(row).casefold() for row in masked)
    sheet.filter_edit.setText("view CTRL")
    viewed = sheet.rows()
    assert viewed and all(menu == "View" and "ctrl" in keys.casefold() for menu, _command, keys in viewed)
    sheet.filter_edit.setText("no such command")
    assert sheet.rows() == []
    sheet.filter_edit.clear()
    assert sheet.rows() == everything


def test_the_sheet_is_one_non_modal_window_reused(qtbot, window):
    first = open_sheet(qtbot, window)
    assert not first.isModal()
    assert open_sheet(qtbot, window) is first
    first.close()
    assert not first.isVisible()


def test_shortcut_rows_of_bare_actions(qtbot):
    host = QMainWindow()
    qtbot.addWidget(host)
    menu = host.menuBar().addMenu("&Tools")
    sub = menu.addMenu("&More")
    inner, plain, silent = QAction("&Inner && Outer", host), QAction("Zap", host), QAction("Quiet", host)
    inner.setShortcuts([QKeySequence("Ctrl+K"), QKeySequence("Ctrl+Shift+K")])
    plain.setShortcut(QKeySequence("Z"))
    sub.addAction(inner)
    assert shortcut_rows([plain, inner, silent, inner]) == [
        ("Tools › More", "Inner & Outer", f"{native('Ctrl+K')}, {native('Ctrl+Shift+K')}"),
        ("Other", "Zap", "Z")]


# -- About ------------------------------------------------------------------------------------------------

def test_about_text_names_the_app_and_what_it_runs_on():
    text = about_text()
    assert f"Latent Canvas {app.__version__}" in text
    assert f"PySide6 {PySide6.__version__}" in text
    for name in ("Python", "Qt", "torch", "diffusers", "transformers"):
        assert f"\n{name} " in text
    assert text.endswith(f"Compute device: {LOOKING}")


def test_the_about_box_fills_in_the_device_from_a_background_thread(qtbot, window):
    import threading

    seen = []

    def find_device():
        seen.append(threading.current_thread() is threading.main_thread())
        return "cpu float32"
    about = AboutDialog(window, find_device=find_device)
    about.show()
    qtbot.waitUntil(lambda: about.device != LOOKING, timeout=5000)
    assert seen == [False]
    assert about.text() == about_text("cpu float32") and not about.isModal()
    assert f"PySide6 {PySide6.__version__}" in about.text() and app.__version__ in about.text()


def test_a_device_that_cannot_be_found_is_one_line(qtbot):
    def broken():
        raise RuntimeError("no driver\nat all")
    about = AboutDialog(find_device=broken)
    qtbot.addWidget(about)
    qtbot.waitUntil(lambda: about.device != LOOKING, timeout=5000)
    assert about.device == "none found (RuntimeError: no driver at all)"


def test_the_about_action_opens_one_about_box_that_names_the_device(qtbot, window):
    window.findChild(QAction, "aboutAction").trigger()
    about = window.findChild(QDialog, "aboutDialog")
    assert about is not None and about.isVisible()
    assert f"PySide6 {PySide6.__version__}" in about.text()
    qtbot.waitUntil(lambda: about.device != LOOKING, timeout=60000)     # imports torch, off the UI thread
    assert about.device.split()[0] in ("cpu", "cuda", "mps", "none")
    window.findChild(QAction, "aboutAction").trigger()
    assert window.findChildren(QDialog, "aboutDialog") == [about]
    about.close()
