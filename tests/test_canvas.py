"""CanvasView driven by real mouse, wheel and key events on a shown, fixed-size widget."""
from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QEvent, QPoint, QPointF, Qt
from PySide6.QtGui import QColor, QMouseEvent, QWheelEvent
from PySide6.QtWidgets import QApplication

from app.core.document import Document
from app.core.geometry import Rect
from app.editor.editor_state import EditorState
from app.widgets import canvas_tools as tools
from app.widgets.canvas import CanvasView

W, H = 200, 120          # image size
VIEW_W, VIEW_H = 640, 480


@pytest.fixture
def state():
    s = EditorState()
    image = np.zeros((H, W, 3), np.uint8)
    image[..., 1] = 128
    s.set_document(Document.from_image(image))
    return s


@pytest.fixture
def view(qtbot, state):
    v = CanvasView(state)
    v.setFixedSize(VIEW_W, VIEW_H)
    qtbot.addWidget(v)
    v.show()
    qtbot.waitExposed(v)
    v.fit()
    assert v.zoom >= 2.0   # so a widget pixel is at most half an image pixel
    return v


def wpos(view, x, y) -> QPoint:
    return view.image_to_widget(x, y).toPoint()


def press(qtbot, view, x, y, modifier=Qt.NoModifier, button=Qt.LeftButton):
    qtbot.mousePress(view, button, modifier, wpos(view, x, y))


def release(qtbot, view, x, y, modifier=Qt.NoModifier, button=Qt.LeftButton):
    qtbot.mouseRelease(view, button, modifier, wpos(view, x, y))


def move(view, x, y, buttons=Qt.LeftButton, modifier=Qt.NoModifier):
    widget_move(view, QPointF(wpos(view, x, y)), buttons, modifier)


def widget_move(view, local: QPointF, buttons=Qt.LeftButton, modifier=Qt.NoModifier):
    event = QMouseEvent(QEvent.MouseMove, local, QPointF(view.mapToGlobal(local)), Qt.NoButton,
                        buttons, modifier)
    QApplication.sendEvent(view, event)


def drag(qtbot, view, points, modifier=Qt.NoModifier, button=Qt.LeftButton):
    """Press, move and release where `points` (image coordinates) lie when the drag begins: the view may
    zoom or scroll during the drag, the mouse path stays the one the user made."""
    path = [wpos(view, x, y) for x, y in points]
    qtbot.mousePress(view, button, modifier, path[0])
    for point in path[1:]:
        widget_move(view, QPointF(point), button, modifier)
    qtbot.mouseRelease(view, button, modifier, path[-1])


def bbox(mask):
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def test_identity(view):
    assert view.objectName() == "canvas" and view.accessibleName() == "Canvas"
    assert view.focusPolicy() == Qt.StrongFocus


def test_brush_stroke_paints_path_and_is_one_undo_step(qtbot, view, state):
    state.set_brush(size=16, softness=0.0)
    drag(qtbot, view, [(40, 60), (70, 60), (100, 60), (130, 60)])
    mask = state.document.mask
    assert (mask[60, 40:131] == 255).all()
    assert mask[20, 80] == 0 and mask[100, 80] == 0 and mask[60, 170] == 0
    left, top, right, bottom = bbox(mask)
    assert abs(left - 32) <= 1 and abs(right - 138) <= 1
    assert abs((bottom - top) - 16) <= 1
    assert state.history.stack.count() == 1
    painted = mask.copy()
    state.history.stack.undo()
    assert not state.document.mask.any()
    state.history.stack.redo()
    assert np.array_equal(state.document.mask, painted)


def test_click_paints_one_dab_of_brush_size(qtbot, view, state):
    state.set_brush(size=20, softness=0.0)
    press(qtbot, view, 100, 60)
    release(qtbot, view, 100, 60)
    left, top, right, bottom = bbox(state.document.mask)
    assert abs((right - left) - 20) <= 1 and abs((bottom - top) - 20) <= 1
    assert abs((left + right) / 2 - 100) <= 1 and abs((top + bottom) / 2 - 60) <= 1
    assert state.history.stack.count() == 1


