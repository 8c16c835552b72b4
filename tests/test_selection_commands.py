"""The selection commands in the editor: one undo step each, Shift/Alt modes, off the UI thread for large
images, never applied over newer work."""
from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import Qt

from app.core.document import Document
from app.core.geometry import Rect
from app.editor.editor_state import EditorState
from app.editor.selection_commands import SelectionCommands, mode_for


def _two_colours(width: int = 40, height: int = 30) -> np.ndarray:
    image = np.zeros((height, width, 3), np.uint8)
    image[:, width // 2:] = 200
    return image


@pytest.fixture
def editor(qtbot):
    state = EditorState()
    state.set_document(Document.from_image(_two_colours()))
    commands = SelectionCommands(state)
    lines = []
    commands.status.connect(lambda text, error: lines.append((text, error)))
    return state, commands, lines


def test_the_magic_wand_selects_one_side_in_one_undo_step(editor):
    state, commands, lines = editor
    assert commands.magic_wand(30, 5)
    assert state.document.mask[:, 20:].min() == 255 and state.document.mask[:, :20].max() == 0
    assert state.history.stack.undoText() == "Magic wand" and lines[-1] == ("Magic wand: 600 px selected.", False)
    assert commands.magic_wand(5, 5, mode="add")
    assert state.document.mask.min() == 255
    assert commands.magic_wand(5, 5, mode="subtract")
    assert state.document.mask[:, :20].max() == 0 and state.document.mask[:, 20:].min() == 255
    state.history.stack.undo()
    state.history.stack.undo()
    state.history.stack.undo()
    assert not state.document.mask.any()


def test_grow_shrink_and_feather_need_a_mask_and_change_it(editor):
    state, commands, lines = editor
    assert not commands.grow(4) and lines[-1] == ("Paint or select a mask first.", True)
    mask = np.zeros((30, 40), np.uint8)
    mask[10:20, 10:20] = 255
    state.set_mask(mask, "Paint")
    assert commands.grow(2)
    assert state.document.mask[8:22, 10:20].min() == 255 and state.document.mask[7, 15] == 0
    assert commands.shrink(4)
    assert state.document.mask[12:18, 12:18].min() == 255 and state.document.mask[11, 15] == 0
    assert commands.feather(3)
    edge = state.document.mask[15, 9:14]
    assert 0 < edge.min() < 255 or 0 < edge.max() < 255


@pytest.mark.parametrize("shift, alt, mode", [(False, False, "replace"), (True, False, "add"),
                                              (False, True, "subtract"), (True, True, "intersect")])
def test_modifiers_choose_how_a_selection_combines(shift, alt, mode):
    modifiers = Qt.KeyboardModifier.NoModifier
    if shift:
        modifiers |= Qt.KeyboardModifier.ShiftModifier
    if alt:
        modifiers |= Qt.KeyboardModifier.AltModifier
    assert mode_for(modifiers) == mode


def test_select_object_runs_in_the_background_and_is_dropped_if_the_mask_changed(qtbot, editor):
    state, commands, lines = editor
    image = np.zeros((120, 160, 3), np.uint8)
    rng = np.random.default_rng(0)
    image[...] = rng.integers(0, 40, image.shape, dtype=np.uint8)
    rows, cols = np.indices((120, 160))
    image[(rows - 60) ** 2 + (cols - 80) ** 2 < 30 ** 2] = (230, 220, 40)
    state.set_document(Document.from_image(image))
    with qtbot.waitSignal(commands.busy_changed, timeout=30000, check_params_cb=lambda busy: not busy):
        assert commands.select_object(Rect(40, 20, 80, 80))
        assert commands.busy and not commands.magic_wand(1, 1)                  # one at a time
    disc = (rows - 60) ** 2 + (cols - 80) ** 2 < 28 ** 2
    assert state.document.mask[disc].min() == 255 and state.document.mask[:, :40].max() == 0
    with qtbot.waitSignal(commands.busy_changed, timeout=30000, check_params_cb=lambda busy: not busy):
        assert commands.select_object(Rect(40, 20, 80, 80))
        state.clear_mask()                                                       # the user goes on meanwhile
    assert not state.document.mask.any() and "was not applied" in lines[-1][0]


def test_the_wand_and_object_tools_work_from_the_canvas(qtbot, tmp_path):
    from PySide6.QtCore import QPoint

    from app import MainWindow
    from app.editor.model_library import ModelLibrary

    window = MainWindow(settings=tmp_path / "s.json", library=ModelLibrary(tmp_path / "m.json"),
                        recovery_root=tmp_path / "r")
    qtbot.addWidget(window)
    window.resize(900, 700)
    window.state.set_document(Document.from_image(_two_colours(80, 60)))
    window.canvas.fit()
    window.state.set_tool("wand")
    target = window.canvas.image_to_widget((60.5, 30.5))
    qtbot.mouseClick(window.canvas, Qt.MouseButton.LeftButton, pos=QPoint(round(target.x()), round(target.y())))
    mask = window.state.document.mask
    assert mask[:, 40:].min() == 255 and mask[:, :40].max() == 0
    assert window.state.history.stack.undoText() == "Magic wand"
    window.state.set_tool("object")
    boxes = []
    window.canvas.object_boxed.connect(lambda box, mods: boxes.append(box))
    a, b = window.canvas.image_to_widget((10, 10)), window.canvas.image_to_widget((30, 40))
    qtbot.mousePress(window.canvas, Qt.MouseButton.LeftButton, pos=QPoint(round(a.x()), round(a.y())))
    qtbot.mouseMove(window.canvas, QPoint(round(b.x()), round(b.y())))
    qtbot.mouseRelease(window.canvas, Qt.MouseButton.LeftButton, pos=QPoint(round(b.x()), round(b.y())))
    assert len(boxes) == 1 and abs(boxes[0].w - 20) <= 1 and abs(boxes[0].h - 30) <= 1
    qtbot.waitUntil(lambda: not window.selection.busy, timeout=20000)
