"""IP-Adapter reference images: a CLIP vision encoder turns each reference into image embeddings, which the
UNet's cross-attention reads beside the prompt, through diffusers' own IP-Adapter loading into the UNet.

An IP-Adapter is one .safetensors file (image_proj.* and ip_adapter.* tensors, as h94/IP-Adapter ships them)
or a folder/repo holding one; the CLIP vision encoder is a transformers CLIPVisionModelWithProjection folder
(or a repo id in the Hugging Face cache), for h94/IP-Adapter its models/image_encoder. Each reference gets
its own copy of the adapter, so each has its own scale and its own reach: "general" guides every cross-
attention layer, "style" only the layers that carry style and "composition" only those that carry layout
(the InstantStyle split: SDXL's up_blocks.0.attentions.1 and down_blocks.2.attentions.1; on SD 1.x we use
the same roles' blocks, up_blocks.1 and down_blocks.2). Classifier-free guidance gets zero embeddings for
the unconditional half (the encoder's hidden states of a black image for "plus" adapters), as diffusers does.
The adapter is put into the UNet for a job and taken out after it: the UNet's processors come back as they were.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from app.engine.diffusion.model_files import (check_weight_dtypes, check_weight_sizes, read_checkpoint_tensors,
                                             short_error)
from app.engine.events import EngineError
from app.engine.model_ids import looks_like_repo_id

log = logging.getLogger(__name__)

MAX_ADAPTER_BYTES = 4 << 30          # SDXL "plus" adapters are about 1 GB in F32
STYLE_LAYERS = {True: ("up_blocks.0.attentions.1",), False: ("up_blocks.1",)}       # by is_xl
COMPOSITION_LAYERS = {True: ("down_blocks.2.attentions.1",), False: ("down_blocks.2",)}
REFERENCE_KINDS = ("general", "style", "composition")


def adapter_file(location: str) -> Path:
    """The IP-Adapter's .safetensors file: `location` itself, the one file of a folder, or of a cached repo."""
    path = Path(location).expanduser()
    if path.is_dir():
        files = sorted(path.glob("*.safetensors")) or sorted(path.glob("*/*.safetensors"))
        if len(files) != 1:
            raise EngineError(f"{path.name} holds {len(files)} .safetensors files: give the IP-Adapter file itself")
        return files[0]
    if path.is_file():
        if path.suffix.lower() != ".safetensors":
            raise EngineError(f"{path.name}: IP-Adapters are read from .safetensors files only (never unpickled)")
        return path
    if looks_like_repo_id(location):
        raise EngineError(f"give the IP-Adapter file of {location} (e.g. its models/ip-adapter_sd15.safetensors "
                          "in your Hugging Face cache), not the repo id")
    raise EngineError(f"IP-Adapter not found: {location}")


def read_adapter(location: str, model) -> dict:
    """{"image_proj": ..., "ip_adapter": ...} tensors of the adapter, checked against the model's UNet."""
    from safetensors.torch import load_file

    path = adapter_file(location)
    tensors = read_checkpoint_tensors(path)
    if not any(k.startswith("image_proj.") for k in tensors) or not any(k.startswith("ip_adapter.") for k in tensors):
        raise EngineError(f"{path.name} is not an IP-Adapter (no image_proj and ip_adapter tensors)")
    check_weight_dtypes(tensors, path.name, lambda key: "IP-Adapter")
    check_weight_sizes(tensors, path.name, lambda key: "IP-Adapter", (MAX_ADAPTER_BYTES, MAX_ADAPTER_BYTES),
                       "IP-Adapter")
    width = int(model.unet.config.cross_attention_dim)
    first = tensors.get("ip_adapter.1.to_k_ip.weight")
    if first is None or len(first.shape) != 2 or first.shape[1] != width:
        found = "no ip_adapter.1.to_k_ip.weight" if first is None else f"cross-attention width {first.shape[-1]}"
        raise EngineError(f"the IP-Adapter {path.name} does not fit the model {model.name} ({found}; the model's "
                          f"is {width}): it is for another family")
    state = load_file(str(path))
    split = {"image_proj": {}, "ip_adapter": {}}
    for key, value in state.items():
        head, _, rest = key.partition(".")
        if head in split:
            split[head][rest] = value
    return split


def load_image_encoder(model, location: str):
    """(CLIPVisionModelWithProjection, CLIPImageProcessor) from a folder or a cached repo id, once per model."""
    cache = model.extra.setdefault("image_encoders", {})
    if location in cache:
        return cache[location]
    import transformers

    path = Path(location).expanduser()
    source = str(path) if path.is_dir() else location
    if not path.is_dir() and not looks_like_repo_id(location):
        raise EngineError(f"image encoder not found: {location} (an IP-Adapter needs its CLIP vision encoder folder, "
                          "e.g. h94/IP-Adapter's models/image_encoder)")
    try:
        encoder = transformers.CLIPVisionModelWithProjection.from_pretrained(
            source, local_files_only=True, use_safetensors=True, torch_dtype=model.plan.dtype)
    except (OSError, ValueError, TypeError, RuntimeError) as exc:
        from app.engine.diffusion.devices import is_out_of_memory

        if is_out_of_memory(exc):
            raise
        raise EngineError(f"could not load the image encoder {Path(location).name}: {short_error(exc, 120)}") from None
    try:
        processor = transformers.CLIPImageProcessor.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError):
        processor = transformers.CLIPImageProcessor()        # the CLIP defaults IP-Adapter pipelines use
    encoder.eval().requires_grad_(False)
    if not model.plan.offload:
        encoder.to(model.plan.device)
    cache[location] = (encoder, processor)
    return cache[location]


