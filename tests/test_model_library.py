"""The user's model list: what gets in, what a label says, and that it survives restarts and damage."""
import json
from pathlib import Path

import pytest

from app.engine.events import EngineError
from app.editor.model_library import ModelEntry, ModelLibrary

torch = pytest.importorskip("torch")
save_file = pytest.importorskip("safetensors.torch").save_file

def write_checkpoint(path, keys=None):
    """A file of `keys` (name -> shape); by default a full-size SD 1.x checkpoint over a sparse data section,
    which fits the shipped config as a real one does."""
    if keys is None:
        from tests.test_add_model_check import full_size_checkpoint

        return full_size_checkpoint(path, "sd15")
    save_file({key: torch.zeros(shape) for key, shape in keys.items()}, str(path))
    return path


def write_diffusers_folder(path, in_channels=9, cross_attention_dim=768):
    for part, config in (("unet", {"_class_name": "UNet2DConditionModel", "in_channels": in_channels,
                                   "cross_attention_dim": cross_attention_dim}),
                         ("vae", {"_class_name": "AutoencoderKL"}),
                         ("text_encoder", {"architectures": ["CLIPTextModel"]})):
        (path / part).mkdir(parents=True)
        (path / part / "config.json").write_text(json.dumps(config))
    (path / "model_index.json").write_text("{}")
    return path


@pytest.fixture
def library_path(tmp_path):
    return tmp_path / "config" / "models.json"


@pytest.fixture
def checkpoint(tmp_path):
    return write_checkpoint(tmp_path / "dreamy.safetensors")


def test_a_new_library_is_empty_and_writes_nothing(library_path):
    library = ModelLibrary(library_path)
    assert library.entries() == []
    assert not library_path.exists()


def test_adding_a_checkpoint_labels_it_by_family_and_stores_an_absolute_path(library_path, checkpoint,
                                                                              monkeypatch):
    monkeypatch.chdir(checkpoint.parent)
    entry = ModelLibrary(library_path).add("dreamy.safetensors")
    assert entry == ModelEntry(str(checkpoint.resolve()), "dreamy.safetensors — Stable Diffusion 1.x", "file", family="sd1")


def test_adding_a_diffusers_folder_labels_it_by_family(library_path, tmp_path):
    folder = write_diffusers_folder(tmp_path / "my-inpaint")
    entry = ModelLibrary(library_path).add(str(folder))
    assert entry.kind == "folder" and entry.location == str(folder.resolve())
    assert entry.label == "my-inpaint — Stable Diffusion 1.x inpainting"


def test_a_repo_id_is_taken_as_typed(library_path):
    entry = ModelLibrary(library_path).add("someone/some-model")
    assert entry == ModelEntry("someone/some-model", "someone/some-model (Hugging Face)", "repo")


def test_entries_survive_a_restart_in_the_order_added(library_path, checkpoint, tmp_path):
    library = ModelLibrary(library_path)
    added = [library.add(str(checkpoint)), library.add("someone/some-model"),
             library.add(str(write_diffusers_folder(tmp_path / "folder-model")))]
    assert ModelLibrary(library_path).entries() == added
    assert not [p.name for p in library_path.parent.iterdir() if p.name != "models.json"]   # no temp files


def test_adding_the_same_model_twice_keeps_one_entry(library_path, checkpoint, monkeypatch):
    library = ModelLibrary(library_path)
    first = library.add(str(checkpoint))
    monkeypatch.chdir(checkpoint.parent)
    assert library.add("./dreamy.safetensors") == first
    assert library.add(f"  {checkpoint}  ") == first
    assert library.entries() == [first]
    assert len(json.loads(library_path.read_text())["models"]) == 1


def test_remove_forgets_the_model_but_not_its_file(library_path, checkpoint):
    library = ModelLibrary(library_path)
    entry = library.add(str(checkpoint))
    kept = library.add("someone/some-model")
    assert library.remove(entry.location)
    assert not library.remove(entry.location)
    assert library.entries() == [kept]
    assert ModelLibrary(library_path).entries() == [kept]
    assert checkpoint.is_file()


def test_a_text_file_named_safetensors_is_refused_in_one_line(library_path, tmp_path):
    fake = tmp_path / "x.safetensors"
    fake.write_text("this is not a model")
    library = ModelLibrary(library_path)
    with pytest.raises(EngineError) as error:
        library.add(str(fake))
    message = str(error.value)
    assert "x.safetensors" in message and "not a readable .safetensors file" in message
    assert "\n" not in message
    assert library.entries() == [] and not library_path.exists()


