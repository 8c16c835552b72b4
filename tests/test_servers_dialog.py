"""ComfyUI servers in the editor: the server list and its tokens (never in servers.json; a private file or the
OS keyring), Models ▸ ComfyUI Servers… tested against a stand-in server on 127.0.0.1, its checkpoints added
to the Model list, and a job on a server model that carries every server with its token."""
from __future__ import annotations

import json
import stat
import sys
import types

import numpy as np
import pytest
from PySide6.QtCore import Qt

from app.editor.model_library import ModelLibrary
from app.editor.server_list import ServerList
from tests.test_comfy_client import _json, stand_in  # noqa: F401 - the stand-in server fixture
from tests.test_main_window import AnyModelRegistry, ScriptedEngine, run_fill


def test_addresses_are_stored_without_their_tokens_which_stay_private(tmp_path):
    servers = ServerList(tmp_path / "servers.json")
    assert servers.add("127.0.0.1:8188", " s3cret ") == "http://127.0.0.1:8188"
    servers.add("https://gpu.example/comfy/")
    stored = (tmp_path / "servers.json").read_text()
    assert "s3cret" not in stored
    assert json.loads(stored) == {"servers": [{"url": "http://127.0.0.1:8188"}, {"url": "https://gpu.example/comfy"}]}
    tokens = tmp_path / "secrets" / "server_tokens.json"
    assert stat.S_IMODE(tokens.stat().st_mode) == 0o600 and stat.S_IMODE(tokens.parent.stat().st_mode) == 0o700
    again = ServerList(tmp_path / "servers.json")
    assert [(s.url, s.token) for s in again.servers()] == [("http://127.0.0.1:8188", "s3cret"),
                                                          ("https://gpu.example/comfy", "")]
    again.remove("http://127.0.0.1:8188")
    assert "s3cret" not in tokens.read_text() and again.urls() == ["https://gpu.example/comfy"]


def test_a_damaged_server_list_is_set_aside_and_odd_entries_left_out(tmp_path):
    (tmp_path / "servers.json").write_text("{not json")
    servers = ServerList(tmp_path / "servers.json")
    assert servers.urls() == [] and "kept as servers.json.damaged-" in servers.problems[0]
    (tmp_path / "servers.json").write_text(json.dumps({"servers": [{"url": "ftp://x"}, "junk", {"url": "h:1"},
                                                                   {"url": "http://h:1/"}]}))
    servers = ServerList(tmp_path / "servers.json")
    assert servers.urls() == ["http://h:1"] and len(servers.problems) == 2


def test_tokens_go_to_the_keyring_when_one_is_there(tmp_path, monkeypatch):
    store = {}
    ring = types.ModuleType("keyring")
    backends = types.ModuleType("keyring.backends")
    fail = types.ModuleType("keyring.backends.fail")

    class Keyring:
        priority = 0

    class Usable:
        priority = 5

    fail.Keyring = Keyring
    ring.get_keyring = lambda: Usable()
    ring.set_password = lambda service, user, secret: store.__setitem__((service, user), secret)
    ring.get_password = lambda service, user: store.get((service, user))
    ring.delete_password = lambda service, user: store.pop((service, user))
    monkeypatch.setitem(sys.modules, "keyring", ring)
    monkeypatch.setitem(sys.modules, "keyring.backends", backends)
    monkeypatch.setitem(sys.modules, "keyring.backends.fail", fail)
    servers = ServerList(tmp_path / "servers.json")
    servers.add("h:1", "t0ken")
    assert store == {("latent-canvas-comfyui", "http://h:1"): "t0ken"}
    assert not (tmp_path / "secrets").exists() and servers.servers()[0].token == "t0ken"
    servers.remove("http://h:1")
    assert store == {}


# ------------------------------------------------------------------------------------------- the dialog

def _serve_comfy(routes):
    routes["/system_stats"] = _json({"system": {"comfyui_version": "0.3.64"},
                                     "devices": [{"name": "cuda:0 NVIDIA RTX 4090"}]})
    routes["/object_info/CheckpointLoaderSimple"] = _json({"CheckpointLoaderSimple": {"input": {"required": {
        "ckpt_name": [["sd15-inpainting.safetensors", "sdxl.safetensors"], {}]}}}})
    routes["/object_info/LoraLoader"] = _json({"LoraLoader": {"input": {"required": {"lora_name": [["ink.safetensors"]]}}}})
    routes["/object_info/ControlNetLoader"] = _json({})


@pytest.fixture
def window(qtbot, tmp_path, monkeypatch):
    from app import MainWindow

    engine = ScriptedEngine()
    library = ModelLibrary(tmp_path / "models.json")
    window = MainWindow(settings=tmp_path / "settings.json", registry=AnyModelRegistry(engine), library=library)
    qtbot.addWidget(window)
    window.engine = engine
    return window


