"""ShapesEval: exact scores for reading and drawing, judged by program on fixed seeds.

Every judgement comes from `smalto.verify.judges`, the functions RL rewards and test-time
checks use too.

- caption: the scene graph parsed from the generated caption must equal the truth (exact), and
  per attribute: object count, and colour / shape / size of the object found in each true cell;
- QA: exact answer accuracy per question type;
- text -> image, judged by the verifier on the decoded pixels, per category (like GenEval):
  single object (exact scene), two objects (exact scene), counting (number of objects), colours
  (the single object's colour), position (the single object's cell), attribute binding (the
  (colour, shape) pairs of two objects that differ in both); plus a guidance-scale sweep.

Every number is reported for the training compositions and, separately, for the held-out ones
(scenes from the "heldout" split, which the transformer never saw).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from smalto.data.shapes import Scene, ShapesConfig, ShapesWorld, captions, render
from smalto.pipeline import DRAW_DEFAULTS, Pipeline
from smalto.verify.judges import ATTRIBUTES, judge_answer, judge_caption, judge_drawing

EVAL_SEED = 10_000  # far from training seeds; fixed so numbers are reproducible
PROBE_DRAWING = {"guidance": 1.5, "temperature": 0.3}  # the shipped model's (README: how it was trained)
BATCH = 32


@dataclass(frozen=True)
class EvalConfig:
    captions: int = 200
    questions: int = 400
    drawings: int = 48  # per category group (one-object, two-object, counting prompts)
    guidance: float | None = None  # None: the model's default
    sweep: tuple[float, ...] = (1.0, 2.0, 3.0, 5.0)
    sweep_prompts: int = 24
    seed: int = EVAL_SEED


def _batches(items: list, size: int = BATCH):
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _pct(values: list[bool]) -> float:
    return round(100.0 * float(np.mean(values)), 1) if values else float("nan")


def eval_captions(pipe: Pipeline, world: ShapesWorld, n: int) -> dict:
    scenes = [world[i] for i in range(n)]
    checks = defaultdict(list)  # "exact", "count", and each attribute pooled over all true objects
    for chunk in _batches(scenes):
        for s, text in zip(chunk, pipe.caption_batch([x.image for x in chunk])):
            for name, ok in judge_caption(text, s.scene).checks.items():
                checks[name.split("/")[0]].append(ok)
    return {name: _pct(checks[name]) for name in ("exact", "count", *ATTRIBUTES)}


def eval_questions(pipe: Pipeline, world: ShapesWorld, n: int) -> dict:
    items = []
    i = 0
    while len(items) < n:
        s = world[i]
        pair = s.qa[np.random.default_rng([world.seed, i]).integers(len(s.qa))]
        items.append((s.image, pair))
        i += 1
    by_type = defaultdict(list)
    for chunk in _batches(items):
        answers = pipe.ask_batch([im for im, _ in chunk], [p["q"] for _, p in chunk])
        for (_, pair), answer in zip(chunk, answers):
            by_type[pair["type"]].append(judge_answer(answer, pair["a"]).score == 1.0)
    overall = [x for v in by_type.values() for x in v]
    return {"overall": _pct(overall), **{k: _pct(v) for k, v in sorted(by_type.items())}}


def _scenes_with(world: ShapesWorld, n: int, objects: int, distinct: bool = False) -> list[Scene]:
    out, i = [], 0
    while len(out) < n:
        scene = world.scene(i)
        i += 1
        if len(scene.objects) != objects:
            continue
        colors, shapes = {o.color for o in scene.objects}, {o.shape for o in scene.objects}
        if distinct and (len(colors) < objects or len(shapes) < objects):
            continue
        out.append(scene)
    return out


def _draw(pipe: Pipeline, scenes: list[Scene], caption: int, guidance: float | None, seed: int, cfg: ShapesConfig
          ) -> list[dict[str, bool]]:
    """Draw each scene from one of its captions; the judge's checks of each drawing."""
    checks = []
    for k, chunk in enumerate(_batches(scenes)):
        images = pipe.draw([captions(s)[caption] for s in chunk], pipe.draw_sampling(seed + k, guidance=guidance))
        checks += [judge_drawing(im, s, cfg).checks for im, s in zip(images, chunk)]
    return checks