@pytest.mark.parametrize("make, expected", [
    (lambda t: t / "missing.safetensors", "model not found"),
    (lambda t: write_checkpoint(t / "style.safetensors",
                                {"lora_unet_down_blocks_0_attentions_0.lora_down.weight": (4, 8)}), "LoRA"),
    (lambda t: write_diffusers_folder(t / "half-folder").joinpath("vae", "config.json").unlink() or
     t / "half-folder", "vae/config.json is missing"),
    (lambda t: (t / "notes.txt").write_text("hi") and t / "notes.txt", "not a model file"),
])
def test_unusable_models_are_refused_and_nothing_is_added(library_path, tmp_path, make, expected):
    library = ModelLibrary(library_path)
    with pytest.raises(EngineError, match=expected):
        library.add(str(make(tmp_path)))
    assert library.entries() == [] and ModelLibrary(library_path).entries() == []


def test_a_config_folder_is_kept_for_a_single_file(library_path, checkpoint, tmp_path):
    import shutil

    from app.engine.diffusion.model_files import CONFIG_ROOT

    config = Path(shutil.copytree(CONFIG_ROOT / "sd15", tmp_path / "odd-config"))
    entry = ModelLibrary(library_path).add(str(checkpoint), str(config))
    assert entry.config == str(config.resolve())
    assert ModelLibrary(library_path).entries()[0].config == str(config.resolve())


def test_a_tiny_single_file_without_its_config_is_refused_in_one_line(library_path, tiny_models):
    """The tiny model is SD 1.x by its key names, not by its sizes: the shipped config cannot hold it."""
    path = tiny_models.path("sd15", False, "single_file")
    library = ModelLibrary(library_path)
    with pytest.raises(EngineError) as error:
        library.add(str(path))
    assert str(error.value).startswith("sd15.safetensors does not fit the Stable Diffusion 1.x config sd15: its UNet "
                                       "conv_in.weight is 32x4x3x3, the config needs 320x4x3x3 (")
    assert str(error.value).endswith("; give its diffusers config folder as the model's config")
    assert library.entries() == [] and not library_path.exists()


def test_the_same_tiny_file_with_its_own_config_folder_is_added(library_path, tiny_models):
    path, config = tiny_models.path("sd15", False, "single_file"), tiny_models.config_folder("sd15")
    entry = ModelLibrary(library_path).add(str(path), str(config))
    assert entry == ModelEntry(str(path.resolve()), "sd15.safetensors — Stable Diffusion 1.x", "file",
                               str(config.resolve()), "sd1")


def test_a_config_folder_without_model_index_is_refused(library_path, checkpoint, tmp_path):
    (tmp_path / "empty-config").mkdir()
    library = ModelLibrary(library_path)
    with pytest.raises(EngineError, match="model_index.json"):
        library.add(str(checkpoint), str(tmp_path / "empty-config"))
    assert library.entries() == []


def kept_copies(library_path):
    return sorted(library_path.parent.glob("models.json.damaged-*"))


@pytest.mark.parametrize("content", [b"{not json", b'["a list"]', b'{"models": [{"kind": "file"}]}', b"",
                                     b"\xff\xfe\x00garbage", b"[" * 100_000 + b"]" * 100_000,
                                     b'{"models": 12}', b'{"models": [null, 3, "x", {"location": 5}]}'])
def test_a_damaged_list_loads_empty_says_so_and_is_kept_aside(library_path, checkpoint, content):
    library_path.parent.mkdir(parents=True)
    library_path.write_bytes(content)
    library = ModelLibrary(library_path)
    assert library.entries() == []
    [kept] = kept_copies(library_path)
    assert kept.read_bytes() == content
    [line] = library.problems
    assert "models.json" in line and "damaged" in line and kept.name in line and "\n" not in line
    entry = library.add(str(checkpoint))                  # and the library works again
    assert ModelLibrary(library_path).entries() == [entry]
    assert kept.read_bytes() == content


def test_readable_entries_of_a_damaged_list_stay_listed(library_path, checkpoint):
    good = {"location": str(checkpoint), "label": "mine", "kind": "file", "config": ""}
    content = json.dumps({"version": 1, "models": [good, {"location": "", "kind": "file"}, "junk",
                                                      {**good, "location": "x" * 10_000}]})
    library_path.parent.mkdir(parents=True)
    library_path.write_text(content)
    library = ModelLibrary(library_path)
    assert [e.label for e in library.entries()] == ["mine"]
    assert "3 entries could not be read" in library.problems[0]
    assert kept_copies(library_path)[0].read_text() == content
    again = ModelLibrary(library_path)                   # the readable part became the list: no new report
    assert [e.label for e in again.entries()] == ["mine"] and again.problems == []


