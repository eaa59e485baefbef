"""The model as a user meets it: `smalto.load()` returns a Pipeline that reads and draws.

    pipe = smalto.load()                       # the shipped default, or load("runs/x")
    images = pipe.generate_image("a small red circle at the top left", n=4, seed=0)
    pipe.caption("scene.png")                  # -> "a small red circle at the top left"
    pipe.ask("scene.png", "how many circles are there?")   # -> "1"
    pipe.chat([Message("user", "what colour is the circle?", images=["scene.png"])])

Images may be paths, PIL images or uint8 arrays [H, W, 3]; any size or mode is converted like
bring-your-own data (RGB, centre-crop, resize to the model's size). A file or PIL image over
`max_image_pixels` (default 4096×4096) is refused before it is decoded.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image

from smalto import options, precision
from smalto.checkpoint import load_checkpoint
from smalto.data.images import MAX_PIXELS, check_size, convert_image, load_image
from smalto.inference.detok import Detokenizer, detokenize
from smalto.inference import Engine, Sampling
from smalto.errors import ContextLengthError, SmaltoError
from smalto.model import Transformer
from smalto.format import DRAWING, Vocab, answer_prompt, caption_prompt, chat_prompt, draw_prompt
from smalto.tokenizers import Tokenizers

DEFAULT_MODEL = Path(__file__).resolve().parent / "assets" / "model"
DEFAULT_NAME = "smalto-shapes-tiny"
MAX_ANSWER_TOKENS = 48
# A chat reply's default length limit: past the longest reply seen in training (a 4-object caption).
MAX_REPLY_TOKENS = 64
# Drawing settings when a call gives none; a checkpoint's meta.json may override them ("draw")
# with what its guidance/temperature sweep found best.
DRAW_DEFAULTS = {"guidance": 3.0, "temperature": 1.0, "top_k": 0, "top_p": 1.0}


# The model knows two roles, user and assistant (see `format.chat_prompt`); it was never taught a
# system prompt, so system messages are accepted and left out of the prompt.
ROLES = ("system", "developer", "user", "assistant")


@dataclass
class Message:
    role: str  # one of ROLES
    text: str = ""
    images: list = field(default_factory=list)  # paths, PIL images or uint8 arrays (user turns only)

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, got {self.role!r}")


@dataclass
class Pipeline:
    model: Transformer
    vocab: Vocab
    tokenizers: Tokenizers
    path: Path | None = None
    draw_defaults: dict = field(default_factory=lambda: dict(DRAW_DEFAULTS))
    max_image_pixels: int | None = MAX_PIXELS  # larger image files are refused before decoding

    def __post_init__(self) -> None:
        self.engine = Engine(self.model, self.vocab)

    def draw_sampling(self, seed: int | None = 0, **overrides) -> Sampling:
        """The settings for drawing: the model's defaults (guidance, temperature, top_k, top_p),
        with any non-None override."""
        return Sampling(seed=seed, **{**self.draw_defaults, **{k: v for k, v in overrides.items() if v is not None}})

    @property
    def name(self) -> str:
        """What clients call the model: the run directory's name ("smalto-shapes-tiny" for the shipped one)."""
        if self.path is None:
            return "smalto"
        return DEFAULT_NAME if self.path.resolve() == DEFAULT_MODEL else self.path.resolve().name

    @property
    def image_size(self) -> int:
        return self.tokenizers.image.cfg.image_size

    # --- inputs

    def image_codes(self, images) -> torch.Tensor:
        """Paths / PIL images / uint8 arrays -> image codes [B, h, w]."""
        if isinstance(images, (str, Path, Image.Image)) or (isinstance(images, np.ndarray) and images.ndim == 3):
            images = [images]
        arrays = []
        for image in images:
            if isinstance(image, (str, Path)):
                arrays.append(load_image(image, self.image_size, self.max_image_pixels))
            elif isinstance(image, Image.Image):  # perhaps not decoded yet (Image.open is lazy)
                check_size(image, self.max_image_pixels, "image")
                arrays.append(convert_image(image, self.image_size))
            else:
                array = np.asarray(image)
                if array.ndim != 3 or array.shape[2] not in (3, 4) or array.dtype != np.uint8:
                    raise SmaltoError(f"expected an image as uint8 [H, W, 3], got {array.dtype} {array.shape}")
                arrays.append(convert_image(Image.fromarray(array), self.image_size))
        return self.tokenizers.image.encode(np.stack(arrays))

    def text_ids(self, text: str, what: str = "prompt") -> list[int]:
        if not isinstance(text, str):
            raise SmaltoError(f"{what} must be a string, got {type(text).__name__}")
        ids = self.tokenizers.text.encode(text.strip())
        room = self.model.cfg.max_seq_len - self.vocab.image_tokens - 8
        if len(ids) > room:
            raise ContextLengthError(f"{what} is {len(ids)} tokens long; this model's context leaves room for {room}")
        return ids

    # --- reading

    def caption(self, image, beams: int = 1) -> str:
        """Describe an image (greedy, or beam search with beams > 1)."""
        return self.caption_batch([image], beams)[0]

    def ask(self, image, question: str, beams: int = 1) -> str:
        """Answer a question about an image."""
        return self.ask_batch([image], [question], beams)[0]

    def caption_batch(self, images: list, beams: int = 1) -> list[str]:
        return self._reply([caption_prompt(self.vocab, c) for c in self.image_codes(images)], beams)

    def ask_batch(self, images: list, questions: list[str], beams: int = 1) -> list[str]:
        prompts = []
        for codes, question in zip(self.image_codes(images), questions, strict=True):
            q = self.text_ids(question, "question")
            if not q:
                raise SmaltoError("the question is empty")
            prompts.append(answer_prompt(self.vocab, codes, q))
        return self._reply(prompts, beams)

    def _reply(self, prompts: list[list[int]], beams: int) -> list[str]:
        """Greedy (or beam-searched) text continuations of the prompts."""
        options.check("beams", beams)
        room = self.model.cfg.max_seq_len - max(len(p) for p in prompts)
        limit = min(MAX_ANSWER_TOKENS, room)
        if beams > 1:
            outs = [self.engine.beam_search(p, beams, limit) for p in prompts]
        else:
            outs = [g.tokens for g in self.engine.generate(prompts, limit)]
        return [detokenize(self.tokenizers.text, o, self.vocab.eos) for o in outs]

    # --- chat

    def chat_prompt(self, messages: list[Message]) -> list[int]:
        """The prompt for the assistant's next reply (system messages are left out)."""
        turns = []
        for m in self.check_messages(messages):
            if m.role in ("user", "assistant"):
                images = [i for codes in self.image_codes(m.images) for i in self.vocab.image_ids(codes)] \
                    if m.images else []
                turns.append((m.role, images + self.text_ids(m.text, f"a {m.role} message")))
        prompt = chat_prompt(self.vocab, turns)
        self.check_context(len(prompt), "the conversation")
        return prompt

    def check_messages(self, messages: list[Message]) -> list[Message]:
        """A conversation the model can take, or a SmaltoError saying why not."""
        for m in messages:
            if m.images and m.role != "user":
                raise SmaltoError(f"images are only accepted in user messages, not in a {m.role} message")
        if not any(m.role in ("user", "assistant") for m in messages):
            raise SmaltoError("the conversation has no user or assistant message")
        return messages

    def check_context(self, length: int, what: str) -> int:
        """A prompt's length, if it leaves room for a reply."""
        if length >= self.model.cfg.max_seq_len:
            raise ContextLengthError(f"{what} is {length} tokens long; this model's context holds "
                                     f"{self.model.cfg.max_seq_len} (start a new conversation)")
        return length

    def chat_stream(self, messages: list[Message], max_tokens: int | None = None,
                    sampling: Sampling = Sampling(), stop: tuple[str, ...] = ()) -> Iterator[str]:
        """The assistant's reply, piece by piece as it is decoded (greedy unless `sampling` says)."""
        prompt = self.chat_prompt(messages)
        limit = self.reply_budget(len(prompt), max_tokens)
        reply = Detokenizer(self.tokenizers.text, stop, self.vocab.eos, limit)
        for step in self.engine.steps([prompt], limit, sampling):
            if piece := reply.push(int(step.tokens[0])):
                yield piece
            if reply.finish_reason:
                return

    def reply_budget(self, prompt_length: int, max_tokens: int | None = None) -> int:
        """How many tokens a reply to a prompt may take: max_tokens (or MAX_REPLY_TOKENS), within the context."""
        room = self.model.cfg.max_seq_len - prompt_length
        return min(max_tokens or MAX_REPLY_TOKENS, room)

    def chat(self, messages: list[Message], max_tokens: int | None = None, sampling: Sampling = Sampling(),
             stop: tuple[str, ...] = ()) -> str:
        return "".join(self.chat_stream(messages, max_tokens, sampling, stop))

    # --- drawing

    def generate_image(self, prompt: str, n: int = 1, guidance: float | None = None, seed: int | None = 0,
                       temperature: float | None = None, top_k: int | None = None, top_p: float | None = None
                       ) -> list[np.ndarray]:
        """Draw n images for a prompt, with classifier-free guidance of the given scale
        (1 = conditional only, 0 = unconditional); None takes the model's default (see
        `draw_defaults`). Returns uint8 arrays [H, W, 3]."""
        if not isinstance(prompt, str) or not prompt.strip():
            raise SmaltoError("the prompt is empty (say what to draw, e.g. 'a small red circle at the center')")
        if not 1 <= n <= 64:
            raise SmaltoError(f"n must be between 1 and 64, got {n}")
        return self.draw([prompt] * n, self.draw_sampling(seed, guidance=guidance, temperature=temperature,
                                                          top_k=top_k, top_p=top_p))

    def draw(self, prompts: list[str | list[int]], sampling: Sampling | None = None) -> list[np.ndarray]:
        """One image per prompt (text, or its token ids), all decoded in one batch (sampling: the
        model's defaults with seed 0 when None)."""
        sampling = sampling or self.draw_sampling(0)
        v = self.vocab
        cond = [draw_prompt(v, self.text_ids(p) if isinstance(p, str) else p) for p in prompts]
        uncond = [draw_prompt(v, []) for _ in prompts]
        if sampling.guidance in (0.0, 1.0):  # one stream alone: no need to decode the other
            cond = uncond if sampling.guidance == 0.0 else cond
            sampling, uncond = replace(sampling, guidance=None), None
        rows = self.engine.generate(cond, v.image_tokens + 1, sampling, DRAWING, unconditional=uncond)
        codes = v.codes(torch.tensor([r.tokens[:v.image_tokens] for r in rows])).view(-1, *v.image.grid)
        return list(self.tokenizers.image.decode(codes))


