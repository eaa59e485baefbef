"""The model as a user meets it: `smalto.load()` returns a Pipeline that reads and draws.

    pipe = smalto.load()                       # the shipped default, or load("runs/x")
    images = pipe.generate_image("a small red circle at the top left", n=4, seed=0)
    pipe.caption("scene.png")                  # -> "a small red circle at the top left"
    pipe.ask("scene.png", "how many circles are there?")   # -> "1"
    pipe.ask("scene.png", "what color is the square?", effort="medium")   # thinks first
    pipe.chat([Message("user", "what colour is the circle?", images=["scene.png"])])

A model trained on clips (a video tokenizer beside the image one) reads and draws them with the
same calls (each modality is a registered codec, `smalto.pipeline.modalities`):

    clips = pipe.generate("a small red circle moves right slowly from the top left", modality="video")
    waves = pipe.generate("a large blue square at the center", modality="audio")   # a model trained on sounds
    pipe.caption("clip.gif")                   # clips: GIF/WebP files, frame folders, uint8 [T, H, W, 3]
    pipe.ask("clip.gif", "which way does the red circle move?")
    pipe.continue_clip("clip.gif", given=1)    # the rest of a clip from its first latent frame
    pipe.caption("two-objects.wav")            # sounds: WAV/FLAC/OGG files, float waves at pipe.sample_rate
    pipe.sound_of("scene.png"), pipe.picture_of("two-objects.wav")   # one modality as the other

`effort` ("none", "low", "medium", "high"; see `smalto.effort`) spends more compute for
better answers and drawings: thinking, votes, solver-planned prompts and best-of-N drawings
checked by the verifier.

Images may be paths, PIL images or uint8 arrays [H, W, 3]; any size or mode is converted like
bring-your-own data (RGB, centre-crop, resize to the model's size). A file or PIL image over
`max_image_pixels` (default 4096×4096) is refused before it is decoded.

The pipeline is three parts and this facade: `items` (what goes in: messages, pictures, clips,
prompts, context checks), `answers` (text out, with test-time compute: think, vote, check) and
`drawing` (pictures and clips out, planned and verified).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from smalto import options, precision
from smalto.assets import DEFAULT_MODEL
from smalto.checkpoint import load_checkpoint
from smalto.data.gate import MAX_PIXELS
from smalto.data.shapes import ShapesConfig, world_config
from smalto.data.tasks import capabilities
from smalto.errors import SmaltoError
from smalto.format import Allowed, Vocab
from smalto.inference import Detokenizer, Engine, Sampling
from smalto.inference.detok import detokenize
from smalto.model import Transformer
from smalto.pipeline.drawing import MAX_DRAWN, Drawer
from smalto.effort import THINKING_BUDGET, Drawing, Reply, effort_level
from smalto.pipeline.answers import Answers, drain
from smalto.pipeline.items import ROLES, Inputs, Message
from smalto.tokenizers import Tokenizers

__all__ = ["DEFAULT_MODEL", "DEFAULT_NAME", "DRAW_DEFAULTS", "MAX_DRAWN", "ROLES", "Drawing", "Message", "Pipeline",
           "Reply", "load"]

DEFAULT_NAME = "smalto-shapes-tiny"
# A chat reply's default length limit: past the longest reply seen in training (a 4-object caption).
MAX_REPLY_TOKENS = 64
# Drawing settings when a call gives none; a checkpoint's meta.json may override them ("draw")
# with what its guidance/temperature sweep found best.
DRAW_DEFAULTS = {"guidance": 3.0, "temperature": 1.0, "top_k": 0, "top_p": 1.0}


@dataclass
class Pipeline(Inputs, Answers, Drawer):
    model: Transformer
    vocab: Vocab
    tokenizers: Tokenizers
    path: Path | None = None
    draw_defaults: dict = field(default_factory=lambda: dict(DRAW_DEFAULTS))
    max_image_pixels: int | None = MAX_PIXELS  # larger image files are refused before decoding
    # The ShapesWorld it was trained on: prompts and questions in its phrasing can be parsed, planned
    # and checked by program (None: a folder's model; best-of-N ranks drawings by the model's own
    # log p(prompt | image)).
    world: ShapesConfig | None = field(default_factory=ShapesConfig)
    thinks: bool = False  # trained to think (`<think>` traces); else thinking efforts only vote
    clips: bool = False  # trained on clips (its tokenizers may hold a video tokenizer it never learned)
    sounds: bool = False  # trained on sounds (likewise an audio codec)
    # The training streams behind the weights (`training.data.stream_record`), so an evaluation can
    # tell the scenes it saw from those it did not; None: never recorded.
    streams: list[dict] | None = None

    def __post_init__(self) -> None:
        self.engine = Engine(self.model, self.vocab)

    @property
    def name(self) -> str:
        """What clients call the model: the run directory's name ("smalto-shapes-tiny" for the shipped one)."""
        if self.path is None:
            return "smalto"
        return DEFAULT_NAME if self.path.resolve() == DEFAULT_MODEL else self.path.resolve().name

    # --- reading

    def caption(self, item, beams: int = 1, effort: str | None = None, best_of: int | None = None) -> str:
        """Describe a picture or a clip (greedy, or beam search with beams > 1; with effort "high" or
        best_of, the most frequent of several sampled captions)."""
        return self.caption_batch([item], beams, effort, best_of)[0]

    def ask(self, item, question: str, beams: int = 1, effort: str | None = None, best_of: int | None = None,
            thinking_budget: int | None = None) -> str:
        """Answer a question about a picture or a clip; see `reply_batch` for effort, best_of and thinking."""
        return self.ask_batch([item], [question], beams, effort, best_of, thinking_budget)[0]

    def caption_batch(self, items: list, beams: int = 1, effort: str | None = None,
                      best_of: int | None = None) -> list[str]:
        options.check("beams", beams)
        prompts = self.caption_prompts(items)
        if beams > 1:
            return self.beams(prompts, beams)
        votes = options.check("best_of", best_of) or effort_level(effort).votes
        return [self.vote(candidates).text for candidates in self.decode(prompts, votes, 0, votes > 1)]

    def ask_batch(self, items: list, questions: list[str], beams: int = 1, effort: str | None = None,
                  best_of: int | None = None, thinking_budget: int | None = None) -> list[str]:
        if options.check("beams", beams) > 1:
            return self.beams(self.answer_prompts(items, questions), beams)
        return [r.text for r in self.reply_batch(items, questions, effort, best_of, thinking_budget)]

    def reply_batch(self, items: list, questions: list[str], effort: str | None = None, best_of: int | None = None,
                    thinking_budget: int | None = None, seed: int = 0) -> list[Reply]:
        """Answers with what they cost. effort (see `smalto.effort`): "none" answers greedily
        at once; "low" thinks only when the instant answer is unsure (its least likely token below
        `effort.SURE`); "medium" and "high" always think. best_of > 1 votes over that many sampled
        answers or thoughts (self-consistency). After thinking, the solver reads the model's own
        description of the scene and computes the answer from it (`Reply.check`). A model not
        trained to think only votes, and clips are answered without thinking (no trace was trained
        on them)."""
        level, votes, budget = self._effort(effort, best_of, thinking_budget)
        prompts = self.answer_prompts(items, questions)
        if self.codec_of(items).name != "image":
            level = effort_level("none")
        return drain(self.answers(prompts, questions, level, votes, budget, seed))

    # --- chat

    def reply_budget(self, prompt_length: int, max_tokens: int | None = None) -> int:
        """How many tokens a reply to a prompt may take: max_tokens (or MAX_REPLY_TOKENS), within the context."""
        room = self.context - prompt_length
        return min(max_tokens or MAX_REPLY_TOKENS, room)

    def chat(self, messages: list[Message], max_tokens: int | None = None, sampling: Sampling = Sampling(),
             stop: tuple[str, ...] = (), effort: str | None = None, best_of: int | None = None) -> str:
        if effort in (None, "none") and best_of is None:
            return "".join(self.chat_stream(messages, max_tokens, sampling, stop))
        return next(e for kind, e in self.chat_events(messages, max_tokens, effort, best_of) if kind == "reply").text

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

    def chat_events(self, messages: list[Message], max_tokens: int | None = None, effort: str | None = None,
                    best_of: int | None = None, thinking_budget: int | None = None, seed: int = 0
                    ) -> Iterator[tuple[str, object]]:
        """The assistant's reply with test-time compute (see `reply_batch`): ("reasoning", text)
        pieces while it thinks (a single trace streams as it is decoded; voted traces come whole),
        then ("content", answer), then ("reply", the Reply with its token counts). The solver
        checks the answer against the model's description using the last user message as the
        question."""
        level, votes, budget = self._effort(effort, best_of, thinking_budget)
        prompt = self.chat_prompt(messages)
        question = next((m.text for m in reversed(messages) if m.role == "user"), "")
        answer_tokens = self.reply_budget(len(prompt), max_tokens)
        reply, = yield from self.answers([prompt], [question], level, votes, budget, seed, answer_tokens, stream=True)
        yield "content", reply.text
        yield "reply", reply

    def chat_replies(self, prompts: list[list[int]]) -> list[str]:
        """Greedy replies to chat prompts (`chat_prompt`'s), decoded in one batch, each within its budget."""
        rows = self.engine.generate(prompts, self.reply_budget(max(map(len, prompts))), allowed=Allowed())
        return [detokenize(self.tokenizers.text, row.tokens, self.vocab.eos) for row in rows]

    def reply_steps(self, prompts: list[list[int]], limits: list[int], sampling: Sampling):
        """Chat prompts decoded together, one `inference.Step` (a token per row) at a time: what a
        server batching several conversations streams from."""
        return self.engine.steps(prompts, limits, sampling)

    def _effort(self, effort: str | None, best_of: int | None, thinking_budget: int | None):
        level = effort_level(effort)
        votes = options.check("best_of", best_of) or level.votes
        return level, votes, options.check("thinking_budget", thinking_budget) or THINKING_BUDGET

    # --- drawing

    def generate(self, prompt: str, n: int = 1, modality: str = "image", guidance: float | None = None,
                 seed: int | None = 0, temperature: float | None = None, top_k: int | None = None,
                 top_p: float | None = None, effort: str | None = None, best_of: int | None = None
                 ) -> list[np.ndarray]:
        """Draw n pictures (uint8 [H, W, 3]), clips (modality="video": [T, H, W, 3]) or sounds
        (modality="audio": float32 waves at `sample_rate`) for a prompt, with classifier-free
        guidance of the given scale (1 = conditional only, 0 = unconditional); None takes the
        model's default (see `draw_defaults`). effort / best_of: see `drawings` (pictures and
        sounds; clips are drawn without them)."""
        sampling = dict(guidance=guidance, temperature=temperature, top_k=top_k, top_p=top_p)
        if modality == "image" or modality == "audio" and modality in self.codecs:
            return [d.image for d in self.drawings(prompt, n, effort, best_of, seed, modality, **sampling)]
        if modality not in self.codecs:
            if modality == "video":
                self.need_clips()  # (it says why)
            if modality == "audio":
                self.need_sounds()
            raise SmaltoError(f"{self.name} draws {' and '.join(self.codecs)}, not {modality!r}")
        if effort not in (None, "none") or best_of is not None:
            raise SmaltoError(f"{modality} items are drawn without test-time effort")
        self.check_drawing_request(prompt, n)
        return self.draw([prompt] * n, self.draw_sampling(seed, **sampling), modality)

    def generate_image(self, prompt: str, n: int = 1, guidance: float | None = None, seed: int | None = 0,
                       temperature: float | None = None, top_k: int | None = None, top_p: float | None = None,
                       effort: str | None = None, best_of: int | None = None) -> list[np.ndarray]:
        """`generate(prompt, n, modality="image", ...)`."""
        return self.generate(prompt, n, "image", guidance, seed, temperature, top_k, top_p, effort, best_of)

    def sound_of(self, picture, n: int = 1, seed: int | None = 0, **sampling) -> list[np.ndarray]:
        """n sounds (float32 waves at `sample_rate`) of what a picture shows ("what does this scene
        sound like?"); sampling: guidance, temperature, top_k, top_p (the drawing defaults)."""
        return self.convert([picture] * n, "audio", seed, **sampling)

    def picture_of(self, sound, n: int = 1, seed: int | None = 0, **sampling) -> list[np.ndarray]:
        """n pictures (uint8 [H, W, 3]) of what a sound holds ("draw what you hear")."""
        return self.convert([sound] * n, "image", seed, **sampling)

    def continue_clip(self, clip, given: int = 1, n: int = 1, seed: int | None = 0,
                      temperature: float = 0.0) -> list[np.ndarray]:
        """The rest of a clip after its first `given` latent frames (given=1: the first frame;
        each later latent frame holds 4 frames), n times (greedy when temperature is 0: the
        world's physics is deterministic). The returned clips start with the given frames."""
        return self.continue_clips([clip] * n, given, seed, temperature)

    def continue_sound(self, sound, given: float | None = None, n: int = 1, seed: int | None = 0,
                       temperature: float = 0.0) -> list[np.ndarray]:
        """A sound carried on from its first `given` seconds (None: all of it) to `sound_seconds`,
        n times (greedy when temperature is 0: a melody's start decides the rest); see
        `continue_sounds` for how the start is kept (flat) or remade (the cells layout)."""
        return self.continue_sounds([sound] * n, given, seed, temperature)