def eval_drawing(pipe: Pipeline, world: ShapesWorld, n: int, guidance: float | None, seed: int) -> dict:
    cfg = world.cfg
    one = _draw(pipe, _scenes_with(world, n, 1), 0, guidance, seed, cfg)
    two = _draw(pipe, _scenes_with(world, n, 2, distinct=True), 0, guidance, seed + 1000, cfg)
    counted = _draw(pipe, [world.scene(i) for i in range(n)], 1, guidance, seed + 2000, cfg)
    result = {
        "single_object": _pct([c["exact"] for c in one]),
        "two_objects": _pct([c["exact"] for c in two]),
        "counting": _pct([c["counting"] for c in counted]),
        "colors": _pct([c["colors"] for c in one]),
        "position": _pct([c["position"] for c in one]),
        "attribute_binding": _pct([c["attribute_binding"] for c in two]),
    }
    result["overall"] = round(float(np.mean(list(result.values()))), 1)
    return result


def eval_guidance_sweep(pipe: Pipeline, world: ShapesWorld, n: int, scales: tuple[float, ...], seed: int) -> dict:
    scenes = _scenes_with(world, n // 2, 1) + _scenes_with(world, n - n // 2, 2)
    return {str(scale): _pct([c["exact"] for c in _draw(pipe, scenes, 0, scale, seed, world.cfg)]) for scale in scales}


def evaluate(pipe: Pipeline, cfg: EvalConfig = EvalConfig(), heldout: bool = True, sweep: bool = True) -> dict:
    shapes = ShapesConfig(image_size=pipe.image_size)
    splits = {"train": ShapesWorld(shapes, cfg.seed, "train")}
    if heldout:
        splits["heldout"] = ShapesWorld(shapes, cfg.seed, "heldout")
    report: dict = {}
    for name, world in splits.items():
        report[name] = {
            "caption": eval_captions(pipe, world, cfg.captions),
            "qa": eval_questions(pipe, world, cfg.questions),
            "draw": eval_drawing(pipe, world, cfg.drawings, cfg.guidance, cfg.seed),
        }
    if sweep:
        report["guidance_sweep"] = eval_guidance_sweep(pipe, splits["train"], cfg.sweep_prompts, cfg.sweep, cfg.seed)
    return report


def summary_table(report: dict) -> str:
    """A Markdown table of the headline numbers."""
    splits = [s for s in ("train", "heldout") if s in report]
    rows = [("caption exact", "caption", "exact"), ("caption colour", "caption", "color"),
            ("caption shape", "caption", "shape"), ("caption size", "caption", "size"),
            ("caption count", "caption", "count"), ("QA overall", "qa", "overall")]
    qa_types = sorted({k for s in splits for k in report[s]["qa"] if k != "overall"})
    rows += [(f"QA {t}", "qa", t) for t in qa_types]
    rows += [(f"draw {k.replace('_', ' ')}", "draw", k) for k in
             ("overall", "single_object", "two_objects", "counting", "colors", "position", "attribute_binding")]
    header = "| metric (%) | " + " | ".join(f"{s} compositions" for s in splits) + " |"
    lines = [header, "|---" * (len(splits) + 1) + "|"]
    for label, group, key in rows:
        cells = [report[s][group].get(key, float("nan")) for s in splits]
        lines.append(f"| {label} | " + " | ".join(f"{c:.1f}" for c in cells) + " |")
    if "guidance_sweep" in report:
        lines.append("")
        lines.append("| guidance scale | " + " | ".join(report["guidance_sweep"]) + " |")
        lines.append("|---" * (len(report["guidance_sweep"]) + 1) + "|")
        values = report["guidance_sweep"].values()
        lines.append("| exact drawings (%) | " + " | ".join(f"{v:.1f}" for v in values) + " |")
    return "\n".join(lines)


def training_probe(model, vocab, tokenizers) -> tuple[dict, bytes]:
    """A seconds-long look during training: small-subset scores and a gallery of drawings."""
    from smalto.plots import image_grid, png_bytes

    # Drawn as the shipped model draws (its packed guidance and temperature): at the defaults a
    # young model's drawings are almost never exact, and the probe would show nothing.
    pipe = Pipeline(model, vocab, tokenizers, draw_defaults={**DRAW_DEFAULTS, **PROBE_DRAWING})
    world = ShapesWorld(ShapesConfig(image_size=pipe.image_size), EVAL_SEED, "train")
    metrics = {"caption_exact": eval_captions(pipe, world, 32)["exact"],
               "qa": eval_questions(pipe, world, 64)["overall"]}
    scenes = _scenes_with(world, 8, 1) + _scenes_with(world, 8, 2)
    images = pipe.draw([captions(s)[0] for s in scenes])
    metrics["draw_exact"] = _pct([judge_drawing(im, s, world.cfg).score == 1.0 for im, s in zip(images, scenes)])
    truth = np.stack([render(s, world.cfg) for s in scenes])
    return metrics, png_bytes(image_grid([truth[:8], np.stack(images[:8]), truth[8:], np.stack(images[8:])]))
