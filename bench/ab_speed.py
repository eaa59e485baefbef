"""Is a change free? The speed of drawing, captioning and chat decoding in two checkouts, measured
interleaved (A B A B ...) in fresh processes on the same machine, so drift hits both alike.

    git worktree add /tmp/before HEAD~3
    python bench/ab_speed.py --before /tmp/before --json docs/ab-speed.json      # ~3 min on 2 cores

Each round runs one process per checkout (its own `smalto` first on the path): the shipped
model, a warm-up, then the median of `--reps` timings of each job. Reported: each job's median
over rounds for both checkouts and their ratio (after / before; 1.0 is no change).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

JOBS = r"""
import json, statistics, sys, time
import smalto
assert smalto.__file__.startswith(sys.argv[3]), (smalto.__file__, sys.argv[3])  # this checkout's code
import numpy as np
import torch
import smalto
from smalto.data.shapes import ShapesConfig, ShapesWorld
from smalto.pipeline import Message

torch.set_num_threads(int(sys.argv[2]))
pipe = smalto.load(dtype="fp32")
world = ShapesWorld(ShapesConfig(image_size=pipe.image_size), seed=7)
images = [world[i].image for i in range(16)]
jobs = {
    "draw 8 pictures": lambda: pipe.generate_image("a small red circle at the top left", n=8, seed=0),
    "caption 16 pictures": lambda: pipe.caption_batch(images),
    "answer 16 questions": lambda: pipe.ask_batch(images, ["how many objects are there?"] * 16),
    "chat reply": lambda: pipe.chat([Message("user", "what is in the picture?", images=[images[0]])]),
}
out = {}
for name, job in jobs.items():
    if sys.argv[4] not in name:
        continue
    job()  # warm-up
    times = []
    for _ in range(int(sys.argv[1])):
        start = time.perf_counter()
        job()
        times.append(time.perf_counter() - start)
    out[name] = statistics.median(times)
print(json.dumps(out))
"""


def run(checkout: Path, reps: int, threads: int, only: str = "") -> dict:
    env = {**os.environ, "PYTHONPATH": str(checkout.resolve()), "OMP_NUM_THREADS": str(threads)}
    # (run from the checkout: `python -c` puts the working directory first on the path)
    r = subprocess.run([sys.executable, "-c", JOBS, str(reps), str(threads), str(checkout.resolve()), only],
                       env=env, cwd=checkout,
                       capture_output=True, text=True, timeout=900)
    if r.returncode:
        raise SystemExit(f"{checkout}: {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def _commit(checkout: Path) -> str:
    """The checkout's commit (and whether its tree differs from it), not its path."""
    git = ["git", "-C", str(checkout)]
    rev = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True)
    return rev + (" (with uncommitted changes)" if dirty.stdout.strip() else "")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before", type=Path, required=True, help="the other checkout (e.g. a git worktree)")
    p.add_argument("--after", type=Path, default=ROOT, help="default: this checkout")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--only", default="", help="only the jobs whose name holds this (e.g. draw)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    rounds = {"before": [], "after": []}
    for _ in range(args.rounds):
        for side in ("before", "after"):
            rounds[side].append(run(getattr(args, side), args.reps, args.threads, args.only))
    report = {"before": _commit(args.before), "after": _commit(args.after), "rounds": args.rounds,
              "reps": args.reps, "threads": args.threads, "jobs": {}}
    print("| job | before (s) | after (s) | after / before |\n|---|---|---|---|")
    for job in rounds["before"][0]:
        a, b = (statistics.median(r[job] for r in rounds[side]) for side in ("before", "after"))
        report["jobs"][job] = {"before_s": round(a, 4), "after_s": round(b, 4), "ratio": round(b / a, 3),
                               "before_rounds": [round(r[job], 4) for r in rounds["before"]],
                               "after_rounds": [round(r[job], 4) for r in rounds["after"]]}
        print(f"| {job} | {a:.3f} | {b:.3f} | {b / a:.3f} |")
    if args.json:
        from smalto import atomic

        atomic.write_text(args.json, json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
