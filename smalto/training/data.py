"""The training stream: scenes (or folder records, or clips) -> tokenized examples of the task mix.

Example i of a stream is a pure function of (seed, i): a run resumed at step k reads exactly
what an uninterrupted run would have, and the data position is just an integer, derived from
(step, micro-batch, rank, world size) by `data_position`.
"""

from __future__ import annotations

import bisect
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from smalto.data.folder import is_clip_folder, load_clip_folder, load_folder
from smalto.data.gate import MAX_PIXELS
from smalto.data.motion import ClipSample, MotionConfig, MotionWorld
from smalto.data.shapes import Sample, Scene, ShapesWorld, cell_words, premise_question, scene_key, world_config
from smalto.data.melodies import GIVEN, SLOTS, MelodyWorld
from smalto.data.sounds import SoundConfig, SoundWorld
from smalto.data.talk import conversation
from smalto.errors import SmaltoError
from smalto.options import Range
from smalto.data.tasks import (CLIP_TASKS, CONTINUE, CONTINUE_SOUND, DRAW_SOUND, HEAR_PICTURE, PICTURE_TASKS,
                               SOUND_OF, SOUND_TASKS, TASKS)
from smalto.format import (Example, Vocab, answer_example, caption_example, chat_example, continue_example,
                           convert_example, draw_example, fuse, think_example)
from smalto.model.fusion import Images, batch_images
from smalto.tokenizers import Tokenizers
from smalto.verify.spec import parse_question



@dataclass(frozen=True)
class TaskMix:
    caption: float = 0.3
    draw: float = 0.4
    qa: float = 0.3
    # Answers after a thinking trace: the scene's description, then the facts the question needs
    # (made from the scene graph, so correct by construction). ShapesWorld only.
    think: float = 0.0
    # Conversations (smalto.data.talk): greetings, thanks, requests outside ShapesWorld, requests to
    # describe the picture, questions and follow-ups that refer back to an object ("where is it?"),
    # in any order, with or without a picture; and questions about a scene given in words.
    chat: float = 0.0
    # Clips of ShapesWorld in motion (smalto.data.motion; the tokenizers need a video tokenizer):
    # describe a clip, draw one from its description, answer about one, continue one from its
    # first latent frame or two (the rest is trained).
    clip_caption: float = 0.0
    clip_draw: float = 0.0
    clip_qa: float = 0.0
    clip_next: float = 0.0
    # ShapesWorld heard (smalto.data.sounds; the tokenizers need an audio codec): describe a sound,
    # make one from a description, answer about one, a picture's sound and a sound's picture.
    sound_caption: float = 0.0
    sound_draw: float = 0.0
    sound_qa: float = 0.0
    picture_to_sound: float = 0.0
    sound_to_picture: float = 0.0
    # Continue a melody (smalto.data.melodies) from its first four to six notes; the rest is trained.
    sound_next: float = 0.0
    # Share of QA and thinking questions that name an object without its place, half of them one
    # the scene lacks ("what color is the square?" -> "there is no square"). ShapesWorld only.
    premises: float = 0.0
    # Share of draw examples whose prompt is dropped, teaching the unconditional stream that
    # classifier-free guidance contrasts with.
    cond_dropout: float = 0.1
    # Also predict the image codes of caption and QA examples (see format.render.caption_example).
    train_prompt_images: bool = True
    # Question-answer turns per QA example: answers are a token or two, so more turns per image
    # give more signal for little extra sequence (3 turns measured no clear gain; see README).
    qa_turns: int = 1

    # Valid values, read by __post_init__ and by the command line's flags (the weights are checked
    # together, by `weights`).
    RANGES: ClassVar[dict[str, Range]] = {"cond_dropout": Range(0, 1), "premises": Range(0, 1),
                                          "qa_turns": Range(1, integer=True)}

    def __post_init__(self) -> None:
        for name, valid in self.RANGES.items():
            valid.check(getattr(self, name), name)
        self.weights()

    @property
    def clips(self) -> bool:
        return any(getattr(self, task) for task in CLIP_TASKS)

    @property
    def sounds(self) -> bool:
        return any(getattr(self, task) for task in SOUND_TASKS)

    def weights(self) -> np.ndarray:
        w = np.array([getattr(self, task) for task in TASKS], dtype=np.float64)
        if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise SmaltoError(f"task mix weights must be >= 0 and not all 0, got {w.tolist()}")
        return w / w.sum()


