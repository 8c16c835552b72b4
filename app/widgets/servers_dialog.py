"""Models ▸ ComfyUI Servers…: the servers a job may run on, each tested off the UI thread, and their
checkpoints added to the Model dropdown as "CHECKPOINT @ HOST:PORT" in one click.

A thin view of app.editor.server_list.ServerList (addresses in servers.json, tokens in the keyring or a
private file) and of the model library.
"""
from __future__ import annotations

import html
from dataclasses import dataclass

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QAbstractItemView, QDialog, QDialogButtonBox, QFormLayout, QHBoxLayout, QLabel,
                               QLineEdit, QListWidget, QListWidgetItem, QPushButton, QVBoxLayout, QWidget)

from app.editor.background import BackgroundCall
from app.editor.model_library import ModelEntry, ModelLibrary
from app.editor.server_list import ServerList
from app.engine.events import EngineError
from app.widgets.widget_tools import named


@dataclass(frozen=True)
class ServerInfo:
    name: str
    version: str
    device: str
    checkpoints: tuple[str, ...]
    loras: tuple[str, ...]
    controlnets: tuple[str, ...]

    @property
    def summary(self) -> str:
        counts = ", ".join(_count(len(names), what) for names, what in (
            (self.checkpoints, "checkpoint"), (self.loras, "LoRA"), (self.controlnets, "ControlNet")))
        return f"{self.name}: ComfyUI {self.version} on {self.device}; {counts}"


def _count(number: int, what: str) -> str:
    return f"{number} {what}{'' if number == 1 else 's'}"


def inspect_server(url: str, token: str) -> ServerInfo:
    """What the server at `url` offers (GET /system_stats and /object_info); ServerError in one line."""
    from app.engine.comfy.client import ComfyClient, Server

    client = ComfyClient(Server.parse(url, token))
    try:
        stats = client.system_stats()
        system = stats["system"]
        devices = stats.get("devices") if isinstance(stats.get("devices"), list) else []
        device = next((str(d.get("name"))[:80] for d in devices if isinstance(d, dict) and d.get("name")), "?")
        return ServerInfo(client.server.name, str(system.get("comfyui_version", "?"))[:20], device,
                          tuple(client.checkpoints()), tuple(client.loras()), tuple(client.controlnets()))
    finally:
        client.close()


