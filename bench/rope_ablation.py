"""1-D RoPE against M-RoPE against interleaved M-RoPE, at equal training (docs/benchmarks.md).

Three models of one preset are trained from scratch with the same seed, data, steps and task mix
(pictures and clips), differing only in `--rope` (and so in the format's position rule: "index"
for 1-D, "grid" for the 3-axis ones). A step costs the same in all three (the rotary tables are
looked up differently, nothing more), so equal steps are equal minutes; the minutes are measured
and printed. Reported: each task's training loss at the end, then pictures (caption exact, QA,
one-object drawings) and clips (ShapesEval's video section) on the evaluation seed.

With `--init-from`, all three start from one checkpoint's weights instead, at a fine-tuning
learning rate (a picture model learning clips; the 3-axis arms also relearn where a picture's
codes sit, so their picture metrics start lower).

    python bench/rope_ablation.py --steps 900 --batch-size 16 --json docs/rope-ablation.json
    python bench/rope_ablation.py --init-from smalto/assets/model --steps 400 --json docs/rope-ablation.json
    python bench/rope_ablation.py --quick        # a smoke run: a few steps of shapes-micro
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import smalto
from smalto import atomic
from smalto.data.shapes import ShapesConfig, ShapesWorld
from smalto.eval.shapes_eval import EVAL_SEED, eval_captions, eval_drawing, eval_questions
from smalto.eval.video_eval import eval_video, motion_world
from smalto.model.config import ROPES
from smalto.tokenizers import DEFAULT_TOKENIZERS
from smalto.training.data import TaskMix
from smalto.training.trainer import TrainConfig, train

MIX = TaskMix(caption=0.2, draw=0.25, qa=0.2, clip_caption=0.1, clip_draw=0.1, clip_qa=0.1, clip_next=0.1)
LOSSES = ("caption", "draw", "qa", "clip_caption", "clip_draw", "clip_qa", "clip_next")
ROWS = ("caption_exact", "qa", "draw_single", "clip_caption_exact", "clip_qa", "clip_draw_faithful",
        "clip_continue_consistent", "clip_continue_exact")


def evaluate(pipe, quick: bool) -> dict:
    world = ShapesWorld(ShapesConfig(image_size=pipe.image_size), EVAL_SEED, "train")
    n = (20, 40, 4, 10, 4) if quick else (200, 400, 48, 100, 32)
    video = eval_video(pipe, motion_world(pipe, EVAL_SEED, "train"), n[3], n[4], EVAL_SEED)
    return {"caption_exact": eval_captions(pipe, world, n[0])["exact"],
            "qa": eval_questions(pipe, world, n[1])["overall"],
            "draw_single": eval_drawing(pipe, world, n[2], None, EVAL_SEED)["single_object"],
            "clip_caption_exact": video["caption_exact"], "clip_qa": video["qa_overall"],
            "clip_draw_faithful": video["draw_faithful"], "clip_continue_consistent": video["continue_consistent"],
            "clip_continue_exact": video["continue_exact"]}


def final_losses(run: Path, share: float = 0.1) -> dict:
    """Each task's training loss averaged over the last `share` of the logged steps: at equal
    steps, a less noisy comparison than sampled metrics while quality is still low."""
    lines = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    tail = lines[-max(1, round(len(lines) * share)):]
    seen = {task: [x[task] for x in tail if task in x] for task in LOSSES}
    return {f"loss_{task}": round(sum(v) / len(v), 3) if v else float("nan") for task, v in seen.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokenizers", type=Path, default=DEFAULT_TOKENIZERS,
                   help="with a video tokenizer (default: the shipped)")
    p.add_argument("--preset", default="shapes-tiny")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--init-from", type=Path, default=None, help="start every arm from this checkpoint's weights")
    p.add_argument("--runs", type=Path, default=Path("runs/rope-ablation"))
    p.add_argument("--json", type=Path)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    preset, steps = ("shapes-micro", 4) if args.quick else (args.preset, args.steps)
    report = {"preset": preset, "steps": steps, "batch_size": args.batch_size, "mix": asdict(MIX),
              "init_from": None if args.init_from is None else str(args.init_from)}
    start_from = {} if args.init_from is None else {"init_from": str(args.init_from), "lr": 5e-4, "optimizer": "adamw",
                                                    "warmup": min(50, steps // 4)}
    for rope in ROPES:
        out = args.runs / rope
        shutil.rmtree(out, ignore_errors=True)
        start = time.perf_counter()
        cfg = TrainConfig(preset=None if args.init_from else preset, tokenizers=str(args.tokenizers), steps=steps,
                          batch_size=8 if args.quick else args.batch_size, rope=rope, context=384, mix=MIX,
                          eval_every=0, save_every=steps, **{"warmup": min(100, steps // 4), **start_from})
        train(out, cfg, progress=False)
        minutes = (time.perf_counter() - start) / 60
        scores = evaluate(smalto.load(out), args.quick)
        report[rope] = {"minutes": round(minutes, 1), **final_losses(out), **scores}
        print(f"{rope}: {report[rope]}", flush=True)
    print(f"\n| metric (losses in nats per token, the rest %) | {' | '.join(ROPES)} |")
    print("|---" * (len(ROPES) + 1) + "|")
    for row in ("minutes", *(f"loss_{t}" for t in LOSSES), *ROWS):
        print(f"| {row.replace('_', ' ')} | " + " | ".join(f"{report[r][row]:.3g}" for r in ROPES) + " |")
    if args.json:
        atomic.write_text(args.json, json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
