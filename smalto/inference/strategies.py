"""Decoding strategies: how a step's processed logits become tokens, and `Sampling`, the settings
that choose processors and strategy (what the pipeline, the server and the CLI pass around).

Greedy and sampling pick one token per row; beam search keeps several continuations of one
prompt and lives in the engine (`Engine.beam_search`), which it drives step by step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from smalto import options
from smalto.inference.processors import Processor, Temperature, TopK, TopP


class Strategy(Protocol):
    def __call__(self, logits: Tensor) -> Tensor: ...  # [B, V] with illegal ids at -inf -> ids [B]


def greedy(logits: Tensor) -> Tensor:
    return logits.argmax(-1)


class Sample:
    def __init__(self, generator: torch.Generator | None = None):
        self.generator = generator

    def __call__(self, logits: Tensor) -> Tensor:
        return torch.multinomial(logits.softmax(-1), 1, generator=self.generator).squeeze(-1)


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.0  # 0 means greedy
    top_k: int = 0  # 0 means no limit
    top_p: float = 1.0
    seed: int | None = None
    # Classifier-free guidance scale for drawing (None: the conditional stream alone, as 1.0).
    guidance: float | None = None

    def __post_init__(self) -> None:
        for name in ("temperature", "top_k", "top_p", "seed", "guidance"):
            options.check(name, getattr(self, name))

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0

    def processors(self) -> list[Processor]:
        if self.greedy:
            return []
        return [Temperature(self.temperature), *([TopK(self.top_k)] if self.top_k > 0 else []),
                *([TopP(self.top_p)] if self.top_p < 1.0 else [])]

    def strategy(self, device: torch.device | str = "cpu") -> Strategy:
        if self.greedy:
            return greedy
        generator = None if self.seed is None else torch.Generator(device=device).manual_seed(self.seed)
        return Sample(generator)
