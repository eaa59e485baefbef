"""The modalities a pipeline reads and draws, each one registered codec.

A `Codec` is everything the pipeline needs of a modality: which of a user's items are its
(`claims`), how they are read through the decoding gate (`read`: files, bytes, arrays → pixels
at the model's size), encoded to codes and written into the stream as ids (`encode`, `ids`),
decoded back to pixels (`decode`), and how many tokens one takes in a prompt (`tokens`). The
pipeline, the server's prompt-length check and ShapesEval ask the registry (`Inputs.codecs`,
`Inputs.codec_for`) rather than growing a method per modality; a new modality is one more
entry in `codecs` (docs/architecture.md, "add a modality").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from smalto.data.gate import is_sound
from smalto.data.video import is_clip


@dataclass(frozen=True)
class Codec:
    name: str  # its modality in the vocabulary ("image", "video", "audio")
    claims: Callable[[object], bool]  # is this item (a path, bytes, array, PIL image) one of ours?
    read: Callable[[list], np.ndarray]  # items -> pixels (a wave) at the model's size, through the gate
    encode: Callable[[np.ndarray], torch.Tensor]  # pixels [B, ...] -> codes [B, ...]
    ids: Callable[[torch.Tensor], list[int]]  # one item's codes -> its ids in the stream
    decode: Callable[[torch.Tensor], list[np.ndarray]]  # codes [B, frames, h, w] -> pixels (a wave), one per item
    tokens: int  # prompt tokens one item takes

    def item_ids(self, items: list) -> list[list[int]]:
        """Each item's ids in the stream, read, encoded and written."""
        return [self.ids(codes) for codes in self.encode(self.read(items))]


def codecs(pipe) -> dict[str, Codec]:
    """The codecs of what `pipe` (an `Inputs`) reads: pictures always, clips and sounds when it was
    trained on them. Ordered by precedence: the first whose `claims` accepts an item reads it."""
    v, tok = pipe.vocab, pipe.tokenizers
    found = {}
    if pipe.hears:  # (codes [B, frames, levels] in the stream; the codec's are [B, levels, frames])
        levels = v.sound[1]
        found["audio"] = Codec("audio", is_sound, pipe.sound_waves,
                               lambda waves: tok.audio.encode(waves)[:, :levels].transpose(1, 2),
                               lambda codes: v.item_ids("audio", codes),
                               lambda codes: list(tok.audio.decode(codes[:, 0].transpose(1, 2))),
                               v.modalities["audio"].tokens + 2)
    if pipe.reads_clips:
        frames = tok.video.cfg.frames
        found["video"] = Codec("video", is_clip, lambda items: np.stack(pipe.check_clips(items)), tok.video.encode,
                               v.video_ids, lambda codes: list(tok.video.decode(codes)[:, :frames]),
                               v.modalities["video"].tokens + 2)
    found["image"] = Codec("image", lambda item: True, pipe.pictures, tok.image.encode, v.image_ids,
                           lambda codes: list(tok.image.decode(codes[:, 0])), pipe.picture_tokens)
    return found
