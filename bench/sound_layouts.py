"""A sound's residual levels laid out four ways, each trained for the same minutes from the same
model, then measured on the development seed's unseen scenes.

    python bench/sound_layouts.py --out runs/layouts --base V5 --json docs/sound-layouts.json   # 34 min
    python bench/sound_layouts.py --out runs/layouts-quick --minutes 0.5 --quick

- flat-2: the codec's first two levels, a token per code, frame by frame (108 tokens a sound);
- flat-4: all four levels so (216 tokens);
- delay-4: all four, a token per step carrying the finer levels of the frames before (MusicGen's
  delay pattern: 57 tokens, each predicting four codes);
- depth-4: all four, a token per frame carrying its finer levels, which a one-layer depth head
  predicts level after level from the model's state (Moshi's depth transformer: 54 tokens).

`--json` merges: the layouts run now replace their rows in an existing report of the same base,
seed and minutes, and the others are kept (so one layout can be added later, on the same machine).

Each starts from the same checkpoint on five sound tasks alone (the recorded run: V5, the model
shipped before sounds, `git archive 849d05e smalto/assets/model | tar -x -C /tmp/v5`; by default
the shipped model, which already hears two flattened levels: a run adds or drops levels at the
audio range's end); its steps are set so that it trains for `--minutes` on this machine (a
short calibration run measures its seconds a step first). The same ShapesEval sound section
(`smalto.eval.sound_eval`) then reads each on the development seed (`shapes_eval.DEV_SEED`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import replace
from pathlib import Path

from smalto import atomic
from smalto.data.shapes import ShapesConfig
from smalto.data.tasks import SOUND_TASKS
from smalto.eval.scenes import scene_kinds
from smalto.eval.shapes_eval import DEV_SEED
from smalto.eval.sound_eval import eval_sound
from smalto.pipeline import load
from smalto.training.data import TaskMix
from smalto.training.trainer import TrainConfig, train

LAYOUTS = {"flat-2": (2, "flat"), "flat-4": (4, "flat"), "delay-4": (4, "delay"), "depth-4": (4, "depth")}
CALIBRATION = 16  # steps; the first few (allocation, warm caches) are not timed
# The five sound tasks the recorded rows trained on (melodies to continue came later, and a delayed
# sound can not be continued from its first frames).
TASKS = tuple(t for t in SOUND_TASKS if t != "sound_next")


def config(base: str | None, levels: int, pattern: str, steps: int, seed: int) -> TrainConfig:
    from smalto.assets import DEFAULT_MODEL

    mix = TaskMix(caption=0, draw=0, qa=0, **{task: 1.0 for task in TASKS})
    return TrainConfig(init_from=str(base or DEFAULT_MODEL), steps=steps, batch_size=32, lr=5e-4,
                       warmup=min(30, steps // 4), optimizer="adamw", seed=seed, mix=mix, sound_levels=levels,
                       sound_pattern=pattern, eval_every=0, save_every=steps, log_every=10, compile=False)


def seconds_a_step(base: str | None, levels: int, pattern: str, out: Path, seed: int) -> float:
    shutil.rmtree(out, ignore_errors=True)
    log = train(out, replace(config(base, levels, pattern, CALIBRATION, seed), log_every=1), progress=False)
    shutil.rmtree(out)
    timed = [(r["step"], r["seconds"]) for r in log if "seconds" in r and r["step"] >= 4]
    return (timed[-1][1] - timed[0][1]) / (timed[-1][0] - timed[0][0])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="where the runs go (one directory each)")
    p.add_argument("--base", default=None, help="the checkpoint every run starts from (default: the shipped model)")
    p.add_argument("--minutes", type=float, default=8.0, help="training minutes per layout")
    p.add_argument("--layouts", nargs="+", choices=tuple(LAYOUTS), default=list(LAYOUTS))
    p.add_argument("--seed", type=int, default=41, help="the runs' data seed")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--quick", action="store_true", help="fewer sounds measured")
    args = p.parse_args()
    n, drawings = (16, 8) if args.quick else (100, 32)
    rows = []
    for name in args.layouts:
        levels, pattern = LAYOUTS[name]
        pace = seconds_a_step(args.base, levels, pattern, args.out / f"{name}-calibration", args.seed)
        steps = max(10, int(args.minutes * 60 / pace))
        start = time.perf_counter()
        run = args.out / name
        if not (run / "meta.json").exists():
            train(run, config(args.base, levels, pattern, steps, args.seed), progress=True)
        minutes = (time.perf_counter() - start) / 60
        pipe = load(run)
        unseen = scene_kinds(ShapesConfig(image_size=pipe.image_size), DEV_SEED, pipe.streams, ("unseen",))
        start = time.perf_counter()
        sound = eval_sound(pipe, unseen.kinds["unseen"], n, drawings, DEV_SEED)
        rows.append({"layout": name, "levels": levels, "pattern": pattern, "date": time.strftime("%Y-%m-%d"),
                     "tokens_a_sound": pipe.vocab.modalities["audio"].tokens + 2, "seconds_a_step": round(pace, 2),
                     "steps": steps, "train_minutes": round(minutes, 1),
                     "eval_minutes": round((time.perf_counter() - start) / 60, 1), **sound})
        print(json.dumps(rows[-1]), flush=True)
    report = {"base": args.base or "shipped", "seed": args.seed, "eval_seed": DEV_SEED, "minutes": args.minutes,
              "sounds": n, "drawings": drawings, "rows": rows}
    if args.json:
        atomic.write_text(args.json, json.dumps(merged(args.json, report), indent=1) + "\n")


def merged(path: Path, report: dict) -> dict:
    """`report` with the rows of an earlier one at `path` kept for the layouts not run now (same
    settings only; the earlier base's description is kept)."""
    if not path.exists():
        return report
    earlier = json.loads(path.read_text())
    settings = ("seed", "eval_seed", "minutes", "sounds", "drawings")
    if any(earlier.get(k) != report[k] for k in settings):
        raise SystemExit(f"{path}: made with other settings ({', '.join(f'{k} {earlier.get(k)}' for k in settings)});"
                         f" write another --json")
    run = {r["layout"] for r in report["rows"]}
    rows = [r for r in earlier["rows"] if r["layout"] not in run] + report["rows"]
    order = list(LAYOUTS)
    return {**report, "base": earlier["base"], "rows": sorted(rows, key=lambda r: order.index(r["layout"]))}


if __name__ == "__main__":
    main()
