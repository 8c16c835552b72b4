"""Layers in the editor: accepted results become generative layers, the Layers panel edits them, the staging
strip and its keys, pasted images as layers. Driven like a user would, with the scripted engine."""
from __future__ import annotations

import numpy as np
from PySide6.QtCore import QEvent, Qt
from PySide6.QtGui import QGuiApplication, QImage, QKeyEvent
from PySide6.QtWidgets import QApplication

from app.core.geometry import Rect
from app.engine.base import format_parameters
from app.engine.events import Variant
import pytest

from tests.test_main_window import ScriptedEngine, make_window, run_fill


@pytest.fixture
def settings(tmp_path):
    return tmp_path / "settings.json"


class MaskedEngine(ScriptedEngine):
    """As a real engine does: pixels outside the mask are the input's, bit for bit; inside, variant i is
    the colour (10 * (i + 1), 20, 30)."""

    def generate(self, request, job_id, emit, cancel):
        super().generate(request, job_id, emit, cancel)
        variants = []
        for i in range(request.sampling.variants):
            image = np.array(request.image[..., :3], copy=True)
            image[request.mask > 0] = (10 * (i + 1), 20, 30)
            seed = request.sampling.seed + i
            variants.append(Variant(image, seed, format_parameters(request, seed, self.label)))
        return tuple(variants)


def _fill(qtbot, window, rect: Rect, variants: int = 3, accept: int | None = 0, keep_all: bool = False):
    mask = np.zeros((window.state.document.height, window.state.document.width), np.uint8)
    mask[rect.slices()] = 255
    window.state.set_mask(mask, "Paint")
    window.panel.variants_spin.setValue(variants)
    run_fill(qtbot, window)
    if accept is not None:
        window.strip.list.setCurrentRow(accept)
        window.accept_current(keep_all=keep_all)


def _key(window, key, release: bool = False, text: str = "") -> None:
    kind = QEvent.Type.KeyRelease if release else QEvent.Type.KeyPress
    QApplication.sendEvent(window, QKeyEvent(kind, key, Qt.KeyboardModifier.NoModifier, text))


def test_three_fills_switch_the_first_layers_variant_and_hide_a_layer(qtbot, settings, photo):
    window = make_window(qtbot, settings, MaskedEngine())
    window.open_image(photo[0])
    state = window.state
    _fill(qtbot, window, Rect(2, 2, 10, 10), accept=0, keep_all=True)
    _fill(qtbot, window, Rect(30, 5, 10, 10), accept=1)
    _fill(qtbot, window, Rect(10, 30, 20, 10), accept=2)
    layers = state.document.layers.layers
    assert [layer.kind for layer in layers] == ["raster", "generative", "generative", "generative"]
    assert [len(layer.generation.variants) for layer in layers[1:]] == [3, 1, 1]
    image = state.document.image
    assert image[5, 5].tolist() == [10, 20, 30] and image[8, 35].tolist() == [20, 20, 30]
    assert image[35, 15].tolist() == [30, 20, 30]
    assert np.array_equal(image[20:28, 45:60], photo[1][20:28, 45:60])          # outside every mask
    first = layers[1].id
    steps = state.history.stack.count()
    assert state.select_variant(first, 2)                                      # after the third Accept
    assert state.document.image[5, 5].tolist() == [30, 20, 30]
    assert state.history.stack.count() == steps + 1
    assert state.set_layer_visible(layers[2].id, False)
    assert np.array_equal(state.document.image[5:15, 30:40], photo[1][5:15, 30:40])   # bit for bit
    state.history.stack.undo()
    state.history.stack.undo()
    assert state.document.image[5, 5].tolist() == [10, 20, 30]
    assert state.document.image[8, 35].tolist() == [20, 20, 30]


