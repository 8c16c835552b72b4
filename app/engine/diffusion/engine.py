"""Generative Fill, Expand and Restyle with a Stable Diffusion model (SD 1.x, 2.x, SDXL; base or inpainting).

The job is planned by app.engine.job_plan (crop, prefill, windows, composite: the same for every backend).
For each pass this engine scales the crop to the model's size, encodes it, denoises every variant with a
preview after each step (ControlNets and IP-Adapter references guiding it when the request has them) and
decodes; job_plan puts the result back. Restyle is img2img of the whole image at the request's strength.

A style's LoRA (request.style) is applied around the job by app.engine.diffusion.lora and its text
conditioning is blended by the style strength in app.engine.diffusion.denoise.
"""
from __future__ import annotations

import logging

import cv2
import numpy as np

from app.engine.control_plan import pass_control_images
from app.engine.diffusion import ip_adapter, lora
from app.engine.diffusion.control import ActiveControl, load_controlnets, union_mode_for
from app.engine.base import Emit, Engine, format_parameters
from app.engine.events import CancelToken, Cancelled, EngineError, Variant
from app.engine.job_plan import JobPlan, Overview, Pass, composite_pass, plan_job, resize
from app.engine.request import GenerationRequest, JobKind

log = logging.getLogger(__name__)


