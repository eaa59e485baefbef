"""Which float type runs fastest here without hurting results.

bfloat16 halves the bytes every matmul reads, and where the hardware multiplies it natively
(CUDA, or CPUs with AVX512-BF16 / AMX) it runs matmuls several times faster than float32
(on this project's 2-core Zen 4: 786 against 168 GFLOP/s). Without native support it is
emulated and slower, so "auto" falls back to float32. ShapesEval is unchanged within noise
between the two (docs/benchmarks.md).
"""

from __future__ import annotations

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def native_bf16(device: torch.device | str = "cpu") -> bool:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    try:  # private helpers, present since torch 2.1; without them, assume no
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    except AttributeError:
        return False


def resolve(dtype: str | torch.dtype, device: torch.device | str = "cpu") -> torch.dtype:
    """"auto" -> bfloat16 where it is native, else float32; "fp32" / "bf16" / a torch dtype as given."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return torch.bfloat16 if native_bf16(device) else torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be auto, fp32 or bf16, got {dtype!r}")
    return DTYPES[dtype]
