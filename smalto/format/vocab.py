"""The unified vocabulary: named ranges of ids, one for text and one per code vocabulary.

    text   [0, T)       the BPE's ids, its special tokens first
    image  [T, T + K)   the image tokenizer's K codes

A new code vocabulary (audio, say) appends a range; video shares the image range by design (a
clip is frames of image codes). A `Modality` says how one kind of item is written into the
stream: which range its codes come from, their grid, and the special tokens around them. The
legal-token masks of the format (`format.grammar`) are built from these ranges.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from smalto.tokenizers.text import SPECIAL_TOKENS


@dataclass(frozen=True)
class Span:
    start: int
    size: int

    @property
    def stop(self) -> int:
        return self.start + self.size


@dataclass(frozen=True)
class Modality:
    """An item of codes in the stream: <open> codes (row-major over `grid`) <close>."""
    range: str  # the id range its codes come from
    grid: tuple[int, ...]  # codes per item: (rows, cols) for an image
    open: str  # special token names, e.g. "boi" for <|boi|>
    close: str

    @property
    def tokens(self) -> int:
        return math.prod(self.grid)


def _name(token: str) -> str:
    return token.removeprefix("<|").removesuffix("|>")


@dataclass(frozen=True)
class Vocab:
    ranges: dict[str, Span]  # "text" first, from 0; then each code vocabulary, contiguous
    specials: dict[str, int]  # special token name ("bos", "eoi", ...) -> id, all inside "text"
    modalities: dict[str, Modality] = field(default_factory=dict)

    def __post_init__(self) -> None:
        stop = 0
        for name, span in self.ranges.items():
            if span.start != stop or span.size < 1:
                raise ValueError(f"vocabulary range {name!r} must start at {stop} and be non-empty, got {span}")
            stop = span.stop
        if next(iter(self.ranges), None) != "text":
            raise ValueError("the first vocabulary range must be 'text'")
        text = self.ranges["text"]
        if any(not text.start <= i < text.stop for i in self.specials.values()):
            raise ValueError("special tokens must lie inside the text range")
        for name, m in self.modalities.items():
            if m.range not in self.ranges or {m.open, m.close} - set(self.specials):
                raise ValueError(f"modality {name!r} names an unknown range or special token")

    @classmethod
    def from_tokenizers(cls, tok) -> "Vocab":
        text_size, codebook = tok.text.vocab_size, tok.image.codebook_size
        grid = tok.image.cfg.grid
        return cls({"text": Span(0, text_size), "image": Span(text_size, codebook)},
                   {_name(t): tok.text.special[t] for t in SPECIAL_TOKENS},
                   {"image": Modality("image", (grid, grid), "boi", "eoi")})

    # --- stored in a checkpoint's meta.json

    def to_json(self) -> dict:
        return {"ranges": {k: [s.start, s.size] for k, s in self.ranges.items()}, "specials": dict(self.specials),
                "modalities": {k: {"range": m.range, "grid": list(m.grid), "open": m.open, "close": m.close}
                               for k, m in self.modalities.items()}}

    @classmethod
    def from_json(cls, data: dict) -> "Vocab":
        return cls({k: Span(*v) for k, v in data["ranges"].items()}, dict(data["specials"]),
                   {k: Modality(m["range"], tuple(m["grid"]), m["open"], m["close"])
                    for k, m in data.get("modalities", {}).items()})

    # --- sizes and ids

    @property
    def size(self) -> int:
        return sum(s.size for s in self.ranges.values())

    @property
    def text_size(self) -> int:
        return self.ranges["text"].size

    def __getattr__(self, name: str) -> int:
        """`vocab.bos`, `vocab.eoi`, ...: a special token's id."""
        specials = self.__dict__.get("specials", {})
        if name in specials:
            return specials[name]
        raise AttributeError(name)

    @property
    def end_think(self) -> int:
        return self.specials["/think"]

    @property
    def image(self) -> Modality:
        return self.modalities["image"]

    @property
    def image_tokens(self) -> int:
        return self.image.tokens

    # --- items <-> ids

    def item_ids(self, modality: str, codes: Tensor) -> list[int]:
        """<open> + codes (flattened row-major, offset into their range) + <close>."""
        m = self.modalities[modality]
        return [self.specials[m.open], *(codes.flatten() + self.ranges[m.range].start).tolist(),
                self.specials[m.close]]

    def image_ids(self, codes: Tensor) -> list[int]:
        return self.item_ids("image", codes)

    def codes(self, ids: Tensor, modality: str = "image") -> Tensor:
        """Unified ids of an item -> its codebook indices."""
        return ids - self.ranges[self.modalities[modality].range].start

    # --- masks: bool [V]

    def mask(self, range_name: str) -> Tensor:
        span, mask = self.ranges[range_name], torch.zeros(self.size, dtype=torch.bool)
        mask[span.start:span.stop] = True
        return mask

    def text_mask(self) -> Tensor:
        """Ordinary text tokens (the text range without its special tokens)."""
        mask = self.mask("text")
        mask[list(self.specials.values())] = False
        return mask

    def one(self, *tokens: int) -> Tensor:
        mask = torch.zeros(self.size, dtype=torch.bool)
        mask[list(tokens)] = True
        return mask