def test_diagonal_fast_stroke_is_continuous(qtbot, view, state):
    state.set_brush(size=6, softness=0.0)
    drag(qtbot, view, [(10, 10), (190, 110)])
    mask = state.document.mask
    for t in np.linspace(0.0, 1.0, 50):
        x, y = 10 + 180 * t, 10 + 100 * t
        assert mask[int(y), int(x)] == 255


def test_restroking_does_not_accumulate_soft_values(qtbot, view, state):
    state.set_brush(size=30, softness=1.0)
    drag(qtbot, view, [(60, 60), (140, 60)])
    once = state.document.mask.copy()
    drag(qtbot, view, [(60, 60), (140, 60)])
    assert np.array_equal(state.document.mask, once)


def test_softness_controls_edge_values(qtbot, view, state):
    state.set_brush(size=40, softness=0.0)
    drag(qtbot, view, [(50, 60), (51, 60)])
    assert set(np.unique(state.document.mask)) <= {0, 255}
    state.clear_mask()
    state.set_brush(softness=1.0)
    drag(qtbot, view, [(50, 60), (51, 60)])
    mask = state.document.mask
    soft = (mask > 0) & (mask < 255)
    assert soft.sum() > 200
    assert mask[60, 50] > 200 and mask[60, 50 + 19] < mask[60, 50 + 10] < mask[60, 50]


def test_eraser_clears_and_undo_restores(qtbot, view, state):
    state.set_mask(np.full((H, W), 255, np.uint8), "Fill")
    state.set_tool("eraser")
    state.set_brush(size=10, softness=0.0)
    drag(qtbot, view, [(20, 30), (180, 30)])
    mask = state.document.mask
    assert (mask[30, 20:181] == 0).all()
    assert (mask[60:, :] == 255).all()
    assert abs((mask == 0).any(axis=1).sum() - 10) <= 1
    assert state.history.stack.count() == 2
    assert state.history.stack.undoText() == "Erase"
    state.history.stack.undo()
    assert (state.document.mask == 255).all()


def test_stroke_outside_image_is_clipped(qtbot, view, state):
    state.set_canvas(Rect(-40, 0, W + 40, H))
    view.fit()
    state.set_brush(size=20, softness=0.0)
    drag(qtbot, view, [(-30, 60), (5, 60)])
    left, _, right, _ = bbox(state.document.mask)
    assert left == 0 and abs(right - 15) <= 1


def test_rect_selection_and_shift_subtract(qtbot, view, state):
    state.set_tool("rect")
    drag(qtbot, view, [(30, 20), (80, 50), (120, 90)])
    mask = state.document.mask
    left, top, right, bottom = bbox(mask)
    assert max(abs(left - 30), abs(top - 20), abs(right - 120), abs(bottom - 90)) <= 1
    assert (mask[top:bottom, left:right] == 255).all()
    assert state.history.stack.count() == 1
    drag(qtbot, view, [(50, 40), (70, 60)], modifier=Qt.ShiftModifier)
    assert (state.document.mask[41:59, 51:69] == 0).all()
    assert state.document.mask[30, 100] == 255
    assert state.history.stack.count() == 2


def test_lasso_fills_polygon(qtbot, view, state):
    state.set_tool("lasso")
    triangle = [(20, 20), (60, 20), (100, 20), (100, 60), (100, 100), (60, 60)]
    drag(qtbot, view, triangle)
    mask = state.document.mask
    assert mask[30, 90] == 255 and mask[90, 98] == 255
    assert mask[80, 40] == 0 and mask[10, 50] == 0 and mask[50, 150] == 0
    expected = np.zeros_like(mask)
    tools.fill_polygon(expected, [(20, 20), (100, 20), (100, 100)], 255)
    assert np.count_nonzero(mask != expected) < 0.05 * np.count_nonzero(expected)
    assert state.history.stack.count() == 1