def encode_reference(encoder, processor, image: np.ndarray, plus: bool, guided: bool, device):
    """One reference image's embeddings, shaped for the UNet's added_cond_kwargs["image_embeds"]."""
    import torch

    device = encoder.device
    pixels = processor(images=image[..., :3], return_tensors="pt").pixel_values.to(device=device, dtype=encoder.dtype)
    if plus:
        embeds = encoder(pixels, output_hidden_states=True).hidden_states[-2]
        negative = encoder(torch.zeros_like(pixels), output_hidden_states=True).hidden_states[-2]
    else:
        embeds = encoder(pixels).image_embeds
        negative = torch.zeros_like(embeds)
    embeds, negative = embeds[None], negative[None]
    return torch.cat([negative, embeds]) if guided else embeds


@contextmanager
def applied(model, adapter: str, encoder_location: str, references, guided: bool):
    """With the IP-Adapter in the UNet, one copy per reference at its scale; yields each reference's
    embeddings (in request order), or [] with no references. The UNet is as before afterwards."""
    if not references:
        yield []
        return
    state = read_adapter(adapter, model)
    encoder, processor = load_image_encoder(model, encoder_location)
    unet = model.unet
    saved = dict(unet.attn_processors)
    saved_type = unet.config.encoder_hid_dim_type
    try:
        embeds = _put_in(model, state, encoder, processor, references, guided)
    except BaseException:
        _take_out(model, saved, saved_type)
        raise
    try:
        yield embeds
    finally:
        _take_out(model, saved, saved_type)


def _put_in(model, state: dict, encoder, processor, references, guided: bool) -> list:
    import torch

    from app.engine.diffusion.denoise import on_device

    unet = model.unet
    plus = "proj.weight" not in state["image_proj"]
    projection = state["image_proj"].get("proj.weight" if not plus else "proj_in.weight")
    width = int(encoder.config.projection_dim if not plus else encoder.config.hidden_size)
    if projection is None or projection.ndim != 2 or projection.shape[-1] != width:
        wanted = "an unknown width" if projection is None or projection.ndim != 2 else f"{projection.shape[-1]}"
        raise EngineError(f"the image encoder gives {width}-wide embeddings; the IP-Adapter wants {wanted}: use "
                          "the encoder it was trained with")
    saved = dict(unet.attn_processors)
    # diffusers rebuilds every processor without arguments (attention slicing's need one): load over the
    # default ones, then give the self-attention layers theirs back.
    unet.set_default_attn_processor()
    try:
        unet._load_ip_adapter_weights([state] * len(references), low_cpu_mem_usage=False)
    except (KeyError, ValueError, RuntimeError, TypeError, IndexError, AttributeError) as exc:
        from app.engine.diffusion.devices import is_out_of_memory

        if is_out_of_memory(exc):
            raise
        raise EngineError(f"the IP-Adapter does not fit the model {model.name}: {short_error(exc, 120)}") from None
    processors = dict(unet.attn_processors)
    processors.update({name: saved[name] for name in processors if name.endswith("attn1.processor")})
    unet.set_attn_processor(processors)
    unet.to("cpu" if model.plan.offload else model.plan.device, dtype=unet.dtype)
    _set_scales(unet, references, model.is_xl)
    with torch.inference_mode(), on_device(model, [encoder]):
        return [encode_reference(encoder, processor, r.image, plus, guided, model.plan.device).to(unet.dtype)
                for r in references]


def _take_out(model, saved: dict, saved_type) -> None:
    unet = model.unet
    unet.encoder_hid_proj = None
    unet.config.encoder_hid_dim_type = saved_type
    unet.set_attn_processor(saved)
    if model.extra.get("memory_savers") and not model.extra.get("sliced"):
        unet.set_attention_slice("auto")          # switched on by an out-of-memory retry during the job
        model.extra["sliced"] = True


def _set_scales(unet, references, is_xl: bool) -> None:
    """Each copy of the adapter at its reference's scale, in the layers its kind reaches (0 elsewhere)."""
    for name, processor in unet.attn_processors.items():
        if not hasattr(processor, "to_k_ip"):
            continue
        processor.scale = [reference.scale if _reaches(reference.kind, name, is_xl) else 0.0
                           for reference in references]


def _reaches(kind: str, layer: str, is_xl: bool) -> bool:
    if kind == "style":
        return layer.startswith(STYLE_LAYERS[is_xl])
    if kind == "composition":
        return layer.startswith(COMPOSITION_LAYERS[is_xl])
    return True
