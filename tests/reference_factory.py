"""A tiny random IP-Adapter and CLIP vision encoder that fit the tiny UNets of tests/model_factory.py, written
as h94/IP-Adapter lays them out: models/ip-adapter_<family>.safetensors (image_proj.* and ip_adapter.*
tensors) beside models/image_encoder (a transformers CLIPVisionModelWithProjection folder)."""
from __future__ import annotations

from pathlib import Path

import torch
from diffusers.models.embeddings import ImageProjection
from safetensors.torch import save_file
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

IMAGE_EMBED_DIM = 16
TOKENS = 4


def image_encoder(seed: int = 0) -> CLIPVisionModelWithProjection:
    torch.manual_seed(seed)
    config = CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                              image_size=32, patch_size=8, projection_dim=IMAGE_EMBED_DIM)
    return CLIPVisionModelWithProjection(config).eval()


def adapter_state(unet, seed: int = 0) -> dict[str, torch.Tensor]:
    """The tensors of a base IP-Adapter for `unet`, named as the released files name them."""
    generator = torch.Generator().manual_seed(seed)
    cross = int(unet.config.cross_attention_dim)
    projection = ImageProjection(cross_attention_dim=cross, image_embed_dim=IMAGE_EMBED_DIM,
                                 num_image_text_embeds=TOKENS)
    state = {}
    for key, value in projection.state_dict().items():
        state[f"image_proj.{key.replace('image_embeds', 'proj')}"] = torch.randn(value.shape, generator=generator) * 0.2 + (
            1.0 if key == "norm.weight" else 0.0)
    key_id = 1
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        block = name.split(".")[0]
        if block == "mid_block":
            hidden = unet.config.block_out_channels[-1]
        elif block == "up_blocks":
            hidden = list(reversed(unet.config.block_out_channels))[int(name.split(".")[1])]
        else:
            hidden = unet.config.block_out_channels[int(name.split(".")[1])]
        for part in ("to_k_ip", "to_v_ip"):
            state[f"ip_adapter.{key_id}.{part}.weight"] = torch.randn((hidden, cross), generator=generator) * 0.3
        key_id += 2
    return state


def save_reference_models(unet, root: Path, family: str, seed: int = 0) -> tuple[Path, Path]:
    """(adapter file, image encoder folder) under root/models, as h94/IP-Adapter has them."""
    models = Path(root) / "models"
    encoder_dir = models / "image_encoder"
    image_encoder(seed).save_pretrained(encoder_dir, safe_serialization=True)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(encoder_dir)
    adapter = models / f"ip-adapter_{family}.safetensors"
    save_file(adapter_state(unet, seed), str(adapter))
    return adapter, encoder_dir
