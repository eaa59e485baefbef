"""ShapesEval: exact scores for reading and drawing, judged by program on fixed seeds.

Every judgement comes from `smalto.verify.judges`, the functions RL rewards and test-time
checks use too.

- caption: the scene graph parsed from the generated caption must equal the truth (exact), and
  per attribute: object count, and colour / shape / size of the object found in each true cell;
- QA: exact answer accuracy per question type;
- premises: questions that name an object without its place, half about one the scene lacks
  ("what color is the square?" -> "there is no square": false premises) and half about one it has;
- text -> image, judged by the verifier on the decoded pixels, per category (like GenEval):
  single object (exact scene), two objects (exact scene), counting (number of objects), colours
  (the single object's colour), position (the single object's cell), attribute binding (the
  (colour, shape) pairs of two objects that differ in both), relations (a relational prompt, "a
  small red circle left of a large blue square", checked by the solver against the parsed
  pixels). Drawing settings are chosen elsewhere, on the development seed (`bench/draw_defaults.py`).
- conversation (`smalto.eval.conversations`): questions about a picture whose follow-ups say only
  "it" (after the model's own replies), questions about a scene given in words, and the held-out
  conversation set: greetings, thanks, requests outside the world, descriptions and questions in
  any order, with and without a picture, in phrasings training never used;
- hallucination: POPE-style yes/no questions about present and absent objects (random, popular
  and near-miss negatives), CHAIR-style rates of absent objects named in captions, and absent
  objects named after the conversation primes them (`smalto.eval.hallucination`);
- new words: for a model tuned on a world with more shapes and colours ("shapes-plus"), captions,
  answers and drawings of scenes that have them, against the image tokenizer's round trip;
- video (a model trained on clips): clip captions, questions about motion, clips drawn from
  captions and clips continued, read back by the clip verifier (`smalto.eval.video_eval`);
- sound (a model trained on sounds): sounds captioned and asked about, made from captions and
  from pictures, and pictures drawn from sounds, each judged by the sound or pixel verifier
  (`smalto.eval.sound_eval`);
- effort: the same QA, premise and drawing metrics at each test-time effort level asked for
  (`smalto.effort`), with the tokens and seconds they cost, by who answered: the reply as given,
  the model's own answer, how often the solver overrode it; drawings as pass@N (the verifier
  selects) and as the first candidate alone.

Every number is reported per kind of scene (`smalto.eval.scenes`): seen in training, unseen
(training compositions, never seen as wholes: the headline) and held-out compositions; the
trivial baselines (the most frequent answer or count, always "yes", a copied clip) beside them,
and the drawing verifier checked by a second, independent reader (`verify.second_reader`).
"""

from __future__ import annotations

import time
from itertools import count, islice
from collections import defaultdict
from dataclasses import asdict, dataclass, replace

import numpy as np

from smalto.data.shapes import Scene, ShapesConfig, ShapesWorld, captions, premise_question, render
from smalto.eval.common import BATCH, at_most, batches, pct
from smalto.eval.conversations import CHAT_ROWS, eval_conversation
from smalto.eval.hallucination import ROWS, eval_hallucination, eval_pope, flat
from smalto.eval.scenes import KINDS, scene_kinds
from smalto.eval.sound_eval import SOUND_BASELINES, SOUND_ROWS, eval_sound
from smalto.eval.video_eval import VIDEO_BASELINES, VIDEO_ROWS, eval_video, motion_world
from smalto.format import Vocab
from smalto.model import Transformer
from smalto.pipeline import DRAW_DEFAULTS, Pipeline
from smalto.progress import bar as progress_bar
from smalto.tokenizers import Tokenizers
from smalto.verify.judges import ATTRIBUTES, judge_answer, judge_caption, judge_drawing

EVAL_SEED = 10_000  # far from training seeds; fixed so numbers are reproducible; only to report
DEV_SEED = 40_000  # every choice (drawing defaults, thresholds, probes during training) is made on this one
PROBE_DRAWING = {"guidance": 1.5, "temperature": 0.3}  # the shipped model's (README: how it was trained)