def test_the_layers_panel_shows_the_stack_top_first_and_edits_it(qtbot, settings, photo):
    window = make_window(qtbot, settings, MaskedEngine())
    window.open_image(photo[0])
    _fill(qtbot, window, Rect(2, 2, 10, 10), keep_all=True)
    panel = window.layers_panel
    panel.refresh()
    assert panel.list.count() == 2
    assert panel.list.item(0).text().startswith("Fill 1") and panel.list.item(1).text() == "Background"
    assert panel.variants.isVisibleTo(panel) and panel.variants.count() == 3
    assert panel.variants.iconSize().width() > 0
    panel.variants.setCurrentRow(1)                                         # one click switches it
    assert window.state.document.image[5, 5].tolist() == [20, 20, 30]
    panel.refresh()
    panel.list.item(0).setCheckState(Qt.CheckState.Unchecked)                # the eye
    assert np.array_equal(window.state.document.image, photo[1])
    panel.refresh()
    panel.list.item(0).setText("Door")                                      # a rename, as the editor does
    assert window.state.document.layers.layers[-1].name == "Door"
    panel.refresh()
    panel.list.setCurrentRow(0)
    panel.opacity.setValue(40)
    assert window.state.document.layers.layers[-1].opacity == 0.4
    undo_text = window.state.history.stack.undoText()
    assert undo_text == "Layer opacity"
    qtbot.mouseClick(panel.delete_button, Qt.MouseButton.LeftButton)
    assert len(window.state.document.layers) == 1
    window.state.history.stack.undo()
    assert len(window.state.document.layers) == 2


def test_merge_down_and_flatten_keep_what_is_seen(qtbot, settings, photo):
    window = make_window(qtbot, settings, MaskedEngine())
    window.open_image(photo[0])
    _fill(qtbot, window, Rect(2, 2, 10, 10))
    _fill(qtbot, window, Rect(20, 20, 10, 10))
    seen = window.state.document.image.copy()
    window.state.set_active_layer(window.state.document.layers.layers[-1].id)
    window.action_set["merge_down"].trigger()
    assert len(window.state.document.layers) == 2
    assert np.array_equal(window.state.document.image, seen)
    window.action_set["flatten"].trigger()
    assert len(window.state.document.layers) == 1 and np.array_equal(window.state.document.image, seen)
    window.state.history.stack.undo()
    window.state.history.stack.undo()
    assert len(window.state.document.layers) == 3


def test_staging_keys_cycle_preview_before_and_accept(qtbot, settings, photo):
    window = make_window(qtbot, settings, MaskedEngine())
    window.open_image(photo[0])
    _fill(qtbot, window, Rect(2, 2, 10, 10), variants=3, accept=None)
    assert window.state.candidate[0][5, 5].tolist() == [10, 20, 30]
    _key(window, Qt.Key.Key_Right)
    assert window.strip.list.currentRow() == 1 and window.state.candidate[0][5, 5].tolist() == [20, 20, 30]
    _key(window, Qt.Key.Key_Left)
    _key(window, Qt.Key.Key_Left)                                          # wraps round to the last
    assert window.strip.list.currentRow() == 2
    _key(window, Qt.Key.Key_Backslash, text="\\")
    assert window.state.candidate is None                                  # the image before
    _key(window, Qt.Key.Key_Backslash, release=True, text="\\")
    assert window.state.candidate[0][5, 5].tolist() == [30, 20, 30]
    _key(window, Qt.Key.Key_Return)
    assert not window.session.variants and window.state.document.image[5, 5].tolist() == [30, 20, 30]


def test_the_strip_shows_the_filled_region_and_keeps_its_space(qtbot, settings, photo):
    window = make_window(qtbot, settings, MaskedEngine())
    window.resize(1200, 800)
    window.show()
    try:
        window.open_image(photo[0])
        qtbot.waitExposed(window)
        qtbot.wait(20)
        before, zoom = window.canvas.size(), window.canvas._zoom
        _fill(qtbot, window, Rect(40, 30, 6, 4), accept=None)
        assert window.session.focus() == Rect(16, 6, 48, 42)     # the mask grown by feather 8 + 16 of context
        assert window.strip.isVisible() and window.strip.list.count() == 3
        qtbot.wait(20)
        assert window.canvas.size() == before and window.canvas._zoom == zoom      # no jump
        window.session.discard()
        qtbot.wait(20)
        assert window.canvas.size() == before and window.canvas._zoom == zoom
    finally:
        window.state.history.stack.setClean()         # closing asks about unsaved work: nothing to ask
        window.hide()


