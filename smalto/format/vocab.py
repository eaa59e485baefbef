"""The unified vocabulary: named ranges of ids, one for text and one per code vocabulary.

    text   [0, T)                the BPE's ids, its special tokens first
    image  [T, T + K)            the image tokenizer's K codes
    audio  [T + K, T + K + L*A)  the audio codec's first L residual levels, A codes each, in turn

A new code vocabulary appends a range; video shares the image range by design (a clip's latent
frames are grids of image codes, its first frame exactly an image's). A sound is a grid of
(frames, levels), each level's codes from its own part of the range (`Modality.levels`), in one of
three patterns (`Modality.pattern`): "flat", a token per code, frame by frame, each frame's levels
coarse to fine; "delay" (MusicGen), a token per step, step s holding level k of frame s - k for
every k at once: the coarsest as the step's token, the others as its extra codes (`item_extra`),
whose embeddings the model adds to it and which it predicts beside it; or "depth" (Moshi), a token
per frame, its level 0, carrying the frame's finer levels, which a small depth head predicts one
after another from the model's state (`model.transformer.DepthHead`). A `Modality`
says how one kind of item is written into the stream: which range its codes come from, their
grid, how many frames and the special tokens around and between them. The legal-token masks of
the format (`format.grammar`) are built from these ranges. A layout is a modality that draws
another one in a different order, with words between its blocks of codes (`Modality.blocks`,
`Vocab.with_layout`; the cells layout of docs/compose.md); `Vocab.drawn` says which a model draws in.

`position_rule` says how the format numbers positions (`format.grammar.positions`): "index"
for a 1-D rotary model, "grid" for a 3-axis one (M-RoPE).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from smalto.tokenizers.text import RENAMED as _RENAMED, SPECIAL_TOKENS


POSITION_RULES = ("index", "grid")
PATTERNS = ("flat", "delay", "depth")  # how a sound's residual levels are laid out (`Modality.pattern`)
LAYOUT = "reserved_1"  # opens a picture drawn in a layout (`Modality.blocks`)
# opens a sound drawn in a layout: reserved_0, which xattn models write for a picture, so they draw sounds flat
SOUND_LAYOUT = "reserved_0"
WORD = "word"  # a layout's body slot for a text token (`Modality.body`)


@dataclass(frozen=True)
class Span:
    start: int
    size: int

    @property
    def stop(self) -> int:
        return self.start + self.size


@dataclass(frozen=True)
class Modality:
    """An item of codes in the stream: <open> frame [<sep> frame ...] <close>, each frame's codes
    row-major over `grid`; an image is one frame, a clip `frames` latent frames split by <eof>.

    A drawing layout (`blocks`, one frame): the codes written block by block, each block's codes
    (raster indices into the grid) after `words` text tokens that say what the block holds. The
    item is the picture of the modality it `draws`, in another order: ShapesWorld's cells, each
    named before its codes are drawn, so that an object's codes follow its words a few tokens
    back wherever the object lies (docs/compose.md)."""
    range: str  # the id range its codes come from
    grid: tuple[int, ...]  # codes per frame: (rows, cols)
    open: str  # special token names, e.g. "boi" for <|boi|>
    close: str
    frames: int = 1
    sep: str = ""  # the token between frames ("eof"), if any
    blocks: tuple[tuple[int, ...], ...] = ()
    words: int = 0
    draws: str = ""  # the modality whose pictures a layout writes (its codec decodes them)
    # Per block, per word: the ids it may be (one id: a label the format writes, the cell's
    # number); empty: any text.
    lexicon: tuple[tuple[tuple[int, ...], ...], ...] = ()
    # Residual levels (a sound): the grid's columns are `levels` levels, column c's codes the c-th
    # of `levels` equal parts of the range, so a level-0 code can not stand where a level-2 one must.
    levels: int = 0
    pattern: str = "flat"  # residual levels: "flat", "delay" or "depth" (PATTERNS)

    @property
    def stepped(self) -> bool:
        """A token per step carrying codes beside itself (the delay and depth patterns), not per code."""
        return self.pattern != "flat"

    @property
    def frame_tokens(self) -> int:
        return math.prod(self.grid)

    @property
    def tokens(self) -> int:
        """Tokens between <open> and <close>: every frame's codes, the separators and the words (a
        delayed sound: a step per frame, and one per level after the first, K - 1 more; depth: a
        step per frame)."""
        if self.stepped:
            return self.grid[0] + (self.levels - 1) * (self.pattern == "delay")
        return self.frames * self.frame_tokens + (self.frames - 1) * bool(self.sep) + len(self.blocks) * self.words

    def steps(self) -> list[list[tuple[int, int]]]:
        """A stepped sound's steps: each one's codes as (frame, level), coarsest first (its token);
        in the depth pattern step s holds frame s's levels."""
        frames = self.grid[0]
        if self.pattern == "depth":
            return [[(s, k) for k in range(self.levels)] for s in range(frames)]
        return [[(s - k, k) for k in range(self.levels) if 0 <= s - k < frames] for s in range(self.tokens)]

    def body(self) -> list[tuple[int, int, int] | str | None]:
        """Each token between <open> and <close>: a code's (frame, row, column), None for a
        separator, WORD for a word."""
        rows, cols = self.grid[-2:] if len(self.grid) > 1 else (1, self.grid[0])
        if self.stepped:  # (each step's token: its coarsest code)
            return [(0, *step[0]) for step in self.steps()]
        if self.blocks:
            return [w for block in self.blocks for w in [WORD] * self.words + [(0, i // cols, i % cols) for i in block]]
        out: list[tuple[int, int, int] | str | None] = []
        for f in range(self.frames):
            if f and self.sep:
                out.append(None)
            out += [(f, r, c) for r in range(rows) for c in range(cols)]
        return out


class Carrying(list):
    """Ids whose tokens carry codes beside themselves (a stepped sound's finer levels,
    `Modality.pattern`): `extra`, a row of ids per token, -1 where none. Slicing and `+` keep the
    rows (`join` mixes plain lists in); anything that rebuilds the list otherwise drops them, and
    the engine and the training stream refuse a stepped item without them (`carried`)."""

    def __init__(self, ids=(), extra=()):
        super().__init__(ids)
        self.extra = [list(row) for row in extra]
        if len(self.extra) != len(self):
            raise ValueError(f"{len(self)} ids carry {len(self.extra)} rows")

    def __getitem__(self, k):
        if isinstance(k, slice):
            return Carrying(list.__getitem__(self, k), self.extra[k])
        return list.__getitem__(self, k)

    def __add__(self, other):
        return join(self, other)

    def __radd__(self, other):
        return join(other, self)


def join(*parts: list[int]) -> list[int]:
    """The parts one after another: a `Carrying` if any part carries codes (the others' tokens none)."""
    width = max((len(p.extra[0]) for p in parts if isinstance(p, Carrying) and p.extra), default=0)
    ids = [t for p in parts for t in p]
    if not width:
        return ids
    return Carrying(ids, [row for p in parts for row in (p.extra if isinstance(p, Carrying) and p.extra
                                                          else [[-1] * width] * len(p))])


def _name(token: str) -> str:
    return token.removeprefix("<|").removesuffix("|>")


RENAMED = {_name(old): _name(new) for old, new in _RENAMED.items()}  # "reserved_2" -> "boa", ...


@dataclass(frozen=True)
class Vocab:
    ranges: dict[str, Span]  # "text" first, from 0; then each code vocabulary, contiguous
    specials: dict[str, int]  # special token name ("bos", "eoi", ...) -> id, all inside "text"
    modalities: dict[str, Modality] = field(default_factory=dict)
    position_rule: str = "index"  # "index" (1-D rotary) or "grid" (3-axis rotary), see format.grammar

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
            if m.range not in self.ranges or {m.open, m.close, *([m.sep] if m.sep else [])} - set(self.specials):
                raise ValueError(f"modality {name!r} names an unknown range or special token")
            if not 1 <= m.frames <= 64 or not 1 <= len(m.grid) <= 2 or min(m.grid) < 1:
                raise ValueError(f"modality {name!r}: 1 to 64 frames of a 1- or 2-axis grid, got {m}")
            if m.levels and (m.grid[-1] != m.levels or len(m.grid) != 2 or m.blocks and m.pattern != "flat"
                             or self.ranges[m.range].size % m.levels):
                raise ValueError(f"modality {name!r}: residual levels are the columns of a 2-axis grid, each an "
                                 f"equal part of its range, got {m}")
            if m.pattern not in PATTERNS or m.pattern != "flat" and not m.levels:
                raise ValueError(f"modality {name!r}: pattern must be one of {', '.join(PATTERNS)}, and a stepped "
                                 f"one needs residual levels")
            if m.blocks and (m.frames != 1 or sorted(i for b in m.blocks for i in b) != list(range(m.frame_tokens))
                             or m.draws not in self.modalities or m.words < 1
                             or m.lexicon and (len(m.lexicon) != len(m.blocks) or
                                               any(len(w) != m.words or not all(w) for w in m.lexicon))):
                raise ValueError(f"modality {name!r}: a layout's blocks cover one frame's codes once, after "
                                 f"words >= 1 (its lexicon: ids for each word of each block), and it draws a "
                                 f"modality of this vocabulary")
        if self.position_rule not in POSITION_RULES:
            raise ValueError(f"position_rule must be one of {', '.join(POSITION_RULES)}, got {self.position_rule!r}")

    @classmethod
    def from_tokenizers(cls, tok, position_rule: str = "index", sound: tuple[int, int] | None = None,
                        pattern: str = "flat") -> "Vocab":
        """The image tokenizer's codes as the "image" modality; with a video tokenizer, clips of
        its latent frames as the "video" modality, from the same range; with `sound` = (frames,
        levels), sounds of that many audio codec frames and its first `levels` levels as the
        "audio" modality, in a range of their own, laid out in `pattern` (a model hears only when
        trained to)."""
        text_size, codebook = tok.text.vocab_size, tok.image.codebook_size
        grid = tok.image.cfg.grid
        ranges = {"text": Span(0, text_size), "image": Span(text_size, codebook)}
        modalities = {"image": Modality("image", (grid, grid), "boi", "eoi")}
        if getattr(tok, "video", None) is not None:
            frames = tok.video.cfg.latent_frames(tok.video.cfg.frames)
            modalities["video"] = Modality("image", (grid, grid), "bov", "eov", frames, "eof")
        if sound is not None:
            frames, levels = sound
            codec = getattr(tok, "audio", None)
            if codec is None or not 1 <= levels <= codec.cfg.levels:
                raise ValueError(f"sounds of {levels} residual levels need an audio codec of as many "
                                 f"(these tokenizers have {'none' if codec is None else codec.cfg.levels})")
            ranges["audio"] = Span(text_size + codebook, levels * codec.cfg.codebook_size)
            modalities["audio"] = Modality("audio", (frames, levels), "boa", "eoa", levels=levels, pattern=pattern)
        return cls(ranges, {_name(t): tok.text.special[t] for t in SPECIAL_TOKENS}, modalities, position_rule)

    @property
    def sound(self) -> tuple[int, int] | None:
        """(frames, levels) of this vocabulary's sounds (`from_tokenizers`), None if it has none."""
        m = self.modalities.get("audio")
        return None if m is None else (m.grid[0], m.levels)

    @property
    def pattern(self) -> str:
        """How this vocabulary's sounds lay out their levels ("flat" without sounds)."""
        return self.modalities["audio"].pattern if "audio" in self.modalities else "flat"

    @property
    def width(self) -> int:
        """Codes a token may carry beside itself (`item_extra`): the levels of a stepped modality, or 0."""
        return max((m.levels for m in self.modalities.values() if m.stepped), default=0)
    def with_layout(self, name: str, of: str, blocks: tuple[tuple[int, ...], ...], words: int,
                    lexicon: tuple[tuple[tuple[int, ...], ...], ...] = (), opening: str = LAYOUT) -> "Vocab":
        """This vocabulary, drawing modality `of` in a layout `name`: its codes in `blocks`, each
        after `words` words (`Modality.blocks`, `Modality.lexicon`); it opens with `opening` and
        closes as `of` (a sound's layout keeps its levels: each code from its level's part)."""
        m = self.modalities[of]
        if m.pattern != "flat" or any(k.open == opening for k in self.modalities.values()):
            raise ValueError(f"a layout of {of!r} needs a flat item and an opening token of its own, not {opening!r}")
        layout = Modality(m.range, m.grid, opening, m.close, blocks=blocks, words=words, draws=of, lexicon=lexicon,
                          levels=m.levels)
        return replace(self, modalities={**self.modalities, name: layout})

    def without_layouts(self) -> "Vocab":
        """This vocabulary as its tokenizers make it (`from_tokenizers`): its layouts left out."""
        return replace(self, modalities={k: m for k, m in self.modalities.items() if not m.blocks})

    # --- stored in a checkpoint's meta.json

    def to_json(self) -> dict:
        def item(m: Modality) -> dict:
            extra = {"frames": m.frames, "sep": m.sep} if m.frames > 1 else {}
            if m.levels:
                extra = {"levels": m.levels} | ({"pattern": m.pattern} if m.pattern != "flat" else {})
            if m.blocks:
                extra |= {"blocks": [list(b) for b in m.blocks], "words": m.words, "draws": m.draws,
                          "lexicon": [[list(w) for w in b] for b in m.lexicon]}
            return {"range": m.range, "grid": list(m.grid), "open": m.open, "close": m.close, **extra}

        out = {"ranges": {k: [s.start, s.size] for k, s in self.ranges.items()}, "specials": dict(self.specials),
               "modalities": {k: item(m) for k, m in self.modalities.items()}}
        return out | ({"position_rule": self.position_rule} if self.position_rule != "index" else {})

    @classmethod
    def from_json(cls, data: dict) -> "Vocab":
        specials = {RENAMED.get(k, k): i for k, i in data["specials"].items()}  # (stored before they had names)
        return cls({k: Span(*v) for k, v in data["ranges"].items()}, specials,
                   {k: Modality(m["range"], tuple(m["grid"]), m["open"], m["close"], int(m.get("frames", 1)),
                                str(m.get("sep", "")), tuple(tuple(b) for b in m.get("blocks", ())),
                                int(m.get("words", 0)), str(m.get("draws", "")),
                                tuple(tuple(tuple(w) for w in b) for b in m.get("lexicon", ())),
                                int(m.get("levels", 0)), str(m.get("pattern", "flat")))
                    for k, m in data.get("modalities", {}).items()},
                   str(data.get("position_rule", "index")))

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

    def item_ids(self, modality: str, codes: Tensor, words: list[list[int]] | None = None) -> list[int]:
        """<open> + each frame's codes (row-major, offset into their range), split by <sep> + <close>.
        codes: [*grid] for one frame, or [frames, *grid]. A layout (`Modality.blocks`) writes each
        block's `words` (text ids, one list per block), then its codes."""
        m = self.modalities[modality]
        if codes.numel() != m.frames * m.frame_tokens:
            raise ValueError(f"a {modality} item holds {m.frames} x {m.grid} codes, got {tuple(codes.shape)}")
        ids = [self.specials[m.open]]
        if m.blocks:
            if words is None or len(words) != len(m.blocks) or any(len(w) != m.words for w in words):
                raise ValueError(f"a {modality} item writes {m.words} words before each of its {len(m.blocks)} blocks")
            flat = (codes.reshape(-1) + self._offsets(m, codes.numel())).tolist()
            for block, said in zip(m.blocks, words):
                ids += list(said) + [flat[i] for i in block]
            return ids + [self.specials[m.close]]
        if m.stepped:  # (a Carrying: each step's finer levels beside its token)
            unified = self._unified(m, codes)
            steps = ids + [unified[f][k] for (f, k), *_ in m.steps()] + [self.specials[m.close]]
            return Carrying(steps, self.item_extra(modality, codes))
        for f, frame in enumerate(codes.reshape(m.frames, -1)):
            ids += ([self.specials[m.sep]] if f and m.sep else []) + (frame + self._offsets(m, frame.numel())).tolist()
        return ids + [self.specials[m.close]]

    def _unified(self, m: Modality, codes: Tensor) -> list[list[int]]:
        """A sound's codes [frames, levels] as ids, indexed [frame][level]."""
        return (codes.reshape(m.grid) + self._offsets(m, codes.numel()).view(m.grid)).tolist()

    def item_extra(self, modality: str, codes: Tensor) -> list[list[int]]:
        """What each token of `item_ids` carries beside itself, `width` ids a token, -1 where none:
        a stepped sound's step holds its finer levels' codes, slot k level k (its token's level
        left -1); <open>, <close> and every other modality's tokens carry none."""
        if not self.width:
            return [[] for _ in range(self.modalities[modality].tokens + 2)]
        m = self.modalities[modality]
        rows = [[-1] * self.width for _ in range(self.modalities[modality].tokens + 2)]
        if m.stepped:
            unified = self._unified(m, codes)
            for row, step in zip(rows[1:], m.steps()):
                for f, k in step[1:]:
                    row[k] = unified[f][k]
        return rows

    def carried(self, ids: list[int]) -> list[list[int]] | None:
        """The rows `ids` carry (`Carrying.extra`), or None when none of its tokens carries codes;
        a ValueError for ids holding a stepped item whose rows were dropped."""
        if isinstance(ids, Carrying) and ids.extra:
            return ids.extra
        stepped = {self.specials[m.open]: m.pattern == "delay" for m in self.modalities.values()
                   if m.stepped and m.levels > 1}
        # (a delayed sound's second step carries codes, a depth one's first)
        if any(t in stepped and len(ids) - i > 1 + stepped[t] for i, t in enumerate(ids)):
            raise ValueError("a stepped sound's tokens are given without the codes they carry (build the "
                             "sequence with `+`, `join` or slices of `item_ids`, which keep them)")
        return None

    def step_codes(self, modality: str, tokens: list[int], extra: list[list[int]]) -> Tensor:
        """A stepped sound's steps (its tokens and their extra codes) -> codes [frames, levels]."""
        m = self.modalities[modality]
        unified = torch.zeros(m.grid, dtype=torch.long)
        for token, row, step in zip(tokens, extra, m.steps()):
            (f, k), rest = step[0], step[1:]
            unified[f, k] = token
            for f, k in rest:
                unified[f, k] = row[k]
        return self.codes(unified.reshape(-1), modality).view(m.grid)

    def _offsets(self, m: Modality, n: int) -> Tensor | int:
        """What n raster-ordered codes of `m` add to become ids: its range's start, and for residual
        levels each level's part of it."""
        start = self.ranges[m.range].start
        if not m.levels:
            return start
        return start + (torch.arange(n) % m.levels) * (self.ranges[m.range].size // m.levels)

    def drawn(self, modality: str) -> str:
        """The modality a drawing of `modality` is written in: a layout of it when the vocabulary
        has one (`Modality.draws`), else itself."""
        return next((k for k, m in self.modalities.items() if m.draws == modality), modality)

    def item_words(self, body: list[int], modality: str) -> list[list[int]]:
        """The words of a layout's item body (between <open> and <close>), one list per block."""
        m = self.modalities[modality]
        said = [t for t, where in zip(body, m.body()) if where == WORD]
        return [said[k * m.words:(k + 1) * m.words] for k in range(len(m.blocks))]

    def image_ids(self, codes: Tensor) -> list[int]:
        return self.item_ids("image", codes)

    def video_ids(self, codes: Tensor) -> list[int]:
        """<bov> latent frame <eof> latent frame ... <eov> for codes [frames, h, w]."""
        return self.item_ids("video", codes)

    def codes(self, ids: Tensor, modality: str = "image") -> Tensor:
        """Unified ids of an item's codes (raster order, separators left out) -> its codebook indices."""
        offsets = self._offsets(self.modalities[modality], ids.numel())
        return ids - (offsets.view(ids.shape) if torch.is_tensor(offsets) else offsets)

    def item_codes(self, body: list[int], modality: str, extra: list[list[int]] | None = None) -> Tensor:
        """The tokens between an item's <open> and <close> -> codes [frames, *grid] (a stepped
        sound: with what each token carries, `item_extra`)."""
        m = self.modalities[modality]
        if m.stepped:
            if extra is None:
                raise ValueError(f"a stepped {modality} item's codes are its tokens and what they carry")
            return self.step_codes(modality, body, extra)[None]
        placed = {}  # raster index -> id (a layout writes codes out of raster order)
        for t, where in zip(body, m.body()):
            if isinstance(where, tuple):
                f, r, c = where
                placed[f * m.frame_tokens + r * m.grid[-1] + c] = t
        return self.codes(torch.tensor([placed[i] for i in range(len(placed))]), modality).view(m.frames, *m.grid)

    # --- masks: bool [V]

    def mask(self, range_name: str) -> Tensor:
        span = self.ranges[range_name]
        return self.span_mask(span.start, span.stop)

    def span_mask(self, start: int, stop: int) -> Tensor:
        mask = torch.zeros(self.size, dtype=torch.bool)
        mask[start:stop] = True
        return mask

    def level_masks(self, modality: str) -> Tensor:
        """bool [levels, V]: each residual level's ids."""
        levels = self.modalities[modality].levels
        return torch.stack([self.span_mask(*self.level_span(modality, k)) for k in range(levels)])

    def level_span(self, modality: str, level: int) -> tuple[int, int]:
        """The ids a residual modality's `level` codes take: (start, stop)."""
        m = self.modalities[modality]
        span = self.ranges[m.range]
        size = span.size // m.levels
        return span.start + level * size, span.start + (level + 1) * size

    def text_mask(self) -> Tensor:
        """Ordinary text tokens (the text range without its special tokens)."""
        mask = self.mask("text")
        mask[list(self.specials.values())] = False
        return mask

    def one(self, *tokens: int) -> Tensor:
        mask = torch.zeros(self.size, dtype=torch.bool)
        mask[list(tokens)] = True
        return mask
