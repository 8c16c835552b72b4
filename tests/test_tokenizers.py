"""CLIP tokenizers: models with the standard vocabulary share one built tokenizer; any other keeps its own."""
from __future__ import annotations

import json
import shutil

import pytest

from app.engine.diffusion.model_loader import shipped_tokenizer, tokenizers_for

PROMPT = "a red fox sitting in tall grass, golden hour"


def copy_tokenizers(tiny_models, family: str, tmp_path):
    source = tiny_models.path("sd15" if family == "sd1" else family)
    folder = tmp_path / family
    for sub in ("tokenizer", "tokenizer_2"):
        if (source / sub).is_dir():
            shutil.copytree(source / sub, folder / sub)
    return folder


@pytest.mark.parametrize("family, pads", [("sd1", ["<|endoftext|>"]), ("sdxl", ["<|endoftext|>", "!"])])
def test_hub_layout_folders_with_the_standard_vocabulary_share_the_built_tokenizers(tiny_models, family, pads):
    tokenizers = tokenizers_for(tiny_models.path("sd15" if family == "sd1" else family), family)
    assert [t is shipped_tokenizer(pad) for t, pad in zip(tokenizers, pads)] == [True] * len(pads)
    assert [t.pad_token for t in tokenizers] == pads


def test_single_files_use_the_shipped_vocabulary(tmp_path):
    sd2 = tokenizers_for(tmp_path, "sd2")          # a config folder without tokenizers
    assert sd2 == [shipped_tokenizer("!")] and sd2[0].pad_token_id == 0


def test_a_folder_that_declares_another_padding_token_keeps_it(tiny_models, tmp_path):
    folder = copy_tokenizers(tiny_models, "sd1", tmp_path)
    config = folder / "tokenizer" / "tokenizer_config.json"
    settings = json.loads(config.read_text(encoding="utf-8"))
    config.write_text(json.dumps(dict(settings, pad_token="!")), encoding="utf-8")
    (folder / "tokenizer" / "special_tokens_map.json").unlink()
    [own] = tokenizers_for(folder, "sd1")
    assert own is not shipped_tokenizer("<|endoftext|>")
    assert (own.pad_token, own.pad_token_id) == ("!", 0)


def test_a_folder_with_its_own_merges_or_added_tokens_keeps_its_own_tokenizer(tiny_models, tmp_path):
    folder = copy_tokenizers(tiny_models, "sd1", tmp_path)
    merges = folder / "tokenizer" / "merges.txt"
    lines = merges.read_text(encoding="utf-8").splitlines(keepends=True)
    merges.write_text("".join(lines[:-1000]), encoding="utf-8")     # the last 1000 merges are gone
    [own] = tokenizers_for(folder, "sd1")
    shared = shipped_tokenizer("<|endoftext|>")
    assert own is not shared
    words = lines[-1].strip().replace(" ", "").replace("</w>", "")    # the last merge makes this word
    assert own(words).input_ids != shared(words).input_ids          # and it tokenizes by its own merges

    folder = copy_tokenizers(tiny_models, "sd1", tmp_path / "added")
    (folder / "tokenizer" / "added_tokens.json").write_text(json.dumps({"<my-style>": 49408}), encoding="utf-8")
    [own] = tokenizers_for(folder, "sd1")
    assert own is not shared


def test_shared_tokenizers_tokenize_as_a_freshly_built_one(tiny_models):
    from transformers import CLIPTokenizer

    fresh = CLIPTokenizer.from_pretrained(tiny_models.path("sdxl") / "tokenizer_2", local_files_only=True)
    [_, shared] = tokenizers_for(tiny_models.path("sdxl"), "sdxl")
    assert shared(PROMPT).input_ids == fresh(PROMPT).input_ids
    assert (shared.pad_token_id, shared.bos_token_id, shared.eos_token_id) == \
        (fresh.pad_token_id, fresh.bos_token_id, fresh.eos_token_id)
