"""The model as a user meets it: `smalto.load()` returns a Pipeline that reads and draws.

    pipe = smalto.load()                       # the shipped default, or load("runs/x")
    images = pipe.generate_image("a small red circle at the top left", n=4, seed=0)
    pipe.caption("scene.png")                  # -> "a small red circle at the top left"
    pipe.ask("scene.png", "how many circles are there?")   # -> "1"
    pipe.ask("scene.png", "what color is the square?", effort="medium")   # thinks first
    pipe.chat([Message("user", "what colour is the circle?", images=["scene.png"])])

A model trained on clips (a video tokenizer beside the image one) reads and draws them too:

    clips = pipe.generate_clip("a small red circle moves right slowly from the top left")
    pipe.caption_clip("clip.gif")              # clips: GIF/WebP files, frame folders, uint8 [T, H, W, 3]
    pipe.ask_clip("clip.gif", "which way does the red circle move?")
    pipe.continue_clip("clip.gif", given=1)    # the rest of a clip from its first latent frame

`effort` ("none", "low", "medium", "high"; see `smalto.effort`) spends more compute for better
answers and drawings: thinking, votes, solver-planned prompts and best-of-N drawings checked by
the verifier.

Images may be paths, PIL images or uint8 arrays [H, W, 3]; any size or mode is converted like
bring-your-own data (RGB, centre-crop, resize to the model's size). A file or PIL image over
`max_image_pixels` (default 4096×4096) is refused before it is decoded.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image

from smalto import options, precision
from smalto.checkpoint import load_checkpoint
from smalto.assets import DEFAULT_MODEL
from smalto.data.gate import MAX_PIXELS
from smalto.data.images import convert_image, load_image
from smalto.data.video import as_clip, is_clip
from smalto.data.shapes import ShapesConfig, parse_caption, world_config
from smalto.effort import SURE, THINKING_BUDGET, VOTE_TEMPERATURE, Drawing, Reply, effort_level
from smalto.inference.detok import Detokenizer, detokenize
from smalto.inference import Engine, Prompt, Sampling
from smalto.errors import ContextLengthError, SmaltoError
from smalto.model import Transformer
from smalto.format import (DRAWING, Allowed, Vocab, answer_prompt, caption_prompt, chat_prompt, continue_prompt,
                           draw_prompt, fuse_ids, positions)
from smalto.tokenizers import Tokenizers

DEFAULT_NAME = "smalto-shapes-tiny"
MAX_ANSWER_TOKENS = 48
MAX_DRAWN = 256  # candidates drawn for one request (n × best_of)
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
    # paths, PIL images or uint8 arrays [H, W, 3] (user turns only); clips too: arrays [T, H, W, 3],
    # animated GIF/WebP paths, folders of frames (a model trained on clips)
    images: list = field(default_factory=list)

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
    # The ShapesWorld it was trained on: prompts and questions in its phrasing can be parsed, planned
    # and checked by program (None: a folder's model; best-of-N ranks drawings by the model's own
    # log p(prompt | image)).
    world: ShapesConfig | None = field(default_factory=ShapesConfig)
    thinks: bool = False  # trained to think (`<think>` traces); else thinking efforts only vote
    clips: bool = False  # trained on clips (its tokenizers may hold a video tokenizer it never learned)
    # The training streams behind the weights (`training.data.stream_record`), so an evaluation can
    # tell the scenes it saw from those it did not; None: never recorded.
    streams: list[dict] | None = None

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
    def context(self) -> int:
        """Tokens a sequence may hold (a prompt-tuned model's learned embeddings take the first)."""
        return self.model.cfg.max_seq_len - self.model.prompt_tokens

    @property
    def image_size(self) -> int:
        return self.tokenizers.image.cfg.image_size

    # --- inputs

    def image_codes(self, images) -> torch.Tensor:
        """Paths / PIL images / uint8 arrays -> image codes [B, h, w]."""
        return self.tokenizers.image.encode(self.pictures(images))

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

    def reading(self, ids: list[int], pictures: list[np.ndarray]) -> list[int]:
        """A prompt written with its pictures' codes, as this model reads it: unchanged for the
        tokens design; for one that sees pixels (smalto.model.fusion), rewritten and carrying the
        pictures' pixels, in order (an `inference.Prompt`)."""
        if self.model.cfg.fusion == "tokens":
            return ids
        return Prompt(fuse_ids(self.vocab, ids, self.model.cfg.fusion)[0], pictures)

    @property
    def picture_tokens(self) -> int:
        """How many tokens a picture takes in a prompt."""
        return 1 if self.model.cfg.fusion == "xattn" else self.vocab.image_tokens + 2

    def _read_prompts(self, images: list, make) -> list[list[int]]:
        """A prompt per image: make(codes, i) writes it with the image's codes."""
        pictures = self.pictures(images)
        codes = self.tokenizers.image.encode(pictures)
        return [self.reading(make(c, i), [p]) for i, (c, p) in enumerate(zip(codes, pictures))]

    @property
    def reads_clips(self) -> bool:
        """Trained on clips: they are in its vocabulary, and it learned them."""
        return self.clips and "video" in self.vocab.modalities and self.tokenizers.video is not None

    @property
    def clip_frames(self) -> int:
        """How many frames this model's clips hold (its video tokenizer's)."""
        self._need_clips()
        return self.tokenizers.video.cfg.frames

    def _need_clips(self) -> None:
        if not self.reads_clips:
            why = f" (a {self.model.cfg.fusion} model reads pictures only)" if self.model.cfg.fusion != "tokens" else ""
            raise SmaltoError(f"{self.name} was not trained on clips{why}")

    def check_clips(self, clips: list) -> list[np.ndarray]:
        """Clips (GIF/WebP paths or bytes, frame folders, uint8 arrays [T, H, W, 3]) as frames at the
        model's size, or a SmaltoError saying why this model cannot read them."""
        self._need_clips()
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

    def text_ids(self, text: str, what: str = "prompt", beside: str = "image") -> list[int]:
        """A text's ids, if it leaves room for an item (`beside`: "image" or "video") in the context."""
        if not isinstance(text, str):
            raise SmaltoError(f"{what} must be a string, got {type(text).__name__}")
        ids = self.tokenizers.text.encode(text.strip())
        room = self.context - self.vocab.modalities[beside].tokens - 8
        if len(ids) > room:
            raise ContextLengthError(f"{what} is {len(ids)} tokens long; this model's context leaves room for {room}")
        return ids

    # --- reading

    def caption(self, image, beams: int = 1, effort: str | None = None, best_of: int | None = None) -> str:
        """Describe an image (greedy, or beam search with beams > 1; with effort "high" or best_of,
        the most frequent of several sampled captions)."""
        return self.caption_batch([image], beams, effort, best_of)[0]

    def ask(self, image, question: str, beams: int = 1, effort: str | None = None, best_of: int | None = None,
            thinking_budget: int | None = None) -> str:
        """Answer a question about an image; see `reply_batch` for effort, best_of and thinking."""
        return self.ask_batch([image], [question], beams, effort, best_of, thinking_budget)[0]

    def caption_batch(self, images: list, beams: int = 1, effort: str | None = None,
                      best_of: int | None = None) -> list[str]:
        options.check("beams", beams)
        prompts = self._read_prompts(images, lambda codes, _: caption_prompt(self.vocab, codes))
        if beams > 1:
            return self._beams(prompts, beams)
        votes = options.check("best_of", best_of) or effort_level(effort).votes
        return [self._vote(candidates).text for candidates in self._decode(prompts, votes, 0, votes > 1)]

    def ask_batch(self, images: list, questions: list[str], beams: int = 1, effort: str | None = None,
                  best_of: int | None = None, thinking_budget: int | None = None) -> list[str]:
        if options.check("beams", beams) > 1:
            return self._beams(self._answer_prompts(images, questions), beams)
        return [r.text for r in self.reply_batch(images, questions, effort, best_of, thinking_budget)]

    def _answer_prompts(self, images: list, questions: list[str]) -> list[list[int]]:
        if len(images) != len(questions):
            raise ValueError(f"{len(images)} images for {len(questions)} questions")
        asked = [self.text_ids(q, "question") for q in questions]
        if not all(asked):
            raise SmaltoError("the question is empty")
        return self._read_prompts(images, lambda codes, i: answer_prompt(self.vocab, codes, asked[i]))

    def _beams(self, prompts: list[list[int]], beams: int) -> list[str]:
        limit = min(MAX_ANSWER_TOKENS, self.context - max(len(p) for p in prompts))
        return [detokenize(self.tokenizers.text, self.engine.beam_search(p, beams, limit), self.vocab.eos)
                for p in prompts]

    def reply_batch(self, images: list, questions: list[str], effort: str | None = None, best_of: int | None = None,
                    thinking_budget: int | None = None, seed: int = 0) -> list[Reply]:
        """Answers with what they cost. effort (see `smalto.effort`): "none" answers greedily at once;
        "low" thinks only when the instant answer is unsure (its least likely token below
        `effort.SURE`); "medium" and "high" always think. best_of > 1 votes over that many sampled
        answers or thoughts (self-consistency). After thinking, the solver reads the model's own description of the
        scene and computes the answer from it (`Reply.check`). A model not trained to think only votes."""
        level = effort_level(effort)
        votes = options.check("best_of", best_of) or level.votes
        budget = options.check("thinking_budget", thinking_budget) or THINKING_BUDGET
        prompts = self._answer_prompts(images, questions)
        think = level.think if self.thinks else "never"
        replies: list[Reply | None] = [None] * len(prompts)
        if think != "always":
            replies = [self._vote(c) for c in self._decode(prompts, votes, 0, votes > 1, seed)]
        unsure = [i for i, r in enumerate(replies) if r is None or (think == "unsure" and r.sure < SURE)]
        if unsure:
            thought = self._decode([prompts[i] for i in unsure], votes, budget, votes > 1, seed)
            for i, candidates in zip(unsure, thought):
                spent = replies[i].tokens if replies[i] is not None else 0
                replies[i] = self._vote([self._checked(questions[i], c) for c in candidates])
                replies[i].tokens += spent
        return replies

    def _decode(self, prompts: list[list[int]], votes: int, budget: int, sample: bool, seed: int = 0,
                answer_tokens: int = MAX_ANSWER_TOKENS) -> list[list[Reply]]:
        """`votes` continuations of each prompt, all in one batch (thinking first when budget > 0),
        greedy or sampled; per prompt, a Reply for each."""
        v = self.vocab
        rows = [p for p in prompts for _ in range(votes)]
        room = self.context - max(len(p) for p in rows)
        limit = min(answer_tokens + (budget + 2 if budget else 0), room)
        sampling = Sampling(temperature=VOTE_TEMPERATURE, seed=seed) if sample else Sampling()
        outs = self.engine.generate(rows, limit, sampling, Allowed(thinking=budget),
                                    forced=[[v.think]] * len(rows) if budget else None)
        replies = [self._parse(g.tokens, g.logprobs, bool(budget)) for g in outs]
        return [replies[i:i + votes] for i in range(0, len(replies), votes)]

    def _parse(self, tokens: list[int], logprobs: list[float], thinking: bool) -> Reply:
        """A decoded reply: `[<think> trace </think>] answer <eos>` (a trace cut by the token limit
        leaves no answer); `sure` is the answer's least token probability."""
        v, thought = self.vocab, 0
        if thinking:
            thought = tokens.index(v.end_think) + 1 if v.end_think in tokens else len(tokens)
        text = detokenize(self.tokenizers.text, tokens[thought:], v.eos)
        reasoning = self.tokenizers.text.decode(tokens[1:thought - 1]).strip() if thought else ""
        sure = float(np.exp(min(logprobs[thought:], default=0.0)))
        return Reply(text, reasoning, len(tokens), thought, sure=sure)

    @staticmethod
    def _checked(question: str, reply: Reply) -> Reply:
        """The answer the solver computes from the model's own description of the scene (the
        trace's first part), when both the question and the description can be read."""
        from smalto.verify.spec import SpecError, parse_question

        scene = parse_caption(reply.reasoning.split(";")[0])
        try:
            q = parse_question(question)
        except SpecError:
            return reply
        if scene is None:
            return reply
        truth = q.answer(scene)
        return replace(reply, text=truth, model_text=reply.text, check="agrees" if truth == reply.text else "corrected")

    @staticmethod
    def _vote(candidates: list[Reply]) -> Reply:
        """The most frequent answer (ties: the first), carrying the cost of all candidates; its
        `sure` becomes its share of the votes."""
        if len(candidates) == 1:
            return candidates[0]
        counts = Counter(c.text for c in candidates)
        best = counts.most_common(1)[0][0]
        winner = next(c for c in candidates if c.text == best)
        return replace(winner, tokens=sum(c.tokens for c in candidates),
                       reasoning_tokens=sum(c.reasoning_tokens for c in candidates), votes=dict(counts),
                       sure=counts[best] / len(candidates))

    def caption_clip(self, clip) -> str:
        """Describe a clip's motion (greedy)."""
        return self.caption_clips([clip])[0]

    def ask_clip(self, clip, question: str) -> str:
        """Answer a question about a clip (greedy)."""
        return self.ask_clips([clip], [question])[0]

    def caption_clips(self, clips: list) -> list[str]:
        prompts = [caption_prompt(self.vocab, codes, "video") for codes in self.clip_codes(clips)]
        return [replies[0].text for replies in self._decode(prompts, 1, 0, False)]

    def ask_clips(self, clips: list, questions: list[str]) -> list[str]:
        prompts = []
        for codes, question in zip(self.clip_codes(clips), questions, strict=True):
            if not (q := self.text_ids(question, "question", "video")):
                raise SmaltoError("the question is empty")
            prompts.append(answer_prompt(self.vocab, codes, q, "video"))
        return [replies[0].text for replies in self._decode(prompts, 1, 0, False)]

    # --- chat

    def chat_prompt(self, messages: list[Message]) -> list[int]:
        """The prompt for the assistant's next reply (system messages are left out)."""
        turns, pictures = [], []
        for m in self.check_messages(messages):
            if m.role in ("user", "assistant"):
                ids = []
                for item in m.images:  # pictures, or clips (arrays [T, H, W, 3], animations, frame folders)
                    if is_clip(item):
                        ids += self.vocab.video_ids(self.clip_codes([item])[0])
                    else:  # (its pixels kept for a model that reads them)
                        pictures.append(self.pictures([item])[0])
                        ids += self.vocab.image_ids(self.image_codes(pictures[-1:])[0])
                turns.append((m.role, ids + self.text_ids(m.text, f"a {m.role} message")))
        prompt = self.reading(chat_prompt(self.vocab, turns), pictures)
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
        if length >= self.context:
            raise ContextLengthError(f"{what} is {length} tokens long; this model's context holds "
                                     f"{self.context} (start a new conversation)")
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
        room = self.context - prompt_length
        return min(max_tokens or MAX_REPLY_TOKENS, room)

    def chat(self, messages: list[Message], max_tokens: int | None = None, sampling: Sampling = Sampling(),
             stop: tuple[str, ...] = (), effort: str | None = None, best_of: int | None = None) -> str:
        if effort in (None, "none") and best_of is None:
            return "".join(self.chat_stream(messages, max_tokens, sampling, stop))
        return next(e for kind, e in self.chat_events(messages, max_tokens, effort, best_of) if kind == "reply").text

    def chat_events(self, messages: list[Message], max_tokens: int | None = None, effort: str | None = None,
                    best_of: int | None = None, thinking_budget: int | None = None, seed: int = 0
                    ) -> Iterator[tuple[str, object]]:
        """The assistant's reply with test-time compute (see `reply_batch`): ("reasoning", text)
        pieces while it thinks (a single trace streams as it is decoded; voted traces come whole),
        then ("content", answer), then ("reply", the Reply with its token counts). The solver
        checks the answer against the model's description using the last user message as the
        question."""
        level = effort_level(effort)
        votes = options.check("best_of", best_of) or level.votes
        budget = options.check("thinking_budget", thinking_budget) or THINKING_BUDGET
        think = level.think if self.thinks else "never"
        prompt = self.chat_prompt(messages)
        question = next((m.text for m in reversed(messages) if m.role == "user"), "")
        answer_tokens = self.reply_budget(len(prompt), max_tokens)
        spent = 0
        if think != "always":
            reply = self._vote(self._decode([prompt], votes, 0, votes > 1, seed, answer_tokens)[0])
            if think == "never" or reply.sure >= SURE:
                yield "content", reply.text
                yield "reply", reply
                return
            spent = reply.tokens
        if votes > 1:
            candidates = self._decode([prompt], votes, budget, True, seed, answer_tokens)[0]
            reply = self._vote([self._checked(question, c) for c in candidates])
            yield "reasoning", reply.reasoning
        else:
            v = self.vocab
            limit = min(answer_tokens + budget + 2, self.context - len(prompt))
            trace = Detokenizer(self.tokenizers.text, eos=v.end_think)
            tokens, logprobs = [], []
            for step in self.engine.steps([prompt], limit, Sampling(), Allowed(thinking=budget), forced=[[v.think]]):
                tokens.append(int(step.tokens[0]))
                logprobs.append(float(step.logprobs[0]))
                if len(tokens) > 1 and (piece := trace.push(tokens[-1])):
                    yield "reasoning", piece
            if piece := trace.finish():
                yield "reasoning", piece
            reply = self._checked(question, self._parse(tokens, logprobs, thinking=True))
        reply.tokens += spent
        yield "content", reply.text
        yield "reply", reply

    # --- drawing

    def generate_image(self, prompt: str, n: int = 1, guidance: float | None = None, seed: int | None = 0,
                       temperature: float | None = None, top_k: int | None = None, top_p: float | None = None,
                       effort: str | None = None, best_of: int | None = None) -> list[np.ndarray]:
        """Draw n images for a prompt, with classifier-free guidance of the given scale
        (1 = conditional only, 0 = unconditional); None takes the model's default (see
        `draw_defaults`). effort / best_of: see `drawings`. Returns uint8 arrays [H, W, 3]."""
        return [d.image for d in self.drawings(prompt, n, effort, best_of, seed, guidance=guidance,
                                               temperature=temperature, top_k=top_k, top_p=top_p)]

    def drawings(self, prompt: str, n: int = 1, effort: str | None = None, best_of: int | None = None,
                 seed: int | None = 0, **sampling) -> list[Drawing]:
        """n drawings of a prompt, each chosen from `best_of` candidates (effort's number when None).

        A ShapesWorld model with effort above "none" reads the prompt as a specification (a
        SpecError names words outside the grammar; a Contradiction the conflicting phrases), and
        draws the solver's absolute rewrite of it ("... left of ..." becomes two cells); each
        candidate is judged by the pixel verifier against the specification and the first that
        satisfies it is kept, else the one satisfying most constraints (`Drawing.verdict` says
        what still fails). Other models rank candidates by log p(prompt | image)."""
        from smalto.verify import smt
        from smalto.verify.scene import parse_image

        level, k, spec = self.check_drawing_request(prompt, n, effort, best_of)
        world = replace(self.world or ShapesConfig(), image_size=self.image_size)
        planned = [smt.absolute(spec, world, (seed or 0) + i) if spec and level.plan else prompt for i in range(n)]
        images = self.draw([p for p in planned for _ in range(k)], self.draw_sampling(seed, **sampling))
        out = []
        for i, text in enumerate(planned):
            candidates = images[i * k:(i + 1) * k]
            if spec is not None:
                verdicts = [smt.check(spec, parse_image(image, world)) for image in candidates]
                best = next((j for j, v in enumerate(verdicts) if v.satisfied),
                            max(range(k), key=lambda j: verdicts[j].score))
                out.append(Drawing(candidates[best], text, verdicts[best], k, first=candidates[0]))
            elif k > 1:
                scores = self.caption_logprob(candidates, prompt)
                best = int(np.argmax(scores))
                out.append(Drawing(candidates[best], text, None, k, scores[best], first=candidates[0]))
            else:
                out.append(Drawing(candidates[0], text))
        return out

    def check_drawing_request(self, prompt: str, n: int = 1, effort: str | None = None, best_of: int | None = None):
        """(effort level, candidates per image, the prompt's spec or None) for a drawing request, or
        a SmaltoError naming what is wrong: an empty prompt, too many images or candidates, words
        outside the grammar, a contradiction (when the prompt is to be planned or checked)."""
        from smalto.verify import smt, spec as specs

        if not isinstance(prompt, str) or not prompt.strip():
            raise SmaltoError("the prompt is empty (say what to draw, e.g. 'a small red circle at the center')")
        if not 1 <= n <= 64:
            raise SmaltoError(f"n must be between 1 and 64, got {n}")
        level = effort_level(effort)
        k = options.check("best_of", best_of) or level.best_of
        if n * k > MAX_DRAWN:
            raise SmaltoError(f"n × best_of must be at most {MAX_DRAWN} candidates, got {n} × {k}")
        spec = specs.parse_prompt(prompt) if self.world and (level.plan or k > 1) else None
        if spec is not None:
            smt.plan(spec, replace(self.world, image_size=self.image_size))  # a Contradiction, if there is one
        return level, k, spec

    @torch.inference_mode()
    def caption_logprob(self, images: list, text: str) -> list[float]:
        """The self-verifier: mean log p(text | image) per image under the model's captioning
        (DALL·E's reranking with CLIP, with the model as its own judge)."""
        v = self.vocab
        target = self.text_ids(text) + [v.eos]
        rows = self._read_prompts(images, lambda codes, _: caption_prompt(v, codes) + target)
        ids = torch.tensor(rows, device=self.engine.device)
        where = torch.stack([positions(v, r) for r in rows]).to(ids.device)
        seen = self.engine.images(rows, ids.shape[1])
        logits = self.model(ids[:, :-1], where[:, :, :-1], images=seen).logits.float()[:, -len(target):]
        return logits.log_softmax(-1).gather(-1, ids[:, -len(target):, None]).squeeze(-1).mean(1).tolist()

    def draw(self, prompts: list[str | list[int]], sampling: Sampling | None = None,
             modality: str = "image") -> list[np.ndarray]:
        """One image (or clip) per prompt (text, or its token ids), all decoded in one batch
        (sampling: the model's defaults with seed 0 when None)."""
        sampling = sampling or self.draw_sampling(0)
        v = self.vocab
        cond = [draw_prompt(v, self.text_ids(p, beside=modality) if isinstance(p, str) else p, modality)
                for p in prompts]
        uncond = [draw_prompt(v, [], modality) for _ in prompts]
        if sampling.guidance in (0.0, 1.0):  # one stream alone: no need to decode the other
            cond = uncond if sampling.guidance == 0.0 else cond
            sampling, uncond = replace(sampling, guidance=None), None
        return self._items(cond, sampling, modality, uncond)

    def _items(self, prompts: list[list[int]], sampling: Sampling, modality: str,
               unconditional: list[list[int]] | None = None) -> list[np.ndarray]:
        """Decode the rest of an item after each prompt (which ends inside it) into pixels."""
        v, m = self.vocab, self.vocab.modalities[modality]
        heads = [p[len(p) - 1 - p[::-1].index(v.specials[m.open]) + 1:] for p in prompts]  # the item so far
        rows = self.engine.generate(prompts, [m.tokens + 1 - len(h) for h in heads], sampling, DRAWING,
                                    unconditional=unconditional)
        codes = torch.stack([v.item_codes(h + r.tokens[:m.tokens - len(h)], modality) for h, r in zip(heads, rows)])
        if modality == "image":
            return list(self.tokenizers.image.decode(codes[:, 0]))
        return list(self.tokenizers.video.decode(codes)[:, :self.clip_frames])

    def generate_clip(self, prompt: str, n: int = 1, guidance: float | None = None, seed: int | None = 0,
                      temperature: float | None = None, top_k: int | None = None,
                      top_p: float | None = None) -> list[np.ndarray]:
        """Draw n clips of a description (classifier-free guidance as `generate_image`); uint8 [T, H, W, 3] each."""
        self._need_clips()
        self.check_drawing_request(prompt, n)
        sampling = self.draw_sampling(seed, guidance=guidance, temperature=temperature, top_k=top_k, top_p=top_p)
        return self.draw([prompt] * n, sampling, "video")

    def continue_clip(self, clip, given: int = 1, n: int = 1, seed: int | None = 0,
                      temperature: float = 0.0) -> list[np.ndarray]:
        """The rest of a clip after its first `given` latent frames (given=1: the first frame;
        each later latent frame holds 4 frames), n times (greedy when temperature is 0: the
        world's physics is deterministic). The returned clips start with the given frames."""
        return self.continue_clips([clip] * n, given, seed, temperature)

    def continue_clips(self, clips: list, given: int = 1, seed: int | None = 0,
                       temperature: float = 0.0) -> list[np.ndarray]:
        from smalto.training.data import CONTINUE

        text = self.text_ids(CONTINUE, beside="video")
        try:
            prompts = [continue_prompt(self.vocab, text, codes, given) for codes in self.clip_codes(clips)]
        except ValueError as e:
            raise SmaltoError(str(e)) from None
        return self._items(prompts, Sampling(temperature=temperature, seed=seed), "video")


def _draw_defaults(path: Path, meta: dict) -> dict:
    """The drawing defaults a checkpoint's meta.json stores, checked like a caller's arguments."""
    draw = meta.get("draw", {})
    if not isinstance(draw, dict) or not set(draw) <= set(DRAW_DEFAULTS):
        raise SmaltoError(f"{path / 'meta.json'}: 'draw' must map {', '.join(DRAW_DEFAULTS)} to numbers")
    try:
        return {name: options.check(name, value) for name, value in draw.items()}
    except SmaltoError as e:
        raise SmaltoError(f"{path / 'meta.json'}: draw.{e}") from None


def load(path: str | Path | None = None, dtype: str | torch.dtype = "auto", compile: bool = False,
         adapter: str | Path | None = None) -> Pipeline:
    """A trained model directory (`smalto train --out`), or the shipped default when None.

    adapter: a LoRA or prompt-tuning directory (`smalto finetune --method lora|prompt --out`)
    trained on this model, applied on top of it (another base is an error).
    dtype: "auto" runs the decoder in bfloat16 where the hardware has it natively (several times
    faster matmuls, same ShapesEval within noise), else float32; or "fp32" / "bf16".
    compile: compile the decoding step (`Engine.compile`) now, which takes about
    20 s on 2 cores, for faster decoding afterwards."""
    from smalto.training.data import CLIP_TASKS

    path = Path(path) if path is not None else DEFAULT_MODEL
    model, vocab, tokenizers, meta = load_checkpoint(path)
    trained = meta
    if adapter is not None:
        from smalto.adapters import load_adapter

        trained = load_adapter(model, vocab, adapter)  # what it was trained on is what it knows now
    model.to(precision.resolve(dtype))
    train = trained.get("train") if isinstance(trained.get("train"), dict) else {}
    mix = train.get("mix") if isinstance(train.get("mix"), dict) else {}
    data = train.get("data", "shapes")
    pipe = Pipeline(model, vocab, tokenizers, path, {**DRAW_DEFAULTS, **_draw_defaults(path, meta)},
                    world=world_config(data, tokenizers.image.cfg.image_size) if isinstance(data, str) else None,
                    thinks=bool(mix.get("think", 0)), clips=any(mix.get(task, 0) for task in CLIP_TASKS),
                    streams=trained.get("streams"))
    if compile:
        pipe.engine.compile()
        pipe.engine.warm_up()
    return pipe
