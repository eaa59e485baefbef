"""ShapesEval's sound section: ShapesWorld heard (`smalto.data.sounds`), judged by program.

Each kind of scene (seen, unseen, held-out) is heard as rendered sound, the model's own tokens
judged by the sound verifier (`verify.hearing.parse_sound`) and the picture verifier:

- caption: the scene parsed from the caption of a sound must be the truth (exact), and per
  attribute, as for pictures; beside it, the most frequent object count;
- QA: exact answers about a sound, beside each question type's most frequent answer;
- draw: a sound made from a canonical caption ("text -> sound"), heard back by the verifier,
  must be the scene the caption says (faithful); beside it, silence (faithful to empty scenes only);
  for a model making sounds in the cells layout, also with each cell's words written for it from
  the scene (`draw_given_words`: the model's codes after a program's words, not the model alone);
- picture -> sound: a picture's sound, heard back, must be its scene; sound -> picture: a
  picture drawn from a sound, read back by the pixel verifier, must be the sound's scene;
- the codec's round trip of the same sounds (`tokenizer_round_trip`): the ceiling of the rows
  that make sounds;
- continue: melodies (`data.melodies`) carried on from their first five notes, heard back, must
  hold the melody's last four (`continue_exact`); beside it, repeating the last note given.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from smalto.data.shapes import captions, cell_words
from smalto.data.melodies import GIVEN, MelodyWorld, continuation
from smalto.data.sounds import SoundConfig, render_sound
from smalto.eval.common import at_most, batches, pct
from smalto.pipeline import Pipeline
from smalto.verify.hearing import parse_sound
from smalto.verify.judges import ATTRIBUTES, judge_answer, judge_caption
from smalto.verify.scene import parse_image


def sound_config(pipe: Pipeline, world) -> SoundConfig:
    return SoundConfig(sample_rate=pipe.sample_rate, world=world.cfg)


def eval_sound(pipe: Pipeline, world, n: int, drawings: int, seed: int, melodies: int = 0) -> dict:
    """The sound section for one kind of scene (`world`, a ShapesWorld or a `Scenes` kind): n
    sounds read, `drawings` made from captions, from pictures and into pictures; and `melodies`
    continued (no scene: they belong to no kind)."""
    cfg = sound_config(pipe, world)
    total = at_most(world, max(n, drawings))
    samples = [world[i] for i in range(total)]
    waves = [render_sound(s.scene, cfg, np.random.default_rng([seed, 32, i])) for i, s in enumerate(samples)]
    rng = np.random.default_rng([seed, 33])
    checks, qa, answers = defaultdict(list), defaultdict(list), defaultdict(list)
    for chunk in batches(list(range(min(n, total)))):
        heard = [waves[i] for i in chunk]
        for i, text in zip(chunk, pipe.caption_batch(heard)):
            for name, ok in judge_caption(text, samples[i].scene).checks.items():
                checks[name.split("/")[0]].append(ok)
        pairs = [samples[i].qa[int(rng.integers(len(samples[i].qa)))] for i in chunk]
        for pair, answer in zip(pairs, pipe.ask_batch(heard, [p["q"] for p in pairs])):
            qa[pair["type"]].append(judge_answer(answer, pair["a"]).score == 1.0)
            answers[pair["type"]].append(pair["a"])
    counts = [len(s.scene.objects) for s in samples[:n]]
    majority = [a == max(set(v), key=v.count) for v in answers.values() for a in v]
    report = {"caption_exact": pct(checks["exact"]), **{f"caption_{k}": pct(checks[k]) for k in ("count", *ATTRIBUTES)},
              "count_baseline": pct([c == max(set(counts), key=counts.count) for c in counts]),
              "qa_overall": pct([x for v in qa.values() for x in v]), "qa_majority_baseline": pct(majority),
              **{f"qa_{k}": pct(v) for k, v in sorted(qa.items())}}
    made = defaultdict(list)
    sampling = pipe.draw_sampling(seed)
    for chunk in batches(list(range(min(drawings, total))), 16):
        truth = [samples[i].scene for i in chunk]
        drawn = pipe.draw([captions(t)[0] for t in truth], sampling, "audio")
        made["draw_faithful"] += [parse_sound(w, cfg) == t for w, t in zip(drawn, truth)]
        if pipe.vocab.drawn("audio") != "audio":  # (its cells' words written for it: the model and a program)
            given = pipe.draw([captions(t)[0] for t in truth], sampling, "audio", [cell_words(t) for t in truth])
            made["draw_given_words"] += [parse_sound(w, cfg) == t for w, t in zip(given, truth)]
        made["silence_baseline"] += [not t.objects for t in truth]
        heard = pipe.convert([samples[i].image for i in chunk], "audio", seed)
        made["picture_to_sound"] += [parse_sound(w, cfg) == t for w, t in zip(heard, truth)]
        pictures = pipe.convert([waves[i] for i in chunk], "image", seed)
        made["sound_to_picture"] += [parse_image(p, world.cfg) == t for p, t in zip(pictures, truth)]
        codec = pipe.codecs["audio"]
        round_trip = codec.decode(codec.encode(np.stack([waves[i] for i in chunk]))[:, None])
        made["tokenizer_round_trip"] += [parse_sound(w, cfg) == t for w, t in zip(round_trip, truth)]
    if melodies:
        made |= eval_continuation(pipe, cfg, melodies, seed)
    return report | {k: pct(v) for k, v in made.items()}


def eval_continuation(pipe: Pipeline, cfg: SoundConfig, n: int, seed: int) -> dict[str, list[bool]]:
    """n melodies of the seed (`data.melodies`) continued from their first five notes, each heard
    back and judged on the slots after them; beside it, repeating the last given note. Motifs of
    one or two notes and scales are few (36, about 1,300 and 72 kinds), so training met them
    all; three-note motifs are about 45,000 kinds, mostly new (`continue_exact_motif3`)."""
    world, given = MelodyWorld(cfg, seed), GIVEN[1]
    out = defaultdict(list)
    for chunk in batches(list(range(n)), 16):
        truth = [world[i] for i in chunk]
        waves = world.waves_of(chunk)[:, :given * cfg.slot_samples]
        for m, wave in zip(truth, pipe.continue_sounds(list(waves))):
            ok = continuation(m.scene, parse_sound(wave, cfg), given)
            out["continue_exact"].append(ok)
            out[f"continue_exact_{m.rule}{m.period if m.rule == 'motif' else ''}"].append(ok)
            notes = m.notes()
            out["continue_repeat_baseline"].append(all(x == notes[given - 1] for x in notes[given:]))
    return out


# The rows of the summary table, and the baseline beside each that has one.
SOUND_ROWS = ("caption_exact", "caption_count", "qa_overall", "draw_faithful", "draw_given_words", "picture_to_sound",
              "sound_to_picture", "tokenizer_round_trip", "continue_exact", "continue_exact_motif3")
SOUND_BASELINES = {"caption_count": "count_baseline", "qa_overall": "qa_majority_baseline",
                   "draw_faithful": "silence_baseline", "continue_exact": "continue_repeat_baseline"}
