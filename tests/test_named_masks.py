"""Named masks (Mask > Save Mask As, Load Mask, Delete Saved Mask): part of the document, each step undoable,
moved with the image by Expand, kept by projects and by crash recovery."""
from __future__ import annotations

import time

import numpy as np
import pytest
from PySide6.QtWidgets import QInputDialog, QMenu

from app.core.document import MAX_NAMED_MASKS, Document, NamedMask
from app.core.geometry import Rect
from app.core.openraster import load_project, save_project
from app.core.recovery import RecoveryStore, Snapshot, load
from app.editor.editor_state import EditorState
from tests.results import accept_result
from tests.test_autosave import crash, window_for

W, H = 80, 64


@pytest.fixture
def state(qtbot):
    s = EditorState()
    rng = np.random.default_rng(3)
    s.set_document(Document.from_image(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)))
    return s


def soft_mask(rect: Rect, seed: int = 0) -> np.ndarray:
    """An image-sized mask with soft values inside `rect`, every one non-zero."""
    mask = np.zeros((H, W), np.uint8)
    mask[rect.slices()] = np.random.default_rng(seed).integers(1, 256, (rect.h, rect.w), dtype=np.uint8)
    return mask


def labels(state) -> list[str]:
    stack = state.history.stack
    return [stack.text(i) for i in range(stack.count())]


def test_a_saved_mask_loads_back_bit_for_bit_and_every_step_undoes(state, qtbot):
    sky = soft_mask(Rect(10, 4, 30, 12))
    state.set_mask(sky, "Paint mask")
    with qtbot.waitSignal(state.named_masks_changed):
        assert state.save_named_mask("  sky ") == "sky"
    (kept,) = state.document.named_masks
    assert (kept.name, kept.rect) == ("sky", Rect(10, 4, 30, 12)) and not kept.pixels.flags.writeable
    state.clear_mask()
    with qtbot.waitSignal(state.mask_changed):
        assert state.load_named_mask("sky")
    assert np.array_equal(state.document.mask, sky)
    assert not state.load_named_mask("sky")                 # the mask already: no step
    assert labels(state) == ["Paint mask", "Save mask 'sky'", "Clear mask", "Load mask 'sky'"]
    stack = state.history.stack
    stack.undo()
    assert not state.document.mask.any()
    stack.undo()
    assert np.array_equal(state.document.mask, sky) and state.document.named_mask("sky") is kept
    with qtbot.waitSignal(state.named_masks_changed):
        stack.undo()
    assert state.document.named_masks == () and np.array_equal(state.document.mask, sky)
    for _ in range(3):
        stack.redo()
    assert state.document.named_mask("sky") is kept and np.array_equal(state.document.mask, sky)


def test_saving_under_a_used_name_replaces_that_mask_in_one_undoable_step(state):
    state.set_mask(soft_mask(Rect(0, 0, 8, 8)), "Paint mask")
    state.save_named_mask("sky")
    state.set_mask(soft_mask(Rect(2, 2, 6, 6), seed=1), "Paint mask")
    state.save_named_mask("ground")
    first = state.document.named_mask("sky")
    bigger = soft_mask(Rect(0, 0, 20, 10), seed=2)
    state.set_mask(bigger, "Paint mask")
    count = state.history.stack.count()
    state.save_named_mask("sky")
    assert [m.name for m in state.document.named_masks] == ["sky", "ground"]     # replaced in its place
    assert labels(state)[-1] == "Replace mask 'sky'" and state.history.stack.count() == count + 1
    assert np.array_equal(state.document.named_mask("sky").full(W, H), bigger)
    state.save_named_mask("sky")                             # the same pixels again: no step
    assert state.history.stack.count() == count + 1
    state.history.stack.undo()
    assert state.document.named_mask("sky") is first


def test_delete_is_one_step_and_undo_brings_the_mask_back(state):
    state.set_mask(soft_mask(Rect(5, 5, 10, 10)), "Paint mask")
    state.save_named_mask("sky")
    kept = state.document.named_mask("sky")
    state.delete_named_mask("sky")
    assert state.document.named_masks == () and labels(state)[-1] == "Delete mask 'sky'"
    state.history.stack.undo()
    assert state.document.named_masks == (kept,)
    with pytest.raises(ValueError, match="No mask is saved as 'cloud'"):
        state.delete_named_mask("cloud")
    with pytest.raises(ValueError, match="No mask is saved as 'cloud'"):
        state.load_named_mask("cloud")


def test_a_named_mask_step_costs_only_the_patches_it_adds_or_takes_away(state):
    state.set_mask(soft_mask(Rect(0, 0, 10, 5)), "Paint mask")
    state.save_named_mask("sky")
    state.save_named_mask("copy")
    state.delete_named_mask("sky")
    state.set_layer_visible(state.document.layers.layers[0].id, False)
    saved, copied, deleted, hidden = state.history.changes()[1:]
    assert saved.nbytes == copied.nbytes == deleted.nbytes == 50 and hidden.nbytes == 0


