"""Three ways to fuse pictures into the decoder, at equal decoder size, data and minutes (docs/fusion.md).

Arms: `tokens` (the picture's discrete codes in the stream), `projector` (a small ViT's features in
the codes' places, its patch stem from scratch), `projector-encoder` (the same with the image
tokenizer's conv encoder as its stem, weights copied), `xattn` (gated cross-attention to the ViT's
features before every second layer; the picture is one marker token); and, not by default,
`projector-encoder-frozen` (that encoder kept as the tokenizer trained it). Every arm trains the same
decoder preset from scratch on the same task mix and seeds for the same wall-clock minutes: a
short calibration run measures each arm's seconds per step, and its step count is the budget
divided by that. Then ShapesEval's reading, drawing and hallucination rows on the evaluation seed,
and the latency of captioning one picture.

    python bench/fusion.py --minutes 6 --seeds 0 1 2 --json docs/fusion.json
    python bench/fusion.py --quick        # a smoke run: shapes-micro, seconds per arm
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

import smalto
from smalto import atomic
from smalto.data.shapes import ShapesConfig, ShapesWorld
from smalto.eval.hallucination import eval_hallucination, flat
from smalto.eval.shapes_eval import EVAL_SEED, eval_captions, eval_drawing, eval_premises, eval_questions
from smalto.training.data import TaskMix
from smalto.training.trainer import TrainConfig, train

# arm -> (fusion, vision_init, frozen parameter patterns)
ARMS = {"tokens": ("tokens", "scratch", ()), "projector": ("projector", "scratch", ()),
        "projector-encoder": ("projector", "tokenizer", ()), "xattn": ("xattn", "scratch", ()),
        "projector-encoder-frozen": ("projector", "tokenizer", ("vision.stem.0.*",))}
DEFAULT_ARMS = ("tokens", "projector", "projector-encoder", "xattn")
MIX = TaskMix(caption=0.3, draw=0.3, qa=0.4, premises=0.2)
ROWS = ("caption_exact", "qa", "false_premise", "pope_random_f1", "pope_random_yes", "pope_popular_f1",
        "pope_popular_yes", "pope_adversarial_f1", "pope_adversarial_yes", "chair_i", "chair_s", "primed_caption",
        "unprimed_caption", "primed_question", "draw_single", "draw_overall", "params", "steps",
        "train_tokens_per_s", "latency_ms")


def config(arm: str, steps: int, seed: int, preset: str) -> TrainConfig:
    fusion, init, frozen = ARMS[arm]
    return TrainConfig(preset=preset, steps=steps, batch_size=16, lr=3e-3, warmup=min(100, steps // 10), seed=seed,
                       fusion=fusion, vision_init=init, freeze=frozen, mix=MIX, eval_every=0, save_every=steps,
                       log_every=10, compile=False)


def seconds_per_step(arm: str, preset: str, work: Path, steps: int) -> float:
    """One arm's training speed, from a short run (its first steps left out: they warm up)."""
    out = work / f"calibrate-{arm}"
    shutil.rmtree(out, ignore_errors=True)
    log = train(out, config(arm, steps, 0, preset), progress=False)
    timed = [r for r in log if "seconds" in r]
    first, last = timed[0], timed[-1]
    shutil.rmtree(out)
    return (last["seconds"] - first["seconds"]) / (last["step"] - first["step"])


def evaluate(pipe, quick: bool) -> dict:
    world = ShapesWorld(ShapesConfig(image_size=pipe.image_size), EVAL_SEED, "train")
    n = dict(captions=20, questions=40, premises=10, scenes=10, drawings=4) if quick else \
        dict(captions=100, questions=200, premises=60, scenes=100, drawings=16)
    premises = eval_premises(pipe, world, n["premises"])
    draw = eval_drawing(pipe, world, n["drawings"], None, EVAL_SEED)
    image = world[0].image
    pipe.caption(image)  # (warm)
    times = []
    for _ in range(5 if quick else 20):
        start = time.perf_counter()
        pipe.caption(image)
        times.append(time.perf_counter() - start)
    return {"caption_exact": eval_captions(pipe, world, n["captions"])["exact"],
            "qa": eval_questions(pipe, world, n["questions"])["overall"],
            "false_premise": premises.get("false_premise", float("nan")),
            **flat(eval_hallucination(pipe, world, n["scenes"])),
            "draw_single": draw["single_object"], "draw_overall": draw["overall"],
            "latency_ms": round(1000 * statistics.median(times), 1)}


def run(arm: str, seed: int, steps: int, preset: str, work: Path, quick: bool) -> dict:
    out = work / f"{arm}-seed{seed}"
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    log = train(out, config(arm, steps, seed, preset), progress=False)
    minutes = (time.perf_counter() - start) / 60
    speed = [r["tokens_per_s"] for r in log if "tokens_per_s" in r]
    row = {"arm": arm, "seed": seed, "steps": steps, "minutes": round(minutes, 2), "params": log[0]["params"],
           "train_tokens_per_s": round(statistics.median(speed)), **evaluate(smalto.load(out), quick)}
    shutil.rmtree(out)
    return row


def summary(rows: list[dict]) -> dict:
    """Per arm and row: mean and sample standard deviation over seeds."""
    out = {}
    for arm in dict.fromkeys(r["arm"] for r in rows):
        mine = [r for r in rows if r["arm"] == arm]
        out[arm] = {k: (round(statistics.mean(r[k] for r in mine), 1),
                        round(statistics.stdev(r[k] for r in mine), 1) if len(mine) > 1 else 0.0) for k in ROWS}
    return out


def table(result: dict) -> str:
    arms = list(result["summary"])
    lines = ["| | " + " | ".join(arms) + " |", "|---|" + "---|" * len(arms)]
    for k in ROWS:
        lines.append(f"| {k} | " + " | ".join(f"{result['summary'][a][k][0]:g} ± {result['summary'][a][k][1]:g}"
                                              for a in arms) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=6.0, help="training minutes per run")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--arms", nargs="+", choices=tuple(ARMS), default=list(DEFAULT_ARMS))
    p.add_argument("--preset", default="shapes-tiny")
    p.add_argument("--work", type=Path, default=Path("runs/fusion"))
    p.add_argument("--json", type=Path, help="write the runs and the summary here (rewritten after every run)")
    p.add_argument("--quick", action="store_true", help="shapes-micro, a few seconds per arm, small evaluation")
    args = p.parse_args()
    preset, minutes = ("shapes-micro", 0.1) if args.quick else (args.preset, args.minutes)
    args.work.mkdir(parents=True, exist_ok=True)
    pace = {arm: seconds_per_step(arm, preset, args.work, 12 if args.quick else 40) for arm in args.arms}
    steps = {arm: max(10, round(minutes * 60 / pace[arm])) for arm in args.arms}
    print("seconds per step:", {a: round(s, 3) for a, s in pace.items()}, "-> steps:", steps, flush=True)
    rows: list[dict] = []
    for seed in args.seeds:  # seed-major: a stopped benchmark still has every arm at the seeds it finished
        for arm in args.arms:
            rows.append(run(arm, seed, steps[arm], preset, args.work, args.quick))
            print(json.dumps(rows[-1]), flush=True)
            result = {"preset": preset, "minutes": minutes, "mix": MIX.__dict__, "seconds_per_step": pace,
                      "runs": rows, "summary": summary(rows)}
            if args.json:
                atomic.write_text(args.json, json.dumps(result, indent=1) + "\n")
    print(table(result))


if __name__ == "__main__":
    main()
