"""Data: ShapesWorld (procedural, exact ground truth), its verifier, and bring-your-own folders."""

from __future__ import annotations

from pathlib import Path

from smalto.data.folder import Folder, Record, load_folder, write_folder
from smalto.data.images import MAX_PIXELS, load_image
from smalto.data.shapes import Sample, Scene, ShapesConfig, ShapesWorld, parse_caption
from smalto.verify.scene import inspect, parse_image, scene_diff

__all__ = ["MAX_PIXELS", "Folder", "Record", "Sample", "Scene", "ShapesConfig", "ShapesWorld", "inspect",
           "load_folder", "load_image", "parse_caption", "parse_image", "scene_diff", "write_folder", "write_shapes"]


def write_shapes(out: str | Path, n: int, seed: int = 0, split: str = "train",
                 cfg: ShapesConfig | None = None, force: bool = False) -> Path:
    """Materialise n ShapesWorld scenes as a bring-your-own folder (canonical caption as text)."""
    world = ShapesWorld(cfg, seed, split)

    def items():
        for i in range(n):
            s = world[i]
            yield s.image, Record(f"images/{i + 1:06d}.png", s.captions[0], s.qa, s.scene)

    return write_folder(out, items(), total=n, force=force)