def _draw_defaults(path: Path, meta: dict) -> dict:
    """The drawing defaults a checkpoint's meta.json stores, checked like a caller's arguments."""
    draw = meta.get("draw", {})
    if not isinstance(draw, dict) or not set(draw) <= set(DRAW_DEFAULTS):
        raise SmaltoError(f"{path / 'meta.json'}: 'draw' must map {', '.join(DRAW_DEFAULTS)} to numbers")
    try:
        return {name: options.check(name, value) for name, value in draw.items()}
    except SmaltoError as e:
        raise SmaltoError(f"{path / 'meta.json'}: draw.{e}") from None


def load(path: str | Path | None = None, dtype: str | torch.dtype = "auto", compile: bool = False) -> Pipeline:
    """A trained model directory (`smalto train --out`), or the shipped default when None.

    dtype: "auto" runs the decoder in bfloat16 where the hardware has it natively (several times
    faster matmuls, same ShapesEval within noise), else float32; or "fp32" / "bf16".
    compile: compile the decoding step (`Engine.compile`) now, which takes about
    20 s on 2 cores, for faster decoding afterwards."""
    path = Path(path) if path is not None else DEFAULT_MODEL
    model, vocab, tokenizers, meta = load_checkpoint(path)
    model.to(precision.resolve(dtype))
    pipe = Pipeline(model, vocab, tokenizers, path, {**DRAW_DEFAULTS, **_draw_defaults(path, meta)})
    if compile:
        pipe.engine.compile()
        pipe.engine.warm_up()
    return pipe
