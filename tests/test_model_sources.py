"""Models by Hugging Face repo id (from the standard HF cache when offline) and TAESD previews."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from app.engine.events import EventKind
from tests.test_diffusion_engine import MANAGER, fill_request, model_args, run

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def install_in_hub_cache(cache: Path, repo_id: str, folder: Path) -> None:
    """Lay `folder` out as huggingface_hub's cache does after a download of `repo_id`."""
    owner, name = repo_id.split("/")
    repo = cache / f"models--{owner}--{name}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    shutil.copytree(folder, repo / "snapshots" / COMMIT, dirs_exist_ok=True)


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    MANAGER.free()
    yield cache
    MANAGER.free()                   # drop models that cached a preview decoder from this hub


def test_repo_id_loads_from_the_hub_cache(tiny_models, offline_hub):
    install_in_hub_cache(offline_hub, "tester/tiny-sd", tiny_models.path("sd15"))
    by_repo, _ = run(fill_request(tiny_models, model="tester/tiny-sd", device="cpu"))
    by_folder, _ = run(fill_request(tiny_models, **model_args(tiny_models, "sd15")))
    assert by_repo.kind == EventKind.RESULT, by_repo.message
    np.testing.assert_array_equal(by_repo.variants[0].image, by_folder.variants[0].image)
    assert "Model: tester/tiny-sd" in by_repo.variants[0].parameters


def test_repo_id_not_downloaded_while_offline_is_one_line(tiny_models, offline_hub):
    result, _ = run(fill_request(tiny_models, model="tester/not-here", device="cpu"))
    assert result.kind == EventKind.ERROR
    assert result.message == ("tester/not-here is not downloaded yet and the Hugging Face hub cannot be "
                              "reached (offline?)")


def test_repo_that_is_not_a_diffusers_model_is_refused(tmp_path, tiny_models, offline_hub):
    other = tmp_path / "other"
    other.mkdir()
    (other / "model_index.json").write_text("{}")
    install_in_hub_cache(offline_hub, "tester/just-a-file", other)
    result, _ = run(fill_request(tiny_models, model="tester/just-a-file", device="cpu"))
    assert result.kind == EventKind.ERROR
    assert "not a diffusers-format Stable Diffusion model" in result.message


def _tiny_taesd(folder: Path) -> None:
    import torch
    from diffusers import AutoencoderTiny

    torch.manual_seed(0)
    AutoencoderTiny(encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
                    num_encoder_blocks=(1, 1, 1, 1), num_decoder_blocks=(1, 1, 1, 1),
                    latent_channels=4).save_pretrained(folder, safe_serialization=True)


def test_cached_taesd_gives_full_size_previews(tmp_path, tiny_models, offline_hub):
    linear, linear_progress = run(fill_request(tiny_models, steps=2))
    linear_size = [e.preview.shape for e in linear_progress if e.preview is not None][0]
    MANAGER.free()
    _tiny_taesd(tmp_path / "taesd")
    install_in_hub_cache(offline_hub, "madebyollin/taesd", tmp_path / "taesd")
    result, progress = run(fill_request(tiny_models, steps=2))
    previews = [e.preview for e in progress if e.preview is not None]
    assert result.kind == EventKind.RESULT
    assert len(previews) == 2
    scale = MANAGER.current.vae_scale // 2                   # linear previews are 2x the latent size
    assert previews[0].shape[:2] == (linear_size[0] * scale, linear_size[1] * scale)
    assert previews[0].shape[2] == 4
    np.testing.assert_array_equal(result.variants[0].image, linear.variants[0].image)   # previews only