@dataclass(frozen=True)
class EvalConfig:
    captions: int = 200
    questions: int = 400
    drawings: int = 48  # per category group (one-object, two-object, counting prompts)
    guidance: float | None = None  # None: the model's default
    seed: int = EVAL_SEED
    premises: int = 200
    relations: int = 48
    conversations: int = 100
    hallucination: int = 200  # scenes asked about (POPE: twice per setting), captioned (CHAIR) and primed
    clips: int = 100  # clips captioned and asked about (a model trained on clips)
    clip_drawings: int = 32  # clips drawn, and continued
    sounds: int = 100  # sounds captioned and asked about (a model trained on sounds)
    sound_drawings: int = 32  # sounds made from captions and from pictures, and pictures from sounds
    efforts: tuple[str, ...] = ()  # test-time effort levels to report besides "none"


# `smalto eval --quick` (and `smalto demo --quick`): a fifth of the items, about a minute on 2 cores.
QUICK_EVAL = EvalConfig(captions=40, questions=80, drawings=16, premises=40, relations=8, conversations=20,
                        hallucination=20, clips=20, clip_drawings=8, sounds=20, sound_drawings=8)



def eval_captions(pipe: Pipeline, world: ShapesWorld, n: int) -> dict:
    scenes = [world[i] for i in range(at_most(world, n))]
    checks = defaultdict(list)  # "exact", "count", and each attribute pooled over all true objects
    for chunk in batches(scenes):
        for s, text in zip(chunk, pipe.caption_batch([x.image for x in chunk])):
            for name, ok in judge_caption(text, s.scene).checks.items():
                checks[name.split("/")[0]].append(ok)
    counts = [len(x.scene.objects) for x in scenes]  # the baseline: always the most frequent count
    return {name: pct(checks[name]) for name in ("exact", "count", *ATTRIBUTES)} | {
        "count_baseline": pct([c == max(set(counts), key=counts.count) for c in counts])}


def _answer(pipe: Pipeline, items: list[tuple[np.ndarray, dict]], effort: str) -> dict:
    """Accuracy per question type and overall, as the reply stands (whoever answered it), with who
    answered: "model" scores the model's own answers (after its thinking), "solver_answered" is
    the share the solver answered from the model's description, "overridden" the share where it
    changed the model's answer; and the mean tokens decoded and seconds spent."""
    by_type, own, solver, overridden, tokens, start = defaultdict(list), [], [], [], [], time.perf_counter()
    for chunk in batches(items):
        replies = pipe.reply_batch([im for im, _ in chunk], [p["q"] for _, p in chunk], effort)
        for (_, pair), reply in zip(chunk, replies):
            by_type[pair["type"]].append(judge_answer(reply.text, pair["a"]).score == 1.0)
            own.append(judge_answer(reply.own, pair["a"]).score == 1.0)
            solver.append(reply.answered_by == "solver")
            overridden.append(reply.check == "corrected")
            tokens.append(reply.tokens)
    overall = [x for v in by_type.values() for x in v]
    # The trivial baseline: each question type answered with its most frequent true answer.
    answers = defaultdict(list)
    for _, pair in items:
        answers[pair["type"]].append(pair["a"])
    majority = [a == max(set(v), key=v.count) for v in answers.values() for a in v]
    return {"overall": pct(overall), **{k: pct(v) for k, v in sorted(by_type.items())},
            "majority_baseline": pct(majority), "model": pct(own), "solver_answered": pct(solver),
            "overridden": pct(overridden),
            "tokens": round(float(np.mean(tokens)), 1), "seconds": round(time.perf_counter() - start, 1)}


def eval_questions(pipe: Pipeline, world: ShapesWorld, n: int, effort: str = "none") -> dict:
    items = []
    for i in range(at_most(world, n)):
        s = world[i]
        items.append((s.image, s.qa[np.random.default_rng([world.seed, i]).integers(len(s.qa))]))
    return _answer(pipe, items, effort)


def eval_premises(pipe: Pipeline, world: ShapesWorld, n: int, effort: str = "none") -> dict:
    """Questions naming an object without its place: "false_premise" (the scene lacks it; the
    answer is "there is no ...") and "premise" (it has exactly one)."""
    items = [(s.image, premise_question(s.scene, world.cfg, np.random.default_rng([world.seed, 3, i]), world.split))
             for i, s in ((i, world[i]) for i in range(at_most(world, n)))]
    return _answer(pipe, items, effort)


