"""Data: ShapesWorld (procedural, exact ground truth: pictures, clips, sounds) and bring-your-own
folders; its verifiers are `smalto.verify.scene`, `.motion` and `.hearing`."""

from __future__ import annotations

from pathlib import Path

from smalto.data.folder import (ClipFolder, ClipRecord, Folder, Record, load_clip_folder, load_folder,
                                write_clip_folder, write_folder, write_sound_folder)
from smalto.data.motion import MotionConfig, MotionWorld
from smalto.data.gate import MAX_PIXELS
from smalto.data.images import load_image
from smalto.data.sounds import SoundConfig, SoundWorld
from smalto.data.shapes import Sample, Scene, ShapesConfig, ShapesWorld, parse_caption

__all__ = ["MAX_PIXELS", "ClipFolder", "ClipRecord", "Folder", "MotionConfig", "MotionWorld", "Record", "Sample",
           "Scene", "ShapesConfig", "ShapesWorld", "load_clip_folder", "load_folder", "load_image",
           "parse_caption", "write_clip_folder", "write_clips", "write_folder",
           "write_shapes", "write_sound_folder", "write_sounds", "write_speech"]


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


def write_sounds(out: str | Path, n: int, seed: int = 0, split: str = "train", cfg: SoundConfig | None = None,
                 force: bool = False) -> Path:
    """Materialise n of ShapesWorld's sounds as a folder: sounds/*.wav and data.jsonl (the canonical
    caption as text, the questions and the scene graph beside it)."""
    world = SoundWorld(cfg, seed, split)

    def items():
        for i in range(n):
            s = world[i]
            yield s.wave, {"text": s.captions[0], "qa": s.qa, "scene": s.scene.to_dict()}

    return write_sound_folder(out, items(), world.cfg.sample_rate, total=n, force=force)


def write_speech(out: str | Path, n: int, seed: int = 0, split: str = "train", voices: str = "train",
                 force: bool = False) -> Path:
    """Materialise n spoken captions (`smalto.data.speech`) as a folder of sounds: sounds/*.wav and
    data.jsonl (the caption said as text, the voice, speed and pitch, the scene graph)."""
    from smalto.data.speech import SpeechWorld

    world = SpeechWorld(seed=seed, split=split, voices=voices)

    def items():
        for i in range(n):
            u = world[i]
            yield u.wave, {"text": u.text, "voice": u.voice, "speed": u.speed, "pitch": u.pitch,
                           "scene": u.scene.to_dict()}

    return write_sound_folder(out, items(), world.cfg.sample_rate, total=n, force=force)