class DiffusionEngine(Engine):
    def __init__(self, model_id: str, manager=None) -> None:
        from app.engine.diffusion.model_manager import MODELS

        self.id = model_id
        self.label = model_id
        self.manager = manager or MODELS

    def close(self) -> None:
        from app.engine import annotators

        self.manager.free()
        annotators.free()

    def generate(self, request: GenerationRequest, job_id: int, emit: Emit,
                 cancel: CancelToken) -> tuple[Variant, ...]:
        import torch

        from app.engine.diffusion.devices import plan_device
        from app.engine.diffusion.model_files import resolve_source
        from app.engine.diffusion.samplers import find_sampler

        sampler = find_sampler(request.sampling.sampler)
        source = resolve_source(request.model, request.model_config)
        plan = plan_device(request.device, request.precision, request.memory_saving)
        self.label = source.name

        def loading(message: str, fraction: float) -> None:
            self.report(emit, cancel, job_id, 0, request.sampling.steps, message=message)
        model = self.manager.get(source, plan, loading)
        if "class_labels" in model.extra and (request.controls or request.references
                                              or (request.style.lora and request.style.effective_lora_weight)):
            raise EngineError(f"{model.name} is a class-conditioned model: it takes no ControlNet, reference image "
                              "or style LoRA (its prompt is one of its labels)")
        nets = load_controlnets(model, request.controls, loading)
        work = self._plan(request, model)
        sizes = sorted({p.size for p in work.passes})
        where = f"{len(work.passes)} windows of " if len(work.passes) > 1 else ""
        self.report(emit, cancel, job_id, 0, request.sampling.steps,
                    message=f"{model.describe()}: working at {where}{sizes[-1][0]}x{sizes[-1][1]}")
        style = request.style
        with lora.applied(model, style.lora, style.effective_lora_weight,
                          lambda message: loading(message, -1)):
            with ip_adapter.applied(model, request.ip_adapter, _image_encoder(request), request.references,
                                    request.sampling.guidance > 1.0) as embeds:
                with torch.inference_mode():
                    return self._generate(request, model, work, sampler, job_id, emit, cancel, nets, embeds)

    # -- generation -----------------------------------------------------------------------------------

    @staticmethod
    def _plan(request: GenerationRequest, model) -> JobPlan:
        multiple = model.vae_scale * 2 ** (len(model.unet.config.down_block_types) - 1)
        return plan_job(request, model.native_size, multiple)

    def _generate(self, request, model, work: JobPlan, sampler, job_id, emit, cancel,
                  nets=(), embeds=()) -> tuple[Variant, ...]:
        from app.engine.diffusion.denoise import steps_to_run

        s = request.sampling
        seeds = [(s.seed + index) % 2**32 for index in range(s.variants)]
        batch = _batch_limit(model)
        per_pass = steps_to_run(s.steps, s.strength)
        variants: list[Variant] = []
        done = 0
        while seeds and not cancel.finish_requested:
            chunk = seeds[:batch]
            total = done + per_pass * len(work.passes) * -(-len(seeds) // batch)
            canvases = [work.base] * len(chunk)
            overview = Overview(work) if len(work.passes) > 1 else None
            ran_chunk = 0
            try:
                for p in work.passes:
                    def on_step(step: int, x0, preview, rect, base_step=done + ran_chunk, total=total, p=p) -> bool:
                        image = preview(x0)
                        if overview is not None:
                            image, rect = overview.compose(image, p), overview.rect
                        self.report(emit, cancel, job_id, base_step + step, total, image, rect,
                                    message=f"step {base_step + step}/{total}")
                        return cancel.finish_requested
                    canvases, ran = self._run_pass(model, request, work, p, canvases, chunk, sampler, on_step,
                                                   nets, embeds)
                    ran_chunk += ran
                    if overview is not None:
                        overview.update(canvases[0], p)
                    if cancel.finish_requested:
                        break
            except Exception as exc:  # noqa: BLE001 - only out-of-memory is retried
                batch = _after_out_of_memory(exc, model, len(chunk), work.passes[0].size)   # what ran
                continue
            done += ran_chunk
            for seed, canvas in zip(chunk, canvases):
                variants.append(Variant(canvas, seed, format_parameters(request, seed, model.name,
                                                                        sampler=sampler.label)))
            seeds = seeds[len(chunk):]
        if not variants and cancel.finish_requested:
            raise Cancelled()          # stopped before the first step: nothing to keep
        return tuple(variants)

    def _run_pass(self, model, request, work: JobPlan, p: Pass, canvases: list[np.ndarray], seeds: list[int],
                  sampler, on_step, nets=(), embeds=()) -> tuple[list[np.ndarray], int]:
        """Generate p.hole in every canvas (one per seed); returns the new canvases and the steps run."""
        import torch

        from app.engine.diffusion import latent_codec
        from app.engine.diffusion.denoise import DenoiseJob, run_denoise

        width, height = p.size
        latent_size = (width // model.vae_scale, height // model.vae_scale)
        shared = all(c is canvases[0] for c in canvases)
        pixels = [resize(c[p.region.slices()][..., :3], (width, height)) for c in canvases[:1 if shared else None]]
        strength_map = None        # Restyle generates everywhere: nothing to blend back
        if request.kind != JobKind.RESTYLE:
            strength_map = torch.from_numpy(cv2.resize(p.alpha, latent_size, interpolation=cv2.INTER_AREA))
            strength_map = strength_map[None, None]
        condition = None
        if model.inpaint:
            # A latent cell is "generate" if any hole pixel falls in it, so thin strokes are not lost; the
            # masked image is greyed by that same mask, so the two inputs always agree.
            cells = cv2.resize((p.hole >= 128).astype(np.float32), latent_size, interpolation=cv2.INTER_AREA) > 0
            hole_px = cv2.resize(cells.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST)
            greyed = [np.where(hole_px[..., None] > 0, np.uint8(127), px) for px in pixels]
            # The image's own latents too, even for a full-strength fill that starts from noise: they hold the
            # kept cells in place, and the masked image's would carry its grey into the cells at the hole's
            # edge and into the ring the colour drift is measured on. One more VAE encode buys that.
            both = latent_codec.encode(model, greyed + pixels)
            masked, init = both[:len(pixels)], both[len(pixels):]
            mask_latent = torch.from_numpy(cells).to(masked.device, torch.float32)
            condition = torch.cat([mask_latent[None, None].expand(len(pixels), -1, -1, -1), masked], dim=1)
        else:
            init = latent_codec.encode(model, pixels)
        preview = latent_codec.make_preview(model, p.alpha, (width, height))
        rect = p.region.translated(*work.offset)
        s, style = request.sampling, request.style
        job = DenoiseJob(init, strength_map, condition, request.prompt, request.negative_prompt,
                         s.guidance, s.steps, s.strength, sampler.name, seeds, (width, height),
                         style.base_prompt, style.base_negative_prompt, style.strength,
                         pure_noise=request.kind == JobKind.FILL,
                         controls=_active_controls(request, work, p, nets, model.plan.device, canvases[0]),
                         image_embeds=list(embeds))
        x0, ran = run_denoise(model, job, lambda step, steps, x0: on_step(step, x0, preview, rect))
        images = latent_codec.decode(model, x0)
        # Each variant's canvas is copied from work.base once; later windows of that variant paint into it.
        in_place = not (shared and len(images) > 1) and canvases[0] is not work.base
        if shared:
            canvases = [canvases[0]] * len(images)
        return [composite_pass(work, p, canvas, image, in_place)
                for canvas, image in zip(canvases, images)], ran


def _image_encoder(request: GenerationRequest) -> str:
    """The request's CLIP vision encoder, else the image_encoder folder beside the IP-Adapter's (h94 layout)."""
    if request.image_encoder.strip() or not request.ip_adapter.strip():
        return request.image_encoder.strip()
    from pathlib import Path

    adapter = Path(request.ip_adapter).expanduser()
    beside, shared = adapter.parent / "image_encoder", adapter.parent.parent / "models" / "image_encoder"
    # h94's SDXL "vit-h" adapters use the SD 1.5 encoder (models/), the others their own (sdxl_models/).
    for folder in ((shared, beside) if "vit-h" in adapter.name.lower() else (beside, shared)):
        if folder.is_dir():
            return str(folder)
    return str(adapter.parent / "image_encoder")


def _active_controls(request: GenerationRequest, work: JobPlan, p: Pass, nets, device: str,
                     canvas: np.ndarray) -> list[ActiveControl]:
    """The request's ControlNets for pass `p`, each with its control image made for the pass (from `canvas`
    where made from the image), on the device once."""
    import torch

    active = []
    for control, net, image in zip(request.controls, nets, pass_control_images(request, work, p, device, canvas)):
        values = image.astype(np.float32) / 255 if image.dtype == np.uint8 else image.astype(np.float32)
        tensor = torch.from_numpy(np.ascontiguousarray(values.transpose(2, 0, 1)))[None].to(device, net.dtype)
        active.append(ActiveControl(net, tensor, control.weight, control.start, control.end, control.guess_mode,
                                    union_mode=union_mode_for(net, control.kind)))
    return active


def _batch_limit(model) -> int:
    """Variants denoised together: up to 4 on the CPU, by free memory on a GPU."""
    if model.plan.device == "cpu":
        return 4
    if model.plan.device == "cuda":
        import torch

        free = torch.cuda.mem_get_info()[0]
        need = (3 if model.is_xl else 1) * 1024 ** 3
        return max(1, min(4, int(free // need) - 2))
    return 1


def _after_out_of_memory(exc: BaseException, model, batch: int, size: tuple[int, int]) -> int:
    """Re-raise anything but out-of-memory; otherwise free memory and return a smaller batch to retry with,
    or switch on the memory savers, or give up with one clear line."""
    from app.engine.diffusion.devices import free_device_memory, is_out_of_memory

    if not is_out_of_memory(exc):
        raise exc
    free_device_memory(model.plan.device)
    if batch > 1:
        log.warning("out of memory with %d variants at once; retrying one at a time", batch)
        return 1
    if not model.extra.get("memory_savers"):
        log.warning("out of memory; retrying with attention slicing and VAE tiling")
        # With reference images in, the UNet's processors are the IP-Adapter's: ip_adapter slices it after the job.
        with_references = model.unet.encoder_hid_proj is not None
        for module in ([] if with_references else [model.unet]) + list(model.extra.get("controlnets", {}).values()):
            module.set_attention_slice("auto")
        model.extra["sliced"] = not with_references
        model.vae.enable_tiling()
        model.extra["memory_savers"] = True
        return 1
    raise EngineError(f"out of {'GPU ' if model.plan.device != 'cpu' else ''}memory at {size[0]}x{size[1]}, "
                      "even with attention slicing and VAE tiling: close other GPU programs, use a smaller "
                      "mask or --device cpu") from None