def test_each_damage_is_kept_and_none_overwrites_another(library_path):
    library_path.parent.mkdir(parents=True)
    for content in ("{first", "{second"):
        library_path.write_text(content)
        ModelLibrary(library_path)
    assert sorted(p.read_text() for p in kept_copies(library_path)) == ["{first", "{second"]


def test_a_huge_list_is_refused_without_reading_it(library_path):
    library_path.parent.mkdir(parents=True)
    with open(library_path, "wb") as handle:
        handle.truncate(64 << 20)                        # 64 MB, sparse
    library = ModelLibrary(library_path)
    assert library.entries() == [] and "too large" in library.problems[0]


def test_a_model_whose_file_disappeared_is_still_listed(library_path, checkpoint):
    entry = ModelLibrary(library_path).add(str(checkpoint))
    checkpoint.unlink()
    assert ModelLibrary(library_path).entries() == [entry]


def test_a_failed_save_leaves_the_library_as_it_was(tmp_path, checkpoint):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the config folder should be")
    library = ModelLibrary(blocker / "models.json")
    with pytest.raises(EngineError, match="could not save the model list"):
        library.add(str(checkpoint))
    assert library.entries() == []


def test_what_a_newer_version_wrote_is_kept_as_it_was(library_path, checkpoint):
    newer = {"version": 2, "favourites": ["x"], "models": [
        {"location": "/models/a.gguf", "label": "a", "kind": "gguf", "quantisation": "q8"},
        {"location": "/models/b.safetensors", "label": "b", "kind": "file", "config": "", "precision": "fp8"}]}
    library_path.parent.mkdir(parents=True)
    library_path.write_text(json.dumps(newer))
    library = ModelLibrary(library_path)
    assert library.problems == [] and [e.label for e in library.entries()] == ["b"]
    library.add(str(checkpoint))
    saved = json.loads(library_path.read_text())
    assert saved["favourites"] == ["x"]
    assert {"location": "/models/a.gguf", "label": "a", "kind": "gguf", "quantisation": "q8"} in saved["models"]
    assert [m.get("precision") for m in saved["models"] if m["location"] == "/models/b.safetensors"] == ["fp8"]
    assert [e.label for e in ModelLibrary(library_path).entries()][:1] == ["b"]


@pytest.mark.parametrize("fault", ["read", "set aside"])
def test_a_list_that_cannot_be_read_or_set_aside_is_never_overwritten(library_path, checkpoint, monkeypatch, fault):
    from app.editor import model_library

    content = '{"models": [{"location": "/models/a.safetensors", "kind": "file"}], "damaged": ' \
        if fault == "set aside" else json.dumps({"models": [{"location": "/models/a.safetensors", "kind": "file"}]})
    library_path.parent.mkdir(parents=True)
    library_path.write_text(content)

    def fail(*args, **kwargs):
        raise OSError(5, "Input/output error")
    from app.core import safe_files

    monkeypatch.setattr(safe_files, "read_bounded", fail) if fault == "read" else \
        monkeypatch.setattr(model_library, "set_aside", fail)
    library = ModelLibrary(library_path)
    [line] = library.problems
    assert "left as it is" in line and "\n" not in line
    with pytest.raises(EngineError, match="models cannot be added or removed"):
        library.add(str(checkpoint))
    assert library_path.read_text() == content


def test_a_list_with_text_that_cannot_be_written_back_still_opens(library_path, checkpoint):
    library_path.parent.mkdir(parents=True)
    library_path.write_text(json.dumps({"models": [{"location": "/m/a.safetensors", "kind": "file", "label": "\ud800"},
                                                   {"location": "/m/b.safetensors", "kind": "file"}]}))
    library = ModelLibrary(library_path)
    assert [e.location for e in library.entries()] == ["/m/b.safetensors"]
    library.add(str(checkpoint))
    assert len(ModelLibrary(library_path).entries()) == 2


def test_readable_entries_stay_listed_when_the_repaired_list_cannot_be_written(library_path, checkpoint,
                                                                               monkeypatch):
    from app.editor import model_library

    library_path.parent.mkdir(parents=True)
    library_path.write_text(json.dumps({"models": [{"location": "/m/a.safetensors", "kind": "file"}, "junk"]}))
    written = model_library.write_text_atomically

    def full(*args):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(model_library, "write_text_atomically", full)
    library = ModelLibrary(library_path)
    assert [e.location for e in library.entries()] == ["/m/a.safetensors"]
    monkeypatch.setattr(model_library, "write_text_atomically", written)
    library.add(str(checkpoint))
    assert [e.location for e in ModelLibrary(library_path).entries()][0] == "/m/a.safetensors"