def _draw_defaults(path: Path, meta: dict) -> dict:
    """The drawing defaults a checkpoint's meta.json stores, checked like a caller's arguments."""
    draw = meta.get("draw", {})
    if not isinstance(draw, dict) or not set(draw) <= set(DRAW_DEFAULTS):
        raise SmaltoError(f"{path / 'meta.json'}: 'draw' must map {', '.join(DRAW_DEFAULTS)} to numbers")
    try:
        return {name: options.check(name, value) for name, value in draw.items()}
    except SmaltoError as e:
        raise SmaltoError(f"{path / 'meta.json'}: draw.{e}") from None


def _capabilities(path: Path, trained: dict, train: dict) -> dict:
    """What the checkpoint records the model can do; for one saved before it recorded that, what
    its training mix taught (`data.tasks.capabilities`)."""
    can = trained.get("capabilities")
    if can is None:
        return capabilities(train.get("mix") if isinstance(train.get("mix"), dict) else {})
    if not (isinstance(can, dict) and isinstance(can.get("reads"), list) and isinstance(can.get("draws"), list)
            and isinstance(can.get("thinks"), bool)):
        raise SmaltoError(f"{path / 'meta.json'}: 'capabilities' must be {{\"reads\": [...], \"draws\": [...], "
                          f"\"thinks\": true|false}}")
    return can


