"""ShapesEval's sound section on the development seed's unseen scenes, for choosing a recipe
without touching the evaluation seed: `python bench/sound_dev.py runs/v8 [--sounds 100 --made 32
--melodies 32]` prints its rows as JSON (about 45 s on 2 cores). A run's directory is read with
the shipped model's drawing defaults (guidance 1.5, temperature 0.3), as `smalto pack` stores them."""

import argparse
import json
import time

from smalto.data.shapes import ShapesConfig
from smalto.eval.scenes import scene_kinds
from smalto.eval.shapes_eval import DEV_SEED
from smalto.eval.sound_eval import eval_sound
from smalto.pipeline import load


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model", help="a trained or packed model directory")
    p.add_argument("--sounds", type=int, default=100, help="sounds read")
    p.add_argument("--made", type=int, default=32, help="sounds made, from captions and from pictures")
    p.add_argument("--melodies", type=int, default=32, help="melodies continued")
    args = p.parse_args()
    start = time.perf_counter()
    pipe = load(args.model)
    pipe.draw_defaults.update(guidance=1.5, temperature=0.3)
    unseen = scene_kinds(ShapesConfig(image_size=pipe.image_size), DEV_SEED, pipe.streams, ("unseen",))
    report = eval_sound(pipe, unseen.kinds["unseen"], args.sounds, args.made, DEV_SEED, args.melodies)
    print(json.dumps({"model": args.model, "seed": DEV_SEED, **report, "seconds": round(time.perf_counter() - start)}))


if __name__ == "__main__":
    main()
