"""Logits processors: each takes the step's logits [B, V] and returns them changed.

The engine applies a list of them in order, then a strategy picks the tokens. Illegal or cut
tokens are set to -inf rather than removed, so every processor sees the full vocabulary.
A new decoding control (a repetition penalty, a banned word list) is one more class here.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from smalto.format import FormatState

NEG_INF = float("-inf")


class Processor(Protocol):
    def __call__(self, logits: Tensor) -> Tensor: ...


class Guidance:
    """Classifier-free guidance: the batch holds n conditional rows, then their n unconditional
    twins; returns the n mixed rows u + scale * (c - u)."""

    def __init__(self, scale: float):
        self.scale = scale

    def __call__(self, logits: Tensor) -> Tensor:
        cond, uncond = logits.chunk(2)
        return uncond + self.scale * (cond - uncond)


class FormatMask:
    """Only the ids the format allows next (see `format.FormatState`)."""

    def __init__(self, state: FormatState):
        self.state = state

    def __call__(self, logits: Tensor) -> Tensor:
        return logits.masked_fill(~self.state.mask()[:len(logits)], NEG_INF)


class Temperature:
    def __init__(self, temperature: float):
        # Below 1e-5 sampling is greedy in float32 anyway, and a smaller divisor would round to 0 (NaN).
        self.temperature = max(temperature, 1e-5)

    def __call__(self, logits: Tensor) -> Tensor:
        return logits / self.temperature


class TopK:
    def __init__(self, k: int):
        self.k = k

    def __call__(self, logits: Tensor) -> Tensor:
        kth = logits.topk(min(self.k, logits.shape[-1]), dim=-1).values[:, -1:]
        return logits.masked_fill(logits < kth, NEG_INF)


class TopP:
    """Nucleus sampling: the most likely tokens whose probabilities reach p."""

    def __init__(self, p: float):
        self.p = p

    def __call__(self, logits: Tensor) -> Tensor:
        # (stable: among tied tokens the first stays, as argmax keeps it, so top_p=0 is greedy)
        sorted_logits, order = logits.sort(dim=-1, descending=True, stable=True)
        probs = sorted_logits.softmax(-1)
        # Drop a token when the ones before it already reach p; the most likely always stays.
        drop = probs.cumsum(-1) - probs >= self.p
        drop[:, 0] = False
        return logits.masked_fill(drop.scatter(1, order, drop), NEG_INF)


class ForcedTokens:
    """Rows whose next tokens are fixed: row r emits forced[r][0], forced[r][1], ... first, whatever
    the model prefers (a forced answer prefix, an opening <think>, a drawing's words between codes
    it chooses: None leaves a step free). Called once per step."""

    def __init__(self, forced: list[list[int | None]]):
        self.forced = forced
        self.step = 0

    def __call__(self, logits: Tensor) -> Tensor:
        rows = [(r, f[self.step]) for r, f in enumerate(self.forced) if self.step < len(f) and f[self.step] is not None]
        self.step += 1
        if not rows:
            return logits
        index = torch.tensor(rows, device=logits.device)
        logits = logits.clone()
        logits[index[:, 0]] = NEG_INF
        logits[index[:, 0], index[:, 1]] = 0.0
        return logits
