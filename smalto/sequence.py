"""One vocabulary and one sequence format for every task; see docs/format.md.

Unified ids: [0, T) are the text BPE's ids (its first ids are the special tokens), then
[T, T + K) are the K image codes. Every task is a short chat:

    caption  <bos> <user> <boi> v1..v64 <eoi> <assistant> caption <eos>
    answer   <bos> <user> <boi> v1..v64 <eoi> question <assistant> answer <eos> [<user> question ...]
    draw     <bos> <user> prompt <assistant> <boi> v1..v64 <eoi> <eos>
    (the unconditional stream for guidance is a draw with an empty prompt)

The assistant's part is trained (loss_mask is True for tokens the model must predict); the
user's text is context. The user's image codes may be trained too (`train_image`): the image is
processed anyway, so predicting it is free signal for learning what images look like.
`Grammar` says which ids are legal next; the engine reads it and does not re-derive the format.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from smalto.tokenizers.text import SPECIAL_TOKENS


@dataclass(frozen=True)
class Vocab:
    text_size: int  # the BPE's vocabulary, special tokens included
    codebook_size: int
    image_tokens: int  # codes per image (64 for 8x8)
    specials: tuple[int, ...]  # every special token's id, in SPECIAL_TOKENS order
    bos: int
    eos: int
    pad: int
    boi: int
    eoi: int
    user: int
    assistant: int

    @classmethod
    def from_tokenizers(cls, tok) -> "Vocab":
        s = tok.text.special
        return cls(tok.text.vocab_size, tok.image.codebook_size, tok.image.cfg.tokens,
                   tuple(s[name] for name in SPECIAL_TOKENS),
                   **{name: s[f"<|{name}|>"] for name in ("bos", "eos", "pad", "boi", "eoi", "user", "assistant")})

    @property
    def size(self) -> int:
        return self.text_size + self.codebook_size

    # --- images <-> ids

    def image_ids(self, codes: Tensor) -> list[int]:
        """<boi> + codes (flattened row-major, offset into the unified range) + <eoi>."""
        return [self.boi, *(codes.flatten() + self.text_size).tolist(), self.eoi]

    def codes(self, ids: Tensor) -> Tensor:
        """Unified image ids -> codebook indices."""
        return ids - self.text_size

    def text_mask(self) -> Tensor:
        """bool [V]: ordinary text tokens (no specials, no image codes)."""
        mask = torch.zeros(self.size, dtype=torch.bool)
        mask[:self.text_size] = True
        mask[list(self.specials)] = False
        return mask

    def image_mask(self) -> Tensor:
        mask = torch.zeros(self.size, dtype=torch.bool)
        mask[self.text_size:] = True
        return mask

    def one(self, token: int) -> Tensor:
        mask = torch.zeros(self.size, dtype=torch.bool)
        mask[token] = True
        return mask


@dataclass
class Example:
    ids: list[int]
    loss_mask: list[bool]  # True where ids[i] is a target (predicted from ids[:i])


def _build(*segments: tuple[list[int], bool]) -> Example:
    ids, mask = [], []
    for seg, trained in segments:
        ids += seg
        mask += [trained] * len(seg)
    return Example(ids, mask)


# --- prompts (what inference feeds the model) and training examples (prompt + target)

def chat_prompt(v: Vocab, turns: list[tuple[str, list[int]]]) -> list[int]:
    """A conversation, ready for the assistant's next reply:

        <bos> <user> content [<assistant> reply <eos> <user> content ...] <assistant>

    turns are (role, ids) with role "user" or "assistant"; a user's ids may hold images
    (`image_ids`). Captioning and answering are its one-turn cases."""
    ids = [v.bos]
    for role, content in turns:
        if role == "user":
            ids += [v.user, *content]
        elif role == "assistant":
            ids += [v.assistant, *content, v.eos]
        else:
            raise ValueError(f"role must be user or assistant, got {role!r}")
    return ids + [v.assistant]


def caption_prompt(v: Vocab, codes: Tensor) -> list[int]:
    return chat_prompt(v, [("user", v.image_ids(codes))])


def answer_prompt(v: Vocab, codes: Tensor, question: list[int]) -> list[int]:
    return chat_prompt(v, [("user", v.image_ids(codes) + question)])


def draw_prompt(v: Vocab, text: list[int]) -> list[int]:
    """Ends with <boi>: what follows must be the image's codes."""
    return [v.bos, v.user, *text, v.assistant, v.boi]


def caption_example(v: Vocab, codes: Tensor, caption: list[int], train_image: bool = False) -> Example:
    """train_image: also predict the user's image codes (free image-modelling signal)."""
    return _build(([v.bos, v.user, v.boi], False), (v.image_ids(codes)[1:], train_image),
                  ([v.assistant], False), (caption + [v.eos], True))


def answer_example(v: Vocab, codes: Tensor, pairs: list[tuple[list[int], list[int]]],
                   train_image: bool = False) -> Example:
    """One image, then one or more question/answer turns (later turns start with <user>)."""
    segments = [([v.bos, v.user, v.boi], False), (v.image_ids(codes)[1:], train_image)]
    for i, (question, answer) in enumerate(pairs):
        segments += [([v.user] * (i > 0) + [*question, v.assistant], False), (answer + [v.eos], True)]
    return _build(*segments)


def draw_example(v: Vocab, text: list[int], codes: Tensor) -> Example:
    prompt = draw_prompt(v, text)
    # <boi> is part of the answer: the model learns that a drawing request is answered by an image.
    return _build((prompt[:-1], False), (v.image_ids(codes) + [v.eos], True))


# --- what may come next

class Grammar:
    """Legal next tokens for a batch of rows being decoded, tracked incrementally.

    Outside an image a row may emit text tokens and <eos> (and <boi> if `images` is allowed);
    after <boi> exactly `image_tokens` image codes, then <eoi>. With `images="only"` the row is
    drawing: the prompt ends in <boi>, and after <eoi> only <eos> remains.
    """

    def __init__(self, v: Vocab, batch: int, images: str = "never", in_image: bool = False,
                 device: torch.device | str = "cpu", eos: bool = True):
        """eos=False: text never ends (benchmarks that need a fixed length)."""
        if images not in ("never", "allowed", "only"):
            raise ValueError(f"images must be never, allowed or only, got {images!r}")
        if images == "only" and not eos:
            raise ValueError("a drawing ends at <eoi> and then <eos>: eos=False is for text")
        self.v = v
        self.images = images
        text = v.text_mask() | v.one(v.eos) if eos else v.text_mask()
        if images == "allowed":
            text |= v.one(v.boi)
        if images == "only":
            text = v.one(v.eos)
        # rows of this table, picked per batch row: 0 text, 1 image code, 2 <eoi>
        self.table = torch.stack([text, v.image_mask(), v.one(v.eoi)]).to(device)
        self.count = torch.full((batch,), 0 if in_image else -1, dtype=torch.long, device=device)

    def mask(self) -> Tensor:
        """bool [B, V]: which ids each row may emit next."""
        state = torch.where(self.count < 0, 0, torch.where(self.count < self.v.image_tokens, 1, 2))
        return self.table[state]

    def advance(self, tokens: Tensor) -> None:
        self.count = torch.where(tokens == self.v.boi, 0,
                                 torch.where(tokens == self.v.eoi, -1,
                                             torch.where(self.count >= 0, self.count + 1, self.count)))

