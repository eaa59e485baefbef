"""Rendering tasks into the one sequence format; see docs/format.md. Every task is a short chat:

    caption  <bos> <user> <boi> v1..v64 <eoi> <assistant> caption <eos>
    answer   <bos> <user> <boi> v1..v64 <eoi> question <assistant> answer <eos> [<user> question ...]
    think    <bos> <user> <boi> v1..v64 <eoi> question <assistant> <think> trace </think> answer <eos>
    chat     <bos> <user> [image] text <assistant> reply <eos> <user> text <assistant> reply <eos> ...
    draw     <bos> <user> prompt <assistant> <boi> v1..v64 <eoi> <eos>
    (the unconditional stream for guidance is a draw with an empty prompt)

A clip takes an image's place in caption, answer and draw (`modality="video"`): <bov> frame
<eof> frame ... <eov>. One task is a clip's own:

    continue <bos> <user> prompt <assistant> <bov> [given frames <eof>] | the rest <eov> <eos>

(the given latent frames are context, the rest is trained: a small world model).

A sound (`modality="audio"`, <boa> frames' levels <eoa>) takes an image's place in caption, answer
and draw too, and one modality may be asked for as another (a picture's sound, a sound's picture):

    convert  <bos> <user> <boi> v1..v64 <eoi> request <assistant> <boa> a1..a216 <eoa> <eos>

The assistant's part is trained (loss_mask is True for tokens the model must predict); the
user's text is context. The user's image codes may be trained too (`train_image`): the image is
processed anyway, so predicting it is free signal for learning what images look like.
Each example also carries its tokens' positions (`format.grammar.positions`).

Models that see pixels (`smalto.model.fusion`) read a user's picture differently, and `fuse`
rewrites a sequence for them: the projector keeps the codes' places (their embeddings are
replaced by features, and they are no longer targets: the features give them away); xattn
replaces `<boi> codes <eoi>` by one marker token. A picture the assistant draws stays codes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

from smalto.format.grammar import positions
from smalto.format.vocab import Vocab, join


# xattn's place for a picture in the stream (Llama 3.2 Vision's <|image|>): a reserved special token
PICTURE = "reserved_0"


@dataclass
class Example:
    ids: list[int]
    loss_mask: list[bool]  # True where ids[i] is a target (predicted from ids[:i])
    positions: Tensor  # int64 [3, len(ids)]: (time, row, column), see format.grammar
    # fused designs: the pixels (uint8 [H, W, 3]) of the pictures it reads, and where each starts
    pictures: list = field(default_factory=list)
    picture_at: list[int] = field(default_factory=list)
    # what each token carries beside itself (a delayed sound's finer levels, `Vocab.item_extra`):
    # a row of `Vocab.width` ids per token, -1 where none; None when no token carries any
    extra: list[list[int]] | None = None


def picture_starts(v: Vocab, ids: list[int], fusion: str) -> list[int]:
    """Where each picture a (fused) sequence reads starts: its <boi> not right after <assistant>
    (projector), or its marker (xattn)."""
    if fusion == "xattn":
        marker = v.specials[PICTURE]
        return [i for i, t in enumerate(ids) if t == marker]
    return [i for i, t in enumerate(ids) if t == v.boi and (i == 0 or ids[i - 1] != v.assistant)]


def fuse_ids(v: Vocab, ids: list[int], fusion: str, mask: list[bool] | None = None
             ) -> tuple[list[int], list[bool], list[int]]:
    """(ids, loss mask, where each picture read starts) of a sequence written for the tokens
    design, as the `fusion` design reads it."""
    mask = [False] * len(ids) if mask is None else list(mask)
    if fusion == "tokens":
        return list(ids), mask, []
    if fusion not in ("projector", "xattn"):
        raise ValueError(f"unknown fusion {fusion!r}")
    starts, ids, span = picture_starts(v, ids, "projector"), list(ids), v.image_tokens + 2
    for s in reversed(starts):
        if fusion == "projector":
            mask[s + 1:s + span] = [False] * len(mask[s + 1:s + span])
        else:
            ids[s:s + span], mask[s:s + span] = [v.specials[PICTURE]], [False]
    return ids, mask, picture_starts(v, ids, fusion)


def fuse(v: Vocab, example: Example, fusion: str, picture=None) -> Example:
    """The example as a `fusion` design reads it; `picture` (uint8 [H, W, 3]) is every picture it reads."""
    if fusion == "tokens":
        return example
    ids, mask, starts = fuse_ids(v, example.ids, fusion, example.loss_mask)
    where = example.positions if fusion == "projector" else positions(v, ids)
    return Example(ids, mask, where, [picture] * len(starts), starts)


def _build(v: Vocab, *segments: tuple[list[int], bool]) -> Example:
    ids = join(*(seg for seg, _ in segments))
    mask = [trained for seg, trained in segments for _ in seg]
    return Example(list(ids), mask, positions(v, ids), extra=v.carried(ids))


# --- prompts (what inference feeds the model) and training examples (prompt + target)

def chat_prompt(v: Vocab, turns: list[tuple[str, list[int]]]) -> list[int]:
    """A conversation, ready for the assistant's next reply:

        <bos> <user> content [<assistant> reply <eos> <user> content ...] <assistant>

    turns are (role, ids) with role "user" or "assistant"; a user's ids may hold images
    (`image_ids`). Captioning and answering are its one-turn cases."""
    parts = [[v.bos]]
    for role, content in turns:
        if role == "user":
            parts += [[v.user], content]
        elif role == "assistant":
            parts += [[v.assistant], content, [v.eos]]
        else:
            raise ValueError(f"role must be user or assistant, got {role!r}")
    return join(*parts, [v.assistant])


def caption_prompt(v: Vocab, codes: Tensor, modality: str = "image") -> list[int]:
    return chat_prompt(v, [("user", v.item_ids(modality, codes))])


def answer_prompt(v: Vocab, codes: Tensor, question: list[int], modality: str = "image") -> list[int]:
    return chat_prompt(v, [("user", v.item_ids(modality, codes) + question)])


def draw_prompt(v: Vocab, text: list[int], modality: str = "image") -> list[int]:
    """Ends with <boi> (<bov>), or the opening of the vocabulary's layout for drawing the modality
    (`Vocab.drawn`): what follows must be the item's body."""
    return [v.bos, v.user, *text, v.assistant, v.specials[v.modalities[v.drawn(modality)].open]]


