"""Fine-tuning four ways on one new task, with what each costs and forgets (docs/post-training.md).

The task: ShapesWorld's "shapes-plus" world, with a shape (diamond) and a colour (orange) the
shipped model never saw. Each generative method (full, LoRA, prompt tuning) trains on it with the
base's task mix; the probe classifies the shape at the center from the frozen hidden states,
against the same classifier on pixels. Then, per method:

    new task     captions / QA / one-object drawings of scenes with the new words (ShapesEval's
                 new_words section, evaluation seed), and the tokenizer's round trip as the ceiling
    forgetting   the old task (default world, evaluation seed): caption exact, QA, drawing overall,
                 before and after

    python bench/post_training.py --json docs/post-training.json      # ~12 min on 2 cores
    python bench/post_training.py --quick                              # a minute: a smoke run
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import smalto
from smalto import atomic
from smalto.data.shapes import ShapesConfig, ShapesWorld, world_config
from smalto.eval.shapes_eval import EVAL_SEED, eval_captions, eval_drawing, eval_new_words, eval_questions
from smalto.training.finetune import FinetuneConfig, finetune


def old_task(pipe, quick: bool) -> dict:
    world = ShapesWorld(ShapesConfig(image_size=pipe.image_size), EVAL_SEED, "train")
    return {"caption_exact": eval_captions(pipe, world, 40 if quick else 200)["exact"],
            "qa": eval_questions(pipe, world, 80 if quick else 400)["overall"],
            "draw_overall": eval_drawing(pipe, world, 8 if quick else 48, None, EVAL_SEED)["overall"]}


def new_task(pipe, quick: bool) -> dict:
    return eval_new_words(pipe, world_config("shapes-plus", pipe.image_size), 20 if quick else 100, EVAL_SEED)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", type=Path, default=None, help="the model to adapt (default: the shipped one)")
    p.add_argument("--steps", type=int, default=120, help="fine-tuning steps per method (default: %(default)s)")
    p.add_argument("--runs", type=Path, default=Path("runs/post-training"), help="where the runs go")
    p.add_argument("--json", type=Path, help="write the figures here")
    p.add_argument("--quick", action="store_true", help="a few steps and small evaluations: a smoke run")
    args = p.parse_args()
    steps = 3 if args.quick else args.steps
    shutil.rmtree(args.runs, ignore_errors=True)
    base = smalto.load(args.base)
    report = {"steps": steps, "base_model": str(base.path),
              "base": {"new": new_task(base, args.quick), "old": old_task(base, args.quick),
                       "params": base.model.num_params()}}
    print(f"base: {report['base']}", file=sys.stderr, flush=True)
    for method in ("full", "lora", "prompt", "probe"):
        out = args.runs / method
        cfg = FinetuneConfig(base=None if args.base is None else str(args.base), method=method,
                             steps=steps if method != "probe" else 500, examples=200 if args.quick else 2000)
        cost = finetune(out, cfg, progress=not args.quick)
        row = dict(cost)
        if method == "full":
            pipe = smalto.load(out)
        elif method in ("lora", "prompt"):
            pipe = smalto.load(args.base, adapter=out)
        else:
            pipe = None  # the backbone did not change: nothing to forget
        if pipe is not None:
            start = time.perf_counter()
            row |= {"new": new_task(pipe, args.quick), "old": old_task(pipe, args.quick),
                    "eval_seconds": round(time.perf_counter() - start, 1)}
        report[method] = row
        print(f"{method}: {row}", file=sys.stderr, flush=True)
    print(table(report))
    if args.json:
        atomic.write_text(args.json, json.dumps(report, indent=2) + "\n")


def table(report: dict) -> str:
    base = report["base"]
    lines = ["| method | trained weights | minutes | new: caption | new: QA | new: draw (ceiling "
             f"{base['new']['tokenizer_round_trip']:.0f}) | old: caption | old: QA | old: draw |",
             "|---|---|---|---|---|---|---|---|---|"]

    def cells(row: dict) -> str:
        new, old = row["new"], row["old"]
        return (f"{new['caption_exact']:.1f} | {new['qa']:.1f} | {new['draw_single_object']:.1f} | "
                + " | ".join(f"{old[k]:.1f} ({old[k] - base['old'][k]:+.1f})"
                             for k in ("caption_exact", "qa", "draw_overall")))

    lines.append(f"| base (no tuning) | 0 | 0 | {cells(base | {'old': base['old']})} |")
    for method in ("full", "lora", "prompt"):
        r = report[method]
        lines.append(f"| {method} | {r['trainable']:,} ({100 * r['trainable'] / base['params']:.2g} %) | "
                     f"{r['minutes']:.1f} | {cells(r)} |")
    probe = report["probe"]
    lines.append(f"\nprobe (which shape is at the center, {len(probe['classes'])} classes, {probe['test']} held-out "
                 f"images): {probe['accuracy']:.1f} % from the frozen hidden states, {probe['pixel_baseline']:.1f} % "
                 f"from pixels; {probe['trainable']:,} weights, {probe['minutes']:.1f} min; nothing forgotten "
                 "(the backbone is untouched)")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
