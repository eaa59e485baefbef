"""Learning-rate schedule shared by every training loop: linear warm-up, then cosine decay."""

import math


def cosine_lr(step: int, total: int, peak: float, warmup: int = 100, floor: float = 0.1) -> float:
    """LR at `step` (0-based): rises linearly for `warmup` steps, then falls to floor * peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))
