"""The test-time scaling curve: accuracy against compute, for answers and for drawings.

    python bench/test_time.py --out docs/test-time.json --png docs/test-time.png
    python bench/test_time.py --quick --out /tmp/t.json   # a smoke run: few items, N up to 2 (in the tests)
    python bench/test_time.py --speed          # only the speed figures

Answers (ShapesEval's question mix plus false premises, seed 30000, never used for tuning):
instant, thinking and adaptive, each with N = 1, 2, 4, 8, 16 votes (N = 1 greedy, else sampled at
`effort.VOTE_TEMPERATURE` and voted). Drawings: two-object prompts (exact scene) and relational
prompts (every constraint satisfied), best of N = 1 .. 16 by the pixel verifier (planned), and by
the self-verifier (log p(prompt | image)). Each point records accuracy, tokens decoded per item
and seconds, and for answers the model's own accuracy beside the reply's (after thinking the solver
answers from the model's description); unseen scenes and held-out compositions
(`smalto.eval.scenes`). Also: the time of one drawing against best-of-8
(the speed target: at most 2x), and of one SMT check.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from smalto import atomic
from smalto.data.shapes import ShapesConfig, ShapesWorld, captions, premise_question
from smalto.apps.bench import best_time
from smalto.eval.scenes import Scenes, scene_kinds
from smalto.eval.common import at_most
from smalto.eval.shapes_eval import DEV_SEED, weights_fingerprint  # adaptive effort is calibrated on DEV_SEED
from smalto.pipeline import load
from smalto.verify.judges import judge_drawing
from smalto.verify.scene import parse_image
from smalto.verify.smt import check, plan
from smalto.verify.spec import parse_prompt

SEED = 30_000
MODES = {"instant": "none", "adaptive": "low", "thinking": "medium"}


def questions(world, n: int) -> list[tuple[np.ndarray, dict]]:
    """ShapesEval's mix, one false-premise question in five."""
    items = []
    for i in range(at_most(world, n)):
        s = world[i]
        rng = np.random.default_rng([world.seed, 9, i])
        pair = premise_question(s.scene, world.cfg, rng, world.split) if i % 5 == 4 else s.qa[rng.integers(len(s.qa))]
        items.append((s.image, pair))
    return items


def answer_point(pipe, items, effort: str, votes: int) -> dict:
    """Accuracy of the reply as given and of the model's own answer (the solver answers from the
    model's description after thinking: `Reply.answered_by`), tokens and seconds."""
    right, own, solver, tokens, start = [], [], [], [], time.perf_counter()
    for k in range(0, len(items), 32):
        chunk = items[k:k + 32]
        replies = pipe.reply_batch([im for im, _ in chunk], [q["q"] for _, q in chunk], effort, best_of=votes, seed=k)
        right += [r.text == q["a"] for r, (_, q) in zip(replies, chunk)]
        own += [r.own == q["a"] for r, (_, q) in zip(replies, chunk)]
        solver += [r.answered_by == "solver" for r in replies]
        tokens += [r.tokens for r in replies]
    return {"accuracy": round(100 * float(np.mean(right)), 1), "model_accuracy": round(100 * float(np.mean(own)), 1),
            "solver_answered": round(100 * float(np.mean(solver)), 1), "tokens": round(float(np.mean(tokens)), 1),
            "seconds": round(time.perf_counter() - start, 2)}


def calibrate(pipe, n: int = 400) -> dict:
    """The confidence threshold for adaptive effort, on the development split: the lowest `sure`
    (the instant answer's least token probability) above which instant answers are as accurate as
    thinking ones; below it, adaptive thinks."""
    items = questions(ShapesWorld(ShapesConfig(image_size=pipe.image_size), DEV_SEED, "train"), n)
    sure, right, thought = [], [], []
    for k in range(0, len(items), 32):
        chunk = items[k:k + 32]
        images, asked = [im for im, _ in chunk], [q["q"] for _, q in chunk]
        for r, t, (_, q) in zip(pipe.reply_batch(images, asked, "none"), pipe.reply_batch(images, asked, "medium"),
                                chunk):
            sure.append(r.sure)
            right.append(r.text == q["a"])
            thought.append(t.text == q["a"])
    sure, right, thought = map(np.asarray, (sure, right, thought))
    rows = []
    for t in (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99):
        fast = sure >= t
        rows.append({"threshold": t, "instant_share": round(float(fast.mean()), 3),
                     "accuracy": round(100 * float(np.where(fast, right, thought).mean()), 1)})
    return {"instant": round(100 * float(right.mean()), 1), "thinking": round(100 * float(thought.mean()), 1),
            "thresholds": rows}


def prompts(world: Scenes, n: int) -> list[tuple[str, object, str]]:
    """(prompt, scene, kind): two-object prompts in absolute form, and relational ones."""
    out = []
    for i in range(len(world)):
        if len(out) == 2 * n:
            break
        scene = world.scene(i)
        if len(scene.objects) != 2 or len({o.color for o in scene.objects}) < 2:
            continue
        kind = "two_objects" if len(out) % 2 == 0 else "relations"
        out.append((captions(scene)[0 if kind == "two_objects" else 3], scene, kind))
    return out


