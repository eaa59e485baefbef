"""What ShapesEval's sections share: batching, percentages, how many items a kind of scene holds,
and the model's greedy replies to conversations."""

from __future__ import annotations

import numpy as np

from smalto.errors import ContextLengthError
from smalto.pipeline import Message, Pipeline

BATCH = 32


def batches(items: list, size: int = BATCH):
    for i in range(0, len(items), size):
        yield items[i:i + size]


def pct(values: list[bool]) -> float:
    return round(100.0 * float(np.mean(values)), 1) if values else float("nan")


def at_most(world, n: int) -> int:
    """n, or fewer when the world is a `Scenes` kind that holds fewer."""
    return min(n, len(world)) if hasattr(world, "__len__") else n


def chat_replies(pipe: Pipeline, conversations: list[list[Message]]) -> list[str]:
    """The greedy next reply to each conversation, decoded in batches ("" for one whose own earlier
    replies left no room in the context: a wrong answer, not an error)."""
    def prompt(messages: list[Message]) -> list[int] | None:
        try:
            ids = pipe.chat_prompt(messages)
        except ContextLengthError:
            return None
        return ids if pipe.reply_budget(len(ids)) >= 8 else None

    out = []
    for chunk in batches(conversations):
        prompts = [prompt(m) for m in chunk]
        fit = [p for p in prompts if p is not None]
        replies = iter(pipe.chat_replies(fit) if fit else [])
        out += ["" if p is None else next(replies) for p in prompts]
    return out
