"""Figures written next to training runs: loss curves and image grids (PNG, atomically)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from smalto import atomic


def png_bytes(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def save_png(path: str | Path, image: np.ndarray) -> None:
    atomic.write_bytes(path, png_bytes(image))


def image_grid(rows: list[np.ndarray], scale: int = 4, gap: int = 2, fill: int = 255,
               labels: list[str] | None = None) -> np.ndarray:
    """Tile rows of uint8 images [N, H, W, 3] (same H, W) into one picture, upscaled crisply; with
    `labels`, each row under a line of text that says what it is."""
    rows = [r.repeat(scale, axis=1).repeat(scale, axis=2) for r in rows]
    h, w = rows[0].shape[1:3]
    cols = max(len(r) for r in rows)
    line = 16 if labels else 0
    grid = np.full((len(rows) * (h + gap + line) + gap, cols * (w + gap) + gap, 3), fill, np.uint8)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            y, x = gap + i * (h + gap + line) + line, gap + j * (w + gap)
            grid[y:y + h, x:x + w] = img
    if not labels:
        return grid
    from PIL import Image, ImageDraw, ImageFont

    picture = Image.fromarray(grid)
    pen, font = ImageDraw.Draw(picture), ImageFont.load_default(12)
    for i, label in enumerate(labels):
        text = label
        while len(text) > 4 and pen.textlength(text, font=font) > grid.shape[1] - 2 * gap:
            text = text[:-4].rstrip() + "..."  # (cut to the grid's width)
        pen.text((gap, gap + i * (h + gap + line)), text, fill=(40, 40, 40), font=font)
    return np.asarray(picture)


def loss_curve(log: list[dict], keys: list[str], title: str) -> bytes:
    """PNG of the given keys of a JSONL-style log against "step" (log scale where positive)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for key in keys:
        points = [(r["step"], r[key]) for r in log if key in r]
        if points:
            ax.plot(*zip(*points), label=key)
    if all(r[k] > 0 for r in log for k in keys if k in r):
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
