"""Device plans: which precision each part runs in, and the errors for devices that are not here."""
import pytest
import torch

from app.engine.diffusion.devices import DevicePlan, is_out_of_memory, plan_device
from app.engine.events import EngineError


@pytest.mark.parametrize("dtype, native_bf16, force_upcast, expected", [
    ("float32", False, True, "float32"),      # the CPU: everything in fp32
    ("float16", False, False, "float16"),     # SD 1.5's VAE is fine in fp16
    ("float16", True, False, "float16"),
    ("float16", True, True, "bfloat16"),      # SDXL's VAE overflows fp16: bf16 on Ampere and later ...
    ("float16", False, True, "float32"),      # ... fp32 on older GPUs
    ("bfloat16", True, True, "bfloat16"),     # bf16 asked for, on a GPU that has it
    ("bfloat16", False, True, "float32"),     # ... emulated (the CPU, older GPUs): the VAE keeps fp32
])
def test_vae_precision(dtype, native_bf16, force_upcast, expected):
    plan = DevicePlan("cuda", dtype, native_bf16=native_bf16)
    assert plan.vae_dtype_name(force_upcast) == expected


def test_cpu_plan_is_fp32_and_refuses_fp16():
    plan = plan_device("cpu")
    assert (plan.device, plan.dtype_name, plan.half) == ("cpu", "float32", False)
    assert plan_device("cpu", precision="bfloat16").dtype == torch.bfloat16
    with pytest.raises(EngineError, match="float16 is not supported on the CPU"):
        plan_device("cpu", precision="float16")


def test_unknown_or_missing_devices_are_one_line_errors():
    with pytest.raises(EngineError, match="unknown device 'tpu'"):
        plan_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(EngineError, match="device cuda was requested"):
            plan_device("cuda")


def test_memory_saving_switches():
    assert plan_device("cpu", memory_saving="on").describe() == "cpu float32 (attention slicing, VAE tiling)"
    assert plan_device("cpu", memory_saving="off").describe() == "cpu float32"


@pytest.mark.parametrize("exc, expected", [
    (MemoryError(), True),
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
    (RuntimeError("MPS backend out of memory (MPS allocated: 9 GB)"), True),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: not enough memory: out of memory"),
     True),
    (RuntimeError("mat1 and mat2 shapes cannot be multiplied"), False),
    (ValueError("out of memory"), False),
])
def test_out_of_memory_is_recognised(exc, expected):
    assert is_out_of_memory(exc) is expected