class ServersDialog(QDialog):
    models_added = Signal(str)            # the location of the last checkpoint added to the library
    tested = Signal(object)               # ServerInfo, or the one-line text of what went wrong

    def __init__(self, servers: ServerList, library: ModelLibrary, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.servers, self.library = servers, library
        self.setObjectName("serversDialog")
        self.setWindowTitle("ComfyUI servers")
        self.setAccessibleName("ComfyUI servers")
        self.info: ServerInfo | None = None
        self._testing = 0
        intro = QLabel("Fill, Expand and Restyle can run on ComfyUI servers: on a GPU machine of your network or "
                       "a rented one. Add a server, test it, then add its checkpoints to the Model list. Only the "
                       "crop around the mask, its control images and the prompt are sent.")
        intro.setWordWrap(True)
        self.list = named(QListWidget(), "serversList", "Servers")
        self.url_edit = named(QLineEdit(), "serverUrlEdit", "Server address", "http://HOST:PORT or https://HOST/path")
        self.url_edit.setPlaceholderText("127.0.0.1:8188 or https://gpu.example/comfy")
        self.token_edit = named(QLineEdit(), "serverTokenEdit", "Server token",
                                "Only for a server behind a proxy that asks for one (sent as a Bearer token)")
        self.token_edit.setEchoMode(QLineEdit.EchoMode.Password)
        self.token_edit.setPlaceholderText("optional")
        self.add_button = named(QPushButton("Add && Test"), "serverAddButton", "Add server")
        self.remove_button = named(QPushButton("Remove"), "serverRemoveButton", "Remove server")
        self.test_button = named(QPushButton("Test"), "serverTestButton", "Test server")
        self.details = named(QLabel(""), "serverDetails", "Server details")
        self.details.setWordWrap(True)
        self.details.setTextFormat(Qt.TextFormat.RichText)
        self.checkpoints = named(QListWidget(), "serverCheckpoints", "The server's checkpoints")
        self.checkpoints.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.add_models_button = named(QPushButton("Add to Models"), "serverAddModelsButton",
                                       "Add the selected checkpoints to the Model list")
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)

        form = QFormLayout()
        form.addRow("Address", self.url_edit)
        form.addRow("Token", self.token_edit)
        row = QHBoxLayout()
        for button in (self.add_button, self.test_button, self.remove_button):
            row.addWidget(button)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addWidget(self.list)
        layout.addLayout(form)
        layout.addLayout(row)
        layout.addWidget(self.details)
        layout.addWidget(self.checkpoints)
        layout.addWidget(self.add_models_button)
        layout.addWidget(buttons)
        self.resize(560, 520)

        self.add_button.clicked.connect(self.add_server)
        self.test_button.clicked.connect(self.test_selected)
        self.remove_button.clicked.connect(self.remove_selected)
        self.add_models_button.clicked.connect(self.add_selected_models)
        self.list.currentRowChanged.connect(lambda _row: self._selected())
        self._fill_list()

    def _fill_list(self, select: str = "") -> None:
        self.list.clear()
        for url in self.servers.urls():
            item = QListWidgetItem(url)
            item.setData(Qt.ItemDataRole.UserRole, url)
            self.list.addItem(item)
            if url == select:
                self.list.setCurrentItem(item)
        self._selected()

    def selected_url(self) -> str:
        item = self.list.currentItem()
        return item.data(Qt.ItemDataRole.UserRole) if item is not None else ""

    def _selected(self) -> None:
        chosen = bool(self.selected_url())
        self.test_button.setEnabled(chosen)
        self.remove_button.setEnabled(chosen)
        self.add_models_button.setEnabled(self.checkpoints.count() > 0)

    def add_server(self) -> None:
        try:
            url = self.servers.add(self.url_edit.text(), self.token_edit.text())
        except (EngineError, ValueError, OSError) as exc:
            self._say(" ".join(str(exc).split()), error=True)
            return
        self.url_edit.clear()
        self.token_edit.clear()
        self._fill_list(select=url)
        self.test_selected()

    def remove_selected(self) -> None:
        url = self.selected_url()
        if url:
            self.servers.remove(url)
            self.checkpoints.clear()
            self.info = None
            self._say(f"Removed {html.escape(url)}; checkpoints already in the Model list stay there.")
            self._fill_list()

    def test_selected(self) -> None:
        url = self.selected_url()
        if not url:
            return
        self._testing += 1
        self._say(f"Testing {html.escape(url)}…")
        self.checkpoints.clear()
        call = BackgroundCall(inspect_server, url, self.servers.token(url), parent=self)
        call.finished.connect(lambda info, error, generation=self._testing, url=url:
                              self._tested(generation, url, info, error))
        call.start()

    def _tested(self, generation: int, url: str, info: ServerInfo | None, error: Exception | None) -> None:
        if generation != self._testing:
            return                          # another test started since
        if error is not None:
            text = " ".join(str(error).split()) if isinstance(error, EngineError) else \
                f"Could not test {url} ({type(error).__name__}: {' '.join(str(error).split())[:200]})"
            self.info = None
            self._say(text, error=True)
            self.tested.emit(text)
            return
        self.info = info
        self.checkpoints.clear()
        for name in info.checkpoints:
            item = QListWidgetItem(name)
            listed = self.library.find(f"{name}@{url}") is not None
            if listed:
                item.setText(f"{name}  (in the Model list)")
            item.setData(Qt.ItemDataRole.UserRole, name)
            self.checkpoints.addItem(item)
        self._say(html.escape(info.summary) + ("" if info.checkpoints else
                                               "<br>It has no checkpoints: put one in its models/checkpoints."))
        self._selected()
        self.tested.emit(info)

    def add_selected_models(self) -> None:
        """Each selected checkpoint (all of them when none is selected) becomes a "server" model entry."""
        url, info = self.selected_url(), self.info
        if not url or info is None:
            return
        items = self.checkpoints.selectedItems() or [self.checkpoints.item(i) for i in range(self.checkpoints.count())]
        last = ""
        for item in items:
            name = item.data(Qt.ItemDataRole.UserRole)
            entry = self.library.add_checked(ModelEntry(f"{name}@{url}", f"{name} @ {info.name}", "server"))
            item.setText(f"{name}  (in the Model list)")
            last = entry.location
        if last:
            self._say(f"Added {_count(len(items), 'checkpoint')} of {html.escape(info.name)} to the Model list.")
            self.models_added.emit(last)

    def _say(self, text: str, error: bool = False) -> None:
        self.details.setText(f'<span style="color: #e06060;">{html.escape(text)}</span>' if error else text)