def test_bracket_keys_resize_brush_and_letter_keys_pick_tools(qtbot, view, state):
    state.set_brush(size=40)
    qtbot.keyClick(view, Qt.Key_BracketRight)
    assert state.brush_size == 46
    qtbot.keyClick(view, Qt.Key_BracketLeft)
    qtbot.keyClick(view, Qt.Key_BracketLeft)
    assert state.brush_size < 40
    state.set_brush(size=1)
    qtbot.keyClick(view, Qt.Key_BracketLeft)
    assert state.brush_size == 1
    qtbot.keyClick(view, Qt.Key_BracketRight)
    assert state.brush_size == 2
    for key, tool in ((Qt.Key_E, "eraser"), (Qt.Key_M, "rect"), (Qt.Key_L, "lasso"),
                      (Qt.Key_B, "brush")):
        qtbot.keyClick(view, key)
        assert state.tool == tool


def test_drag_right_edge_outward_extends_canvas_snapped(qtbot, view, state):
    assert view.edges_at(QPointF(wpos(view, W, 60))) == "r"
    sizes = []
    state.canvas_changed.connect(lambda: sizes.append(state.document.canvas))
    path = [wpos(view, x, y) for x, y in ((W, 60), (W + 50, 62), (W + 101, 62))]
    qtbot.mousePress(view, Qt.LeftButton, Qt.NoModifier, path[0])
    widget_move(view, QPointF(path[1]))
    assert view.canvas_preview is not None and view.canvas_preview.right == W + 48
    assert state.document.canvas == Rect(0, 0, W, H)    # nothing committed while dragging
    widget_move(view, QPointF(path[2]))
    qtbot.mouseRelease(view, Qt.LeftButton, Qt.NoModifier, path[2])
    canvas = state.document.canvas
    assert canvas.right == W + 104 and (canvas.right - W) % 8 == 0
    assert (canvas.left, canvas.top, canvas.bottom) == (0, 0, H)
    assert state.history.stack.count() == 1 and len(sizes) == 1
    state.history.stack.undo()
    assert state.document.canvas == Rect(0, 0, W, H)


def test_corner_drag_moves_two_edges(qtbot, view, state):
    assert view.edges_at(QPointF(wpos(view, 0, 0))) == "tl"
    drag(qtbot, view, [(0, 0), (-20, -10), (-33, -17)])
    canvas = state.document.canvas
    assert (canvas.left, canvas.top) == (-32, -16)
    assert (canvas.right, canvas.bottom) == (W, H)
    assert state.history.stack.count() == 1


def test_edge_drag_inward_with_the_canvas_tool_crops_clamped_and_click_makes_no_step(qtbot, view, state):
    state.set_tool("canvas")
    drag(qtbot, view, [(W, 60), (100, 60), (-80, 60)])
    canvas = state.document.canvas
    assert canvas.left == 0 and 8 <= canvas.right <= 15 and (canvas.right - W) % 8 == 0
    assert state.history.stack.count() == 1
    state.history.stack.undo()
    state.set_tool("brush")
    press(qtbot, view, 60, 0)
    release(qtbot, view, 60, 0)
    assert state.document.canvas == Rect(0, 0, W, H) and state.history.stack.index() == 0
    assert not state.document.mask.any()


def test_edge_drag_works_with_any_tool_and_changes_cursor(qtbot, view, state):
    state.set_tool("lasso")
    move(view, 100, H, buttons=Qt.NoButton)
    assert view.cursor().shape() == Qt.SizeVerCursor
    move(view, 100, 60, buttons=Qt.NoButton)
    assert view.cursor().shape() == Qt.CrossCursor
    drag(qtbot, view, [(100, H), (100, H + 40)])
    assert state.document.canvas == Rect(0, 0, W, H + 40)
    assert not state.document.mask.any()


def test_wheel_zoom_keeps_point_under_cursor(view, state):
    anchor = wpos(view, 50, 30)
    before = view.widget_to_image(QPointF(anchor))
    zooms = []
    view.zoom_changed.connect(zooms.append)
    old = view.zoom
    event = QWheelEvent(QPointF(anchor), QPointF(view.mapToGlobal(anchor)), QPoint(0, 0),
                        QPoint(0, 120), Qt.NoButton, Qt.NoModifier, Qt.NoScrollPhase, False)
    QApplication.sendEvent(view, event)
    assert view.zoom == pytest.approx(old * 1.25)
    assert zooms == [pytest.approx(old * 1.25)]
    after = view.image_to_widget(*before)
    assert abs(after.x() - anchor.x()) <= 1 and abs(after.y() - anchor.y()) <= 1


