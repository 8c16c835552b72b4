"""Opening, saving and exporting documents for the main window, and pasting or dropping images.

A project (.ora, OpenRaster) keeps everything: layers, variants, masks. Save writes the project; a document
opened from a JPEG or PNG is saved as a new project beside it (asking where), so the user's original is never
re-encoded behind their back. Export writes the flattened view as PNG, JPEG or WebP.
"""
from __future__ import annotations

import weakref
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QFileDialog, QInputDialog

from app.core.document import Document
from app.core.imageio import ImageLoadError, ImageSaveError, LoadedImage, load_image, save_image
from app.widgets.qt_image import from_qimage, to_qimage

if TYPE_CHECKING:
    from app.widgets.main_window import MainWindow

PROJECT_SUFFIX = ".ora"
EXPORT_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
LOSSY = (".jpg", ".jpeg", ".webp")
OPEN_FILTER = ("Images and projects (*.ora *.png *.jpg *.jpeg *.webp *.bmp *.tif *.tiff *.gif);;"
               "Projects (*.ora);;All files (*)")
PROJECT_FILTER = "OpenRaster project (*.ora)"
EXPORT_FILTER = "PNG (*.png);;JPEG (*.jpg *.jpeg);;WebP (*.webp)"


class FileCommands:
    def __init__(self, window: "MainWindow") -> None:
        # Weak: the window owns this object, and a cycle would keep a closed window's wrapper alive.
        self._window = weakref.ref(window)

    @property
    def window(self) -> "MainWindow":
        return self._window()

    @property
    def state(self):
        return self.window.state

    # -- opening --------------------------------------------------------------------------------------
    def open(self, path: str | Path) -> bool:
        path = Path(path)
        if path.suffix.lower() == PROJECT_SUFFIX:
            from app.core.openraster import ProjectError, load_project_with_notes
            try:
                document, notes = load_project_with_notes(path)
            except ProjectError as exc:
                self.window.show_error(str(exc))
                return False
            self._set_document(document, path.name, notes)
            return True
        try:
            loaded = load_image(path)
        except ImageLoadError as exc:
            self.window.show_error(str(exc))
            return False
        self.set_loaded(loaded, path)
        return True

    def set_loaded(self, loaded: LoadedImage, path: Path | None) -> None:
        document = Document.from_image(loaded.pixels, path, loaded.parameters)
        self._set_document(document, path.name if path else "pasted image", list(loaded.notes))

    def _set_document(self, document: Document, name: str, notes: list[str]) -> None:
        w = self.window
        w.session.cancel()          # a running job's result belongs to the image it was made from
        w.session.discard()
        self.state.set_document(document)
        layers = len(document.layers)
        what = f"{document.width} x {document.height}" + (f", {layers} layers" if layers > 1 else "")
        note = "; ".join(notes)
        w._show_status(f"Opened {name} ({what})" + (f" — {note}" if note else ""), False)
        w._update_title()

    def open_dialog(self) -> None:
        w = self.window
        if not w._confirm_discard_changes():
            return
        start = w.settings.get("last_dir") or str(Path.home())
        path, _ = QFileDialog.getOpenFileName(w, "Open image or project", start, OPEN_FILTER)
        if path:
            w.settings.set("last_dir", str(Path(path).parent))
            self.open(path)

    # -- saving ---------------------------------------------------------------------------------------
    def save_to(self, path: str | Path, quality: int | None = None) -> bool:
        """A .ora path saves the project; any other exports the flattened image. Saving a project, or
        exporting a document that has one layer and so loses nothing, makes it the saved state."""
        doc = self.state.document
        if doc is None:
            return False
        path = Path(path)
        if path.suffix.lower() == PROJECT_SUFFIX:
            from app.core.openraster import ProjectError, save_project
            try:
                save_project(path, doc)
            except ProjectError as exc:
                self.window.show_error(str(exc))
                return False
            self._saved(path, f"Saved {path}")
            return True
        quality = self.window.settings.get("export/quality") if quality is None else quality
        try:
            save_image(path, doc.image, doc.parameters, quality=int(quality))
        except ImageSaveError as exc:
            self.window.show_error(str(exc))
            return False
        if len(doc.layers) == 1:
            self._saved(path, f"Saved {path}")
        else:
            self.window._show_status(f"Exported {path} (flattened). The layers are only kept in a project: "
                                     "File ▸ Save.", False)
        return True

    def _saved(self, path: Path, text: str) -> None:
        self.state.document.path = path
        self.state.history.stack.setClean()
        self.window._show_status(text, False)
        self.window._update_title()

    def save(self) -> bool:
        doc = self.state.document
        if doc is None:
            return False
        if doc.path is not None and doc.path.suffix.lower() == PROJECT_SUFFIX:
            return self.save_to(doc.path)
        return self.save_as_dialog()

    def suggested_project(self) -> Path:
        doc = self.state.document
        if doc is not None and doc.path is not None:
            return doc.path.with_suffix(PROJECT_SUFFIX)
        return Path(self.window.settings.get("last_dir") or Path.home()) / "untitled.ora"

    def save_as_dialog(self) -> bool:
        if self.state.document is None:
            return False
        w = self.window
        path, _ = QFileDialog.getSaveFileName(w, "Save project", str(self.suggested_project()), PROJECT_FILTER)
        if not path:
            return False
        path = Path(path)
        if path.suffix.lower() != PROJECT_SUFFIX:
            path = path.with_name(path.name + PROJECT_SUFFIX)
        return self.save_to(path)

    def export_dialog(self) -> bool:
        doc = self.state.document
        if doc is None:
            return False
        w = self.window
        base = doc.path if doc.path is not None else self.suggested_project()
        suggested = base.with_name(base.stem + ("-edited.png" if base.suffix.lower() in EXPORT_SUFFIXES
                                                else ".png"))
        path, _ = QFileDialog.getSaveFileName(w, "Export flattened image", str(suggested), EXPORT_FILTER)
        if not path:
            return False
        path = Path(path)
        if path.suffix.lower() not in EXPORT_SUFFIXES:
            path = path.with_name(path.name + ".png")
        quality = None
        if path.suffix.lower() in LOSSY:
            value, ok = QInputDialog.getInt(w, "Export quality", f"Quality of {path.name} (1-100):",
                                            int(w.settings.get("export/quality")), 1, 100)
            if not ok:
                return False
            w.settings.set("export/quality", value)
            quality = value
        return self.save_to(path, quality)

    # -- clipboard and drops --------------------------------------------------------------------------
    def copy(self) -> None:
        doc = self.state.document
        if doc is not None:
            QGuiApplication.clipboard().setImage(to_qimage(doc.image))
            self.window._show_status("Image copied to the clipboard.", False)

    def paste(self) -> None:
        """With a document open, the clipboard's image becomes a new layer; without one, a new document."""
        mime = QGuiApplication.clipboard().mimeData()
        if mime is None:
            return
        if mime.hasImage():
            pixels = from_qimage(mime.imageData())
            if pixels.size == 0:
                self.window.show_error("The clipboard image is empty.")
                return
            self.add_image(pixels, "Pasted image", "clipboard")
        elif mime.hasUrls() and mime.urls()[0].isLocalFile():
            self.add_file(mime.urls()[0].toLocalFile())
        else:
            self.window._show_status("The clipboard holds no image.", True)

    def add_file(self, path: str | Path) -> bool:
        """An image file as a new layer of the open document, or opened (a project is always opened)."""
        path = Path(path)
        if self.state.document is None or path.suffix.lower() == PROJECT_SUFFIX:
            return self.window._confirm_discard_changes() and self.open(path)
        try:
            loaded = load_image(path)
        except ImageLoadError as exc:
            self.window.show_error(str(exc))
            return False
        return self.add_image(loaded.pixels, path.stem, path.name)

    def add_image(self, pixels, name: str, source: str) -> bool:
        if self.state.document is None:
            self.set_loaded(LoadedImage(pixels, source, "", ()), None)
            return True
        self.state.add_image_layer(pixels, name)
        h, w = pixels.shape[:2]
        self.window._show_status(f"Added {source} ({w} x {h}) as a new layer.", False)
        return True
