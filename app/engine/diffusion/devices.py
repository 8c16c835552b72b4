"""Where and how a model runs: device, precision and the memory savers, chosen from what the machine has.

CUDA runs the UNet and text encoders in fp16 (bf16 when asked). A VAE whose config says fp16 overflows
(SDXL's force_upcast) runs in bf16 where the GPU computes it natively (Ampere and later; bf16 has fp32's
range, and ComfyUI runs its VAEs so), else in fp32; MPS runs fp16 with attention slicing; the CPU runs fp32.
Attention slicing, VAE tiling and model CPU offload switch on by free memory and can be forced.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from app.engine.events import EngineError

GIB = 1024 ** 3
SLICE_BELOW = 6 * GIB        # free VRAM below which attention is sliced and the VAE tiled
OFFLOAD_BELOW = 4 * GIB      # ... and below which idle components wait in system memory


@dataclass(frozen=True)
class DevicePlan:
    device: str               # torch device string: "cpu", "cuda", "mps"
    dtype_name: str           # "float32", "float16" or "bfloat16"
    attention_slicing: bool = False
    vae_tiling: bool = False
    offload: bool = False
    native_bf16: bool = False     # the device computes bf16 at full speed (NVIDIA compute capability >= 8)

    @property
    def dtype(self):
        import torch

        return getattr(torch, self.dtype_name)

    @property
    def half(self) -> bool:
        return self.dtype_name != "float32"

    def vae_dtype_name(self, force_upcast: bool) -> str:
        """The VAE's precision: the plan's own, unless that is half and the VAE's config says fp16 overflows
        (then bf16 where the GPU computes it natively, else fp32)."""
        if self.dtype_name == "float32" or not force_upcast:
            return self.dtype_name
        return "bfloat16" if self.native_bf16 else "float32"

    def describe(self) -> str:
        savers = [name for name, on in (("attention slicing", self.attention_slicing),
                                         ("VAE tiling", self.vae_tiling), ("CPU offload", self.offload)) if on]
        return f"{self.device} {self.dtype_name}" + (f" ({', '.join(savers)})" if savers else "")


def plan_device(requested: str = "auto", precision: str = "auto", memory_saving: str = "auto") -> DevicePlan:
    """The plan for `requested` ("auto", "cpu", "cuda", "mps"); EngineError if that device is not here."""
    import torch

    device = requested
    if requested == "auto":
        device = "cuda" if torch.cuda.is_available() else ("mps" if _mps_available() else "cpu")
    elif requested == "cuda" and not torch.cuda.is_available():
        build = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
        raise EngineError(f"device cuda was requested but {build}; use --device cpu or install a CUDA torch")
    elif requested == "mps" and not _mps_available():
        raise EngineError("device mps was requested but Apple's Metal backend is not available here")
    elif requested not in ("cpu", "cuda", "mps"):
        raise EngineError(f"unknown device '{requested}'; choose auto, cpu, cuda or mps")

    if device == "cpu":
        plan = DevicePlan("cpu", "float32")
    elif device == "mps":
        plan = DevicePlan("mps", "float16", attention_slicing=True)
    else:
        free = torch.cuda.mem_get_info()[0]
        plan = DevicePlan("cuda", "float16", attention_slicing=free < SLICE_BELOW,
                          vae_tiling=free < SLICE_BELOW, offload=free < OFFLOAD_BELOW,
                          # ROCm reports its own architecture numbers here: it keeps the fp32 VAE
                          native_bf16=torch.version.hip is None and torch.cuda.get_device_capability()[0] >= 8)
    if precision == "float32" or (precision == "auto" and plan.device == "cpu"):
        plan = replace(plan, dtype_name="float32")
    elif precision in ("float16", "bfloat16"):
        if plan.device == "cpu" and precision == "float16":
            raise EngineError("float16 is not supported on the CPU; use float32 or bfloat16")
        plan = replace(plan, dtype_name=precision)
    if memory_saving == "on":
        plan = replace(plan, attention_slicing=True, vae_tiling=True, offload=plan.device != "cpu")
    elif memory_saving == "off":
        plan = replace(plan, attention_slicing=False, vae_tiling=False, offload=False)
    return plan


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def is_out_of_memory(exc: BaseException) -> bool:
    """True for the out-of-memory errors of every torch backend."""
    import torch

    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in text.lower()
                                              or "MPS backend out of memory" in text)


def free_device_memory(device: str) -> None:
    import gc

    import torch

    gc.collect()
    if device == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif device == "mps" and _mps_available():
        torch.mps.empty_cache()