def test_zoom_methods_and_pan(qtbot, view, state):
    view.zoom_100()
    assert view.zoom == 1.0
    view.zoom_in()
    assert view.zoom == pytest.approx(1.25)
    view.zoom_out()
    view.zoom_out()
    assert view.zoom == pytest.approx(0.8)
    start = view.image_to_widget(100, 60)
    qtbot.mousePress(view, Qt.MiddleButton, Qt.NoModifier, start.toPoint())
    local = start + QPointF(30, -20)
    QApplication.sendEvent(view, QMouseEvent(QEvent.MouseMove, local, QPointF(view.mapToGlobal(local)),
                                             Qt.NoButton, Qt.MiddleButton, Qt.NoModifier))
    qtbot.mouseRelease(view, Qt.MiddleButton, Qt.NoModifier, local.toPoint())
    moved = view.image_to_widget(100, 60)
    assert moved.x() == pytest.approx(start.x() + 30) and moved.y() == pytest.approx(start.y() - 20)
    assert not state.document.mask.any()


def test_space_drag_pans_instead_of_painting(qtbot, view, state):
    qtbot.keyPress(view, Qt.Key_Space)
    start = view.image_to_widget(100, 60)
    drag(qtbot, view, [(100, 60), (110, 60), (120, 70)])
    qtbot.keyRelease(view, Qt.Key_Space)
    assert not state.document.mask.any()
    assert view.image_to_widget(100, 60).x() > start.x() + 20


def test_fit_shows_whole_canvas(view, state):
    state.set_canvas(Rect(-96, -40, W + 400, H + 80))
    view.zoom_100()
    view.fit()
    canvas = view.image_rect_to_widget(state.document.canvas)
    assert canvas.left() >= 0 and canvas.top() >= 0
    assert canvas.right() <= VIEW_W and canvas.bottom() <= VIEW_H
    assert canvas.width() >= VIEW_W - 60 or canvas.height() >= VIEW_H - 60


def test_new_document_is_fitted(qtbot, view, state):
    view.zoom_100()
    state.set_document(Document.from_image(np.zeros((1000, 3000, 3), np.uint8)))
    rect = view.image_rect_to_widget(state.document.canvas)
    assert rect.left() >= 0 and rect.right() <= VIEW_W and rect.width() > VIEW_W - 60


def pixel(view, x, y) -> QColor:
    return view.grab().toImage().pixelColor(wpos(view, x, y))


def test_renders_image_mask_candidate_and_preview(qtbot, view, state):
    assert pixel(view, 100, 60).green() == 128
    state.set_mask(np.full((H, W), 255, np.uint8), "Fill")
    tinted = pixel(view, 100, 60)
    assert tinted.red() > 80 and tinted.green() < 100
    blue = np.zeros((40, 60, 3), np.uint8)
    blue[..., 2] = 255
    state.set_preview(blue, Rect(20, 20, 60, 40))
    assert pixel(view, 50, 40).getRgb()[:3] == (0, 0, 255)
    assert pixel(view, 150, 90).red() > 80       # outside the preview the document shows
    yellow = np.full((H, W, 3), (255, 255, 0), np.uint8)
    state.set_candidate(yellow, Rect(0, 0, W, H))
    assert pixel(view, 150, 90).getRgb()[:3] == (255, 255, 0)   # over a candidate only the ants show the mask
    state.set_candidate(None, None)
    state.set_preview(None, None)
    assert pixel(view, 50, 40).red() > 80


def test_partial_mask_update_matches_full_rebuild(qtbot, view, state):
    state.set_brush(size=24, softness=0.5)
    drag(qtbot, view, [(30, 30), (90, 80)])
    live = view._overlay[0].copy()
    view._rebuild_overlay()
    assert np.array_equal(live, view._overlay[0])
    state.history.stack.undo()
    assert not view._overlay[0].any()