def convert_prompt(v: Vocab, codes: Tensor, modality: str, request: list[int], into: str) -> list[int]:
    """An item and a request for it in another modality: ends with that modality's opening (its
    layout's, `Vocab.drawn`), so what follows is the answer's body."""
    opening = v.specials[v.modalities[v.drawn(into)].open]
    return chat_prompt(v, [("user", v.item_ids(modality, codes) + request)]) + [opening]


def continue_prompt(v: Vocab, text: list[int], codes: Tensor, given: int, modality: str = "video") -> list[int]:
    """An item's first `given` frames, written as the item itself (never a layout): a clip's latent
    frames each with its <eof>, or a flat or depth sound's codec frames. What follows is the rest of it."""
    return [v.bos, v.user, *text, v.assistant] + v.item_ids(modality, codes)[:_given_end(v, given, modality)]


def _given_end(v: Vocab, given: int, modality: str = "video") -> int:
    m = v.modalities[modality]
    if m.levels:  # (a sound's codec frames are its grid's rows, each its levels' codes)
        # (a delayed sound's first steps hold only the coarse levels of its last frames)
        if m.pattern == "delay" or not 1 <= given < m.grid[0]:
            raise ValueError(f"a flat or depth sound's continuation is given 1 to {m.grid[0] - 1} of its codec "
                             f"frames, got {given} ({m.pattern})")
        return 1 + given * (1 if m.stepped else m.levels)  # (depth: a step a frame, carrying its levels)
    if not 1 <= given < m.frames:
        raise ValueError(f"a continuation is given 1 to {m.frames - 1} latent frames, got {given}")
    return 1 + given * (m.frame_tokens + 1)  # <bov>, then each frame and its <eof>


