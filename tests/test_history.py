"""Undo history: every document change is one step, bounded by bytes while keeping 5 levels."""
import numpy as np
import pytest

from app.core.changes import MaskPatchChange
from app.core.document import Document
from app.core.geometry import Rect
from app.editor.editor_state import EditorState
from tests.results import accept_result


@pytest.fixture
def state(qtbot):
    s = EditorState()
    rng = np.random.default_rng(0)
    s.set_document(Document.from_image(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)))
    return s


def paint(state, rect, value=255, label="Brush stroke"):
    doc = state.document
    before = doc.mask.copy()
    rows, cols = rect.slices()
    doc.mask[rows, cols] = value
    state.push_applied(MaskPatchChange.capture(doc, rect, before, label))


def test_stroke_undo_redo_restores_mask_exactly(state):
    paint(state, Rect(10, 5, 20, 8))
    after = state.document.mask.copy()
    assert after.sum() == 20 * 8 * 255
    stack = state.history.stack
    assert stack.count() == 1
    stack.undo()
    assert not state.document.mask.any()
    stack.redo()
    assert np.array_equal(state.document.mask, after)


def test_noop_stroke_adds_no_step(state):
    paint(state, Rect(0, 0, 4, 4), value=0)
    assert state.history.stack.count() == 0


def test_canvas_change_is_one_step_and_signals(state, qtbot):
    with qtbot.waitSignal(state.canvas_changed):
        state.set_canvas(Rect(-16, 0, 96, 64))
    assert state.document.is_extended()
    state.history.stack.undo()
    assert state.document.canvas == Rect(0, 0, 80, 64)
    state.set_canvas(Rect(0, 0, 80, 64))   # unchanged: no step
    assert state.history.stack.index() == 0


def test_accept_adds_a_generative_layer_and_grows_the_canvas_in_one_step(state):
    original = state.document.image
    paint(state, Rect(0, 0, 8, 8))
    state.set_canvas(Rect(-8, 0, 88, 64))
    result = np.full((64, 88, 3), 7, np.uint8)
    assert accept_result(state, result, "Steps: 1")
    doc = state.document
    np.testing.assert_array_equal(doc.image, result)
    assert doc.canvas == Rect(0, 0, 88, 64) and doc.parameters == "Steps: 1"
    assert doc.mask[:8, 8:16].all() and not doc.mask[:8, :8].any()     # the mask kept, moved with the image
    assert [layer.kind for layer in doc.layers.layers] == ["raster", "generative"]
    assert doc.layers.layers[0].rect == Rect(8, 0, 80, 64)               # the photo moved, not copied
    state.history.stack.undo()
    np.testing.assert_array_equal(state.document.image, original)
    assert state.document.canvas == Rect(-8, 0, 88, 64)
    assert state.document.mask[:8, :8].all()


def test_accept_can_clear_the_mask_when_asked(state):
    state.keep_mask_after_accept = False
    paint(state, Rect(0, 0, 8, 8))
    assert accept_result(state, np.full((64, 80, 3), 7, np.uint8))
    assert not state.document.mask.any()


def test_invert_and_clear_mask(state):
    paint(state, Rect(0, 0, 80, 32))
    state.invert_mask()
    assert not state.document.mask[:32].any() and (state.document.mask[32:] == 255).all()
    state.clear_mask()
    assert not state.document.mask.any()
    assert state.history.stack.count() == 3


def test_history_is_capped_in_bytes_but_keeps_min_levels(state):
    history = state.history
    one_step = 2 * 80 * 64            # a full-mask patch stores before + after
    history.budget_bytes = one_step * 8
    for i in range(20):
        paint(state, Rect(0, 0, 80, 64), value=(i * 13) % 255 + 1)
    assert history.nbytes() <= history.budget_bytes
    assert history.stack.count() == 8
    # the newest steps survive and still undo correctly
    for i in range(19, 11, -1):
        assert (state.document.mask == (i * 13) % 255 + 1).all()
        history.stack.undo()
    assert (state.document.mask == (11 * 13) % 255 + 1).all()


def test_min_levels_kept_even_over_budget(state):
    state.history.budget_bytes = 1
    for i in range(8):
        paint(state, Rect(0, 0, 80, 64), value=i + 1)
    assert state.history.stack.count() == 5


def test_byte_trim_keeps_clean_state(state):
    state.history.budget_bytes = 2 * 80 * 64 * 6
    for i in range(6):
        paint(state, Rect(0, 0, 80, 64), value=i + 1)
    state.history.stack.setClean()
    paint(state, Rect(0, 0, 80, 64), value=99)
    assert not state.history.stack.isClean()
    state.history.stack.undo()
    assert state.history.stack.isClean()


def test_an_undo_that_fails_is_one_line_and_never_takes_the_process_down():
    """An exception from C (numpy's broadcast error) leaving QUndoCommand.undo crashed PySide6 6.11."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import numpy as np
        from PySide6.QtCore import QCoreApplication
        from app.core.changes import Change
        from app.core.document import Document
        from app.editor.history import History

        class Broken(Change):
            label = "Broken step"
            nbytes = 0
            def apply(self, doc): pass
            def revert(self, doc): np.zeros(3)[...] = np.zeros(4)

        app = QCoreApplication([])
        doc = Document.from_image(np.zeros((4, 4, 3), np.uint8))
        history = History(lambda: doc, lambda change: None)
        messages = []
        if hasattr(history, "failed"):
            history.failed.connect(messages.append)
        history.push(Broken(), already_applied=True)
        history.stack.setClean()                  # saved just after the broken step
        history.stack.undo()
        stack = history.stack
        print(messages)
        print("after:", stack.count(), stack.index(), stack.isClean(), stack.canRedo())
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Could not undo \"Broken step\" (could not broadcast" in out.stdout
    # The step is gone from the history: nothing to redo, and the document (which still holds the step's
    # result) counts as unsaved, so closing asks and autosave keeps it.
    assert "after: 0 0 False False" in out.stdout


def test_an_undo_that_fails_right_after_a_save_leaves_the_document_unsaved(state):
    """Saved, then a step whose undo fails: the step leaves the history and the position is the saved one
    again, yet the document still holds the step. It must not count as saved, or closing would not ask."""
    paint(state, Rect(0, 0, 8, 8))
    state.history.stack.setClean()
    paint(state, Rect(20, 20, 8, 8))
    change = state.history.changes()[-1]
    change.before = change.before[:3]                      # no longer fits its rectangle: undo refuses it
    failed = []
    state.history.failed.connect(failed.append)
    state.history.stack.undo()
    assert failed and state.history.stack.index() == 1 and state.history.stack.count() == 1
    assert not state.history.stack.isClean()
    assert state.document.mask[20:28, 20:28].all()         # the document is as it was