def test_variant_thumbnails_show_the_region_a_small_fill_changed():
    from app.widgets.variants_strip import region_thumbnail
    image = np.zeros((400, 600, 3), np.uint8)
    image[100:120, 200:260] = 255
    variant = Variant(image, 1, "").with_thumbnail()
    small = region_thumbnail(variant, Rect(190, 90, 80, 40))
    assert small.shape[:2] == (40, 80) and small[20, 40].tolist() == [255, 255, 255]
    assert region_thumbnail(variant, Rect(0, 0, 590, 390)) is variant.thumbnail       # most of it: whole
    assert region_thumbnail(variant, None) is variant.thumbnail


def test_pasted_and_dropped_images_become_layers(qtbot, settings, photo, tmp_path):
    window = make_window(qtbot, settings, MaskedEngine())
    window.open_image(photo[0])
    small = QImage(8, 6, QImage.Format.Format_RGB888)
    small.fill(Qt.GlobalColor.red)
    QGuiApplication.clipboard().setImage(small)
    window.files.paste()
    layers = window.state.document.layers.layers
    assert len(layers) == 2 and layers[-1].rect == Rect(28, 21, 8, 6)      # centred
    assert window.state.document.image[21, 28].tolist() == [255, 0, 0]
    assert window.state.history.stack.undoText() == "Add layer"
    assert window.files.add_file(photo[0])
    assert len(window.state.document.layers) == 3 and window.state.document.layers.layers[-1].name == "photo"


def test_a_result_for_an_image_of_another_size_is_refused_in_one_line(qtbot, settings, photo):
    from tests.results import accept_result

    window = make_window(qtbot, settings, MaskedEngine())
    window.open_image(photo[0])
    _fill(qtbot, window, Rect(2, 2, 10, 10), accept=None)
    lines = []
    window.session.status.connect(lambda text, error: lines.append((text, error)))
    window.state.set_canvas(Rect(-16, 0, 80, 48))                  # meanwhile the image grew by an Expand
    assert accept_result(window.state, np.zeros((48, 80, 3), np.uint8))
    before = window.state.document.image.copy()
    assert not window.session.accept(0)
    assert lines[-1][1] and "changed size since this job started" in lines[-1][0] and "\n" not in lines[-1][0]
    assert np.array_equal(window.state.document.image, before) and len(window.state.document.layers) == 2


def test_dragging_a_row_in_the_layers_dock_reorders_the_stack(qtbot, settings, photo):
    from PySide6.QtCore import QModelIndex

    window = make_window(qtbot, settings, MaskedEngine())
    window.open_image(photo[0])
    _fill(qtbot, window, Rect(2, 2, 10, 10))
    _fill(qtbot, window, Rect(4, 4, 10, 10), accept=1)
    panel = window.layers_panel
    panel.refresh()
    assert [panel.list.item(r).text()[:6] for r in range(3)] == ["Fill 2", "Fill 1", "Backgr"]
    assert window.state.document.image[6, 6].tolist() == [20, 20, 30]        # Fill 2 on top
    model = panel.list.model()
    assert model.moveRow(QModelIndex(), 0, QModelIndex(), 2)                 # Fill 2 dropped below Fill 1
    names = [layer.name[:6] for layer in window.state.document.layers.layers]
    assert names == ["Backgr", "Fill 2", "Fill 1"] and window.state.history.stack.undoText() == "Move layer"
    assert window.state.document.image[6, 6].tolist() == [10, 20, 30]        # Fill 1 shows now
    window.state.history.stack.undo()
    assert window.state.document.image[6, 6].tolist() == [20, 20, 30]


def test_the_strip_thumbnails_become_the_filled_region(qtbot, settings):
    from app.core.document import Document

    window = make_window(qtbot, settings, MaskedEngine())
    window.state.set_document(Document.from_image(np.full((300, 400, 3), 90, np.uint8)))
    _fill(qtbot, window, Rect(200, 100, 40, 10), accept=None)
    focus = window.session.focus()
    assert focus == Rect(176, 76, 88, 58)                      # the mask grown by feather 8 + 16 of context
    size = window.strip.list.item(0).icon().availableSizes()[0]
    assert abs(size.width() / size.height() - 400 / 300) < 0.05          # at first the whole image's
    qtbot.waitUntil(lambda: abs(window.strip.list.item(2).icon().availableSizes()[0].width()
                                / window.strip.list.item(2).icon().availableSizes()[0].height() - 88 / 58) < 0.05)