def caption_example(v: Vocab, codes: Tensor, caption: list[int], train_image: bool = False,
                    modality: str = "image") -> Example:
    """train_image: also predict the user's image codes (free image-modelling signal)."""
    item = v.item_ids(modality, codes)
    return _build(v, ([v.bos, v.user, item[0]], False), (item[1:], train_image),
                  ([v.assistant], False), (caption + [v.eos], True))


def answer_example(v: Vocab, codes: Tensor, pairs: list[tuple[list[int], list[int]]],
                   train_image: bool = False, modality: str = "image") -> Example:
    """One image (or clip), then one or more question/answer turns (later turns start with <user>)."""
    item = v.item_ids(modality, codes)
    segments = [([v.bos, v.user, item[0]], False), (item[1:], train_image)]
    for i, (question, answer) in enumerate(pairs):
        segments += [([v.user] * (i > 0) + [*question, v.assistant], False), (answer + [v.eos], True)]
    return _build(v, *segments)


def think_example(v: Vocab, codes: Tensor, question: list[int], trace: list[int], answer: list[int],
                  train_image: bool = False) -> Example:
    """An answer after thinking: the trace between <think> and </think> is trained with the answer."""
    return _build(v, ([v.bos, v.user, v.boi], False), (v.image_ids(codes)[1:], train_image),
                  ([*question, v.assistant], False), ([v.think, *trace, v.end_think, *answer, v.eos], True))


def chat_example(v: Vocab, turns: list[tuple[str, list[int]]]) -> Example:
    """A conversation (`chat_prompt`'s turns, ending with an assistant's) whose every assistant
    reply is trained."""
    segments = [([v.bos], False)]
    for role, content in turns:
        if role == "user":
            segments += [([v.user], False), (content, False)]
        else:
            segments += [([v.assistant], False), (content + [v.eos], True)]
    return _build(v, *segments)


def draw_example(v: Vocab, text: list[int], codes: Tensor, modality: str = "image",
                 words: list[list[int]] | None = None) -> Example:
    """words: each block's words, for a vocabulary that draws the modality in a layout (without
    them the drawing is written as the modality itself, e.g. a scene the layout has no words for)."""
    prompt = draw_prompt(v, text, modality)
    # <boi> is part of the answer: the model learns that a drawing request is answered by an image.
    drawn = v.drawn(modality) if words is not None else modality
    return _build(v, (prompt[:-1], False), (v.item_ids(drawn, codes, words) + [v.eos], True))


def convert_example(v: Vocab, codes: Tensor, modality: str, request: list[int], answer: Tensor, into: str,
                    words: list[list[int]] | None = None, train_item: bool = False) -> Example:
    """An item of `modality`, a request, and the same thing as an item of `into` (drawn in its
    layout when `words` are given, as `draw_example`); train_item: also predict the user's item."""
    item = v.item_ids(modality, codes)
    drawn = v.drawn(into) if words is not None else into
    return _build(v, ([v.bos, v.user, item[0]], False), (item[1:], train_item), ([*request, v.assistant], False),
                  (v.item_ids(drawn, answer, words) + [v.eos], True))


def continue_example(v: Vocab, text: list[int], codes: Tensor, given: int, modality: str = "video") -> Example:
    """Given an item's first frames (`continue_prompt`), predict the rest of it."""
    end = _given_end(v, given, modality)
    return _build(v, (continue_prompt(v, text, codes, given, modality), False),
                  (v.item_ids(modality, codes)[end:] + [v.eos], True))
