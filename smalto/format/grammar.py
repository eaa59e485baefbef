"""Positions and legal next tokens: what the format says about a sequence, token by token.

Positions are three numbers per token, (time, row, column), for multi-axis rotary embeddings:

- a text token (special tokens included) at running index i is at (i, i, i);
- the k-th code of an image whose first code is at running index s is at (s + k, s + r, s + c),
  (r, c) being the code's cell in the grid;
- after an item, text continues from the largest position so far + 1 (Qwen2-VL's rule).

Row 0 is then the running index everywhere, which is what a 1-D rotary model reads.

`FormatState` follows a batch of rows as they are decoded: it says which ids each row may emit
next (`mask`), at which position the next token goes (`positions`), and when a row is finished.
The engine reads it and never re-derives the format.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from smalto.format.vocab import Modality, Vocab


def _code_position(m: Modality, start: int, k: int) -> tuple[int, int, int]:
    r, c = divmod(k, m.grid[-1])
    return start + k, start + r, start + c


def positions(v: Vocab, ids: list[int]) -> Tensor:
    """int64 [3, len(ids)]: the (time, row, column) position of each token."""
    opens = {v.specials[m.open]: m for m in v.modalities.values()}
    out, next_pos = [], 0
    item, start, k = None, 0, 0
    for token in ids:
        if item is not None and k < item.tokens:
            out.append(_code_position(item, start, k))
            k += 1
        else:
            item = None
            out.append((next_pos,) * 3)
            if token in opens:
                item, start, k = opens[token], next_pos + 1, 0
        next_pos = max(out[-1]) + 1
    return torch.tensor(out, dtype=torch.long).T.reshape(3, len(ids))


@dataclass(frozen=True)
class Allowed:
    """What decoded rows may emit outside an item: text and <eos> (`text`; with text=False only
    <eos>: the row is drawing), which items they may open (`items`, e.g. ("image",)), and how
    long they may think (`thinking`: a budget of tokens between <think> and </think>, 0 for none)."""
    text: bool = True
    items: tuple[str, ...] = ()
    eos: bool = True  # False: text never ends (benchmarks that need a fixed length)
    thinking: int = 0

    def __post_init__(self) -> None:
        if not self.text and not self.eos:
            raise ValueError("a drawing ends when its item closes: eos=False is for text")
        if self.thinking < 0 or (self.thinking and not self.text):
            raise ValueError("a thinking budget is a number of tokens >= 0, for text rows")


DRAWING = Allowed(text=False)


class FormatState:
    """Legal next tokens and next positions for a batch of rows being decoded.

    Outside an item a row may emit what `allowed` says; inside one, exactly its number of codes
    from its range, then its closing token. A drawing row's prompt ends inside an item (after
    <boi>), and the row is finished when that item closes; a text row when it emits <eos>.

    Each row is in one of a few phases: 0 outside items, or (item, codes written so far). Every
    per-phase fact (the legal ids, the next phase, the next token's offset in the grid) is a
    table made once, so a decoding step costs a handful of lookups whatever the batch.

    Thinking (with a budget): a row may open <think> once; inside, it may not end, and after
    `budget` thinking tokens only </think> is legal, so a trace never exceeds its budget (as
    s1's and Qwen3's budget forcing).
    """

    def __init__(self, v: Vocab, prompts: list[list[int]], allowed: Allowed = Allowed(),
                 device: torch.device | str = "cpu"):
        self.v, self.text = v, allowed.text
        outside = v.text_mask() | v.one(v.eos) if allowed.eos else v.text_mask()
        if not allowed.text:
            outside = v.one(v.eos)
        for name in allowed.items:
            outside |= v.one(v.specials[v.modalities[name].open])
        masks, step, offset, closes = [outside], [-1], [(0, 0, 0)], [False]
        self._opens: dict[int, int] = {}  # an item's opening id -> the phase of its first code
        for m in v.modalities.values():
            first = len(masks)
            self._opens[v.specials[m.open]] = first
            for k in range(m.tokens):  # expecting code k, at (s + k, s + r, s + c) with s + k the running index
                r, c = divmod(k, m.grid[-1])
                masks.append(v.mask(m.range)), step.append(first + k + 1), offset.append((0, r - k, c - k))
                closes.append(False)
            masks.append(v.one(v.specials[m.close])), step.append(0), offset.append((0, 0, 0)), closes.append(True)
        self.masks = torch.stack(masks).to(device)
        self.step = torch.tensor(step, device=device)
        self.offset = torch.tensor(offset, device=device)
        self.closes = torch.tensor(closes, device=device)
        self.open_phase = torch.zeros(v.size, dtype=torch.long, device=device)
        for token, phase in self._opens.items():
            self.open_phase[token] = phase
        self.phase = torch.tensor([self._scan(p, step) for p in prompts], dtype=torch.long, device=device)
        # Row 0 of a position is the running index (see `positions`): the next one is the length.
        self.index = torch.tensor([len(p) for p in prompts], dtype=torch.long, device=device)
        self.finished = torch.zeros(len(prompts), dtype=torch.bool, device=device)
        self.budget = allowed.thinking
        self._mask: Tensor | None = None
        if self.budget:
            self.thought = torch.full((len(prompts),), -1, device=device)  # tokens thought; -1 not yet, -2 done
            self.closing, self.no_end = v.one(v.end_think).to(device), ~v.one(v.eos).to(device)
            self.masks[0] |= v.one(v.think, v.end_think).to(device)

    def _scan(self, prompt: list[int], step: list[int]) -> int:
        """The phase at the end of a prompt."""
        phase = 0
        for token in prompt:
            phase = step[phase] if phase else self._opens.get(token, 0)
        return phase

    def mask(self) -> Tensor:
        """bool [B, V]: which ids each row may emit next (made once per step)."""
        if self._mask is not None:
            return self._mask
        mask = self.masks[self.phase]
        if self.budget:
            v, thinking = self.v, self.thought >= 0
            mask[:, v.think] &= self.thought == -1
            mask[:, v.end_think] &= thinking
            mask &= torch.where(thinking[:, None], self.no_end, True)
            mask = torch.where((self.thought >= self.budget)[:, None], self.closing, mask)
        self._mask = mask
        return mask

    def positions(self) -> Tensor:
        """int64 [B, 3]: where each row's next token goes."""
        return self.index[:, None] + self.offset[self.phase]

    def reorder(self, rows: Tensor) -> None:
        """Keep (and duplicate) rows, e.g. when beams are re-ranked."""
        self.phase, self.index, self.finished = self.phase[rows], self.index[rows], self.finished[rows]
        self._mask = None
        if self.budget:
            self.thought = self.thought[rows]

    def advance(self, tokens: Tensor) -> None:
        """Record each row's emitted token [B]."""
        self._mask = None
        outside = self.phase == 0
        if self.budget:
            opened, closed = (tokens == self.v.think) & outside, (tokens == self.v.end_think) & outside
            self.thought = torch.where(opened, 0, torch.where(closed, -2, self.thought + (self.thought >= 0)))
        self.finished |= (tokens == self.v.eos) & outside
        if not self.text:
            self.finished |= self.closes[self.phase]
        self.phase = torch.where(outside, self.open_phase[tokens], self.step[self.phase])
        self.index = self.index + 1
