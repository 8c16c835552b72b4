"""Every menu and toolbar action of the main window, built in one place."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import QMainWindow, QMenu

from app.core.control_layers import CONTROL_KINDS, KIND_LABELS

EXPAND_PRESETS = (  # label, fraction, sides
    ("Expand all sides by 25%", 0.25, "lrtb"), ("Expand all sides by 50%", 0.5, "lrtb"),
    ("Expand left and right by 25%", 0.25, "lr"), ("Expand left and right by 50%", 0.5, "lr"),
    ("Expand top and bottom by 25%", 0.25, "tb"), ("Expand top and bottom by 50%", 0.5, "tb"),
    ("Expand left by 50%", 0.5, "l"), ("Expand right by 50%", 0.5, "r"),
    ("Expand top by 50%", 0.5, "t"), ("Expand bottom by 50%", 0.5, "b"),
)
ASPECT_PRESETS = ((1, 1), (4, 3), (3, 2), (16, 9), (21, 9), (3, 4), (2, 3), (9, 16))
TOOL_ACTIONS = (("brush", "Mask &Brush (or draw on a selected control layer)", "B"),
                ("eraser", "&Eraser (of the mask, or of a control layer's drawing)", "E"),
                ("rect", "&Rectangle Select", "M"), ("lasso", "&Lasso Select", "L"),
                ("wand", "Magic &Wand (Shift adds, Alt subtracts)", "W"),
                ("object", "Select &Object (drag a box round it)", "O"))


@dataclass
class Actions:
    by_name: dict[str, QAction] = field(default_factory=dict)
    tools: dict[str, QAction] = field(default_factory=dict)
    document_actions: list[QAction] = field(default_factory=list)   # enabled only with a document
    menus: dict[str, QMenu] = field(default_factory=dict)

    def __getitem__(self, name: str) -> QAction:
        return self.by_name[name]


def build_actions(window: QMainWindow, handlers: dict[str, Callable], undo: QAction, redo: QAction,
                  set_tool: Callable[[str], None], expand_preset: Callable[[float, str], None],
                  aspect_preset: Callable[[int, int], None]) -> Actions:
    """Create the actions and menus. `handlers` maps action names to slots."""
    actions = Actions()

    def make(name: str, text: str, shortcut=None, needs_document: bool = True) -> QAction:
        action = QAction(text, window)
        action.setObjectName(f"{name}Action")
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        if name in handlers:
            action.triggered.connect(lambda _checked=False, f=handlers[name]: f())
        actions.by_name[name] = action
        if needs_document:
            actions.document_actions.append(action)
        return action

    undo.setObjectName("undoAction")
    undo.setShortcut(QKeySequence.StandardKey.Undo)
    redo.setObjectName("redoAction")
    redo.setShortcuts([QKeySequence(QKeySequence.StandardKey.Redo), QKeySequence("Ctrl+Y")])
    actions.by_name.update(undo=undo, redo=redo)

    menu_bar = window.menuBar()
    file_menu = menu_bar.addMenu("&File")
    file_menu.addAction(make("open", "&Open…", QKeySequence.StandardKey.Open, needs_document=False))
    file_menu.addAction(make("save", "&Save Project", QKeySequence.StandardKey.Save))
    file_menu.addAction(make("save_as", "Save Project &As…", QKeySequence.StandardKey.SaveAs))
    file_menu.addAction(make("export", "&Export Image…", "Ctrl+Shift+E"))
    file_menu.addSeparator()
    file_menu.addAction(make("quit", "&Quit", QKeySequence.StandardKey.Quit, needs_document=False))

    edit_menu = menu_bar.addMenu("&Edit")
    edit_menu.addAction(undo)
    edit_menu.addAction(redo)
    edit_menu.addSeparator()
    edit_menu.addAction(make("copy", "&Copy Image", QKeySequence.StandardKey.Copy))
    edit_menu.addAction(make("paste", "&Paste as Layer", QKeySequence.StandardKey.Paste, needs_document=False))
    edit_menu.addSeparator()
    edit_menu.addAction(make("restyle", "&Restyle Image", "Ctrl+Shift+R"))

    mask_menu = menu_bar.addMenu("&Mask")
    group = QActionGroup(window)
    for tool, text, key in TOOL_ACTIONS:
        action = make(f"tool_{tool}", text, key)
        action.setCheckable(True)
        if tool in ("brush", "eraser"):            # the toolbar keeps their short names
            action.setIconText(text.split(" (")[0].replace("&", ""))
        action.triggered.connect(lambda _checked=False, t=tool: set_tool(t))
        group.addAction(action)
        mask_menu.addAction(action)
        actions.tools[tool] = action
    mask_menu.addSeparator()
    mask_menu.addAction(make("brush_smaller", "Brush &Smaller", "["))
    mask_menu.addAction(make("brush_larger", "Brush &Larger", "]"))
    mask_menu.addSeparator()
    mask_menu.addAction(make("clear_mask", "&Clear Mask", "Ctrl+D"))
    mask_menu.addAction(make("invert_mask", "&Invert Mask", "Ctrl+I"))
    mask_menu.addAction(make("select_all", "Mask &Everything", "Ctrl+A"))

    layer_menu = menu_bar.addMenu("&Layer")
    layer_menu.addAction(make("delete_layer", "&Delete Layer"))
    layer_menu.addAction(make("merge_down", "&Merge Down", "Ctrl+E"))
    layer_menu.addAction(make("flatten", "&Flatten Image"))
    layer_menu.addSeparator()
    add_control = handlers.get("add_control_layer", lambda _kind: None)
    scribble = make("add_scribble_layer", "New &Scribble Control Layer (draw on it with the Brush)", "Ctrl+Shift+N")
    scribble.triggered.connect(lambda _checked=False: add_control("scribble"))
    layer_menu.addAction(scribble)
    control_menu: QMenu = layer_menu.addMenu("Add &Control Layer")
    for kind in CONTROL_KINDS:
        action = make(f"add_control_{kind}", f"{KIND_LABELS[kind]} Control Layer")
        action.triggered.connect(lambda _checked=False, k=kind: add_control(k))
        control_menu.addAction(action)

    canvas_menu = menu_bar.addMenu("&Canvas")
    for label, fraction, sides in EXPAND_PRESETS:
        action = make(f"expand_{sides}_{int(fraction * 100)}", label)
        action.triggered.connect(lambda _checked=False, f=fraction, s=sides: expand_preset(f, s))
        canvas_menu.addAction(action)
    aspect_menu: QMenu = canvas_menu.addMenu("Expand to &Aspect Ratio")
    for rw, rh in ASPECT_PRESETS:
        action = make(f"aspect_{rw}x{rh}", f"{rw}:{rh}")
        action.triggered.connect(lambda _checked=False, a=rw, b=rh: aspect_preset(a, b))
        aspect_menu.addAction(action)
    canvas_menu.addSeparator()
    canvas_menu.addAction(make("reset_canvas", "&Reset Canvas to Image"))

    generate_menu = menu_bar.addMenu("&Generate")
    generate_menu.addAction(make("fill", "Generative &Fill", "Ctrl+Return"))
    generate_menu.addAction(make("expand", "&Expand", "Ctrl+Shift+Return"))
    generate_menu.addAction(actions["restyle"])
    generate_menu.addSeparator()
    generate_menu.addAction(make("cancel", "&Cancel", "Escape"))
    generate_menu.addAction(make("finish", "&Stop && Keep", "Ctrl+."))
    generate_menu.addSeparator()
    generate_menu.addAction(make("accept", "&Accept Variant", "Ctrl+Shift+A"))
    generate_menu.addAction(make("keep_all", "Accept and &Keep All Variants", "Ctrl+Alt+A"))
    generate_menu.addAction(make("discard", "&Discard Variants"))

    models_menu = menu_bar.addMenu("M&odels")
    models_menu.addAction(make("get_models", "&Get Models…", needs_document=False))
    models_menu.addAction(make("manage_models", "&Manage Models…", needs_document=False))
    models_menu.addSeparator()
    models_menu.addAction(make("add_model", "&Add Model…", needs_document=False))
    models_menu.addAction(make("remove_model", "&Remove Selected Model", needs_document=False))
    models_menu.addSeparator()
    models_menu.addAction(make("add_controlnet", "Add &ControlNet…", needs_document=False))
    models_menu.addSeparator()
    models_menu.addAction(make("comfy_servers", "ComfyUI &Servers…", needs_document=False))

    styles_menu = menu_bar.addMenu("St&yles")
    styles_menu.addAction(make("learn_style", "&Learn a Style…", needs_document=False))

    view_menu = menu_bar.addMenu("&View")
    view_menu.addAction(make("zoom_in", "Zoom &In", QKeySequence.StandardKey.ZoomIn))
    view_menu.addAction(make("zoom_out", "Zoom &Out", QKeySequence.StandardKey.ZoomOut))
    view_menu.addAction(make("zoom_fit", "&Fit to Window", "Ctrl+0"))
    view_menu.addAction(make("zoom_100", "&Actual Pixels (100%)", "Ctrl+1"))
    actions.menus.update(file=file_menu, edit=edit_menu, mask=mask_menu, layer=layer_menu, canvas=canvas_menu,
                         generate=generate_menu, models=models_menu, styles=styles_menu, view=view_menu, control=control_menu)
    return actions
