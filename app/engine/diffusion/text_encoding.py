"""Prompt -> the UNet's text conditioning, for SD 1.x/2.x (one CLIP encoder) and SDXL (two, plus pooled).

Prompts longer than one CLIP window (75 tokens) are encoded in 75-token chunks whose embeddings are
concatenated, as A1111 and ComfyUI do, so long prompts are not silently cut. Prompts encoded together
are padded to the same number of chunks, so their conditionings can be blended (`blend`).

Each encoder's output is checked: NaN or infinity there is the text encoder's fault (damaged weights), and
is reported as such before the UNet or the VAE could be blamed for it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from app.engine.events import EngineError

WINDOW = 75                 # tokens per chunk, plus start and end tokens = the encoders' 77 positions
MAX_CHUNKS = 4


@dataclass
class TextConditioning:
    embeddings: torch.Tensor           # (batch, tokens, dim)
    pooled: torch.Tensor | None        # SDXL only: (batch, dim)
    class_labels: torch.Tensor | None = None   # class-conditioned models only: (batch,) class numbers


def encode_prompts(model, prompts: list[str], device) -> list[TextConditioning]:
    """The conditioning of each prompt (batch 1 each, all the same length) on `device`, in the UNet's dtype.
    All prompts go through each encoder together, one batched call per 77-token window. A class-conditioned
    model's prompts are its labels instead (`class_conditioning`)."""
    labels = model.extra.get("class_labels")
    if labels is not None:
        return [class_conditioning(model, prompt, labels, device, index % 2 == 1)
                for index, prompt in enumerate(prompts)]
    tokenized = [[_token_chunks(tok, prompt) for prompt in prompts] for tok in model.tokenizers]
    chunks = max(len(c) for per_encoder in tokenized for c in per_encoder)
    hidden, pooled = [], None
    for index, (encoder, per_prompt) in enumerate(zip(model.text_encoders, tokenized)):
        empty = _framed(model.tokenizers[index], [])
        parts = []
        for chunk_index in range(chunks):
            ids = torch.tensor([c[chunk_index] if chunk_index < len(c) else empty for c in per_prompt],
                               device=device)
            if model.is_xl:
                out = encoder(ids, output_hidden_states=True)
                parts.append(out.hidden_states[-2])
                if index == 1 and chunk_index == 0:
                    pooled = out.text_embeds
            else:
                parts.append(encoder(ids)[0])
        hidden.append(torch.cat(parts, dim=1))
        outputs = [hidden[-1]] + ([pooled] if pooled is not None and index == 1 else [])
        if not all(bool(torch.isfinite(output).all()) for output in outputs):
            raise invalid_values("the second text encoder" if index else "the text encoder", model)
    embeddings = torch.cat(hidden, dim=-1) if len(hidden) > 1 else hidden[0]
    dtype = model.unet.dtype
    return [TextConditioning(embeddings[i:i + 1].to(dtype), None if pooled is None else pooled[i:i + 1].to(dtype))
            for i in range(len(prompts))]


def class_conditioning(model, prompt: str, labels: list[str], device, negative: bool = False) -> TextConditioning:
    """A class-conditioned model's input for `prompt`: the class whose label it is (case and runs of spaces
    aside), or the unconditional class (the last) for an empty prompt; EngineError in one line for any other
    prompt. Such a UNet has no cross-attention: its text embeddings are a placeholder it does not read."""
    wanted = " ".join(prompt.casefold().split())
    index = len(labels) if not wanted else \
        next((i for i, label in enumerate(labels) if " ".join(label.casefold().split()) == wanted), None)
    if index is None:
        shown = ", ".join(labels[:12]) + (f" and {len(labels) - 12} more" if len(labels) > 12 else "")
        which = "negative prompt" if negative else "prompt"
        raise EngineError(f"{model.name} is a class-conditioned model: the {which} must be one of its labels "
                          f"({shown}) or empty, not {' '.join(prompt.split())[:60]!r}")
    width = model.unet.config.cross_attention_dim
    placeholder = torch.zeros((1, 1, width if isinstance(width, int) else 1), device=device, dtype=model.unet.dtype)
    return TextConditioning(placeholder, None, torch.tensor([index], device=device))


def invalid_values(part: str, model, when: str = "") -> EngineError:
    """The one-line error for NaN or infinity out of `part` ("the UNet", "the text encoder", ...) of `model`,
    naming the LoRA applied to it, if any."""
    from app.engine.diffusion.lora import loaded

    weights = part.removeprefix("the ")
    lora = loaded(model)
    cause = f"the LoRA {Path(lora).name} or the model's {weights} weights are damaged" if lora else \
        f"the model's {weights} weights are damaged"
    if model.unet.dtype == torch.float16:
        cause += ", or it overflows in float16 (try the float32 or bfloat16 precision)"
    return EngineError(f"{part} produced invalid values (NaN or infinity){when}: {cause}")


def blend(unstyled: TextConditioning, styled: TextConditioning, strength: float) -> TextConditioning:
    """lerp(unstyled, styled, strength) of the embeddings and pooled embeddings (a style at strength)."""
    if strength <= 0.0:
        return unstyled
    if strength >= 1.0:
        return styled

    def lerp(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.lerp(a.float(), b.float(), strength).to(a.dtype)
    pooled = None if unstyled.pooled is None else lerp(unstyled.pooled, styled.pooled)
    return TextConditioning(lerp(unstyled.embeddings, styled.embeddings), pooled, styled.class_labels)


def zeros_like(cond: TextConditioning) -> TextConditioning:
    """SDXL's unconditional input for an empty negative prompt (force_zeros_for_empty_prompt)."""
    return TextConditioning(torch.zeros_like(cond.embeddings),
                            None if cond.pooled is None else torch.zeros_like(cond.pooled))


def _token_chunks(tokenizer, prompt: str) -> list[list[int]]:
    ids = tokenizer(prompt, add_special_tokens=False, truncation=False).input_ids
    ids = ids[:WINDOW * MAX_CHUNKS]
    pieces = [ids[i:i + WINDOW] for i in range(0, len(ids), WINDOW)] or [[]]
    return [_framed(tokenizer, piece) for piece in pieces]


def _framed(tokenizer, piece: list[int]) -> list[int]:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    body = [tokenizer.bos_token_id, *piece, tokenizer.eos_token_id]
    return body + [pad] * (WINDOW + 2 - len(body))