@pytest.mark.parametrize("name, message", [("", "needs a name"), ("   ", "needs a name"),
                                           ("x" * 101, "at most 100 characters"),
                                           ("bell\x07", "control characters"), ("a\ud800", "control characters")])
def test_names_that_cannot_be_used_are_refused_with_one_line(state, name, message):
    state.set_mask(soft_mask(Rect(0, 0, 4, 4)), "Paint mask")
    with pytest.raises(ValueError, match=message):
        state.save_named_mask(name)
    assert state.document.named_masks == () and state.history.stack.count() == 1


def test_an_empty_mask_and_a_mask_too_many_are_refused(state):
    with pytest.raises(ValueError, match="Paint or select a mask first"):
        state.save_named_mask("nothing")
    state.set_mask(soft_mask(Rect(0, 0, 4, 4)), "Paint mask")
    assert state.save_named_mask("a\n  b") == "a b"          # one line, its spaces made one
    for number in range(1, MAX_NAMED_MASKS):
        state.save_named_mask(f"mask {number}")
    with pytest.raises(ValueError, match="at most 64 saved masks"):
        state.save_named_mask("one more")
    state.save_named_mask("mask 1")                          # replacing one is still allowed
    assert len(state.document.named_masks) == MAX_NAMED_MASKS


def test_expand_moves_named_masks_with_the_image_and_undo_puts_them_back(state):
    left = soft_mask(Rect(0, 10, 12, 8))
    state.set_mask(left, "Paint mask")
    state.save_named_mask("left")
    state.set_canvas(Rect(-16, 0, W + 16, H))
    assert accept_result(state, np.full((H, W + 16, 3), 9, np.uint8))
    doc = state.document
    moved = doc.named_mask("left")
    assert (doc.width, moved.rect) == (W + 16, Rect(16, 10, 12, 8))
    assert not state.load_named_mask("left")                 # the mask, kept after Accept, moved the same way
    assert np.array_equal(doc.mask[10:18, 16:28], left[10:18, 0:12])
    state.history.stack.undo()
    assert doc.width == W and doc.named_mask("left").rect == Rect(0, 10, 12, 8)
    state.history.stack.redo()
    assert doc.named_mask("left").rect == Rect(16, 10, 12, 8)


def test_an_expand_that_cuts_into_the_image_cuts_the_named_masks_as_it_cuts_the_mask(state):
    edge = soft_mask(Rect(W - 24, 0, 20, 6))                 # 12 of its 20 columns stay in the new image
    state.set_mask(edge, "Paint mask")
    state.save_named_mask("edge")
    state.set_mask(soft_mask(Rect(W - 8, 30, 8, 8)), "Paint mask")
    state.save_named_mask("gone")                           # wholly in the part cut off
    state.set_canvas(Rect(-16, 0, W, H + 8))                # 16 px more on the left, 16 px less on the right
    assert accept_result(state, np.full((H + 8, W, 3), 9, np.uint8))
    doc = state.document
    assert [m.name for m in doc.named_masks] == ["edge"]
    cut = doc.named_mask("edge")
    assert cut.rect == Rect(W - 8, 0, 8, 6)
    assert np.array_equal(cut.pixels, edge[0:6, W - 24:W - 16])
    state.history.stack.undo()
    assert [m.name for m in doc.named_masks] == ["edge", "gone"]
    assert np.array_equal(doc.named_mask("edge").full(W, H), edge)


