"""Choose a model's drawing defaults on the development seed, never on the evaluation one.

    python bench/draw_defaults.py --json docs/draw-defaults.json     # 40 s on 2 cores
    python bench/draw_defaults.py --quick

Exact drawings of one- and two-object prompts, and counting, over guidance x temperature, on
scenes of the development seed (`shapes_eval.DEV_SEED`) of the kinds the model did not see
(`smalto.eval.scenes`; a model that saw every one-object scene is swept on the seen ones for
those). The best setting is what `smalto pack --cfg G --temperature T` should store.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from smalto import atomic
from smalto.data.shapes import ShapesConfig
from smalto.eval.scenes import scene_kinds
from smalto.eval.shapes_eval import DEV_SEED, _draw, _scenes_with
from smalto.pipeline import load

GUIDANCE = (1.0, 1.5, 2.0, 3.0)
TEMPERATURE = (0.0, 0.3)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="a model directory (default: the shipped one)")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    pipe = load(args.model)
    kinds = scene_kinds(ShapesConfig(image_size=pipe.image_size), DEV_SEED, pipe.streams).kinds
    n = 4 if args.quick else 24
    one = _scenes_with(kinds["unseen"], n, 1) or _scenes_with(kinds.get("seen", kinds["unseen"]), n, 1)
    prompts = one + _scenes_with(kinds["unseen"], n, 2)
    rows = []
    for g in GUIDANCE[:2] if args.quick else GUIDANCE:
        for t in TEMPERATURE:
            pipe.draw_defaults = {**pipe.draw_defaults, "guidance": g, "temperature": t}
            checks = _draw(pipe, prompts, 0, None, DEV_SEED, pipe.world)[0]
            rows.append({"guidance": g, "temperature": t, "exact": round(100 * float(np.mean(
                [c["exact"] for c in checks])), 1), "counting": round(100 * float(np.mean(
                    [c["counting"] for c in checks])), 1)})
            print(json.dumps(rows[-1]), flush=True)
    best = max(rows, key=lambda r: (r["exact"], r["counting"]))
    report = {"model": pipe.name, "seed": DEV_SEED, "prompts": len(prompts), "sweep": rows, "best": best}
    print("best:", json.dumps(best))
    if args.json:
        atomic.write_text(args.json, json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
