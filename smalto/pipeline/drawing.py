"""Drawing: pictures, clips and sounds decoded from prompts (or from each other), with
classifier-free guidance, and with test-time compute the solver's plan, best-of-N candidates and
the verifier's choice.

`Drawer` is the part of `Pipeline` that writes items rather than text; it reads the pipeline's
engine, vocab, tokenizers, world and drawing defaults.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from smalto import options
from smalto.data.shapes import ShapesConfig, captions, cell_words
from smalto.data.sounds import SoundConfig
from smalto.errors import SmaltoError
from smalto.format import DRAWING, Carrying, caption_prompt, continue_prompt, convert_prompt, draw_prompt, positions
from smalto.data.tasks import CONTINUE, CONTINUE_SOUND, REQUESTS
from smalto.inference import Sampling
from smalto.effort import Drawing, effort_level
from smalto.verify import smt
from smalto.verify import spec as specs
from smalto.verify.hearing import parse_sound
from smalto.verify.scene import parse_image

MAX_DRAWN = 256  # candidates drawn for one request (n × best_of)


class Drawer:
    def draw_sampling(self, seed: int | None = 0, **overrides) -> Sampling:
        """The settings for drawing: the model's defaults (guidance, temperature, top_k, top_p),
        with any non-None override."""
        return Sampling(seed=seed, **{**self.draw_defaults, **{k: v for k, v in overrides.items() if v is not None}})

    def drawings(self, prompt: str, n: int = 1, effort: str | None = None, best_of: int | None = None,
                 seed: int | None = 0, modality: str = "image", **sampling) -> list[Drawing]:
        """n drawings of a prompt (modality "audio": sounds), each chosen from `best_of` candidates
        (effort's number when None).

        A ShapesWorld model with effort above "none" reads the prompt as a specification (a
        SpecError names words outside the grammar; a Contradiction the conflicting phrases), and
        draws the solver's absolute rewrite of it ("... left of ..." becomes two cells); each
        candidate is judged by the pixel (or sound) verifier against the specification and the
        first that satisfies it is kept, else the one satisfying most constraints
        (`Drawing.verdict` says what still fails). Other models rank candidates by
        log p(prompt | image)."""
        if modality == "audio":
            self.need_sounds()
        elif modality != "image":
            raise SmaltoError(f"drawings are pictures or sounds (modality 'image' or 'audio'), not {modality!r}")
        level, k, spec = self.check_drawing_request(prompt, n, effort, best_of)
        world = replace(self.world or ShapesConfig(), image_size=self.image_size)
        scenes = [smt.plan(spec, world, (seed or 0) + i) if spec and level.plan else None for i in range(n)]
        planned = [captions(scene)[0] if scene else prompt for scene in scenes]
        # A model drawing in the cells layout is given the plan's words for each cell: the solver
        # says what goes where, the model draws it (docs/test-time.md).
        words = [cell_words(scene) for scene in scenes for _ in range(k)] if all(scenes) else None
        items = self.draw([p for p in planned for _ in range(k)], self.draw_sampling(seed, **sampling), modality,
                          words)
        out = []
        note = None if spec is not None else self.scope(prompt)  # (a spec parsed: the prompt is in the world)
        for i, text in enumerate(planned):
            candidates = items[i * k:(i + 1) * k]
            if spec is not None:
                scenes = [self.read_scene(item, modality) for item in candidates]
                verdicts = [smt.check(spec, scene) for scene in scenes]
                best = next((j for j, v in enumerate(verdicts) if v.satisfied),
                            max(range(k), key=lambda j: verdicts[j].score))
                out.append(Drawing(candidates[best], text, verdicts[best], k, first=candidates[0],
                                   reading=_reading(scenes[best])))
                continue
            if k > 1:
                scores = self.caption_logprob(candidates, prompt)
                best = int(np.argmax(scores))
                drawing = Drawing(candidates[best], text, None, k, scores[best], first=candidates[0])
            else:
                drawing = Drawing(candidates[0], text)
            scene = self.read_scene(drawing.image, modality) if self.world else None
            out.append(replace(drawing, reading=None if scene is None else _reading(scene), note=note))
        return out

    def read_scene(self, item: np.ndarray, modality: str = "image"):
        """The scene the pixel verifier sees in a drawn picture, or the sound verifier hears in a
        sound (a ShapesWorld model's)."""
        if modality == "audio":
            return parse_sound(item, SoundConfig(sample_rate=self.sample_rate, world=self.world))
        return parse_image(item, replace(self.world, image_size=self.image_size))

    def read_drawing(self, image: np.ndarray) -> str | None:
        """What the pixel verifier reads in a drawn picture, as its canonical caption (None for a
        model of a folder's pictures, whose world the verifier does not know)."""
        return _reading(self.read_scene(image)) if self.world else None

    def scope(self, prompt: str) -> str | None:
        """Why a drawing prompt lies outside the world a ShapesWorld model knows, or None: the
        model draws something for any prompt, and a user should hear that "a cat" is not in its world."""
        if not self.world:
            return None
        try:
            specs.parse_prompt(prompt)
        except specs.SpecError as e:
            w = self.world
            return (f"{e}; this model knows only {', '.join(s + 's' for s in w.shapes)} in "
                    f"{', '.join(w.colors)}, {' or '.join(name for name, _ in w.sizes)}, on a 3×3 grid")
        return None

    def check_drawing_request(self, prompt: str, n: int = 1, effort: str | None = None, best_of: int | None = None):
        """(effort level, candidates per image, the prompt's spec or None) for a drawing request, or
        a SmaltoError naming what is wrong: an empty prompt, too many images or candidates, words
        outside the grammar, a contradiction (when the prompt is to be planned or checked)."""
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
        rows = self.read_prompts(images, lambda codes, _: caption_prompt(v, codes) + target)
        ids = torch.tensor(rows, device=self.engine.device)
        where = torch.stack([positions(v, r) for r in rows]).to(ids.device)
        seen = self.engine.images(rows, ids.shape[1])
        logits = self.model(ids[:, :-1], where[:, :, :-1], images=seen).logits.float()[:, -len(target):]
        return logits.log_softmax(-1).gather(-1, ids[:, -len(target):, None]).squeeze(-1).mean(1).tolist()

    def draw(self, prompts: list[str | list[int]], sampling: Sampling | None = None,
             modality: str = "image", words: list[list[str]] | None = None) -> list[np.ndarray]:
        """One image (or clip) per prompt (text, or its token ids), all decoded in one batch
        (sampling: the model's defaults with seed 0 when None). words: for a model drawing in the
        cells layout, each prompt's cells' words (`data.shapes.cell_words`), written for it rather
        than by it (ignored by other models)."""
        sampling = sampling or self.draw_sampling(0)
        v = self.vocab
        forced = self.forced_words(words, modality) if words is not None else None
        cond = [draw_prompt(v, self.text_ids(p, beside=modality) if isinstance(p, str) else p, modality)
                for p in prompts]
        uncond = [draw_prompt(v, [], modality) for _ in prompts]
        if sampling.guidance in (0.0, 1.0):  # one stream alone: no need to decode the other
            cond = uncond if sampling.guidance == 0.0 else cond
            sampling, uncond = replace(sampling, guidance=None), None
        return self.finish_items(cond, sampling, modality, uncond, forced)

    def forced_words(self, words: list[list[str]], modality: str = "image") -> list[list[int | None]] | None:
        """Each row's forced tokens for drawing given each block's words (None where the model
        draws a code), for a vocabulary that draws the modality in a layout; None for one that does not."""
        m = self.vocab.modalities[self.vocab.drawn(modality)]
        if not m.blocks:
            return None
        return [[t for said, block in zip(cells, m.blocks) for t in self.tokenizers.text.encode(said)
                 + [None] * len(block)] for cells in words]

    def item_bodies(self, prompts: list[list[int]], sampling: Sampling, modality: str,
                    unconditional: list[list[int]] | None = None,
                    forced: list[list[int | None]] | None = None, written: str | None = None) -> list[list[int]]:
        """Decode the rest of an item after each prompt (which ends inside it, in the layout the
        vocabulary draws the modality in, `Vocab.drawn`, unless `written` names another); each
        item's whole body, the tokens between its <open> and <close> (a layout's words included).
        forced: per row, the tokens it must emit next (None where it chooses)."""
        v = self.vocab
        m = v.modalities[written or v.drawn(modality)]
        heads = [p[len(p) - 1 - p[::-1].index(v.specials[m.open]) + 1:] for p in prompts]  # the item so far
        rows = self.engine.generate(prompts, [m.tokens + 1 - len(h) for h in heads], sampling, DRAWING,
                                    unconditional=unconditional, forced=forced)
        if m.stepped:  # (a stepped sound's steps, with the codes each carries)
            return [h + Carrying(r.tokens, r.extra)[:m.tokens - len(h)] for h, r in zip(heads, rows)]
        return [h + r.tokens[:m.tokens - len(h)] for h, r in zip(heads, rows)]

    def finish_items(self, prompts: list[list[int]], sampling: Sampling, modality: str,
                     unconditional: list[list[int]] | None = None,
                     forced: list[list[int | None]] | None = None, written: str | None = None) -> list[np.ndarray]:
        """`item_bodies` decoded into pixels (a layout's codes put back in raster order)."""
        drawn = written or self.vocab.drawn(modality)
        bodies = self.item_bodies(prompts, sampling, modality, unconditional, forced, drawn)
        return self.codecs[modality].decode(torch.stack([self.vocab.item_codes(b, drawn, getattr(b, "extra", None))
                                                         for b in bodies]))

    def convert(self, items: list, into: str, seed: int | None = 0, **sampling) -> list[np.ndarray]:
        """Each item as the other modality, as the model was taught (`data.tasks.REQUESTS`): a
        picture's sound (into="audio"), or a picture of a sound (into="image"), with the drawing
        defaults and classifier-free guidance against the unconditional stream."""
        codec = self.codec_of(items)
        if (codec.name, into) not in REQUESTS:
            known = ", ".join(f"{a} -> {b}" for a, b in REQUESTS)
            raise SmaltoError(f"{codec.name} -> {into} is not a conversion this model was taught (known: {known})")
        if into not in self.codecs:
            raise SmaltoError(f"{self.name} was not trained on {'sounds' if into == 'audio' else into}")
        request = self.text_ids(REQUESTS[codec.name, into], beside=codec.name)
        prompts = [convert_prompt(self.vocab, codes, codec.name, request, into)
                   for codes in codec.encode(codec.read(items))]
        sampling = self.draw_sampling(seed, **sampling)
        uncond = [draw_prompt(self.vocab, [], into) for _ in prompts]
        if sampling.guidance in (0.0, 1.0):
            prompts = uncond if sampling.guidance == 0.0 else prompts
            sampling, uncond = replace(sampling, guidance=None), None
        return self.finish_items(prompts, sampling, into, uncond)

    def continue_clips(self, clips: list, given: int = 1, seed: int | None = 0,
                       temperature: float = 0.0) -> list[np.ndarray]:
        text = self.text_ids(CONTINUE, beside="video")
        try:
            prompts = [continue_prompt(self.vocab, text, codes, given) for codes in self.clip_codes(clips)]
        except ValueError as e:
            raise SmaltoError(str(e)) from None
        return self.finish_items(prompts, Sampling(temperature=temperature, seed=seed), "video")


    def continue_sounds(self, sounds: list, given: float | None = None, seed: int | None = 0,
                        temperature: float = 0.0) -> list[np.ndarray]:
        """Each sound carried on to this model's length (`sound_seconds`) from its first `given`
        seconds (None: all of it), cut to whole codec frames, as the model was taught on melodies
        (`data.melodies`). A model making sounds in the cells layout hears the start and makes the
        whole sound anew, each cell's words before its slot (its start as it heard it); another
        writes the start flat and carries its codes on."""
        waves, lengths = self.sound_waves(sounds, lengths=True)
        hop, frames = self.tokenizers.audio.cfg.hop, self.vocab.sound[0]
        if given is not None and not given > 0:
            raise SmaltoError(f"given must be a number of seconds > 0, got {given}")
        kept = [min(n, round(given * self.sample_rate)) if given is not None else n for n in lengths]
        for k, n in enumerate(kept):
            if not 1 <= n // hop < frames:
                raise SmaltoError(f"sound {k + 1}: {n / self.sample_rate:.2f} s to continue from; give "
                                  f"{hop / self.sample_rate:.3f} to {(frames - 1) * hop / self.sample_rate:.2f} s "
                                  f"(this model's sounds last {self.sound_seconds:.2f} s)")
        text, v, sampling = self.text_ids(CONTINUE_SOUND, beside="audio"), self.vocab, Sampling(temperature, seed=seed)
        waves = np.stack([np.where(np.arange(len(w)) < n // hop * hop, w, 0) for w, n in zip(waves, kept)])
        codes = self.codecs["audio"].encode(waves)
        if v.drawn("audio") != "audio":
            return self.finish_items([convert_prompt(v, c, "audio", text, "audio") for c in codes], sampling, "audio")
        prompts = [continue_prompt(v, text, c, n // hop, "audio") for c, n in zip(codes, kept)]
        return self.finish_items(prompts, sampling, "audio", written="audio")


def _reading(scene) -> str:
    return captions(scene)[0] if scene.objects else "no object the verifier can read"
