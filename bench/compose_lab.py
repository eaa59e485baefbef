"""The composition lab: a five-minute proxy for drawing two objects, and the levers measured on it.

    python bench/compose_lab.py --levers baseline cells --seeds 0 1 2 --json docs/compose-lab.json

Each run fine-tunes v4 (`BASE`: bench/v4, the model shipped before the lab) for a fixed number of
optimizer steps (sized to about five minutes on 2 cores), then draws scenes of the development
seed (`shapes_eval.DEV_SEED`) that no training stream of the model showed (`smalto.eval.scenes`,
replayed from its meta.json) and reads them back with the verifier: two-object exact, attribute
binding, and each of the two objects right in its cell (the one named first and the one named
second). A lever changes one thing of the baseline recipe; `--seeds` repeats a run with other
training seeds, so each figure has its spread. The levers: the baseline, draw-only, a written
plan, RL, and the cells layout (each cell named in words before its codes: `smalto train --layout
cells`, the winner). docs/compose.md reads the table; `word_errors` and `attention_to_phrases`
are its diagnostics.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from smalto import atomic
from smalto.data.shapes import GRID, Scene, ShapesConfig, captions, cell_patches, cell_words, render
from smalto.eval.common import pct
from smalto.eval.shapes_eval import DEV_SEED, PROBE_DRAWING, _scenes_with
from smalto.data.tasks import TASKS
from smalto.eval.scenes import scene_kinds
from smalto.format import Allowed, draw_prompt
from smalto.format.render import _build as build
from smalto.inference.strategies import Sampling
from smalto.pipeline import load
from smalto.training import trainer
from smalto.training.data import ExampleStream, TaskMix
from smalto.training.rl import RLConfig, train_rl
from smalto.training.trainer import TrainConfig
from smalto.verify.scene import parse_image


# The lab's base: v4, the model shipped before the lab's winner (raster drawing; the same blobs as
# v4's in the history), so that every lever starts from where the recorded table started.
BASE = Path(__file__).resolve().parent / "v4"
# v4's last fine-tuning mix (docs/training.md, the shipped model's recipe).
SHIPPED_MIX = TaskMix(caption=0.2, draw=0.3, qa=0.2, think=0.3, chat=0.8, clip_caption=0.4, clip_draw=0.4, clip_qa=0.4,
                      clip_next=0.3, premises=0.3)
DRAW_ONLY = TaskMix(caption=0, draw=1, qa=0)


# --- the layout-then-draw lever: the model writes a plan of the nine cells, then draws

def plan_ids(text, scene: Scene) -> list[int]:
    """The nine cells in raster order, four tokens each: "," then size colour shape, or "," "-" "-" "-"
    for an empty cell. A fixed width, so the slot of the cell a code lies in is a fixed distance away."""
    ids = []
    for row in range(GRID):
        for col in range(GRID):
            o = scene.at(row, col)
            words = text.encode(f" {o.size} {o.color} {o.shape}") if o else text.encode("---")
            assert len(words) == 3, words
            ids += text.encode(",") + words
    return ids


PLAN_TOKENS = GRID * GRID * 4


class PlanStream(ExampleStream):
    """Draw examples of scenes answered with their plan, then the image: <user> prompt <assistant> plan
    <boi> codes <eoi> <eos>; the plan is trained like the codes."""

    def _example(self, rng, task, codes, captions, canonical, qa, scene=None):
        if TASKS[task] != "draw" or scene is None or rng.random() < self.mix.cond_dropout:
            return super()._example(rng, task, codes, captions, canonical, qa, scene)
        v, text = self.vocab, list(self.encode_text(captions[rng.integers(len(captions))]))
        return task, build(v, ([v.bos, v.user, *text, v.assistant], False),
                           (plan_ids(self.tok.text, scene) + v.item_ids("image", codes) + [v.eos], True))


@dataclass(frozen=True)
class Recipe:
    """A lab run: five minutes of fine-tuning v4 (BASE); the baseline goes on as it was trained."""
    steps: int = 150
    batch_size: int = 32
    lr: float = 3e-4
    warmup: int = 30
    mix: TaskMix = SHIPPED_MIX
    stream: type = ExampleStream  # the examples' format (PlanStream: the plan lever)
    layout: str = "raster"  # how drawings are written (TrainConfig.layout; "cells": the cells lever)

    def train_config(self, seed: int) -> TrainConfig:
        return TrainConfig(init_from=str(BASE), steps=self.steps, batch_size=self.batch_size,
                           lr=self.lr, warmup=self.warmup, optimizer="adamw", mix=self.mix, context=384, seed=seed,
                           eval_every=0, save_every=self.steps, log_every=50, compile=False, layout=self.layout)


BASELINE = Recipe()
LEVERS: dict[str, Recipe] = {
    "baseline": BASELINE,
    "draw-only": replace(BASELINE, mix=DRAW_ONLY, steps=400),
    "plan": replace(BASELINE, mix=DRAW_ONLY, steps=320, stream=PlanStream),
    "cells": replace(BASELINE, mix=DRAW_ONLY, steps=320, layout="cells"),
    # GRPO on two- and three-object prompts, rewarded by the share of the prompt's constraints
    # (each object's colour, shape, size and cell) the parsed drawing satisfies.
    "rl": RLConfig(init_from=str(BASE), min_objects=2, steps=40, prompts=4, group=16, lr=2e-5, kl=0.01, eval_every=0,
                   save_every=40),
}


def draw_planned(pipe, prompts: list[str], scenes: list[Scene] | None, seed: int) -> tuple[list, list[list[int]]]:
    """Drawings in the plan format, and the plans they were drawn from: the model's own (greedy), or
    the true ones when `scenes` are given."""
    v = pipe.vocab
    heads = [[v.bos, v.user, *pipe.text_ids(p), v.assistant] for p in prompts]
    if scenes is None:
        plans = [r.tokens for r in pipe.engine.generate(heads, PLAN_TOKENS, Sampling(), Allowed(eos=False))]
    else:
        plans = [plan_ids(pipe.tokenizers.text, s) for s in scenes]
    boi = v.specials[v.modalities["image"].open]
    images = pipe.finish_items([h + p + [boi] for h, p in zip(heads, plans)], pipe.draw_sampling(seed), "image",
                               [draw_prompt(v, [])] * len(prompts))
    return images, plans


def measure(model_dir: Path, n: int = 96, seed: int = DEV_SEED, plan: bool = False, given: bool = False) -> dict:
    """Drawings of unseen scenes read back by the verifier (at the probe's sampling). A model that
    writes words before it draws (a plan: trained with PlanStream, `plan`; the cells layout: its
    vocabulary says so) draws from the words it writes itself, or from the true ones with `given`;
    `words_right` is the share of drawings whose words were all right."""
    pipe = load(model_dir)
    pipe.draw_defaults.update(PROBE_DRAWING)
    cfg = ShapesConfig(image_size=pipe.image_size)
    world = scene_kinds(cfg, seed, pipe.streams).kinds["unseen"]
    two = _scenes_with(world, n, 2, distinct=True)
    one = _scenes_with(world, n // 4, 1)
    scenes, prompts = two + one, [captions(s)[0] for s in two + one]
    v, text, extra = pipe.vocab, pipe.tokenizers.text, {}
    if plan:
        drawn, words = draw_planned(pipe, prompts, scenes if given else None, seed)
        extra["words_right"] = pct([w == plan_ids(text, s) for w, s in zip(words, scenes)])
    elif v.drawn("image") == "cells":
        # (given: the true words forced, as effort's plan gives them, the codes the model's own)
        forced = pipe.forced_words([cell_words(s) for s in scenes]) if given else None
        bodies = pipe.item_bodies([draw_prompt(v, pipe.text_ids(p)) for p in prompts], pipe.draw_sampling(seed),
                                  "image", [draw_prompt(v, []) for _ in prompts], forced)
        drawn = pipe.codecs["image"].decode(torch.stack([v.item_codes(b, "cells") for b in bodies]))
        extra["words_right"] = pct([v.item_words(b, "cells") == [text.encode(w) for w in cell_words(s)]
                                    for b, s in zip(bodies, scenes)])
    else:
        drawn = pipe.draw(prompts, pipe.draw_sampling(seed))
    got = [parse_image(im, cfg) for im in drawn]
    pairs = list(zip(two, got[:len(two)]))
    return {**extra,
        "two_objects": pct([g == s for s, g in pairs]),
        "attribute_binding": pct([sorted((o.color, o.shape) for o in g.objects) ==
                                  sorted((o.color, o.shape) for o in s.objects) for s, g in pairs]),
        "first_named": pct([g.at(s.objects[0].row, s.objects[0].col) == s.objects[0] for s, g in pairs]),
        "second_named": pct([g.at(s.objects[1].row, s.objects[1].col) == s.objects[1] for s, g in pairs]),
        "single_object": pct([g == s for s, g in zip(one, got[len(two):])]),
        "scenes": {"two_objects": len(two), "single_object": len(one)},
    }


def word_errors(model_dir: Path, n: int = 48, seed: int = DEV_SEED) -> dict[str, int]:
    """What a cells-layout model's own words get wrong on unseen two-object scenes: a cell's object
    missing or one where the cell is empty, or a wrong size, colour or shape (counted apart)."""
    from collections import Counter

    pipe = load(model_dir)
    pipe.draw_defaults.update(PROBE_DRAWING)
    v, text = pipe.vocab, pipe.tokenizers.text
    scenes = _scenes_with(scene_kinds(ShapesConfig(image_size=pipe.image_size), seed, pipe.streams).kinds["unseen"],
                          n, 2, distinct=True)
    prompts = [draw_prompt(v, pipe.text_ids(captions(s)[0])) for s in scenes]
    bodies = pipe.item_bodies(prompts, pipe.draw_sampling(seed), "image", [draw_prompt(v, []) for _ in scenes])
    errors: Counter = Counter()
    for body, s in zip(bodies, scenes):
        for got, want in zip((text.decode(w) for w in v.item_words(body, "cells")), cell_words(s)):
            if want.endswith("---") != got.endswith("---"):
                errors["object where the cell is empty" if want.endswith("---") else "cell left empty"] += 1
            elif got != want:
                errors.update(name for name, a, b in zip(("number", "size", "colour", "shape"), got.split(),
                                                         want.split()) if a != b)
    return dict(errors)


def attention_to_phrases(model_dir: Path = BASE, n: int = 48, seed: int = DEV_SEED) -> dict:
    """Where the codes of each object look while the true drawing is read (teacher forced): the
    share of their attention, averaged over heads, on the tokens of the phrase that names their
    object ("own") and on the other object's phrase, per layer, for the object named first and the
    one named second (canonical captions of unseen two-object scenes)."""
    import torch.nn.functional as F

    from smalto.format import draw_example
    from smalto.model import transformer

    pipe = load(model_dir)
    cfg = ShapesConfig(image_size=pipe.image_size)
    scenes = _scenes_with(scene_kinds(cfg, seed, pipe.streams).kinds["unseen"], n, 2, distinct=True)
    v, text = pipe.vocab, pipe.tokenizers.text
    grid, drawn = pipe.tokenizers.image.cfg.grid, v.drawn("image")
    patches, body = cell_patches(cfg, grid), v.modalities[drawn].body()
    weights: list = []
    real = F.scaled_dot_product_attention

    def recording(q, k, v_, is_causal=False, attn_mask=None, enable_gqa=False):
        k_ = k.repeat_interleave(q.shape[1] // k.shape[1], 1)
        w = (q @ k_.transpose(-1, -2)) / q.shape[-1] ** 0.5
        w = w.masked_fill(torch.ones(w.shape[-2:], dtype=torch.bool).triu(1), float("-inf")).softmax(-1)
        weights.append(w.mean(1)[0])  # over heads
        return real(q, k, v_, is_causal=is_causal, attn_mask=attn_mask, enable_gqa=enable_gqa)

    layers = len(pipe.model.layers)
    share = np.zeros((2, 2, layers))  # [object named first/second, own/other phrase, layer]
    transformer.F.scaled_dot_product_attention = recording
    try:
        for s in scenes:
            ids = text.encode(captions(s)[0])
            second = ids.index(text.encode(" and")[0])
            phrases = [range(2, 2 + second), range(2 + second, 2 + len(ids))]  # (after <bos> <user>)
            codes = pipe.tokenizers.image.encode(render(s, cfg)[None])[0]
            words = [text.encode(w) for w in cell_words(s)] if drawn == "cells" else None
            e = draw_example(v, ids, codes, words=words)
            weights.clear()
            with torch.no_grad():
                pipe.model(torch.tensor([e.ids]), e.positions[None])
            first = 2 + len(ids) + 2  # the item's body, after <assistant> <boi>
            for k, o in enumerate(s.objects):
                mine = [first + j for j, where in enumerate(body) if isinstance(where, tuple)
                        and where[1] * grid + where[2] in patches[o.row * GRID + o.col]]
                for layer, w in enumerate(weights):
                    rows = w[mine]
                    share[k, 0, layer] += float(rows[:, phrases[k]].sum(-1).mean()) / len(scenes)
                    share[k, 1, layer] += float(rows[:, phrases[1 - k]].sum(-1).mean()) / len(scenes)
    finally:
        transformer.F.scaled_dot_product_attention = real
    return {name: {"own_phrase": share[k, 0].round(3).tolist(), "other_phrase": share[k, 1].round(3).tolist()}
            for k, name in enumerate(("first_named", "second_named"))}


def run(lever: str, seed: int, root: Path) -> dict:
    out = root / f"{lever}-s{seed}"
    shutil.rmtree(out, ignore_errors=True)  # (the lab's own runs: a rerun starts afresh)
    recipe = LEVERS[lever]
    start = time.perf_counter()
    if isinstance(recipe, RLConfig):
        train_rl(out, replace(recipe, seed=seed), progress=False)
        minutes = (time.perf_counter() - start) / 60
        return {"lever": lever, "seed": seed, "train_minutes": round(minutes, 2), **measure(out)}
    trainer.ExampleStream = recipe.stream
    try:
        trainer.train(out, recipe.train_config(seed), progress=False)
    finally:
        trainer.ExampleStream = ExampleStream
    minutes = (time.perf_counter() - start) / 60
    plan = recipe.stream is PlanStream
    own = measure(out, plan=plan)
    if "words_right" not in own:
        return {"lever": lever, "seed": seed, "train_minutes": round(minutes, 2), **own}
    given = {f"given_{k}": v for k, v in measure(out, plan=plan, given=True).items() if k != "scenes"}
    return {"lever": lever, "seed": seed, "train_minutes": round(minutes, 2), **own, **given}


def table(results: list[dict]) -> str:
    """Mean ± half the range over seeds. (No single-object column: every one-object scene of the
    world was in v4's training, so none is unseen.)"""
    keys = ("two_objects", "attribute_binding", "first_named", "second_named", "words_right", "given_two_objects",
            "train_minutes")
    lines = ["| lever | seeds | " + " | ".join(keys) + " |", "|---" * (len(keys) + 2) + "|"]
    for lever in dict.fromkeys(r["lever"] for r in results):
        rows = [r for r in results if r["lever"] == lever]
        cells = []
        for k in keys:
            v = np.array([r.get(k, np.nan) for r in rows], dtype=float)
            cells.append("—" if np.isnan(v).all() else f"{v.mean():.1f} ± {(v.max() - v.min()) / 2:.1f}"
                         if len(v) > 1 else f"{v[0]:.1f}")
        lines.append(f"| {lever} | {len(rows)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--levers", nargs="+", default=["baseline"], choices=list(LEVERS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--root", type=Path, default=Path("runs/compose-lab"))
    p.add_argument("--json", type=Path, default=None, help="add the results to this file (kept across calls)")
    args = p.parse_args()
    results = json.loads(args.json.read_text())["runs"] if args.json and args.json.exists() else []
    for lever in args.levers:
        for seed in args.seeds:
            r = run(lever, seed, args.root)
            print(json.dumps(r), flush=True)
            results = [x for x in results if (x["lever"], x["seed"]) != (lever, seed)] + [r]
            if args.json:
                atomic.write_text(args.json, json.dumps({"runs": results}, indent=1) + "\n")
    print(table(results))


if __name__ == "__main__":
    main()
