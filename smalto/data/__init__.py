"""Data: ShapesWorld (procedural, exact ground truth) and bring-your-own folders; its verifier is
`smalto.verify.scene`."""

from __future__ import annotations

from pathlib import Path

from smalto.data.folder import (ClipFolder, ClipRecord, Folder, Record, load_clip_folder, load_folder,
                                write_clip_folder, write_folder)
from smalto.data.motion import MotionConfig, MotionWorld
from smalto.data.gate import MAX_PIXELS
from smalto.data.images import load_image
from smalto.data.shapes import Sample, Scene, ShapesConfig, ShapesWorld, parse_caption

__all__ = ["MAX_PIXELS", "ClipFolder", "ClipRecord", "Folder", "MotionConfig", "MotionWorld", "Record", "Sample",
           "Scene", "ShapesConfig", "ShapesWorld", "load_clip_folder", "load_folder", "load_image",
           "parse_caption", "write_clip_folder", "write_clips", "write_folder",
           "write_shapes"]


def write_shapes(out: str | Path, n: int, seed: int = 0, split: str = "train",
                 cfg: ShapesConfig | None = None, force: bool = False) -> Path:
    """Materialise n ShapesWorld scenes as a bring-your-own folder (canonical caption as text)."""
    world = ShapesWorld(cfg, seed, split)

    def items():
        for i in range(n):
            s = world[i]
            yield s.image, Record(f"images/{i + 1:06d}.png", s.captions[0], s.qa, s.scene)

    return write_folder(out, items(), total=n, force=force)


def write_clips(out: str | Path, n: int, seed: int = 0, split: str = "train", cfg: MotionConfig | None = None,
                force: bool = False) -> Path:
    """Materialise n clips of ShapesWorld in motion as a folder of clips (canonical caption as text,
    the motion and every frame's scene graph beside it)."""
    world = MotionWorld(cfg, seed, split)

    def items():
        for i in range(n):
            s = world[i]
            yield s.frames, ClipRecord(f"clips/{i + 1:06d}.gif", s.captions[0], s.qa, s.clip,
                                       [s.clip.scene(t) for t in range(s.clip.frames)])

    return write_clip_folder(out, items(), total=n, force=force)