def _scenes_with(world: ShapesWorld, n: int, objects: int, distinct: bool = False) -> list[Scene]:
    """The first n scenes of `objects` objects (fewer if a `Scenes` kind has fewer)."""
    out = []
    for i in range(at_most(world, 10 ** 9)):
        if len(out) == n:
            break
        scene = world.scene(i)
        if len(scene.objects) != objects:
            continue
        colors, shapes = {o.color for o in scene.objects}, {o.shape for o in scene.objects}
        if distinct and (len(colors) < objects or len(shapes) < objects):
            continue
        out.append(scene)
    return out


def _images(pipe: Pipeline, prompts: list[str], guidance: float | None, seed: int,
            effort: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(chosen, first): one drawing per prompt, in batches at effort "none" (the two are the same);
    else each through `Pipeline.drawings` (planned, best of N by the verifier: `chosen` is what the
    verifier selected, `first` the first candidate, the model's own rate on the planned prompt)."""
    if effort == "none":
        images = [im for k, chunk in enumerate(batches(prompts))
                  for im in pipe.draw(chunk, pipe.draw_sampling(seed + k, guidance=guidance))]
        return images, images
    drawings = [pipe.drawings(p, 1, effort, seed=seed + i, guidance=guidance)[0] for i, p in enumerate(prompts)]
    return [d.image for d in drawings], [d.image if d.first is None else d.first for d in drawings]


def _draw(pipe: Pipeline, scenes: list[Scene], caption: int, guidance: float | None, seed: int, cfg: ShapesConfig,
          effort: str = "none") -> tuple[list[dict[str, bool]], list[dict[str, bool]]]:
    """Draw each scene from one of its captions; the judge's checks of each (chosen, first) drawing."""
    from smalto.verify.second_reader import read

    chosen, first = _images(pipe, [captions(s)[caption] for s in scenes], guidance, seed, effort)
    checks = [judge_drawing(im, s, cfg).checks for im, s in zip(chosen, scenes)]
    for c, im, s in zip(checks, chosen, scenes):  # the verifier checked by an independent reader
        c["second_reader"] = read(im, cfg) == s
    return checks, [judge_drawing(im, s, cfg).checks for im, s in zip(first, scenes)]


def eval_relations(pipe: Pipeline, world: ShapesWorld, n: int, seed: int, effort: str = "none") -> tuple[float, float]:
    """Two objects named by a relation ("a small red circle left of a large blue square"): the
    share of drawings whose parsed pixels satisfy every constraint of the prompt (z3), as (chosen,
    first candidate) (the same at effort "none")."""
    from smalto.verify.scene import parse_image
    from smalto.verify.smt import check
    from smalto.verify.spec import parse_prompt

    prompts = [captions(s)[3] for s in _scenes_with(world, n, 2, distinct=True)]
    drawn = _images(pipe, prompts, None, seed + 3000, effort)
    return tuple(pct([check(parse_prompt(p), parse_image(im, world.cfg)).satisfied for p, im in zip(prompts, images)])
                 for images in drawn)


def _categories(one: list[dict], two: list[dict], counted: list[dict]) -> dict:
    result = {
        "single_object": pct([c["exact"] for c in one]),
        "two_objects": pct([c["exact"] for c in two]),
        "counting": pct([c["counting"] for c in counted]),
        "colors": pct([c["colors"] for c in one]),
        "position": pct([c["position"] for c in one]),
        "attribute_binding": pct([c["attribute_binding"] for c in two]),
    }
    # (a kind may lack a category: a model that saw every one-object scene has no unseen one)
    known = [v for v in result.values() if not np.isnan(v)]
    result["overall"] = round(float(np.mean(known)), 1) if known else float("nan")
    return result


def eval_drawing(pipe: Pipeline, world: ShapesWorld, n: int, guidance: float | None, seed: int,
                 effort: str = "none", relations: int | None = None) -> dict:
    """Drawing categories, with relations; at an effort above "none" these are pass@N (the verifier
    selects among N candidates), and "one_sample" holds the same for the first candidate alone."""
    cfg = world.cfg
    one = _draw(pipe, _scenes_with(world, n, 1), 0, guidance, seed, cfg, effort)
    two = _draw(pipe, _scenes_with(world, n, 2, distinct=True), 0, guidance, seed + 1000, cfg, effort)
    counted = _draw(pipe, [world.scene(i) for i in range(at_most(world, n))], 1, guidance, seed + 2000, cfg, effort)
    relations = eval_relations(pipe, world, n if relations is None else relations, seed, effort)
    result = _categories(one[0], two[0], counted[0])
    result["counts"] = {"single_object": len(one[0]), "two_objects": len(two[0]), "counting": len(counted[0])}
    judged = one[0] + two[0] + counted[0]
    result["judges"] = {"verifier_exact": pct([c["exact"] for c in judged]),
                        "second_reader_exact": pct([c["second_reader"] for c in judged]),
                        "agreement": pct([c["exact"] == c["second_reader"] for c in judged]), "drawings": len(judged)}
    result["relations"] = relations[0]
    if effort != "none":
        result["one_sample"] = {**_categories(one[1], two[1], counted[1]), "relations": relations[1]}
    return result



def eval_new_words(pipe: Pipeline, world_cfg: ShapesConfig, n: int, seed: int) -> dict:
    """Scenes with a shape or colour beyond the default world's (`ShapesConfig.new_words`, e.g. the
    "shapes-plus" world a model was fine-tuned on): caption exact, QA about the new words, one-object
    drawings of them, and the image tokenizer's round trip of those same scenes, the ceiling on the
    drawings (a tokenizer that cannot reconstruct a colour cannot have it drawn)."""
    world, new = ShapesWorld(world_cfg, seed, "all"), world_cfg.new_words

    def novel(scene: Scene) -> bool:
        return any(o.shape in new or o.color in new for o in scene.objects)

    samples = list(islice((s for s in map(world.__getitem__, count()) if novel(s.scene)), n))
    checks = [judge_caption(text, s.scene).checks["exact"]
              for chunk in batches(samples) for s, text in zip(chunk, pipe.caption_batch([x.image for x in chunk]))]
    items = [(s.image, p) for s in samples for p in s.qa if set(f"{p['q']} {p['a']}".split()) & new]
    answers = _answer(pipe, items[:2 * n], "none")
    single = [s for s in samples if len(s.scene.objects) == 1][:BATCH]
    prompts = [captions(s.scene)[0] for s in single]
    images = [im for k, chunk in enumerate(batches(prompts)) for im in pipe.draw(chunk, pipe.draw_sampling(seed + k))]
    round_trip = pipe.tokenizers.image.decode(pipe.tokenizers.image.encode(np.stack([s.image for s in single])))

    def exact(drawn) -> float:
        return pct([judge_drawing(im, s.scene, world_cfg).score == 1.0 for im, s in zip(drawn, single)])

    return {"caption_exact": pct(checks), "qa": answers["overall"], "draw_single_object": exact(images),
            "tokenizer_round_trip": exact(round_trip)}


def weights_fingerprint(model) -> str:
    """A short hash of the weights as float32 values in name order: the same checkpoint gives the
    same fingerprint whatever its stored or running dtype (bf16 widens to float32 exactly)."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def evaluate(pipe: Pipeline, cfg: EvalConfig = EvalConfig(), heldout: bool = True,
             kinds: tuple[str, ...] = KINDS, progress: bool = False) -> dict:
    """The report: per kind of scene (`smalto.eval.scenes`: seen, unseen, heldout) every section,
    effort levels on the unseen and held-out kinds, the settings it ran with and the weights'
    fingerprint (no paths). `progress`: a bar over the sections, with an ETA, on stderr."""
    shapes = replace(pipe.world or ShapesConfig(), image_size=pipe.image_size)
    found = scene_kinds(shapes, cfg.seed, pipe.streams, tuple(k for k in kinds if heldout or k != "heldout"))
    report: dict = {"model": pipe.name, "weights": weights_fingerprint(pipe.model), "seed": cfg.seed,
                    "settings": asdict(cfg), "scenes": found.describe()}
    plan = []  # (kind, section, effort) in the order they run
    for name in found.kinds:
        plan += [(name, section, "none") for section in SECTIONS]
        plan += [(name, "video", "none")] if pipe.reads_clips and name != "seen" else []
        plan += [(name, "sound", "none")] if pipe.hears else []
        plan += [(name, "effort", e) for e in (cfg.efforts if name != "seen" else ())]
    plan += [(None, "new_words", "none")] if pipe.world is not None and pipe.world.new_words else []
    bar = progress_bar(plan, desc="ShapesEval", unit="section", enabled=progress)
    for name, section, effort in bar:
        bar.set_postfix_str(f"{name or ''} {section} {'' if effort == 'none' else effort}".strip())
        world = found.kinds.get(name)
        if section == "new_words":
            report["new_words"] = eval_new_words(pipe, pipe.world, cfg.captions // 2, cfg.seed)
        elif section == "video":  # (clips are many: a clip is seen again by chance almost never)
            report[name]["video"] = eval_video(pipe, motion_world(pipe, cfg.seed, "heldout" if name == "heldout" else
                                                                  "train"), cfg.clips, cfg.clip_drawings, cfg.seed)
        elif section == "sound":
            report[name]["sound"] = eval_sound(pipe, world, cfg.sounds, cfg.sound_drawings, cfg.seed,
                                               cfg.sound_drawings if name == "unseen" else 0)
        elif section == "effort":
            start = time.perf_counter()
            draw = eval_drawing(pipe, world, cfg.drawings, cfg.guidance, cfg.seed, effort, relations=cfg.relations)
            draw["seconds"] = round(time.perf_counter() - start, 1)
            report[name].setdefault("effort", {})[effort] = {
                "qa": eval_questions(pipe, world, cfg.questions, effort),
                "premises": eval_premises(pipe, world, cfg.premises, effort), "draw": draw,
                "pope": eval_pope(pipe, world, cfg.hallucination, effort)}
        else:
            report.setdefault(name, {})[section] = SECTIONS[section](pipe, world, cfg)
    return report


# The sections every kind of scene gets, in their order in the report.
SECTIONS = {
    "caption": lambda pipe, world, cfg: eval_captions(pipe, world, cfg.captions),
    "qa": lambda pipe, world, cfg: eval_questions(pipe, world, cfg.questions),
    "premises": lambda pipe, world, cfg: eval_premises(pipe, world, cfg.premises),
    "draw": lambda pipe, world, cfg: eval_drawing(pipe, world, cfg.drawings, cfg.guidance, cfg.seed,
                                                  relations=cfg.relations),
    "conversation": lambda pipe, world, cfg: eval_conversation(pipe, world, cfg.conversations),
    "hallucination": lambda pipe, world, cfg: eval_hallucination(pipe, world, cfg.hallucination),
}


def _cell(value) -> str:
    return "—" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.1f}"


def summary_table(report: dict) -> str:
    """Markdown tables of the headline numbers: one column per kind of scene (the unseen one is the
    headline), and the trivial baseline beside each row that has one."""
    kinds = [k for k in KINDS if k in report]
    rows = [("caption exact", "caption", "exact", None), ("caption colour", "caption", "color", None),
            ("caption shape", "caption", "shape", None), ("caption size", "caption", "size", None),
            ("caption count", "caption", "count", ("caption", "count_baseline")),
            ("QA overall", "qa", "overall", ("qa", "majority_baseline"))]
    qa_types = sorted({k for s in kinds for k in report[s]["qa"] if k not in ("overall", *QA_EXTRA, *COSTS)})
    rows += [(f"QA {t}", "qa", t, None) for t in qa_types]
    rows += [("QA false premise", "premises", "false_premise", None), ("QA premise", "premises", "premise", None)]
    rows += [(f"draw {k.replace('_', ' ')}", "draw", k, None) for k in DRAW_ROWS]
    rows += [("draw: verifier and second reader agree", "judges", "agreement", None)]
    rows += [(f"chat {k.replace('_', ' ')}", "conversation", k, None) for k in CHAT_ROWS]
    views = {s: dict(report[s]) for s in kinds}  # nested sections flattened to one number per row
    for s in kinds:
        views[s]["judges"] = report[s]["draw"].get("judges", {})
    if any("hallucination" in report[s] for s in kinds):
        for s in kinds:
            views[s]["hallucination"] = flat(report[s]["hallucination"]) if "hallucination" in report[s] else {}
        baselines = {"pope_random_f1": 66.7, "pope_popular_f1": 66.7, "pope_adversarial_f1": 66.7}
        rows += [(label, "hallucination", k, baselines.get(k)) for k, label in ROWS.items()]
    if any("video" in report[s] for s in kinds):
        rows += [(f"clip {k.replace('_', ' ')}", "video", k, ("video", VIDEO_BASELINES[k]) if k in VIDEO_BASELINES
                  else None) for k in VIDEO_ROWS]
    if any("sound" in report[s] for s in kinds):
        rows += [(f"sound {k.replace('_', ' ')}", "sound", k, ("sound", SOUND_BASELINES[k]) if k in SOUND_BASELINES
                  else None) for k in SOUND_ROWS if any(k in views[s].get("sound", {}) for s in kinds)]
    header = "| metric (%), the model's own tokens | " + " | ".join(f"{s} scenes" for s in kinds) + " | baseline |"
    lines = [header, "|---" * (len(kinds) + 2) + "|"]
    base_kind = "unseen" if "unseen" in kinds else kinds[0]
    for label, group, key, baseline in rows:
        cells = [views[s].get(group, {}).get(key, float("nan")) for s in kinds]
        if isinstance(baseline, tuple):  # measured on the headline kind's own items
            baseline = views[base_kind].get(baseline[0], {}).get(baseline[1])
        lines.append(f"| {label} | " + " | ".join(map(_cell, cells)) + f" | {_cell(baseline)} |")
    lines.append("")
    lines.append("Baselines: the most frequent count or answer of each question type on the same items; POPE "
                 "always saying yes; a clip that copies its given frames; silence for a sound. '—': the kind holds "
                 "no such scene.")
    if any("draw_given_words" in views[s].get("sound", {}) for s in kinds):
        lines.append("'sound draw given words' is not the model alone: each cell's words are written from the "
                     "scene by a program, the model makes the codes after them.")
    if "scenes" in report:
        sc = report["scenes"]
        lines.append(f"Scenes: {sc['scenes_in_training']} distinct scenes in the recorded training streams"
                     if sc["verified"] else "Scenes: training streams never recorded; unseen rests on the reserve rule")
    for s in kinds:
        if "effort" in report[s]:
            lines += ["", effort_table(report[s], s)]
    if "new_words" in report:
        lines += ["", "| new words (%) | " + " | ".join(k.replace("_", " ") for k in report["new_words"]) + " |",
                  "|---" * (len(report["new_words"]) + 1) + "|",
                  "| scenes with them | " + " | ".join(map(_cell, report["new_words"].values())) + " |"]
    return "\n".join(lines)


COSTS = ("tokens", "seconds")
QA_EXTRA = ("majority_baseline", "model", "solver_answered", "overridden")
DRAW_ROWS = ("overall", "single_object", "two_objects", "counting", "colors", "position", "attribute_binding",
             "relations")


def effort_table(split: dict, name: str) -> str:
    """Accuracy and cost per effort level, for one kind of scene, by who answered: the reply as the
    API gives it (the solver's answer where it computed one), the model's own answer, how often
    the solver answered and overrode it; drawings as pass@N (the verifier selects among N) and as
    the first candidate alone."""
    def pope(level: dict) -> dict:  # POPE's F1 and yes-ratio per setting, one level deep
        return {f"{k}_{m}": v[m] for k, v in level.items() if k.startswith("pope_") for m in ("f1", "yes_ratio")}

    none = {k: split[k] for k in ("qa", "premises", "draw")} | {"pope": pope(split.get("hallucination", {}))}
    none["draw"] = {**none["draw"], "one_sample": none["draw"]}
    levels = {"none": none, **{e: {**r, "pope": pope(r.get("pope", {}))} for e, r in split["effort"].items()}}
    for r in levels.values():  # (copies: the report itself is left as it is)
        r["draw"] = {**r["draw"], **{f"one_{k}": v for k, v in r["draw"].get("one_sample", {}).items()}}
        r["pope"] = dict(r["pope"])
        for group in ("qa", "premises"):  # (at effort none the reply is the model's own)
            r[group] = {**r[group], "model": r[group].get("model", r[group]["overall"])}
        for s in ("random", "adversarial"):
            for m in ("f1", "yes_ratio"):
                r["pope"].setdefault(f"pope_{s}_model_{m}", r["pope"].get(f"pope_{s}_{m}"))
    rows = [("QA, reply as given (%)", "qa", "overall"), ("QA, the model's own answer (%)", "qa", "model"),
            ("QA answered by the solver (%)", "qa", "solver_answered"),
            ("QA, solver overrode the model (%)", "qa", "overridden"),
            ("false premise, reply as given (%)", "premises", "false_premise"),
            ("premises, the model's own answer (%)", "premises", "model"),
            ("QA tokens per answer", "qa", "tokens"), ("QA seconds", "qa", "seconds"),
            *[(f"draw {k.replace('_', ' ')}, pass@N (verifier selects) (%)", "draw", k) for k in DRAW_ROWS],
            *[(f"draw {k.replace('_', ' ')}, first candidate (%)", "draw", f"one_{k}") for k in DRAW_ROWS],
            ("draw seconds", "draw", "seconds"),
            *[(f"POPE {s} {label}{who} (%)", "pope", f"pope_{s}{suffix}_{m}") for s in ("random", "adversarial")
              for suffix, who in (("", ", reply as given"), ("_model", ", the model's own")) for m, label in
              (("f1", "F1"), ("yes_ratio", "yes-ratio"))]]
    lines = [f"| {name} scenes | " + " | ".join(f"effort {e}" for e in levels) + " |",
             "|---" * (len(levels) + 1) + "|"]
    for label, group, key in rows:
        lines.append(f"| {label} | " + " | ".join(_cell(r[group].get(key)) for r in levels.values()) + " |")
    return "\n".join(lines)


def training_probe(model, vocab, tokenizers) -> tuple[dict, bytes]:
    """A seconds-long look during training: small-subset scores and a gallery of drawings."""
    from smalto.plots import image_grid, png_bytes

    # Drawn as the shipped model draws (its packed guidance and temperature): at the defaults a
    # young model's drawings are almost never exact, and the probe would show nothing.
    pipe = Pipeline(model, vocab, tokenizers, draw_defaults={**DRAW_DEFAULTS, **PROBE_DRAWING})
    world = ShapesWorld(ShapesConfig(image_size=pipe.image_size), DEV_SEED, "train")
    metrics = {"caption_exact": eval_captions(pipe, world, 32)["exact"],
               "qa": eval_questions(pipe, world, 64)["overall"]}
    scenes = _scenes_with(world, 8, 1) + _scenes_with(world, 8, 2)
    images = pipe.draw([captions(s)[0] for s in scenes])
    metrics["draw_exact"] = pct([judge_drawing(im, s, world.cfg).score == 1.0 for im, s in zip(images, scenes)])
    truth = np.stack([render(s, world.cfg) for s in scenes])
    return metrics, png_bytes(image_grid([truth[:8], np.stack(images[:8]), truth[8:], np.stack(images[8:])]))


def probe(model: Transformer, vocab: Vocab, tokenizers: Tokenizers, draw: dict, split: str) -> dict:
    """A minute's ShapesEval subset on the development seed (the evaluation seed only reports):
    drawing categories at the model's own drawing settings, relations, and QA: what `smalto rl`
    scores its policy with (`training.rl.train_rl(evaluate=probe)`)."""

    # (a training run's directory has no drawing defaults of its own: the probe then draws as the
    # shipped model does, like `smalto train`'s)
    pipe = Pipeline(model, vocab, tokenizers, draw_defaults={**DRAW_DEFAULTS, **(draw or PROBE_DRAWING)})
    world = ShapesWorld(ShapesConfig(image_size=pipe.image_size), DEV_SEED, split)
    drawn = eval_drawing(pipe, world, 24, None, DEV_SEED)
    return {"two_objects": drawn["two_objects"], "attribute_binding": drawn["attribute_binding"],
            "single_object": drawn["single_object"], "relations": drawn["relations"],
            "qa": eval_questions(pipe, world, 100)["overall"]}