def drawing_point(pipe, items, best_of: int, verifier: str) -> dict:
    """verifier "pixels": planned and judged by the pixel verifier + solver; "self": the model's log p."""
    cfg = ShapesConfig(image_size=pipe.image_size)
    scores: dict[str, list[bool]] = {"two_objects": [], "relations": []}
    start = time.perf_counter()
    world = pipe.world
    pipe.world = world if verifier == "pixels" else None  # without a world, best-of-N ranks by log p
    try:
        for i, (prompt, scene, kind) in enumerate(items):
            effort = "low" if verifier == "pixels" else "none"  # plans the prompt; best_of sets N
            image = pipe.drawings(prompt, 1, effort, best_of=best_of, seed=i)[0].image
            ok = judge_drawing(image, scene, cfg).score == 1.0 if kind == "two_objects" else \
                check(parse_prompt(prompt), parse_image(image, cfg)).satisfied
            scores[kind].append(ok)
    finally:
        pipe.world = world
    return {**{k: round(100 * float(np.mean(v)), 1) for k, v in scores.items()},
            "tokens": (pipe.vocab.image_tokens + 1) * best_of, "seconds": round(time.perf_counter() - start, 2)}


def speed(pipe) -> dict:
    """Best of 3 wall times: one drawing, best-of-8 (planned, judged); best of 20: one SMT check."""
    prompt = "a small red circle at the top left and a large blue square at the center"
    one = best_time(lambda: pipe.generate_image(prompt), 3)
    eight = best_time(lambda: pipe.drawings(prompt, 1, "low", best_of=8), 3)
    spec = parse_prompt(prompt)
    right, wrong = plan(spec), ShapesWorld(ShapesConfig(), SEED).scene(0)
    satisfied = best_time(lambda: check(spec, right), 20)
    failing = best_time(lambda: check(spec, wrong), 20)
    return {"one_drawing_s": round(one, 3), "best_of_8_s": round(eight, 3), "ratio": round(eight / one, 2),
            "smt_check_satisfied_ms": round(1000 * satisfied, 2), "smt_check_failing_ms": round(1000 * failing, 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="a model directory (default: the shipped one)")
    p.add_argument("--out", type=Path, default=Path("docs/test-time.json"))
    p.add_argument("--png", type=Path, default=None)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--calibrate", action="store_true", help="only print the adaptive threshold table")
    p.add_argument("--speed", action="store_true", help="only print the speed figures")
    args = p.parse_args()
    pipe = load(args.model)
    if args.calibrate or args.speed:
        print(json.dumps(calibrate(pipe) if args.calibrate else speed(pipe), indent=1))
        return
    ns = (1, 2) if args.quick else (1, 2, 4, 8, 16)
    n_q, n_d = (16, 2) if args.quick else (200, 24)
    kinds = scene_kinds(ShapesConfig(image_size=pipe.image_size), SEED, pipe.streams, ("unseen", "heldout"))
    report = {"model": pipe.name, "weights": weights_fingerprint(pipe.model), "seed": SEED,
              "scenes": kinds.describe(), "speed": speed(pipe), "answers": {}, "drawings": {}}
    print(json.dumps(report["speed"]))
    for split, world in kinds.kinds.items():
        items = questions(world, n_q)
        for mode, effort in MODES.items():
            for n in ns:
                point = answer_point(pipe, items, effort, n)
                report["answers"].setdefault(split, {}).setdefault(mode, {})[n] = point
                print(split, mode, n, json.dumps(point), flush=True)
        items = prompts(world, n_d)
        for verifier in ("pixels", "self"):
            for n in ns:
                point = drawing_point(pipe, items, n, verifier)
                report["drawings"].setdefault(split, {}).setdefault(verifier, {})[n] = point
                print(split, "draw", verifier, n, json.dumps(point), flush=True)
    atomic.write_text(args.out, json.dumps(report, indent=1) + "\n")
    if args.png:
        plot(report, args.png)


def plot(report: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for split, style in (("unseen", "-"), ("heldout", "--")):
        for mode, points in report["answers"][split].items():
            xs = [p["tokens"] for p in points.values()]
            axes[0].plot(xs, [p["accuracy"] for p in points.values()], style, marker="o", label=f"{mode} ({split})")
        for verifier, points in report["drawings"][split].items():
            xs = [int(n) for n in points]
            axes[1].plot(xs, [p["two_objects"] for p in points.values()], style, marker="o",
                         label=f"{verifier} verifier ({split})")
            axes[2].plot(xs, [p["relations"] for p in points.values()], style, marker="o",
                         label=f"{verifier} verifier ({split})")
    axes[0].set(xscale="log", xlabel="tokens decoded per answer", ylabel="QA accuracy (%)",
                title="answers: instant / adaptive / thinking, N votes")
    axes[1].set(xscale="log", xlabel="candidates (best of N)", ylabel="exact scene (%)", title="two-object drawings")
    axes[2].set(xscale="log", xlabel="candidates (best of N)", ylabel="all constraints (%)",
                title="relational drawings")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