def load(path: str | Path | None = None, dtype: str | torch.dtype = "auto", compile: bool = False,
         adapter: str | Path | None = None) -> Pipeline:
    """A trained model directory (`smalto train --out`), or the shipped default when None.

    adapter: a LoRA or prompt-tuning directory (`smalto finetune --method lora|prompt --out`)
    trained on this model, applied on top of it (another base is an error).
    dtype: "auto" runs the decoder in bfloat16 where the hardware has it natively (several times
    faster matmuls, same ShapesEval within noise), else float32; or "fp32" / "bf16".
    compile: compile the decoding step (`Engine.compile`) now, which takes about
    20 s on 2 cores, for faster decoding afterwards."""
    path = Path(path) if path is not None else DEFAULT_MODEL
    model, vocab, tokenizers, meta = load_checkpoint(path)
    trained = meta
    if adapter is not None:
        from smalto.adapters import load_adapter

        trained = load_adapter(model, vocab, adapter)  # what it was trained on is what it knows now
    model.to(precision.resolve(dtype))
    train = trained.get("train") if isinstance(trained.get("train"), dict) else {}
    data = train.get("data", "shapes")
    can = _capabilities(path, trained, train)
    pipe = Pipeline(model, vocab, tokenizers, path, {**DRAW_DEFAULTS, **_draw_defaults(path, meta)},
                    world=world_config(data, tokenizers.image.cfg.image_size) if isinstance(data, str) else None,
                    thinks=can["thinks"], clips="video" in can["reads"], sounds="audio" in can["reads"],
                    streams=trained.get("streams"))
    if compile:
        pipe.engine.compile()
        pipe.engine.warm_up()
    return pipe
