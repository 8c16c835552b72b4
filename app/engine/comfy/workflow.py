"""The ComfyUI API graph of one pass of a job, built from the request (nodes of ComfyUI itself only).

Fill and Expand: the pass's crop is uploaded as one PNG whose alpha is 255 minus the hole (LoadImage's MASK
is 1 - alpha); an inpainting checkpoint gets InpaintModelConditioning, a base one VAEEncode and
SetLatentNoiseMask. Restyle: VAEEncode of the whole image and KSampler's denoise = strength. A style's
text below full strength is ConditioningAverage of the styled and the plain prompt, its LoRA a LoraLoader at
the effective weight; ControlNets are ControlNetApplyAdvanced, each with its own uploaded control image.
The result is a PreviewImage (the server's temp folder: nothing accumulates in its output folder).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from app.engine.request import GenerationRequest, JobKind

# our sampler names -> KSampler's (sampler_name, scheduler)
SAMPLERS = {
    "dpmpp_2m_karras": ("dpmpp_2m", "karras"),
    "dpmpp_2m": ("dpmpp_2m", "normal"),
    "euler_a": ("euler_ancestral", "normal"),
    "euler": ("euler", "normal"),
    "ddim": ("ddim", "ddim_uniform"),
    "unipc": ("uni_pc", "normal"),
}
NEEDED_NODES = ("CheckpointLoaderSimple", "CLIPTextEncode", "LoadImage", "VAEEncode", "SetLatentNoiseMask",
                "InpaintModelConditioning", "KSampler", "VAEDecode", "PreviewImage")
OUTPUT_NODE = "result"


@dataclass(frozen=True)
class PassInputs:
    """What one pass needs besides the request: the names the server gave the uploads, the seed."""
    image: str                       # the crop (RGBA: alpha = 255 - hole; RGB for a restyle)
    seed: int
    checkpoint: str
    inpaint_model: bool              # the checkpoint is an inpainting one (9-channel UNet)
    lora: str = ""                   # the style's LoRA as the server names it
    controls: tuple[tuple[str, str], ...] = field(default=())   # (ControlNet name, uploaded control image)


def sampler_for(name: str) -> tuple[str, str]:
    """KSampler's names for one of ours (or an alias find_sampler knows); EngineError for an unknown one."""
    from app.engine.diffusion.samplers import find_sampler

    return SAMPLERS[find_sampler(name).name]


def build_graph(request: GenerationRequest, inputs: PassInputs) -> dict:
    """The API-format graph ({node id: {"class_type", "inputs"}}) of one pass."""
    graph: dict[str, dict] = {}

    def node(node_id: str, class_type: str, **values) -> list:
        graph[node_id] = {"class_type": class_type, "inputs": values}
        return [node_id, 0]

    checkpoint = node("checkpoint", "CheckpointLoaderSimple", ckpt_name=inputs.checkpoint)
    model, clip, vae = checkpoint, ["checkpoint", 1], ["checkpoint", 2]
    style = request.style
    if inputs.lora and style.effective_lora_weight != 0:
        weight = round(style.effective_lora_weight, 4)
        model = node("lora", "LoraLoader", model=model, clip=clip, lora_name=inputs.lora, strength_model=weight,
                     strength_clip=weight)
        clip = ["lora", 1]
    positive = _text(node, "positive", request.prompt, style.base_prompt, style.strength, clip)
    negative = _text(node, "negative", request.negative_prompt, style.base_negative_prompt, style.strength, clip)
    image = node("image", "LoadImage", image=inputs.image)
    for index, ((name, control_image), control) in enumerate(zip(inputs.controls, request.controls)):
        loaded = node(f"control{index}_image", "LoadImage", image=control_image)
        net = node(f"control{index}_net", "ControlNetLoader", control_net_name=name)
        node(f"control{index}", "ControlNetApplyAdvanced", positive=positive, negative=negative, control_net=net,
             image=loaded, strength=control.weight, start_percent=control.start, end_percent=control.end, vae=vae)
        positive, negative = [f"control{index}", 0], [f"control{index}", 1]
    s = request.sampling
    if request.kind == JobKind.RESTYLE:
        latent = node("encode", "VAEEncode", pixels=image, vae=vae)
    elif inputs.inpaint_model:
        node("inpaint", "InpaintModelConditioning", positive=positive, negative=negative, vae=vae, pixels=image,
             mask=["image", 1], noise_mask=True)
        positive, negative, latent = ["inpaint", 0], ["inpaint", 1], ["inpaint", 2]
    else:
        encoded = node("encode", "VAEEncode", pixels=image, vae=vae)
        latent = node("noise_mask", "SetLatentNoiseMask", samples=encoded, mask=["image", 1])
    sampler_name, scheduler = sampler_for(s.sampler)
    samples = node("sampler", "KSampler", model=model, seed=inputs.seed, steps=s.steps, cfg=s.guidance,
                   sampler_name=sampler_name, scheduler=scheduler, positive=positive, negative=negative,
                   latent_image=latent, denoise=s.strength)
    decoded = node("decode", "VAEDecode", samples=samples, vae=vae)
    node(OUTPUT_NODE, "PreviewImage", images=decoded)
    return graph


def _text(node, name: str, text: str, base: str, strength: float, clip: list) -> list:
    """The conditioning of `text`; below full style strength, blended with the unstyled `base` by it."""
    styled = node(name, "CLIPTextEncode", text=text, clip=clip)
    if strength >= 1.0 or base == text:
        return styled
    plain = node(f"{name}_plain", "CLIPTextEncode", text=base, clip=clip)
    return node(f"{name}_blend", "ConditioningAverage", conditioning_to=styled, conditioning_from=plain,
                conditioning_to_strength=strength)


def result_images(outputs: dict) -> list[dict]:
    """The image records of the graph's result node in a /history outputs object (checked)."""
    node = outputs.get(OUTPUT_NODE)
    images = node.get("images") if isinstance(node, dict) else None
    return [image for image in images if isinstance(image, dict)] if isinstance(images, list) else []