def test_a_server_is_tested_off_the_ui_thread_and_its_checkpoints_join_the_model_list(qtbot, window, stand_in):  # noqa: F811
    routes, client = stand_in
    _serve_comfy(routes)
    address = client.server.url
    dialog = window.servers_dialog()
    dialog.url_edit.setText(address.split("//")[1])
    dialog.token_edit.setText("abc")
    with qtbot.waitSignal(dialog.tested, timeout=10000) as tested:
        qtbot.mouseClick(dialog.add_button, Qt.MouseButton.LeftButton)
    info = tested.args[0]
    assert info.checkpoints == ("sd15-inpainting.safetensors", "sdxl.safetensors") and info.loras == ("ink.safetensors",)
    assert "ComfyUI 0.3.64 on cuda:0 NVIDIA RTX 4090; 2 checkpoints, 1 LoRA, 0 ControlNets" in dialog.details.text()
    assert window.servers.urls() == [address] and window.servers.token(address) == "abc"
    dialog.checkpoints.item(0).setSelected(True)
    qtbot.mouseClick(dialog.add_models_button, Qt.MouseButton.LeftButton)
    entry = window.library.find(f"sd15-inpainting.safetensors@{address}")
    assert entry is not None and entry.kind == "server"
    combo = window.panel.model_combo
    assert combo.currentData() == entry.location and "sd15-inpainting.safetensors @ 127.0.0.1:" in combo.currentText()
    assert "(in the Model list)" in dialog.checkpoints.item(0).text()
    dialog.close()


def test_an_unreachable_server_is_one_red_line(qtbot, window):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dialog = window.servers_dialog()
    dialog.url_edit.setText(f"127.0.0.1:{port}")
    with qtbot.waitSignal(dialog.tested, timeout=10000) as tested:
        qtbot.mouseClick(dialog.add_button, Qt.MouseButton.LeftButton)
    assert tested.args[0].startswith(f"cannot reach the ComfyUI server at http://127.0.0.1:{port}")
    assert "#e06060" in dialog.details.text() and dialog.checkpoints.count() == 0
    dialog.url_edit.setText("ftp://nowhere")
    qtbot.mouseClick(dialog.add_button, Qt.MouseButton.LeftButton)
    assert "is no server address" in dialog.details.text() and window.servers.urls() == [f"http://127.0.0.1:{port}"]
    dialog.close()


def test_a_job_on_a_server_model_carries_every_server_with_its_token(qtbot, window, photo):
    from app.editor.model_library import ModelEntry

    window.servers.add("127.0.0.1:8188", "t1")
    window.servers.add("gpu:8188")
    location = "sd15.safetensors@http://127.0.0.1:8188"
    window.library.add_checked(ModelEntry(location, "sd15.safetensors @ 127.0.0.1:8188", "server"))
    window._rebuild_models(select=location)
    window.panel.steps_spin.setValue(2)
    window.open_image(photo[0])
    window.state.set_mask(np.full((48, 64), 255, np.uint8), "Paint")
    run_fill(qtbot, window)
    request = window.engine.requests[-1]
    assert request.model == location
    assert [(s.url, s.token) for s in request.servers] == [("http://127.0.0.1:8188", "t1"), ("http://gpu:8188", "")]
    assert "t1" not in window.session.variants[0].parameters


def test_stop_and_keep_on_a_server_model_says_what_it_keeps(qtbot, tmp_path, photo):
    import threading

    from app import MainWindow
    from app.editor.model_library import ModelEntry

    gate = threading.Event()
    engine = ScriptedEngine(gate)
    library = ModelLibrary(tmp_path / "models.json")
    window = MainWindow(settings=tmp_path / "settings.json", registry=AnyModelRegistry(engine), library=library)
    qtbot.addWidget(window)
    location = "sd15.safetensors@http://127.0.0.1:8188"
    library.add_checked(ModelEntry(location, "sd15.safetensors @ 127.0.0.1:8188", "server"))
    window._rebuild_models(select=location)
    window.open_image(photo[0])
    window.state.set_mask(np.full((48, 64), 255, np.uint8), "Paint")
    statuses = []
    window.session.status.connect(lambda text, error: statuses.append(text))
    qtbot.mouseClick(window.panel.fill_button, Qt.MouseButton.LeftButton)
    with qtbot.waitSignal(window.session.variants_ready, timeout=5000, check_params_cb=lambda v: len(v) > 0):
        qtbot.mouseClick(window.panel.finish_button, Qt.MouseButton.LeftButton)
    assert any(text.startswith("Stopping: a server returns nothing of an interrupted variant") for text in statuses)
