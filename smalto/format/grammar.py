"""Positions and legal next tokens: what the format says about a sequence, token by token.

Positions are three numbers per token, (time, row, column), for rotary embeddings. A text token
(special tokens included) sits at (p, p, p); an item's tokens are numbered from s, the position
after its opening token; after an item, text continues from its largest position + 1 (Qwen2-VL's
rule). How an item's tokens are numbered is the vocabulary's `position_rule`:

- "index" (1-D rotary models): the k-th token after the opening one is at (s + k, s + r, s + c),
  (r, c) being a code's cell. Row 0 is then the running index everywhere, which is what a 1-D
  rotary model reads (rows 1 and 2 are informative only).
- "grid" (3-axis rotary models, M-RoPE): a code of latent frame f at cell (r, c) is at
  (s + f, s + r, s + c), so an image's 64 codes share one time and span 8 rows and 8 columns,
  and a clip's frames follow each other in time; a frame separator <eof> sits just past its
  frame's grid, at (s + f, s + rows, s + cols). The <eov> closing a clip of 3 latent frames of
  8x8 sits at s + 9, not s + 194: positions grow with the extent of an item, not its size.

A layout's words (`Modality.blocks`) are text tokens inside the item: legal there are the ids its
lexicon gives that word (a cell's number: one id), or any ordinary text id; under "index" they
count like codes, under "grid" each sits at its block's first code.

Both rules are one table (`Phases`): per phase of the format, where its token goes relative to
the row's base position, and how far the base moves once it is emitted.

`FormatState` follows a batch of rows as they are decoded: it says which ids each row may emit
next (`mask`), at which position the next token goes (`positions`), and when a row is finished.
The engine reads it and never re-derives the format.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from smalto.format.vocab import WORD, Modality, Vocab


@dataclass(frozen=True)
class Phases:
    """The format as a state machine. Phase 0 is outside items; each item has a phase per token
    of its body (a code of a frame, or a separator) and one for its closing token."""
    step: tuple[int, ...]  # the phase after this phase's token (phase 0: `opens` decides)
    offset: tuple[tuple[int, int, int], ...]  # where this phase's token goes, from the row's base
    bump: tuple[int, ...]  # how far the base moves once this phase's token is emitted
    # ("range", name), ("span", (start, stop)) (a residual level's part of a range), ("token", id),
    # ("words", 0) (any text) or ("ids", ids); phase 0's is `Allowed`'s
    legal: tuple[tuple[str, int | str | tuple[int, ...]], ...]
    closes: tuple[bool, ...]
    opens: dict[int, int]  # an item's opening id -> the phase of its first body token
    # A delayed sound's step: (modality, the levels its token carries beside itself); () elsewhere
    carries: tuple[tuple[str, tuple[int, ...]] | tuple[()], ...] = ()


def _body_offsets(m: Modality, body: list, rule: str) -> list[tuple[int, int, int]]:
    rows, cols = (m.grid[-2], m.grid[-1]) if len(m.grid) > 1 else (1, m.grid[0])
    out, frame = [], 0
    for k, where in enumerate(body):
        if where == WORD:  # a layout's word: at its block's first code (the place it names)
            block = next(w for w in body[k:] if isinstance(w, tuple))
            out.append((k, k, k) if rule == "index" else block)
        elif where is not None:
            frame = where[0]
            out.append((k, where[1], where[2]) if rule == "index" else where)
        else:  # a separator, after frame `frame`
            out.append((k, k, k) if rule == "index" else (frame, rows, cols))
    return out


def phases(v: Vocab) -> Phases:
    """The table for a vocabulary (made once and kept on it)."""
    if (cached := v.__dict__.get("_phases")) is not None:
        return cached
    step, offset, bump, legal, closes, opens = [-1], [(0, 0, 0)], [1], [("outside", 0)], [False], {}
    carries: list = [()]
    for name, m in v.modalities.items():
        first = len(step)
        opens[v.specials[m.open]] = first
        cells = m.body()
        body = _body_offsets(m, cells, v.position_rule)
        lexicon = iter(w for block in m.lexicon for w in block)  # (each word's ids, in body order)
        steps = m.steps() if m.stepped else [()] * len(cells)
        for k, (where, at, held) in enumerate(zip(cells, body, steps)):
            step.append(first + k + 1), offset.append(at), bump.append(0), closes.append(False)
            carries.append((name, tuple(level for _, level in held[1:])) if held else ())
            if where == WORD:
                legal.append(("ids", next(lexicon)) if m.lexicon else ("words", 0))
            elif where is None:
                legal.append(("token", v.specials[m.sep]))
            else:  # (a residual level's codes come from its part of the range)
                legal.append(("span", v.level_span(name, where[2])) if m.levels else ("range", m.range))
        extent = 1 + max(max(at) for at in body)
        step.append(0), offset.append((extent,) * 3), bump.append(extent + 1), closes.append(True)
        legal.append(("token", v.specials[m.close]))
        carries.append(())
    table = Phases(tuple(step), tuple(offset), tuple(bump), tuple(legal), tuple(closes), opens, tuple(carries))
    v.__dict__["_phases"] = table  # Vocab is frozen; the table is derived from it and never changes
    return table


def walk(v: Vocab, ids: list[int]) -> tuple[list[tuple[int, int, int]], int, int]:
    """Each token's position, and the (phase, base) after the last one."""
    table, out, phase, base = phases(v), [], 0, 0
    for token in ids:
        at = table.offset[phase]
        out.append((base + at[0], base + at[1], base + at[2]))
        base += table.bump[phase]
        phase = table.step[phase] if phase else table.opens.get(token, 0)
    return out, phase, base


