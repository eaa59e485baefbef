"""Drawing and decoding times of the shipped model, for comparing two checkouts of smalto.

    python bench/engine_steps.py            # best of the repeats, in ms

Run it alternately in two checkouts (e.g. a `git worktree` of the commit before a change and
this one), several times each, and compare the best of each: on a shared machine the spread
between processes is larger than most changes to the engine.
"""

import json
import sys
import time

import torch

import smalto
from smalto.format import Allowed


def best_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return round(min(times) * 1000, 1)


def main() -> None:
    torch.set_num_threads(2)
    pipe = smalto.load()
    v = pipe.vocab
    prompt = [v.bos, v.user, *pipe.tokenizers.text.encode("hello"), v.assistant]

    def decode(batch: int):
        return lambda: pipe.engine.generate([prompt] * batch, 64, allowed=Allowed(eos=False))

    def draw(n: int):
        return lambda: pipe.draw(["a small red circle at the center"] * n)

    draw(1)(), decode(1)()  # warm up
    report = {"draw_1_ms": best_ms(draw(1), 15), "draw_16_ms": best_ms(draw(16), 5),
              "decode_64_batch_1_ms": best_ms(decode(1), 8), "decode_64_batch_16_ms": best_ms(decode(16), 5)}
    json.dump(report, sys.stdout)
    print()


if __name__ == "__main__":
    main()