def test_checkerboard_outside_image_and_hint_without_document(qtbot, view, state):
    state.set_canvas(Rect(0, 0, W + 64, H))
    view.fit()
    colours = {pixel(view, W + 4 + dx, 60).getRgb() for dx in range(0, 56, 2)}
    assert len(colours) == 2                      # alternating checker squares
    assert all(max(c[:3]) - min(c[:3]) <= 8 for c in colours)   # neutral greys, not the image
    state.set_document(None)
    image = view.grab().toImage()
    background = image.pixelColor(3, 3)
    row = [image.pixelColor(x, VIEW_H // 2) for x in range(0, VIEW_W)]
    assert sum(c != background for c in row) > 20          # the hint text is drawn mid-height
    drag(qtbot, view, [(10, 10), (20, 20)])       # no document: nothing happens, no error
    assert state.history.stack.count() == 0


def test_cursor_moved_reports_image_coordinates(view):
    seen = []
    view.cursor_moved.connect(lambda x, y: seen.append((x, y)))
    move(view, 123.4, 45.6, buttons=Qt.NoButton)
    assert seen and abs(seen[-1][0] - 123) <= 1 and abs(seen[-1][1] - 45) <= 1


def test_drag_canvas_edges_constraints():
    image = Rect(0, 0, 201, 100)
    r = tools.drag_canvas_edges(image, image, "r", -1000, 0)
    assert r.right == 9 and r.w >= 8
    r = tools.drag_canvas_edges(image, image, "l", 1000, 0)
    assert r.left == 192 and image.right - r.left >= 8
    r = tools.drag_canvas_edges(image, image, "br", 13, 21)
    assert (r.right - 201, r.bottom - 100) == (16, 24)


# -- edges next to the image while painting ---------------------------------------------------------------

PAINTING_TOOLS = ["brush", "eraser", "rect", "lasso"]


@pytest.mark.parametrize("tool", PAINTING_TOOLS)
def test_painting_tools_never_grab_an_edge_over_the_image(view, state, tool):
    state.set_tool(tool)
    for x, y in ((W - 0.5, 60), (0.5, 60), (100, 0.5), (100, H - 0.5), (0.5, 0.5), (W - 0.5, H - 0.5)):
        assert view.edges_at(QPointF(wpos(view, x, y))) == "", (x, y)
        move(view, x, y, buttons=Qt.NoButton)
        assert view.cursor().shape() == Qt.CrossCursor
    assert view.edges_at(QPointF(wpos(view, W, 60)) + QPointF(2, 0)) == "r"     # just outside: the handle
    assert view.edges_at(QPointF(wpos(view, 0, 0)) - QPointF(2, 2)) == "tl"
    state.set_tool("canvas")
    assert view.edges_at(QPointF(wpos(view, W - 0.5, 60))) == "r"


def test_a_stroke_pressed_just_inside_the_image_edge_paints_and_keeps_the_canvas(qtbot, view, state):
    state.set_brush(size=8, softness=0.0)
    assert (W - (W - 1)) * view.zoom < view.EDGE_GRAB          # the press is within a handle's reach
    drag(qtbot, view, [(W - 1, 60), (W - 20, 60), (W - 40, 60)])
    assert state.document.canvas == Rect(0, 0, W, H)
    assert (state.document.mask[60, W - 40:W] == 255).all()
    assert state.history.stack.count() == 1 and state.history.stack.undoText() == "Brush stroke"


@pytest.mark.parametrize("tool", PAINTING_TOOLS)
def test_an_edge_dragged_inward_with_a_painting_tool_stops_at_the_image(qtbot, view, state, tool):
    state.set_tool(tool)
    drag(qtbot, view, [(W, 60), (150, 60), (20, 60)])
    assert state.document.canvas == Rect(0, 0, W, H) and state.history.stack.count() == 0
    state.set_canvas(Rect.from_edges(-40, 0, W + 48, H))
    view.fit()
    drag(qtbot, view, [(W + 48, 60), (W + 10, 60), (120, 60)])
    assert state.document.canvas == Rect.from_edges(-40, 0, W, H)
    assert not state.document.mask.any()


# -- the mask over a shown variant, soft strokes --------------------------------------------------------------

def test_the_mask_overlay_shows_over_a_candidate_and_so_do_new_strokes(qtbot, view, state):
    yellow = np.full((H, W, 3), (255, 255, 0), np.uint8)
    state.set_candidate(yellow, Rect(0, 0, W, H))
    mask = np.zeros((H, W), np.uint8)
    mask[:, :50] = 255
    state.set_mask(mask, "Paint")
    assert pixel(view, 150, 60).getRgb()[:3] == (255, 255, 0) == pixel(view, 25, 60).getRgb()[:3]   # no tint
    image = view.grab().toImage()
    edge = [image.pixelColor(view.image_to_widget(50.0, y).toPoint() + QPoint(dx, 0)).lightness()
            for y in range(10, 60, 3) for dx in range(-4, 5)]
    assert min(edge) < 60 and max(edge) > 200                  # but the ants run along the mask's edge
    state.set_brush(size=12, softness=0.0)
    drag(qtbot, view, [(100, 30), (140, 30)])
    assert state.document.mask[30, 120] == 255
    image = view.grab().toImage()
    stroke_edge = [image.pixelColor(view.image_to_widget(x, 24.0).toPoint() + QPoint(0, dy)).lightness()
                   for x in range(100, 140, 2) for dy in range(-6, 7)]
    assert min(stroke_edge) < 60 and max(stroke_edge) > 200    # the new stroke's outline shows over the variant
    assert pixel(view, 120, 90).getRgb()[:3] == (255, 255, 0)

def test_a_fully_soft_stroke_is_clearly_tinted_wherever_it_touches_the_mask(qtbot, view, state):
    state.set_brush(size=40, softness=1.0)
    press(qtbot, view, 100, 60)
    release(qtbot, view, 100, 60)
    mask = state.document.mask
    image = view.grab().toImage()
    rows, cols = np.nonzero(mask)
    assert len(rows) > 500 and (mask[rows, cols] < 64).sum() > 100      # a wide faint rim
    strong = mask >= 128
    inner = strong.copy()
    inner[1:, :] &= strong[:-1, :]
    inner[:-1, :] &= strong[1:, :]
    inner[:, 1:] &= strong[:, :-1]
    inner[:, :-1] &= strong[:, 1:]
    ants = strong & ~inner                                  # the marching ants run along these pixels
    reds = {}
    for y, x in zip(rows, cols):
        if ants[max(0, y - 1):y + 2, max(0, x - 1):x + 2].any():
            continue
        point = view.image_to_widget(x + 0.5, y + 0.5).toPoint()
        reds[int(mask[y, x])] = min(reds.get(int(mask[y, x]), 255), image.pixelColor(point).red())
    assert min(reds.values()) >= 40                  # the image's red is 0: every painted pixel shows
    assert reds[max(reds)] > reds[min(reds)]         # and stronger paint shows stronger
    assert image.pixelColor(view.image_to_widget(100.5, 10.5).toPoint()).red() == 0


# -- keeping the view steady and the dragged edge in sight ---------------------------------------------------

def test_an_edge_dragged_past_the_view_at_fit_zoom_stays_visible_and_the_view_refits(qtbot, view, state):
    fit_zoom = view.zoom
    press(qtbot, view, W, 60)
    start = QPointF(wpos(view, W, 60))
    widget_move(view, QPointF(VIEW_W + 150, start.y()))
    frame = view.image_rect_to_widget(view.canvas_preview)
    assert view.canvas_preview.right >= W + 150 / fit_zoom - 8
    assert view.zoom < fit_zoom
    assert 0 <= frame.left() and frame.right() <= VIEW_W - view.HANDLE / 2
    dragged = view.canvas_preview
    qtbot.mouseRelease(view, Qt.LeftButton, Qt.NoModifier, QPoint(VIEW_W + 150, int(start.y())))
    canvas = state.document.canvas
    assert canvas == dragged
    shown = view.image_rect_to_widget(canvas)
    assert shown.left() >= 0 and shown.right() <= VIEW_W and shown.top() >= 0 and shown.bottom() <= VIEW_H
    assert shown.width() >= VIEW_W - 2 * view.FIT_MARGIN - 1             # fitted, not just shrunk
    state.history.stack.undo()
    assert view.zoom == pytest.approx(fit_zoom)                       # the view follows the undo too


def test_an_edge_dragged_past_the_view_at_the_users_zoom_scrolls_and_keeps_the_zoom(qtbot, view, state):
    view.zoom_out()
    zoom = view.zoom
    press(qtbot, view, 100, H + 0.3)
    start = QPointF(wpos(view, 100, H + 0.3))
    widget_move(view, QPointF(start.x(), VIEW_H + 120))
    assert view.zoom == zoom
    frame = view.image_rect_to_widget(view.canvas_preview)
    assert view.canvas_preview.bottom >= H + (VIEW_H + 120 - start.y()) / zoom - 8
    assert frame.bottom() <= VIEW_H - view.HANDLE / 2
    qtbot.mouseRelease(view, Qt.LeftButton, Qt.NoModifier, QPoint(int(start.x()), VIEW_H + 120))
    assert view.zoom == zoom and state.document.canvas.bottom > H + 80
    assert view.image_rect_to_widget(state.document.canvas).bottom() <= VIEW_H


def test_a_canvas_preset_at_fit_zoom_refits_the_view(view, state):
    state.set_canvas(Rect(-200, -100, W + 400, H + 200))
    shown = view.image_rect_to_widget(state.document.canvas)
    assert shown.left() >= 0 and shown.right() <= VIEW_W and shown.top() >= 0 and shown.bottom() <= VIEW_H


def test_a_corner_dragged_out_of_sight_zooms_out_about_the_opposite_corner():
    canvas = Rect.from_edges(-300, -200, 200, 120)        # the top-left corner dragged far out
    zoom, (ox, oy) = tools.view_following_edges(canvas, "tl", 2.0, (100.0, 50.0), (640, 480), 8, True, 1 / 64)
    assert zoom < 2.0
    assert (200 * zoom + ox, 120 * zoom + oy) == pytest.approx((500.0, 290.0))     # where it was
    assert min(-300 * zoom + ox, -200 * zoom + oy) == pytest.approx(8.0)
    assert -300 * zoom + ox >= 8 - 1e-9 and -200 * zoom + oy >= 8 - 1e-9
    same = tools.view_following_edges(Rect.from_edges(-10, -10, 200, 120), "tl", 2.0, (100.0, 50.0), (640, 480),
                                      8, True, 1 / 64)
    assert same == (2.0, (100.0, 50.0))                    # in sight: the view does not move


def test_the_mask_has_marching_ants_along_its_edge(qtbot, view, state):
    mask = np.zeros((state.document.height, state.document.width), np.uint8)
    mask[20:40, 30:70] = 255
    state.set_mask(mask, "Paint")
    image = view.grab().toImage()
    edge = view.image_to_widget(50.5, 20.5).toPoint()
    inside = view.image_to_widget(50.5, 30.5).toPoint()
    row = [image.pixelColor(edge.x() + dx, edge.y()).lightness() for dx in range(-12, 12)]
    assert min(row) < 40 and max(row) > 215                 # black and white dashes along the top edge
    assert image.pixelColor(inside).lightness() not in (0, 255)


def test_zoomed_out_the_canvas_follows_a_layer_edit(qtbot):
    """The composite is updated in place: the reduction drawn when zoomed out must be made again."""
    from app.core.document import Document
    from app.widgets.qt_image import from_qimage

    s = EditorState()
    s.set_document(Document.from_image(np.zeros((512, 512, 3), np.uint8)))
    red = np.zeros((512, 512, 3), np.uint8)
    red[..., 0] = 255
    s.add_image_layer(red, "red", 0, 0)
    v = CanvasView(s)
    v.setFixedSize(200, 200)
    qtbot.addWidget(v)
    v.show()
    v.fit()
    assert v.zoom < 0.5
    v._mips.image_for(v.zoom)
    v._mips.wait()
    qtbot.waitUntil(lambda: v._mips.image_for(v.zoom)[1])
    assert from_qimage(v._mips.image_for(v.zoom)[0])[0, 0, 0] == 255
    s.set_layer_visible(s.document.layers.layers[-1].id, False)
    v.grab()                                           # a paint: the old reduction, while a new one is made
    qtbot.waitUntil(lambda: from_qimage(v._mips.image_for(v.zoom)[0])[0, 0, 0] == 0, timeout=3000)