def positions(v: Vocab, ids: list[int]) -> Tensor:
    """int64 [3, len(ids)]: the (time, row, column) position of each token."""
    return torch.tensor(walk(v, ids)[0], dtype=torch.long).T.reshape(3, len(ids))


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

    Each row is in one of a few phases (`Phases`: 0 outside items, or an item's next token) and
    has a base position. Every per-phase fact (the legal ids, the next phase, where the token goes
    from the base) is a table made once, so a decoding step costs a handful of lookups whatever
    the batch.

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
        table = phases(v)
        masks = [outside] + [v.mask(what) if kind == "range" else v.span_mask(*what) if kind == "span" else
                             v.text_mask() if kind == "words" else v.one(*what) if kind == "ids" else v.one(what)
                             for kind, what in table.legal[1:]]
        self.masks = torch.stack(masks).to(device)
        # What each phase's token carries beside itself (a delayed sound's finer levels): per
        # phase, per slot, the ids that level may be (none: the slot stays empty, -1).
        self.width = v.width
        if self.width:
            extra = torch.zeros(len(table.step), self.width, v.size, dtype=torch.bool)
            for phase, held in enumerate(table.carries):
                if held:
                    levels = v.level_masks(held[0])
                    extra[phase, list(held[1])] = levels[list(held[1])]
            self.extra_masks = extra.to(device)
        self.step = torch.tensor(table.step, device=device)
        self.offset = torch.tensor(table.offset, device=device)
        self.bump = torch.tensor(table.bump, device=device)
        self.closes = torch.tensor(table.closes, device=device)
        self.open_phase = torch.zeros(v.size, dtype=torch.long, device=device)
        for token, phase in table.opens.items():
            self.open_phase[token] = phase
        ends = [walk(v, p)[1:] for p in prompts]
        self.phase = torch.tensor([phase for phase, _ in ends], dtype=torch.long, device=device)
        self.base = torch.tensor([base for _, base in ends], dtype=torch.long, device=device)
        self.finished = torch.zeros(len(prompts), dtype=torch.bool, device=device)
        self.budget = allowed.thinking
        self._mask: Tensor | None = None
        if self.budget:
            self.thought = torch.full((len(prompts),), -1, device=device)  # tokens thought; -1 not yet, -2 done
            self.closing, self.no_end = v.one(v.end_think).to(device), ~v.one(v.eos).to(device)
            self.masks[0] |= v.one(v.think, v.end_think).to(device)

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

    def extra_mask(self) -> Tensor | None:
        """bool [B, width, V]: the ids each row's next token may carry in each slot (all False: it
        carries nothing there); None for a vocabulary whose tokens carry nothing."""
        return self.extra_masks[self.phase] if self.width else None

    def positions(self) -> Tensor:
        """int64 [B, 3]: where each row's next token goes."""
        return self.base[:, None] + self.offset[self.phase]

    def reorder(self, rows: Tensor) -> None:
        """Keep (and duplicate) rows, e.g. when beams are re-ranked."""
        self.phase, self.base, self.finished = self.phase[rows], self.base[rows], self.finished[rows]
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
        self.base = self.base + self.bump[self.phase]
        self.phase = torch.where(outside, self.open_phase[tokens], self.step[self.phase])