@dataclass
class Batch:
    ids: Tensor  # [B, L] input ids
    positions: Tensor  # [B, 3, L] their positions (padding at 0)
    targets: Tensor  # [B, L] the next id at each position
    mask: Tensor  # [B, L] True where the target is trained
    tasks: Tensor  # [B] index into TASKS
    images: Images | None = None  # the pictures the rows read, for models that see pixels
    # What each token carries beside itself (a delayed sound's finer levels; `Vocab.item_extra`):
    # [B, L, width] ids, -1 where none, for the inputs and for the targets (trained where the
    # target token is); None when no row carries any.
    extra: Tensor | None = None
    extra_targets: Tensor | None = None

    @property
    def tokens(self) -> int:
        """Trained predictions: tokens, and the codes they carry."""
        carried = 0 if self.extra_targets is None else int(((self.extra_targets >= 0) & self.mask[..., None]).sum())
        return int(self.mask.sum()) + carried

    def to(self, device: torch.device) -> Batch:
        move = (lambda t: None if t is None else t.to(device))
        return Batch(*(t.to(device) for t in (self.ids, self.positions, self.targets, self.mask, self.tasks)),
                     None if self.images is None else self.images.to(device), move(self.extra),
                     move(self.extra_targets))


def data_position(step: int, micro: int, rank: int, world_size: int, batch_size: int, grad_accum: int) -> int:
    """Index of the first example that `rank` reads for micro-batch `micro` of optimizer step `step`.

    `batch_size` is the global batch: each micro-batch of a step takes the next batch_size
    examples, and rank r of world_size reads the r-th of world_size equal slices. The ranks of a
    step read disjoint examples, together exactly those one process reads, so a run reads the
    same data whatever its number of processes (and may resume with another).
    """
    return (step * grad_accum + micro) * batch_size + rank * (batch_size // world_size)


def collate(examples: list[tuple[int, Example]], pad: int, max_len: int) -> Batch:
    """Right-pad to the longest example (at most max_len + 1 ids); padding is never trained."""
    width = min(max(len(e.ids) for _, e in examples), max_len + 1)
    ids = torch.full((len(examples), width), pad, dtype=torch.long)
    positions = torch.zeros(len(examples), 3, width, dtype=torch.long)
    mask = torch.zeros(len(examples), width, dtype=torch.bool)
    for row, (_, e) in enumerate(examples):
        n = min(len(e.ids), width)
        ids[row, :n] = torch.tensor(e.ids[:n])
        positions[row, :, :n] = e.positions[:, :n]
        mask[row, :n] = torch.tensor(e.loss_mask[:n])
    tasks = torch.tensor([t for t, _ in examples])
    # (a picture cut off by max_len is dropped with it)
    starts = [[s for s in e.picture_at if s < width - 1] for _, e in examples]
    images = batch_images([e.pictures[:len(s)] for (_, e), s in zip(examples, starts)], starts)
    extra = None
    if rows := [e.extra for _, e in examples if e.extra is not None]:
        extra = torch.full((len(examples), width, len(rows[0][0])), -1, dtype=torch.long)
        for row, (_, e) in enumerate(examples):
            if e.extra is not None:
                extra[row, :min(len(e.ids), width)] = torch.tensor(e.extra[:width])
    return Batch(ids[:, :-1], positions[:, :, :-1], ids[:, 1:], mask[:, 1:], tasks, images,
                 None if extra is None else extra[:, :-1], None if extra is None else extra[:, 1:])


def example_rng(seed: int, index: int) -> np.random.Generator:
    """Example `index`'s randomness: its task is the first draw (`draw_task`), the rest its own."""
    return np.random.default_rng([seed, 7, index])


def draw_task(rng: np.random.Generator, cdf: list[float]) -> int:
    """A task index drawn with the mix's cumulative weights: what `rng.choice(len(TASKS), p=weights)`
    draws, from the same one uniform number, without its overhead (the replay draws 200,000)."""
    return bisect.bisect_right(cdf, rng.random())


def _cdf(weights: np.ndarray) -> list[float]:
    cdf = np.cumsum(weights)
    return (cdf / cdf[-1]).tolist()


def stream_record(stream: ExampleStream, examples: int) -> dict | None:
    """What a run's training stream showed, enough to replay its scenes (`seen_scenes`): the world,
    seed, task mix and number of examples read; None for a folder (its pictures are the user's)."""
    if stream.world is None:
        return None
    return {"data": stream.data, "seed": stream.seed, "examples": examples, "mix": asdict(stream.mix),
            "reserve": stream.world.cfg.reserve}


def seen_scenes(streams: list[dict]) -> set[str]:
    """The keys (`scene_key`) of every ShapesWorld scene that recorded training streams showed as a
    picture or a sound (a scene heard is a scene the model knows), replayed example by example
    (about 50 µs an example)."""
    keys: set[str] = set()
    for r in streams:
        world = ShapesWorld(replace(world_config(r["data"]), reserve=r["reserve"]), r["seed"], "train")
        cdf = _cdf(TaskMix(**r["mix"]).weights())
        # (sound tasks hear scene i of the same world; a melody to continue is no scene)
        picture = [task not in CLIP_TASKS and task != "sound_next" for task in TASKS]
        for i in range(r["examples"]):
            if picture[draw_task(example_rng(r["seed"], i), cdf)]:
                keys.add(scene_key(world.scene(i)))
    return keys


class ExampleStream:
    def __init__(self, tokenizers: Tokenizers, vocab: Vocab, data: str = "shapes", mix: TaskMix = TaskMix(),
                 seed: int = 0, split: str = "train", max_len: int = 160, max_pixels: int | None = MAX_PIXELS,
                 fusion: str = "tokens"):
        self.tok, self.vocab, self.mix, self.seed, self.fusion, self.data = tokenizers, vocab, mix, seed, fusion, data
        if fusion != "tokens" and (mix.clips or mix.sounds):
            raise SmaltoError(f"a {fusion} model reads pictures as pixels, and clips and sounds only as tokens: "
                              f"clip and sound tasks need the tokens design")
        self.weights = mix.weights()
        self.cdf = _cdf(self.weights)
        # Long texts (a user's captions) are cut so that an image (a clip) always fits whole.
        streamed = {"image": True, "video": mix.clips, "audio": mix.sounds}
        item = max(m.tokens for k, m in vocab.modalities.items() if streamed.get(m.draws or k))
        if mix.sounds and "audio" in vocab.modalities:  # (a picture and its sound in one example)
            item = vocab.image_tokens + vocab.modalities[vocab.drawn("audio")].tokens + 2
        room = max_len - item - 8
        self.room = max_len - 16  # a text-only conversation's longest message
        self.max_len = max_len
        if room < 8:
            raise SmaltoError(f"a context of {max_len} tokens leaves no room for text beside "
                              f"{'a picture and a sound' if mix.sounds else 'a clip' if mix.clips else 'an image'} "
                              f"({item} tokens)")
        self.encode_text = lru_cache(maxsize=65536)(lambda s: tuple(tokenizers.text.encode(s)[:room // 2]))
        size = tokenizers.image.cfg.image_size
        self.motion = self.sounds = self.melodies = self.folder = self.clip_folder = None
        if (world := world_config(data, size)) is not None:
            self.world = ShapesWorld(world, seed, split)
            if mix.clips:
                self._need_video()
                self.motion = MotionWorld(MotionConfig(tokenizers.video.cfg.frames, world), seed, split)
            if mix.sounds:
                self.sounds = self._sound_world(world, seed, split)
                self.melodies = MelodyWorld(self.sounds.cfg, seed)
            return
        self.world = None
        if mix.sounds:
            raise SmaltoError(f"sound tasks hear ShapesWorld (--data shapes); {data} is a folder")
        if is_clip_folder(data):
            self._need_video()
            if self.weights[:len(PICTURE_TASKS)].any():
                raise SmaltoError(f"{data} is a folder of clips: it trains the clip tasks only (--mix 0 0 0 0 0 "
                                  f"CLIP_CAPTION CLIP_DRAW CLIP_QA CLIP_NEXT)")
            self.clip_folder = load_clip_folder(data, size, progress=True, max_pixels=max_pixels)
            frames = tokenizers.video.cfg.frames
            for r, clip in zip(self.clip_folder.records, self.clip_folder.clips):
                if len(clip) != frames:
                    raise SmaltoError(f"{data}/{r.clip}: {len(clip)} frames; the video tokenizer takes {frames}")
            items = np.stack(self.clip_folder.clips)
            encode = tokenizers.video.encode
        elif mix.clips:
            raise SmaltoError(f"clip tasks need clips: ShapesWorld in motion (--data shapes or shapes-plus) or a "
                              f"folder of clips (`smalto data clips`), and {data} is a folder of pictures")
        else:
            self.folder = load_folder(data, size, progress=True, max_pixels=max_pixels)
            items, encode = self.folder.images, tokenizers.image.encode
        n = len(items)
        self._order = lru_cache(maxsize=2)(lambda epoch: np.random.default_rng([seed, 5, epoch]).permutation(n))
        self.codes = torch.cat([encode(items[i:i + 256]) for i in range(0, n, 256)])

    def _sound_world(self, world, seed: int, split: str) -> SoundWorld:
        if self.tok.audio is None or self.vocab.sound is None:
            raise SmaltoError(f"sound tasks need an audio codec beside the image tokenizer ({self.tok.path} has no "
                              f"audio.json; `smalto tokenizer train-audio` makes one) and a vocabulary with sounds")
        try:
            sounds = SoundWorld(SoundConfig(sample_rate=self.tok.audio.cfg.sample_rate, world=world), seed, split)
        except SmaltoError as e:
            raise SmaltoError(f"sound tasks: {e}") from None
        if sounds.cfg.samples != self.vocab.sound[0] * self.tok.audio.cfg.hop:
            raise SmaltoError(f"sound tasks: a scene's sound is {sounds.cfg.samples} samples, and the vocabulary's "
                              f"sounds are {self.vocab.sound[0]} frames of {self.tok.audio.cfg.hop}")
        return sounds

    def _need_video(self) -> None:
        if self.tok.video is None or "video" not in self.vocab.modalities:
            raise SmaltoError(f"clip tasks need a video tokenizer beside the image one ({self.tok.path} has no "
                              f"video.json; `smalto tokenizer train-video` makes one)")

    def _example(self, rng: np.random.Generator, task: int, codes: Tensor, captions: list[str], canonical: str,
                 qa: list[dict], scene: Scene | None = None) -> tuple[int, Example]:
        if TASKS[task] == "think" and scene is None:  # a folder's records have no scene graph to reason from
            task = TASKS.index("qa")
        if TASKS[task] == "qa" and not qa:
            task = TASKS.index("caption")
        text, v = self.encode_text, self.vocab
        if TASKS[task] == "caption":
            return task, caption_example(v, codes, list(text(canonical)), self.mix.train_prompt_images)
        if TASKS[task] == "draw":
            prompt = [] if rng.random() < self.mix.cond_dropout else list(text(captions[rng.integers(len(captions))]))
            return task, draw_example(v, prompt, codes, words=self._cell_words(scene))
        if scene is not None and self.mix.premises and rng.random() < self.mix.premises:
            qa = [premise_question(scene, self.world.cfg, rng, self.world.split)]
        if TASKS[task] == "think":
            pair = qa[rng.integers(len(qa))]
            trace = f"{canonical}; {parse_question(pair['q']).facts(scene)}"
            return task, think_example(v, codes, list(text(pair["q"])), list(text(trace)), list(text(pair["a"])),
                                       self.mix.train_prompt_images)
        if TASKS[task] == "chat":
            return task, self._chat(rng, codes, captions, qa, scene)
        first = int(rng.integers(len(qa)))
        more = [int(k) for k in rng.permutation(len(qa)) if k != first] if self.mix.qa_turns > 1 else []
        picks = [first, *more[:self.mix.qa_turns - 1]]
        pairs = [(list(text(qa[k]["q"])), list(text(qa[k]["a"]))) for k in picks]
        return task, answer_example(self.vocab, codes, pairs, self.mix.train_prompt_images)

    def _cell_words(self, scene: Scene | None, modality: str = "image") -> list[list[int]] | None:
        """Each cell's words for a vocabulary drawing the modality in the cells layout (written even
        when the prompt is dropped); None, and the drawing stays raster, without a layout or for a
        scene it has no words for (a world with shapes or colours beyond the layout's lexicon)."""
        m = self.vocab.modalities[self.vocab.drawn(modality)]
        if not m.blocks or scene is None:
            return None
        words = [self.tok.text.encode(w) for w in cell_words(scene)]
        if any(len(w) != m.words for w in words):
            return None
        if m.lexicon and any(t not in ids for w, lexicon in zip(words, m.lexicon) for t, ids in zip(w, lexicon)):
            return None
        return words

    def _chat(self, rng: np.random.Generator, codes: Tensor, captions: list[str], qa: list[dict],
              scene: Scene | None) -> Example:
        """One conversation: a fifth a scene described in words then a question about it (ShapesWorld),
        else one of `talk.conversation`'s, its turns kept while they fit the context."""
        text = self.encode_text
        if scene is not None and qa and rng.random() < 0.2:
            pair = qa[int(rng.integers(len(qa)))]
            # (the phrasings that place every object: a relation alone leaves "where?" open)
            words = self.tok.text.encode(f"{captions[int(rng.integers(3))]}. {pair['q']}")
            if len(words) < self.room:  # (the longest descriptions of four objects do not fit)
                return chat_example(self.vocab, [("user", words), ("assistant", list(text(pair["a"])))])
        image, turns, length = self.vocab.image_ids(codes), [], 1
        for t in conversation(rng, Sample(None, scene, captions, qa)):
            asked, said = (image if t.picture else []) + list(text(t.text)), list(text(t.reply))
            length += len(asked) + len(said) + 3
            if turns and length > self.max_len:
                break
            turns += [("user", asked), ("assistant", said)]
        return chat_example(self.vocab, turns)

    def _clip_example(self, rng: np.random.Generator, task: int, codes: Tensor, sample: ClipSample) -> Example:
        text, v, name = self.encode_text, self.vocab, TASKS[task]
        if name == "clip_caption" or (name == "clip_qa" and not sample.qa):  # (a folder's clip may have no questions)
            return caption_example(v, codes, list(text(sample.captions[0])), self.mix.train_prompt_images, "video")
        if name == "clip_draw":  # from the canonical caption or the one that says where each object ends
            prompt = [] if rng.random() < self.mix.cond_dropout else list(text(sample.captions[rng.integers(2)]))
            return draw_example(v, prompt, codes, "video")
        if name == "clip_qa":
            pair = sample.qa[rng.integers(len(sample.qa))]
            return answer_example(v, codes, [(list(text(pair["q"])), list(text(pair["a"])))],
                                  self.mix.train_prompt_images, "video")
        given = int(rng.integers(1, v.modalities["video"].frames))
        return continue_example(v, list(text(CONTINUE)), codes, given)

    def _sound_example(self, rng: np.random.Generator, task: int, sound: Tensor, picture: Tensor,
                       sample: Sample) -> Example:
        """sound: codes [frames, levels]; picture: the scene's image codes."""
        text, v, name, heard = self.encode_text, self.vocab, TASKS[task], self.mix.train_prompt_images
        if name == "sound_caption" or (name == "sound_qa" and not sample.qa):
            return caption_example(v, sound, list(text(sample.captions[0])), heard, "audio")
        if name == "sound_qa":
            pair = sample.qa[rng.integers(len(sample.qa))]
            return answer_example(v, sound, [(list(text(pair["q"])), list(text(pair["a"])))], heard, "audio")
        if name == "sound_draw":
            said = sample.captions[rng.integers(len(sample.captions))]
            prompt = [] if rng.random() < self.mix.cond_dropout else list(text(SOUND_OF * (rng.random() < 0.5) + said))
            return draw_example(v, prompt, sound, "audio", self._cell_words(sample.scene, "audio"))
        if name == "picture_to_sound":
            return convert_example(v, picture, "image", list(text(HEAR_PICTURE)), sound, "audio",
                                   self._cell_words(sample.scene, "audio"), heard)
        return convert_example(v, sound, "audio", list(text(DRAW_SOUND)), picture, "image",
                               self._cell_words(sample.scene), heard)

    def _sound_codes(self, waves: np.ndarray) -> Tensor:
        """float32 [B, samples] -> the codes the vocabulary writes, [B, frames, levels]."""
        return self.tok.audio.encode(waves)[:, :self.vocab.sound[1]].transpose(1, 2)

    def _melody_examples(self, indices: list[int], rngs: dict) -> list[Example]:
        """Melody i continued from its first four to six notes (`data.melodies`). A vocabulary that
        makes sounds in the cells layout hears the start (the rest silent) and answers with the
        whole melody in the layout, each cell's words before its slot: reading the given notes and
        carrying their rule on are words, which the codes after them follow. Else the start is
        written flat inside the answer's sound and the rest of its codes are trained."""
        v, request = self.vocab, list(self.encode_text(CONTINUE_SOUND))
        given = [int(rngs[i].choice(GIVEN)) for i in indices]
        waves = self.melodies.waves_of(indices)
        full = self._sound_codes(waves)
        if v.drawn("audio") == "audio":
            per = v.sound[0] // SLOTS
            return [continue_example(v, request, codes, per * g, "audio") for codes, g in zip(full, given)]
        slot = self.melodies.cfg.slot_samples
        starts = self._sound_codes(np.stack([np.where(np.arange(len(w)) < g * slot, w, 0)
                                             for w, g in zip(waves, given)]))
        return [convert_example(v, start, "audio", request, codes, "audio", self._cell_words(self.melodies[i].scene,
                                                                                               "audio"))
                for i, start, codes in zip(indices, starts, full)]

    def examples(self, start: int, count: int) -> list[tuple[int, Example]]:
        """Examples start .. start+count-1 as (task index, example)."""
        rngs = {i: example_rng(self.seed, i) for i in range(start, start + count)}
        tasks = {i: draw_task(rng, self.cdf) for i, rng in rngs.items()}
        out: dict[int, tuple[int, Example]] = {}
        if self.world is not None:
            pictures = [i for i in rngs if TASKS[tasks[i]] in PICTURE_TASKS]
            if pictures:
                samples = [self.world[i] for i in pictures]
                codes = self.tok.image.encode(np.stack([s.image for s in samples]))
                for i, s, c in zip(pictures, samples, codes):
                    task, e = self._example(rngs[i], tasks[i], c, s.captions, s.captions[0], s.qa, s.scene)
                    out[i] = task, fuse(self.vocab, e, self.fusion, s.image)
            if clips := [i for i in rngs if TASKS[tasks[i]] in CLIP_TASKS]:
                samples = [self.motion[i] for i in clips]
                codes = self.tok.video.encode(np.stack([s.frames for s in samples]))
                for i, s, c in zip(clips, samples, codes):
                    out[i] = tasks[i], self._clip_example(rngs[i], tasks[i], c, s)
            if heard := [i for i in rngs if TASKS[tasks[i]] in SOUND_TASKS and TASKS[tasks[i]] != "sound_next"]:
                samples = [self.world[i] for i in heard]  # (sound i is scene i: its picture pairs with it)
                sounds = self._sound_codes(self.sounds.waves_of(heard))
                pictures = self.tok.image.encode(np.stack([s.image for s in samples]))
                for i, s, a, c in zip(heard, samples, sounds, pictures):
                    out[i] = tasks[i], self._sound_example(rngs[i], tasks[i], a, c, s)
            if melodies := [i for i in rngs if TASKS[tasks[i]] == "sound_next"]:
                out |= {i: (tasks[i], e) for i, e in zip(melodies, self._melody_examples(melodies, rngs))}
            return [out[i] for i in rngs]
        n = len(self.codes)
        for i, rng in rngs.items():
            epoch, k = divmod(i, n)
            record = int(self._order(epoch)[k])
            if self.clip_folder is not None:
                r = self.clip_folder.records[record]
                sample = ClipSample(self.clip_folder.clips[record], r.motion, [r.text, r.text], r.qa)
                out[i] = tasks[i], self._clip_example(rng, tasks[i], self.codes[record], sample)
            else:
                r = self.folder.records[record]
                task, e = self._example(rng, tasks[i], self.codes[record], [r.text], r.text, r.qa)
                out[i] = task, fuse(self.vocab, e, self.fusion, self.folder.images[record])
        return [out[i] for i in rngs]

    def batch(self, start: int, count: int, max_len: int) -> Batch:
        return collate(self.examples(start, count), self.vocab.pad, max_len)
