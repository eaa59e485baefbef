"""Loss and ShapesEval probe against minutes of training, for one or more runs (a PNG).

    python bench/time_to_quality.py runs/a runs/b --out docs/time-to-quality.png

Reads each run's log.jsonl (`smalto train` records the wall-clock seconds of every logged step
and evaluation) and draws the training loss and the probe's caption / QA / drawing scores
against minutes, with v1's ShapesEval as dashed lines. The probe is small (32 captions, 64
questions, 16 drawings at the default sampling): it shows the shape of the curve; the full
`smalto eval` of a finished run is the number to quote.
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

from smalto import atomic

V1 = {"caption_exact": 93.5, "qa": 71.8}  # ShapesEval of the shipped v1 model, trained for 28 minutes
PROBES = {"caption_exact": "caption exact", "qa": "QA", "draw_exact": "drawing exact (probe)"}


def curves(run: Path) -> tuple[list[tuple[float, float]], dict[str, list[tuple[float, float]]]]:
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line]
    if not any("seconds" in r for r in rows):
        raise SystemExit(f"{run}/log.jsonl has no wall-clock seconds (written by an older smalto)")
    loss = [(r["seconds"] / 60, r["loss"]) for r in rows if "loss" in r and "seconds" in r]
    probes = {k: [(r["seconds"] / 60, r["eval"][k]) for r in rows if "eval" in r and k in r["eval"]] for k in PROBES}
    return loss, probes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 1 + len(PROBES), figsize=(4 * (1 + len(PROBES)), 3.6), dpi=100)
    for run in args.runs:
        loss, probes = curves(run)
        axes[0].plot(*zip(*loss), label=run.name, lw=1)
        for ax, (key, points) in zip(axes[1:], probes.items()):
            if points:
                ax.plot(*zip(*points), marker="o", label=run.name)
    axes[0].set_yscale("log")
    axes[0].set_title("training loss")
    for ax, (key, title) in zip(axes[1:], PROBES.items()):
        ax.set_title(title)
        ax.set_ylim(0, 100)
        if key in V1:
            ax.axhline(V1[key], ls="--", color="grey", label="v1 after 28 min")
    for ax in axes:
        ax.set_xlabel("minutes")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic.write_bytes(args.out, buf.getvalue())
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