def test_a_project_keeps_every_named_mask_bit_for_bit(tmp_path):
    rng = np.random.default_rng(5)
    doc = Document.from_image(rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
    masks = (NamedMask.of("sky ❄ 雪", soft_mask(Rect(0, 0, W, 20))), NamedMask.of("door", soft_mask(Rect(30, 40, 9, 24))),
             NamedMask.of("dot", soft_mask(Rect(W - 1, H - 1, 1, 1))))
    doc.named_masks = masks
    save_project(tmp_path / "p.ora", doc)
    back = load_project(tmp_path / "p.ora")
    assert [m.name for m in back.named_masks] == ["sky ❄ 雪", "door", "dot"]
    for got, want in zip(back.named_masks, masks):
        assert got.rect == want.rect and got.pixels.dtype == np.uint8
        assert np.array_equal(got.pixels, want.pixels) and not got.pixels.flags.writeable
    doc.named_masks = ()
    save_project(tmp_path / "none.ora", doc)
    assert load_project(tmp_path / "none.ora").named_masks == ()


def test_a_project_saved_and_opened_in_the_editor_keeps_its_masks(qtbot, tmp_path, photo):
    window = window_for(qtbot, tmp_path)
    window.open_image(photo[0])
    sky = np.zeros((48, 64), np.uint8)
    sky[0:12, :] = 200
    window.state.set_mask(sky, "Paint mask")
    window.state.save_named_mask("sky")
    assert window.save_image(tmp_path / "p.ora")
    again = window_for(qtbot, tmp_path)
    assert again.open_image(tmp_path / "p.ora")
    again.state.clear_mask()
    assert again.state.load_named_mask("sky") and np.array_equal(again.state.document.mask, sky)


def test_recovery_keeps_named_masks_in_the_document_and_in_its_history(tmp_path):
    doc = Document.from_image(np.zeros((H, W, 3), np.uint8))
    state = EditorState()
    state.set_document(doc)
    state.set_mask(soft_mask(Rect(3, 4, 20, 10)), "Paint mask")
    state.save_named_mask("sky")
    state.set_mask(soft_mask(Rect(40, 30, 5, 5), seed=1), "Paint mask")
    state.save_named_mask("dot")
    state.delete_named_mask("sky")
    state.history.stack.undo()                              # the delete is redoable
    store = RecoveryStore(tmp_path, pid=999_101)
    store.save(Snapshot(doc, tuple(state.history.changes()), state.history.stack.index(), time.time()))
    back = load(store.folder)
    assert [m.name for m in back.document.named_masks] == ["sky", "dot"]
    for got, want in zip(back.document.named_masks, doc.named_masks):
        assert got.rect == want.rect and np.array_equal(got.pixels, want.pixels)
    recovered = EditorState()
    recovered.set_document(back.document)
    recovered.history.restore(back.changes, back.index)
    recovered.history.stack.redo()
    assert [m.name for m in back.document.named_masks] == ["dot"]
    for _ in range(4):
        recovered.history.stack.undo()
    assert back.document.named_masks == ()


def test_a_crashed_editor_gives_its_named_masks_back(qtbot, tmp_path, photo):
    window = window_for(qtbot, tmp_path)
    window.open_image(photo[0])
    sky = np.zeros((48, 64), np.uint8)
    sky[2:10, 5:60] = 255
    window.state.set_mask(sky, "Paint mask")
    with qtbot.waitSignal(window.autosave.saved, timeout=5000):
        window.state.save_named_mask("sky")
    crash(window)
    again = window_for(qtbot, tmp_path)
    assert again.offer_recovery(lambda text: "recover")
    doc = again.state.document
    assert [m.name for m in doc.named_masks] == ["sky"]
    again.state.clear_mask()
    assert again.state.load_named_mask("sky") and np.array_equal(doc.mask, sky)
    for _ in range(3):
        again.state.history.stack.undo()
    assert doc.named_masks == ()


def _entries(window, name: str) -> dict[str, object]:
    menu = window.findChild(QMenu, f"{name}Menu")
    menu.aboutToShow.emit()                                 # what opening the submenu does
    return {action.data(): action for action in menu.actions() if action.isEnabled()}


def test_the_mask_menu_saves_loads_and_deletes_named_masks(qtbot, tmp_path, photo, monkeypatch):
    window = window_for(qtbot, tmp_path)
    asked = []
    monkeypatch.setattr(QInputDialog, "getText", lambda *args: asked.append(args[4]) or ("sky", True))
    window.action_set["save_mask"].trigger()
    assert asked == [] and "Paint or select a mask first" in window.statusBar().currentMessage()
    window.open_image(photo[0])
    assert _entries(window, "load_mask") == {}              # only "No saved masks", disabled
    sky = np.zeros((48, 64), np.uint8)
    sky[0:12, :] = 255
    window.state.set_mask(sky, "Paint mask")
    window.action_set["save_mask"].trigger()
    assert asked == ["Mask 1"] and window.statusBar().currentMessage() == "Saved the mask as 'sky'."
    window.action_set["save_mask"].trigger()
    assert window.statusBar().currentMessage() == "Replaced the mask saved as 'sky'."
    window.state.clear_mask()
    _entries(window, "load_mask")["sky"].trigger()
    assert np.array_equal(window.state.document.mask, sky)
    assert window.statusBar().currentMessage() == "Loaded the mask 'sky'."
    assert window.state.history.stack.undoText() == "Load mask 'sky'"
    _entries(window, "delete_mask")["sky"].trigger()
    assert window.state.document.named_masks == () and _entries(window, "delete_mask") == {}
    assert window.state.history.stack.undoText() == "Delete mask 'sky'"


def test_a_name_the_dialog_gives_that_cannot_be_used_is_one_line_in_the_status_bar(qtbot, tmp_path, photo,
                                                                                     monkeypatch):
    window = window_for(qtbot, tmp_path)
    window.open_image(photo[0])
    window.state.set_mask(np.full((48, 64), 255, np.uint8), "Paint mask")
    monkeypatch.setattr(QInputDialog, "getText", lambda *args: ("   ", True))
    window.action_set["save_mask"].trigger()
    assert window.statusBar().currentMessage() == "A saved mask needs a name."
    monkeypatch.setattr(QInputDialog, "getText", lambda *args: ("sky", False))      # Cancel
    window.action_set["save_mask"].trigger()
    assert window.state.document.named_masks == ()
