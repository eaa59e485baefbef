"""What goes into the model: messages, pictures, clips and sounds read through the decoding gate, text
ids, the prompts of each task, and the checks that they fit the context.

`Inputs` is the part of `Pipeline` that turns a user's items into token ids; it needs the
pipeline's model, vocabulary and tokenizers and nothing of decoding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from smalto.data.gate import is_sound, read_sound
from smalto.data.images import convert_image, load_image
from smalto.data.video import as_clip, is_clip
from smalto.errors import ContextLengthError, SmaltoError
from smalto.format import answer_prompt, caption_prompt, chat_prompt, fuse_ids
from smalto.inference import Prompt
from smalto.pipeline.modalities import Codec, codecs

# The model knows two roles, user and assistant (see `format.chat_prompt`); it was never taught a
# system prompt, so system messages are accepted and left out of the prompt.
ROLES = ("system", "developer", "user", "assistant")


@dataclass
class Message:
    role: str  # one of ROLES
    text: str = ""
    # paths, PIL images or uint8 arrays [H, W, 3] (user turns only); clips too: arrays [T, H, W, 3],
    # animated GIF/WebP paths, folders of frames (a model trained on clips); sounds: WAV/FLAC/OGG
    # paths or bytes, float waves [samples] at the codec's rate (a model trained on sounds)
    images: list = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, got {self.role!r}")


class Inputs:
    """Items to ids (a part of `Pipeline`: it reads the pipeline's model, vocab, tokenizers,
    max_image_pixels and clips)."""

    @property
    def context(self) -> int:
        """Tokens a sequence may hold (a prompt-tuned model's learned embeddings take the first)."""
        return self.model.cfg.max_seq_len - self.model.prompt_tokens

    @property
    def image_size(self) -> int:
        return self.tokenizers.image.cfg.image_size

    @property
    def picture_tokens(self) -> int:
        """How many tokens a picture takes in a prompt."""
        return 1 if self.model.cfg.fusion == "xattn" else self.vocab.image_tokens + 2

    # --- pictures

    def pictures(self, images) -> np.ndarray:
        """Paths / PIL images / uint8 arrays -> uint8 [B, H, W, 3] at the model's size."""
        if isinstance(images, (str, Path, Image.Image)) or (isinstance(images, np.ndarray) and images.ndim == 3):
            images = [images]
        arrays = []
        for image in images:
            if isinstance(image, (str, Path, Image.Image)):  # through the decoding gate
                arrays.append(load_image(image, self.image_size, self.max_image_pixels))
            else:
                array = np.asarray(image)
                if array.ndim != 3 or array.shape[2] not in (3, 4) or array.dtype != np.uint8:
                    raise SmaltoError(f"expected an image as uint8 [H, W, 3], got {array.dtype} {array.shape}")
                arrays.append(convert_image(Image.fromarray(array), self.image_size))
        return np.stack(arrays)

    def image_codes(self, images) -> torch.Tensor:
        """Paths / PIL images / uint8 arrays -> image codes [B, h, w]."""
        return self.tokenizers.image.encode(self.pictures(images))

    def reading(self, ids: list[int], pictures: list[np.ndarray]) -> list[int]:
        """A prompt written with its pictures' codes, as this model reads it: unchanged for the
        tokens design; for one that sees pixels (smalto.model.fusion), rewritten and carrying the
        pictures' pixels, in order (an `inference.Prompt`)."""
        if self.model.cfg.fusion == "tokens":
            return ids
        return Prompt(fuse_ids(self.vocab, ids, self.model.cfg.fusion)[0], pictures)

    def read_prompts(self, images: list, make) -> list[list[int]]:
        """A prompt per image: make(codes, i) writes it with the image's codes."""
        pictures = self.pictures(images)
        codes = self.tokenizers.image.encode(pictures)
        return [self.reading(make(c, i), [p]) for i, (c, p) in enumerate(zip(codes, pictures))]

    # --- clips

    @property
    def reads_clips(self) -> bool:
        """Trained on clips: they are in its vocabulary, and it learned them."""
        return self.clips and "video" in self.vocab.modalities and self.tokenizers.video is not None

    @property
    def clip_frames(self) -> int:
        """How many frames this model's clips hold (its video tokenizer's)."""
        self.need_clips()
        return self.tokenizers.video.cfg.frames

    def need_clips(self) -> None:
        if not self.reads_clips:
            why = f" (a {self.model.cfg.fusion} model reads pictures only)" if self.model.cfg.fusion != "tokens" else ""
            raise SmaltoError(f"{self.name} was not trained on clips{why}")

    def check_clips(self, clips: list) -> list[np.ndarray]:
        """Clips (GIF/WebP paths or bytes, frame folders, uint8 arrays [T, H, W, 3]) as frames at the
        model's size, or a SmaltoError saying why this model cannot read them."""
        self.need_clips()
        arrays = []
        for clip in clips:
            frames = as_clip(clip, self.image_size, self.max_image_pixels)
            if len(frames) != self.clip_frames:
                raise SmaltoError(f"this model reads clips of {self.clip_frames} frames, got {len(frames)}")
            arrays.append(frames)
        return arrays

    def clip_codes(self, clips) -> torch.Tensor:
        """Clips (one, or a list) -> codes [B, F, h, w]."""
        if isinstance(clips, (str, Path, bytes)) or (isinstance(clips, np.ndarray) and clips.ndim == 4):
            clips = [clips]
        frames = np.stack(self.check_clips(clips))  # first: it says why a model cannot read clips
        return self.tokenizers.video.encode(frames)

    # --- sounds

    @property
    def hears(self) -> bool:
        """Trained on sounds: they are in its vocabulary, and it learned them."""
        return self.sounds and self.vocab.sound is not None and self.tokenizers.audio is not None

    @property
    def sample_rate(self) -> int:
        self.need_sounds()
        return self.tokenizers.audio.cfg.sample_rate

    @property
    def sound_seconds(self) -> float:
        """How long a sound this model hears or makes is (shorter ones are heard padded with silence)."""
        self.need_sounds()
        return self.vocab.sound[0] * self.tokenizers.audio.cfg.hop / self.sample_rate

    def need_sounds(self) -> None:
        if not self.hears:
            why = f" (a {self.model.cfg.fusion} model reads pictures only)" if self.model.cfg.fusion != "tokens" else ""
            raise SmaltoError(f"{self.name} was not trained on sounds{why}")

    def sound_waves(self, sounds: list, lengths: bool = False) -> np.ndarray | tuple[np.ndarray, list[int]]:
        """Sounds (WAV/FLAC/OGG paths or bytes, float waves at the codec's rate) -> float32 [B, samples]
        of this model's length, each padded with silence; one longer is refused, naming it.
        lengths: also each sound's own length in samples, before the padding."""
        self.need_sounds()
        length, out, own = round(self.sound_seconds * self.sample_rate), [], []
        for k, sound in enumerate(sounds):
            name = str(sound) if isinstance(sound, (str, Path)) else f"sound {k + 1}"
            if isinstance(sound, np.ndarray):
                wave = sound.astype(np.float32)
                if not np.isfinite(wave).all():
                    raise SmaltoError(f"{name}: holds samples that are not finite numbers")
                wave = np.clip(wave, -1, 1)
            else:
                wave = read_sound(sound, name, self.sample_rate)
            if len(wave) > length:
                raise SmaltoError(f"{name}: {len(wave) / self.sample_rate:.2f} s long; this model hears sounds of "
                                  f"up to {self.sound_seconds:.2f} s")
            out.append(np.pad(wave, (0, length - len(wave))))
            own.append(len(wave))
        return (np.stack(out), own) if lengths else np.stack(out)

    # --- the registry

    @property
    def codecs(self) -> dict[str, Codec]:
        """The modalities this model reads, by name (`smalto.pipeline.modalities`)."""
        return codecs(self)

    def codec_for(self, item) -> Codec:
        """The codec that reads `item` (a SmaltoError for a clip or a sound given to a model without them)."""
        if is_sound(item):
            self.need_sounds()
        elif is_clip(item):
            self.need_clips()
        return next(c for c in self.codecs.values() if c.claims(item))

    def codec_of(self, items: list) -> Codec:
        """The one codec of a batch of items."""
        found = {self.codec_for(item).name for item in items}
        if len(found) > 1:
            raise SmaltoError(f"a batch holds one kind of item, not {' and '.join(sorted(found))} together")
        return self.codecs[found.pop() if found else "image"]

    # --- text and prompts

    def text_ids(self, text: str, what: str = "prompt", beside: str = "image") -> list[int]:
        """A text's ids, if it leaves room for an item (`beside`: "image" or "video") in the context."""
        if not isinstance(text, str):
            raise SmaltoError(f"{what} must be a string, got {type(text).__name__}")
        ids = self.tokenizers.text.encode(text.strip())
        room = self.context - self.vocab.modalities[beside].tokens - 8
        if len(ids) > room:
            raise ContextLengthError(f"{what} is {len(ids)} tokens long; this model's context leaves room for {room}")
        return ids

    def caption_prompts(self, items: list) -> list[list[int]]:
        """A caption prompt per item (pictures or clips, one modality per batch)."""
        codec = self.codec_of(items)
        if codec.name == "image":  # (read with its pixels kept, for a model that sees them)
            return self.read_prompts(items, lambda codes, _: caption_prompt(self.vocab, codes))
        return [caption_prompt(self.vocab, codes, codec.name) for codes in codec.encode(codec.read(items))]

    def answer_prompts(self, items: list, questions: list[str]) -> list[list[int]]:
        """A prompt per item asking its question."""
        if len(items) != len(questions):
            raise ValueError(f"{len(items)} images for {len(questions)} questions")
        codec = self.codec_of(items)
        asked = [self.text_ids(q, "question", codec.name) for q in questions]
        if not all(asked):
            raise SmaltoError("the question is empty")
        if codec.name == "image":
            return self.read_prompts(items, lambda codes, i: answer_prompt(self.vocab, codes, asked[i]))
        return [answer_prompt(self.vocab, codes, q, codec.name)
                for codes, q in zip(codec.encode(codec.read(items)), asked)]

    # --- conversations

    def check_messages(self, messages: list[Message]) -> list[Message]:
        """A conversation the model can take, or a SmaltoError saying why not."""
        for m in messages:
            if m.images and m.role != "user":
                raise SmaltoError(f"images are only accepted in user messages, not in a {m.role} message")
        if not any(m.role in ("user", "assistant") for m in messages):
            raise SmaltoError("the conversation has no user or assistant message")
        return messages

    def chat_prompt(self, messages: list[Message]) -> list[int]:
        """The prompt for the assistant's next reply (system messages are left out)."""
        turns, pictures = [], []
        for m in self.check_messages(messages):
            if m.role in ("user", "assistant"):
                ids = []
                for item in m.images:  # pictures, clips (arrays [T, H, W, 3], animations, frame folders), sounds
                    codec = self.codec_for(item)
                    if codec.name == "image":  # (its pixels kept for a model that reads them)
                        pictures.append(self.pictures([item])[0])
                        ids = ids + self.vocab.image_ids(self.image_codes(pictures[-1:])[0])
                    else:  # (`+` keeps the codes a delayed sound's tokens carry)
                        ids = ids + codec.item_ids([item])[0]
                turns.append((m.role, ids + self.text_ids(m.text, f"a {m.role} message")))
        prompt = self.reading(chat_prompt(self.vocab, turns), pictures)
        self.check_context(len(prompt), "the conversation")
        return prompt

    def prompt_length(self, messages: list[Message]) -> int:
        """The length of the prompt `chat_prompt(messages)` will make, checked the same way, with
        decoded pictures and clips (arrays) but without encoding them: a server checks it off the
        model's thread, where torch runs."""
        self.check_messages(messages)
        items = [item if is_sound(item) else np.asarray(item) for m in messages for item in m.images]
        if clips := [item for item in items if not is_sound(item) and item.ndim == 4]:
            self.check_clips(clips)
        if sounds := [item for item in items if is_sound(item)]:
            self.sound_waves(sounds)
        text = self.chat_prompt([Message(m.role, m.text) for m in messages])
        tokens = sum(self.codec_for(item).tokens for item in items)
        return self.check_context(len(text) + tokens, "the conversation")

    def check_context(self, length: int, what: str) -> int:
        """A prompt's length, if it leaves room for a reply."""
        if length >= self.context:
            raise ContextLengthError(f"{what} is {length} tokens long; this model's context holds "
                                     f"{self.context} (start a new conversation)")
        return length
