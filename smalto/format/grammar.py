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
    <eos>: the row is drawing), and which items they may open (`items`, e.g. ("image",))."""
    text: bool = True
    items: tuple[str, ...] = ()
    eos: bool = True  # False: text never ends (benchmarks that need a fixed length)

    def __post_init__(self) -> None:
        if not self.text and not self.eos:
            raise ValueError("a drawing ends when its item closes: eos=False is for text")


DRAWING = Allowed(text=False)


class FormatState:
    """Legal next tokens and next positions for a batch of rows being decoded.

    Outside an item a row may emit what `allowed` says; inside one, exactly its number of codes
    from its range, then its closing token. A drawing row's prompt ends inside an item (after
    <boi>), and the row is finished when that item closes; a text row when it emits <eos>.
    """

    def __init__(self, v: Vocab, prompts: list[list[int]], allowed: Allowed = Allowed(),
                 device: torch.device | str = "cpu"):
        self.v = v
        self.modalities = list(v.modalities.values())
        self.text = allowed.text
        outside = v.text_mask() | v.one(v.eos) if allowed.eos else v.text_mask()
        if not allowed.text:
            outside = v.one(v.eos)
        for name in allowed.items:
            outside |= v.one(v.specials[v.modalities[name].open])
        # Rows of this table, picked per batch row: 0 outside items, then (codes, close) per modality.
        table = [outside]
        for m in self.modalities:
            table += [v.mask(m.range), v.one(v.specials[m.close])]
        self.table = torch.stack(table).to(device)
        self.opens = torch.tensor([v.specials[m.open] for m in self.modalities], dtype=torch.long, device=device)
        self.sizes = torch.tensor([m.tokens for m in self.modalities], dtype=torch.long, device=device)
        self.cols = torch.tensor([m.grid[-1] for m in self.modalities], dtype=torch.long, device=device)
        # Per row: the item being written (-1: none), codes written so far, running index of its
        # first code, and the running index of the next token.
        item, count, start, index = [], [], [], []
        for p in prompts:
            pos = positions(v, p)
            i, k, s = self._scan(p)
            item.append(i), count.append(k), start.append(s), index.append(int(pos.max()) + 1 if p else 0)
        as_tensor = lambda xs: torch.tensor(xs, dtype=torch.long, device=device)  # noqa: E731
        self.item, self.count, self.start, self.index = map(as_tensor, (item, count, start, index))
        self.finished = torch.zeros(len(prompts), dtype=torch.bool, device=device)

    def _scan(self, prompt: list[int]) -> tuple[int, int, int]:
        """(item, codes written, start) at the end of a prompt."""
        opens = {self.v.specials[m.open]: j for j, m in enumerate(self.modalities)}
        item, count, start = -1, 0, 0
        for i, token in enumerate(prompt):
            if item >= 0 and count < self.modalities[item].tokens:
                count += 1
            elif token in opens:
                item, count, start = opens[token], 0, i + 1
            else:
                item = -1
        return item, count, start

    def mask(self) -> Tensor:
        """bool [B, V]: which ids each row may emit next."""
        inside = self.item >= 0
        sizes = self.sizes[self.item.clamp_min(0)]
        state = torch.where(inside, 1 + 2 * self.item + (self.count >= sizes).long(), 0)
        return self.table[state]

    def positions(self) -> Tensor:
        """int64 [B, 3]: where each row's next token goes."""
        inside = (self.item >= 0) & (self.count < self.sizes[self.item.clamp_min(0)])
        r, c = self.count.div(self.cols[self.item.clamp_min(0)], rounding_mode="floor"), \
            self.count % self.cols[self.item.clamp_min(0)]
        code = torch.stack([self.index, self.start + r, self.start + c], -1)
        return torch.where(inside[:, None], code, self.index[:, None].expand(-1, 3))

    def reorder(self, rows: Tensor) -> None:
        """Keep (and duplicate) rows, e.g. when beams are re-ranked."""
        for name in ("item", "count", "start", "index", "finished"):
            setattr(self, name, getattr(self, name)[rows])

    def advance(self, tokens: Tensor) -> None:
        """Record each row's emitted token [B]."""
        inside = (self.item >= 0) & (self.count < self.sizes[self.item.clamp_min(0)])
        closing = (self.item >= 0) & ~inside
        opened = (tokens[:, None] == self.opens).long()
        if not self.text:
            self.finished |= closing
        self.finished |= (tokens == self.v.eos) & ~inside
        new_item = torch.where(opened.any(-1), opened.argmax(-1), -1)
        self.item = torch.where(inside, self.item, new_item)
        self.count = torch.where(inside, self.count + 1, 0)
        self.start = torch.where(opened.any(-1) & ~inside, self.index + 1, self.start)
        self.index = self.index + 1
