"""Models ▸ Manage Models…: what is installed and what it takes, renaming, removing, deleting from disk (never
more than the question named), and adding a folder of model files off the UI thread.

Hugging Face caches are laid out here as huggingface_hub lays them out (blobs named by their hash, snapshot
files linking to them, refs/main), and every test checks that huggingface_hub's own scan_cache_dir reads them.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import threading
from pathlib import Path

import pytest
from huggingface_hub import scan_cache_dir
from PySide6.QtCore import QTimer

from app.core.styles import Style
from app.editor.model_inventory import delete_from_disk, delete_plan, folder_size, installed_models
from app.editor.model_library import ModelEntry, ModelLibrary
from app.editor.model_scan import scan_folder
from app.engine.diffusion.model_files import CONFIG_ROOT
from app.engine.events import EngineError
from app.widgets import model_manager_dialog
from app.widgets.model_manager_dialog import ModelManagerDialog, open_model_manager
from tests.test_add_model_check import full_size_checkpoint, write_sparse

WAIT = 60_000                 # ms: a scan checks full-size SDXL layouts against their configs (seconds on 2 cores)
SD1_LORA = {"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight": (4, 768),
            "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_up.weight": (320, 4)}
SDXL_LORA = {key: (4, 2048) if "down" in key else shape for key, shape in SD1_LORA.items()}


def cache_repo(hub: Path, repo_id: str, files: dict[str, bytes], commit: str = "") -> Path:
    """`files` (name -> content) laid out as a download of `repo_id` into the cache `hub`; its snapshot."""
    commit = commit or hashlib.sha1(repo_id.encode()).hexdigest()
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    assert repo_id in {r.repo_id for r in scan_cache_dir(hub).repos}
    return snapshot


def cache_folder(hub: Path, repo_id: str, folder: Path, commit: str = "") -> Path:
    return cache_repo(hub, repo_id, {str(p.relative_to(folder)): p.read_bytes()
                                     for p in sorted(folder.rglob("*")) if p.is_file()}, commit)


def blob_bytes(hub: Path, repo_id: str) -> int:
    return folder_size(hub / ("models--" + repo_id.replace("/", "--")) / "blobs")


@pytest.fixture
def hub(tmp_path):
    folder = tmp_path / "hub"
    folder.mkdir()
    return folder


@pytest.fixture
def library(tmp_path):
    return ModelLibrary(tmp_path / "config" / "models.json")


@pytest.fixture
def single_file(tiny_models, tmp_path):
    """A copy of the tiny SD 1.5 single file, outside the cache, listed with its config folder."""
    path = shutil.copy(tiny_models.path("sd15", form="single_file"), tmp_path / "tiny-sd15.safetensors")
    return Path(path)


def unexpected(what):
    def fail(*args):
        pytest.fail(f"{what} was not expected here: {args}")
    return fail


@pytest.fixture
def open_dialog(qtbot, hub):
    def open_(library, styles=()):
        dialog = ModelManagerDialog(library, lambda: list(styles), cache_dir=hub)
        qtbot.addWidget(dialog)
        dialog.ask_yes_no = unexpected("a yes/no question")
        dialog.ask_text = unexpected("a name question")
        dialog.ask_sd2_variant = unexpected("the SD 2.x question")
        dialog.choose_folder = unexpected("a folder dialog")
        dialog.open_url = unexpected("a file manager")
        dialog.show()
        qtbot.waitUntil(lambda: not dialog.listing(), timeout=WAIT)
        return dialog
    return open_


def rows(dialog) -> dict[str, tuple[str, ...]]:
    table = dialog.table
    return {table.item(row, 0).text(): tuple(table.item(row, column).text() for column in range(1, 5))
            for row in range(table.rowCount())}


def settled(qtbot, dialog) -> None:
    qtbot.waitUntil(lambda: not dialog.listing() and not dialog.scanning(), timeout=WAIT)


# -- what is installed -------------------------------------------------------------------------------------

def test_every_installed_model_is_listed_with_its_family_kind_size_and_source(
        library, hub, tiny_models, tiny_controlnets, single_file, tmp_path):
    file_entry = library.add(str(single_file), str(tiny_models.config_folder("sd15")))
    folder = tiny_models.path("sdxl", inpaint=True)
    library.add(str(folder))
    net = library.add_controlnet(str(tiny_controlnets.path("sd15", "single_file")))
    cache_folder(hub, "tester/tiny-sd", tiny_models.path("sd15"))
    library.add_checked(ModelEntry("tester/tiny-sd", "tiny from the hub", "repo"))
    library.add_checked(ModelEntry("tester/not-downloaded", "not yet", "repo"))
    library.add_checked(ModelEntry("gone.safetensors@127.0.0.1:8188", "on my server", "server"))
    taesd = cache_repo(hub, "madebyollin/taesd", {"config.json": b'{"_class_name": "AutoencoderTiny"}',
                                                  "diffusion_pytorch_model.safetensors": b"x" * 1000})
    cache_repo(hub, "depth-anything/Depth-Anything-V2-Small-hf",
               {"config.json": b'{"architectures": ["DepthAnythingForDepthEstimation"]}', "model.safetensors": b"d"})
    cache_repo(hub, "someone/a-language-model", {"config.json": b'{"model_type": "gpt2"}'})
    lora = write_sparse(tmp_path / "ink.safetensors", SD1_LORA)
    styles = [Style("Ink", "{prompt}, ink", "", lora=str(lora)), Style("Ink 2", "{prompt}", "", lora=str(lora))]

    found = {model.name: model for model in installed_models(library, styles, cache_dir=hub)}

    facts = {name: (m.family, m.kind, m.size_on_disk, m.source, m.listed, m.in_hf_cache) for name, m in found.items()}
    assert facts == {
        file_entry.label: ("SD 1.x", "base", single_file.stat().st_size, "file", True, False),
        f"{folder.name} — SDXL inpainting": ("SDXL", "inpainting", folder_size(folder), "folder", True, False),
        net.label: ("", "ControlNet", tiny_controlnets.path("sd15", "single_file").stat().st_size, "file", True,
                    False),
        "tiny from the hub": ("SD 1.x", "base", blob_bytes(hub, "tester/tiny-sd"), "Hugging Face cache", True, True),
        "not yet": ("", "base", None, "Hugging Face cache", True, False),
        "on my server": ("", "base", None, "ComfyUI server", True, False),
        "ink.safetensors": ("SD 1.x", "LoRA", lora.stat().st_size, "file", False, False),
        "madebyollin/taesd": ("SD 1.x", "preview decoder", blob_bytes(hub, "madebyollin/taesd"), "Hugging Face cache",
                              False, True),
        "depth-anything/Depth-Anything-V2-Small-hf": ("", "annotator",
                                                      blob_bytes(hub, "depth-anything/Depth-Anything-V2-Small-hf"),
                                                      "Hugging Face cache", False, True),
    }
    assert found["ink.safetensors"].used_by == ("Ink", "Ink 2")
    assert found["madebyollin/taesd"].reveal_path(hub) == taesd.parents[1]
    assert folder_size(folder) == sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def test_the_table_shows_the_same_and_a_missing_file_says_so(library, single_file, tiny_models, open_dialog):
    entry = library.add(str(single_file), str(tiny_models.config_folder("sd15")))
    library.add_checked(ModelEntry(str(single_file.parent / "moved.safetensors"), "moved away", "file",
                                   family="sdxl"))
    dialog = open_dialog(library)
    size = f"{single_file.stat().st_size / 1e6:.1f} MB"     # decimal, as the welcome page and the Hub say
    assert rows(dialog) == {entry.label: ("SD 1.x", "base", size, "file"),
                            "moved away": ("SDXL", "base", "missing", "file")}
    assert dialog.select("moved away") is False and dialog.select(str(single_file.parent / "moved.safetensors"))
    assert not dialog.delete_button.isEnabled() and not dialog.reveal_button.isEnabled()
    assert dialog.rename_button.isEnabled() and dialog.remove_button.isEnabled()


# -- rename, remove, reveal ---------------------------------------------------------------------------------

def test_a_rename_persists_across_reloading_the_library(qtbot, library, single_file, tiny_models, open_dialog):
    library.add(str(single_file), str(tiny_models.config_folder("sd15")))
    dialog = open_dialog(library)
    dialog.select(str(single_file))
    asked = []
    dialog.ask_text = lambda title, label, text: asked.append(text) or "  My   ink model "
    with qtbot.waitSignal(dialog.models_changed, timeout=1000):
        dialog.rename_selected()
    settled(qtbot, dialog)
    assert asked == ["tiny-sd15.safetensors — Stable Diffusion 1.x"]
    assert "My ink model" in rows(dialog)
    assert dialog.selected_model().name == "My ink model"
    reloaded = ModelLibrary(library.path).find(str(single_file))
    assert (reloaded.label, reloaded.config) == ("My ink model", str(tiny_models.config_folder("sd15")))


def test_a_name_that_cannot_be_used_is_one_line_and_changes_nothing(library, single_file, tiny_models):
    entry = library.add(str(single_file), str(tiny_models.config_folder("sd15")))
    for bad in ("   ", "x" * 300, "\ud800"):
        with pytest.raises(EngineError) as caught:
            library.rename(entry.location, bad)
        assert "\n" not in str(caught.value)
    with pytest.raises(EngineError, match="not in the model list"):
        library.rename(str(single_file.parent / "other.safetensors"), "name")
    assert ModelLibrary(library.path).find(entry.location) == entry


def test_remove_from_list_keeps_the_files_and_reveal_opens_the_folder(qtbot, library, single_file, tiny_models,
                                                                      open_dialog):
    library.add(str(single_file), str(tiny_models.config_folder("sd15")))
    dialog = open_dialog(library)
    dialog.select(str(single_file))
    opened = []
    dialog.open_url = lambda url: opened.append(url.toLocalFile()) or True
    dialog.reveal_selected()
    assert opened == [str(single_file.parent)]
    with qtbot.waitSignal(dialog.models_changed, timeout=1000):
        dialog.remove_selected()
    settled(qtbot, dialog)
    assert rows(dialog) == {} and single_file.is_file()
    assert ModelLibrary(library.path).entries() == []


# -- deleting from disk -------------------------------------------------------------------------------------

def test_delete_removes_the_cache_repo_and_nothing_outside_it(qtbot, library, hub, tiny_models, tmp_path,
                                                              open_dialog):
    snapshot = cache_folder(hub, "tester/tiny-sd", tiny_models.path("sd15"))
    outside = tmp_path / "mine.safetensors"
    outside.write_bytes(b"my own file")
    (snapshot / "linked.safetensors").symlink_to(outside)          # a link out of the cache: never followed
    # huggingface_hub deletes revisions by hash, from every repo: one that shares the hash must stay.
    cache_repo(hub, "madebyollin/taesd", {"config.json": b'{"_class_name": "AutoencoderTiny"}'}, snapshot.name)
    library.add_checked(ModelEntry("tester/tiny-sd", "tiny from the hub", "repo"))
    dialog = open_dialog(library)
    dialog.select("tester/tiny-sd")
    questions = []
    dialog.ask_yes_no = lambda title, text: questions.append(text) or True
    with qtbot.waitSignal(dialog.models_changed, timeout=5000):
        dialog.delete_selected()
    settled(qtbot, dialog)

    [question] = questions
    assert "tester/tiny-sd" in question and "outside the Hugging Face cache and will be deleted" not in question
    assert "1 of its files link to files outside the cache" in question
    assert not (hub / "models--tester--tiny-sd").exists()
    assert outside.read_bytes() == b"my own file"
    assert [r.repo_id for r in scan_cache_dir(hub).repos] == ["madebyollin/taesd"]
    assert ModelLibrary(library.path).entries() == []
    assert list(rows(dialog)) == ["madebyollin/taesd"]


def test_a_file_outside_the_cache_is_named_and_kept_when_the_user_says_no(qtbot, library, single_file,
                                                                          tiny_models, open_dialog):
    library.add(str(single_file), str(tiny_models.config_folder("sd15")))
    dialog = open_dialog(library)
    dialog.select(str(single_file))
    questions = []
    dialog.ask_yes_no = lambda title, text: questions.append(text) or False
    dialog.delete_selected()
    assert str(single_file) in questions[0] and "outside the Hugging Face cache" in questions[0]
    assert single_file.is_file() and ModelLibrary(library.path).find(str(single_file)) is not None
    assert "Nothing was deleted" in dialog.status()

    dialog.ask_yes_no = lambda title, text: questions.append(text) or True
    with qtbot.waitSignal(dialog.models_changed, timeout=5000):
        dialog.delete_selected()
    settled(qtbot, dialog)
    assert not single_file.exists() and ModelLibrary(library.path).entries() == []
    assert rows(dialog) == {}


def test_a_file_inside_the_cache_deletes_its_repo_and_says_so(library, hub, tiny_models):
    snapshot = cache_folder(hub, "tester/tiny-sd", tiny_models.path("sd15"))
    entry = library.add(str(snapshot), "")
    [model] = installed_models(library, cache_dir=hub)
    plan = delete_plan(model, hub)
    assert (model.in_hf_cache, plan.repo_id, plan.outside_cache) == (True, "tester/tiny-sd", ())
    assert plan.paths == (hub.resolve() / "models--tester--tiny-sd",)
    delete_from_disk(model, library, hub)
    assert not plan.paths[0].exists() and library.find(entry.location) is None


def test_what_cannot_be_deleted_says_why_in_one_line(library, hub, tmp_path):
    lora = write_sparse(tmp_path / "ink.safetensors", SD1_LORA)
    library.add_checked(ModelEntry("x.safetensors@127.0.0.1:8188", "on my server", "server"))
    library.add_checked(ModelEntry("tester/not-downloaded", "not yet", "repo"))
    found = {m.name: m for m in installed_models(library, [Style("Ink", "{prompt}", "", lora=str(lora))], hub)}
    for name in ("on my server", "not yet"):
        plan = delete_plan(found[name], hub)
        assert plan.problem and "\n" not in plan.problem and plan.paths == ()
        with pytest.raises(EngineError):
            delete_from_disk(found[name], library, hub)
    assert len(library.entries()) == 2
    plan = delete_plan(found["ink.safetensors"], hub)
    assert plan.outside_cache == (lora,) and "Styles that use this LoRA (Ink)" in plan.question()


# -- adding a folder ----------------------------------------------------------------------------------------

@pytest.fixture
def model_folder(tmp_path, tiny_models):
    """Full-size layouts over sparse data (they fit the shipped configs), one a level down, and files that are
    no model this app uses."""
    folder = tmp_path / "downloads"
    (folder / "sdxl").mkdir(parents=True)
    (folder / "sdxl" / "deeper").mkdir()
    full_size_checkpoint(folder / "dreamy-sd15.safetensors", "sd15")
    full_size_checkpoint(folder / "sdxl" / "fill-xl.safetensors", "sdxl-inpaint")
    full_size_checkpoint(folder / "sd21.safetensors", "sd2-v")
    full_size_checkpoint(folder / "sdxl" / "deeper" / "too-deep.safetensors", "sd15")
    (folder / "notes.safetensors").write_text("these are my notes, not weights")
    write_sparse(folder / "ink-xl.safetensors", SDXL_LORA)
    write_sparse(folder / "vae.safetensors", {"encoder.conv_in.weight": (128, 3, 3, 3),
                                              "decoder.conv_in.weight": (512, 4, 3, 3)})
    shutil.copy(tiny_models.path("sd15", form="single_file"), folder / "tiny.safetensors")
    shutil.copytree(tiny_models.path("sd15", inpaint=True), folder / "tiny-fill")     # a diffusers folder
    return folder


def test_a_folder_scan_identifies_each_file_by_its_tensor_names(model_folder):
    result = scan_folder(model_folder)
    found = {item.path.name: item for item in result.found}
    assert set(found) == {"dreamy-sd15.safetensors", "fill-xl.safetensors", "sd21.safetensors", "tiny-fill",
                          "notes.safetensors", "ink-xl.safetensors", "vae.safetensors", "tiny.safetensors"}
    facts = {name: (item.kind, item.family, item.addable, item.asks_variant) for name, item in found.items()}
    assert facts == {"dreamy-sd15.safetensors": ("base", "sd1", True, False),
                     "fill-xl.safetensors": ("inpainting", "sdxl", True, False),
                     "sd21.safetensors": ("base", "sd2", True, True),
                     "notes.safetensors": ("", "", False, False),
                     "ink-xl.safetensors": ("LoRA", "sdxl", False, False),
                     "vae.safetensors": ("VAE", "", False, False),
                     "tiny.safetensors": ("base", "sd1", False, False),
                     "tiny-fill": ("inpainting", "sd1", True, False)}
    assert found["tiny-fill"].entry.kind == "folder"
    assert found["notes.safetensors"].reason.startswith("notes.safetensors is not a readable .safetensors file")
    assert "does not fit the Stable Diffusion 1.x config sd15" in found["tiny.safetensors"].reason
    assert all("\n" not in item.reason for item in result.found)
    assert [item.path.name for item in result.asking] == ["sd21.safetensors"]
    assert scan_folder(model_folder / "nothing-here").problem.endswith("is not a folder")


def test_adding_a_folder_asks_once_per_ambiguous_sd2_file_and_remembers_the_answer(qtbot, library, model_folder,
                                                                                   open_dialog):
    dialog = open_dialog(library)
    asked = []
    dialog.ask_sd2_variant = lambda name: asked.append(name) or "base"
    dialog.choose_folder = lambda: str(model_folder)
    with qtbot.waitSignal(dialog.models_changed, timeout=WAIT):
        dialog.add_folder()
    settled(qtbot, dialog)
    assert asked == ["sd21.safetensors"]
    reloaded = ModelLibrary(library.path)
    assert {Path(e.location).name: e.config for e in reloaded.entries()} == {
        "dreamy-sd15.safetensors": "", "fill-xl.safetensors": "", "sd21.safetensors": str(CONFIG_ROOT / "sd2-base"),
        "tiny-fill": ""}
    assert reloaded.find(str(model_folder / "sd21.safetensors")).label.endswith("SD 2.x base (512 px)")
    assert "added 4 models" in dialog.status() and "notes.safetensors is not a readable" in dialog.status()
    assert rows(dialog)["fill-xl.safetensors — SDXL inpainting"][:2] == ("SDXL", "inpainting")

    with qtbot.waitSignal(dialog.models_changed, timeout=WAIT):
        dialog.add_folder(model_folder)
    settled(qtbot, dialog)
    assert asked == ["sd21.safetensors"]                      # answered once: remembered in the model list
    assert "added 0 models, 4 already listed" in dialog.status()
    assert len(ModelLibrary(library.path).entries()) == 4


def test_an_sd2_file_listed_without_an_answer_is_asked_about_once(qtbot, library, model_folder, open_dialog):
    sd21 = str(model_folder / "sd21.safetensors")
    library.add(sd21)                                          # Add Model… lists it by family, unasked
    dialog = open_dialog(library)
    asked = []
    dialog.ask_sd2_variant = lambda name: asked.append(name) or "v"
    for _ in range(2):
        with qtbot.waitSignal(dialog.models_changed, timeout=WAIT):
            dialog.add_folder(model_folder)
        settled(qtbot, dialog)
    assert asked == ["sd21.safetensors"]
    assert ModelLibrary(library.path).find(sd21).config == str(CONFIG_ROOT / "sd2-v")


def test_a_skipped_sd2_question_adds_the_others_and_not_that_file(qtbot, library, model_folder, open_dialog):
    dialog = open_dialog(library)
    dialog.ask_sd2_variant = lambda name: None
    with qtbot.waitSignal(dialog.models_changed, timeout=WAIT):
        dialog.add_folder(model_folder)
    settled(qtbot, dialog)
    assert library.find(str(model_folder / "sd21.safetensors")) is None
    assert len(library.entries()) == 3 and "Skipped (not answered): sd21.safetensors" in dialog.status()


def test_the_window_stays_responsive_while_a_folder_is_scanned(qtbot, library, model_folder, open_dialog,
                                                               monkeypatch):
    release = threading.Event()

    def slow_scan(folder):
        assert release.wait(30), "the test never let the scan finish"
        return scan_folder(folder)

    monkeypatch.setattr(model_manager_dialog, "scan_folder", slow_scan)
    dialog = open_dialog(library)
    dialog.ask_sd2_variant = lambda name: "v"
    ticks = []
    timer = QTimer(dialog)
    timer.timeout.connect(lambda: ticks.append(1))
    timer.start(10)
    dialog.add_folder(model_folder)
    assert dialog.scanning() and not dialog.add_folder_button.isEnabled()
    qtbot.waitUntil(lambda: len(ticks) >= 5, timeout=5000)       # the event loop runs while the scan waits
    assert dialog.scanning() and "Scanning" in dialog.status()
    release.set()
    qtbot.waitUntil(lambda: not dialog.scanning(), timeout=WAIT)
    settled(qtbot, dialog)
    assert dialog.add_folder_button.isEnabled()
    assert library.find(str(model_folder / "sd21.safetensors")).config == str(CONFIG_ROOT / "sd2-v")


def test_open_model_manager_shows_one_window_per_library(qtbot, library, hub):
    from PySide6.QtWidgets import QWidget

    parent = QWidget()
    qtbot.addWidget(parent)
    first = open_model_manager(parent, library, lambda: [], cache_dir=hub)
    assert first.isVisible() and not first.isModal()
    assert open_model_manager(parent, library, lambda: [], cache_dir=hub) is first
    settled(qtbot, first)
