"""Why CPU attention runs in float32: scaled_dot_product_attention, forward and backward, at
shapes-tiny's training shapes, in bf16 against float32 (the model casts q, k, v up on a CPU).

    python bench/attention_cpu.py            # ms per call, the best of 10
"""

import time

import torch
import torch.nn.functional as F

BATCH, HEADS, KV_HEADS, LENGTH, HEAD_DIM = 32, 8, 4, 100, 32  # shapes-tiny, a typical batch


def best_ms(dtype: torch.dtype, backward: bool, repeats: int = 10) -> float:
    torch.manual_seed(0)
    q = torch.randn(BATCH, HEADS, LENGTH, HEAD_DIM, dtype=dtype, requires_grad=backward)
    k, v = (torch.randn(BATCH, KV_HEADS, LENGTH, HEAD_DIM, dtype=dtype, requires_grad=backward) for _ in range(2))
    times = []
    for _ in range(repeats + 2):
        start = time.perf_counter()
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        if backward:
            out.float().sum().backward()
        times.append(time.perf_counter() - start)
    return 1000 * min(times[2:])


if __name__ == "__main__":
    for dtype in (torch.bfloat16, torch.float32):
        print(f"{str(dtype).removeprefix('torch.'):9} forward {best_ms(dtype, False):5.1f} ms, "
              f"forward + backward {best_ms(dtype, True):5.1f} ms")
