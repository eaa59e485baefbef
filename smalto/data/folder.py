"""Bring-your-own data: a folder of images plus one JSON object per line describing them.

    DIR/images/000001.png
    DIR/data.jsonl   {"image": "images/000001.png", "text": "...", "qa": [{"q": "...", "a": "..."}],
                      "scene": {...}}

`image` and `text` are required; `qa`, `scene` (a ShapesWorld scene graph) and `label` (a class,
for linear probes) are optional, and other fields are ignored. `smalto data shapes` writes this same format.

A folder of clips has a `clip` in place of `image` (an animated GIF/WebP, or a folder of frames),
and optionally `motion` (its objects and their motion, `smalto.data.motion.Clip.to_dict`) and
`frames` (each frame's scene graph); `smalto data clips` writes one from ShapesWorld in motion:

    DIR/clips/000001.gif
    DIR/data.jsonl   {"clip": "clips/000001.gif", "text": "...", "qa": [...], "motion": {...}, "frames": [...]}

A folder of sounds has an `audio` in place of `image` (WAV, FLAC or OGG, any rate and channels:
read as mono at the codec's rate by `smalto.data.gate.read_sound`, at most a minute each);
`smalto data sounds` writes one from ShapesWorld's sounds:

    DIR/sounds/000001.wav
    DIR/data.jsonl   {"audio": "sounds/000001.wav", "text": "...", "qa": [...], "scene": {...}}

Images are converted as `smalto.data.images` says (any mode and size becomes RGB at the configured
side). Everything else is a `SmaltoError` naming the file and line: a missing or unreadable file,
an image over the pixel limit, a path that leads outside the folder (`..`, absolute, or a symlink
pointing elsewhere: a dataset must not make smalto read the user's other files), a malformed line,
a missing field, an empty dataset.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image
from smalto.progress import bar as progress_bar

from smalto import atomic
from smalto.data.gate import MAX_PIXELS, MAX_SECONDS, read_sound
from smalto.data.images import load_image
from smalto.data.motion import Clip
from smalto.data.shapes import Scene
from smalto.data.sounds import write_wav
from smalto.data.video import clip_bytes, load_clip
from smalto.errors import SmaltoError
from smalto.paths import inside

INDEX = "data.jsonl"


@dataclass
class Record:
    image: str  # path relative to the folder, as written in data.jsonl
    text: str
    qa: list[dict] = field(default_factory=list)
    scene: Scene | None = None
    label: str | None = None  # a class, for linear probes (`smalto finetune --method probe`)


@dataclass
class ClipRecord:
    clip: str  # path relative to the folder, as written in data.jsonl
    text: str
    qa: list[dict] = field(default_factory=list)
    motion: Clip | None = None
    frames: list[Scene] | None = None  # each frame's scene graph


@dataclass
class SoundFolder:
    root: Path
    records: list[Record]  # a record's `image` is its sound's path
    sounds: list[np.ndarray]  # float32 mono [samples] each, at `sample_rate`
    sample_rate: int

    def __len__(self) -> int:
        return len(self.records)


@dataclass
class ClipFolder:
    root: Path
    records: list[ClipRecord]
    clips: list[np.ndarray]  # uint8 [T, S, S, 3] each

    def __len__(self) -> int:
        return len(self.records)


@dataclass
class Folder:
    root: Path
    records: list[Record]
    images: np.ndarray  # uint8 [N, S, S, 3]

    def __len__(self) -> int:
        return len(self.records)

    def texts(self) -> Iterable[str]:
        """Every string in the folder: what a text tokenizer is trained on."""
        for r in self.records:
            yield r.text
            for pair in r.qa:
                yield pair["q"]
                yield pair["a"]


MAX_DEPTH = 16  # nesting a record may have (a scene graph needs 4)


def _constant(name: str):
    raise SmaltoError(f"{name} is not a number JSON allows")


def _depth(value, limit: int) -> int:
    """How deeply `value` nests lists and objects, counted no further than `limit` + 1."""
    if limit < 0 or not isinstance(value, (dict, list)):
        return 0
    items = value.values() if isinstance(value, dict) else value
    return 1 + max((_depth(v, limit - 1) for v in items), default=0)


def _object(line: str, where: str) -> dict:
    try:
        obj = json.loads(line, parse_constant=_constant)
    except json.JSONDecodeError as e:
        raise SmaltoError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
    except SmaltoError as e:
        raise SmaltoError(f"{where}: {e}") from None
    except RecursionError:
        raise SmaltoError(f"{where}: nested too deeply (a record nests at most {MAX_DEPTH} levels)") from None
    except ValueError as e:  # e.g. an integer of thousands of digits
        raise SmaltoError(f"{where}: not valid JSON ({e})") from None
    if _depth(obj, MAX_DEPTH) > MAX_DEPTH:
        raise SmaltoError(f"{where}: nested too deeply (a record nests at most {MAX_DEPTH} levels)")
    if not isinstance(obj, dict):
        raise SmaltoError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    return obj


def _parse_line(line: str, where: str, item: str = "image") -> Record:
    obj = _object(line, where)
    if item == "image" and "image" not in obj and "clip" in obj:
        raise SmaltoError(f"{where}: a clip where an image was expected (this folder holds clips)")
    for name in (item, "text"):
        if name not in obj:
            raise SmaltoError(f"{where}: missing field {name!r}")
        if not isinstance(obj[name], str) or not obj[name].strip():
            raise SmaltoError(f"{where}: field {name!r} must be a non-empty string")
    qa = obj.get("qa", [])
    if not isinstance(qa, list) or not all(
            isinstance(p, dict) and isinstance(p.get("q"), str) and isinstance(p.get("a"), str) for p in qa):
        raise SmaltoError(f"{where}: field 'qa' must be a list of {{\"q\": str, \"a\": str}} objects")
    scene = None
    if obj.get("scene") is not None:
        try:
            scene = Scene.from_dict(obj["scene"])
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError):
            raise SmaltoError(f"{where}: field 'scene' is not a scene graph "
                              "({\"objects\": [{\"shape\", \"color\", \"size\", \"row\", \"col\"}]})") from None
    label = obj.get("label")
    if label is not None and (not isinstance(label, str) or not label.strip()):
        raise SmaltoError(f"{where}: field 'label' must be a non-empty string")
    return Record(obj[item], obj["text"], qa, scene, label)


def _parse_clip_line(line: str, where: str) -> ClipRecord:
    base, obj = _parse_line(line, where, "clip"), _object(line, where)
    motion = frames = None
    if obj.get("motion") is not None:
        try:
            motion = Clip.from_dict(obj["motion"])
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError):
            raise SmaltoError(f"{where}: field 'motion' is not a clip ({{\"frames\": T, \"objects\": [{{\"shape\", "
                              f"\"color\", \"size\", \"x\", \"y\", \"dx\", \"dy\"}}]}})") from None
    if obj.get("frames") is not None:
        try:
            frames = [Scene.from_dict(s) for s in obj["frames"]]
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError):
            raise SmaltoError(f"{where}: field 'frames' must list one scene graph per frame") from None
    return ClipRecord(base.image, base.text, base.qa, motion, frames)


def _first_has(root: str | Path, name: str) -> bool:
    try:
        first = next(line for line in inside(root, INDEX, "file").read_text(encoding="utf-8").splitlines()
                     if line.strip())
        return name in _object(first, INDEX)
    except (OSError, StopIteration, UnicodeDecodeError, SmaltoError):
        return False  # load_folder says what is wrong


def is_clip_folder(root: str | Path) -> bool:
    """Whether a folder's first record is a clip."""
    return _first_has(root, "clip")


def is_sound_folder(root: str | Path) -> bool:
    """Whether a folder's first record is a sound."""
    return _first_has(root, "audio")


def load_sound_folder(root: str | Path, sample_rate: int = 16000, progress: bool = False,
                      max_seconds: float | None = MAX_SECONDS) -> SoundFolder:
    """Read and validate a folder of sounds; the first problem raises a SmaltoError naming its line."""
    root = Path(root)
    records, sounds = [], []
    for n, line in progress_bar(_index(root), desc=f"reading {root}", enabled=progress, unit="sound"):
        where = f"{root / INDEX}:{n}"
        record = _parse_line(line, where, "audio")
        try:
            sounds.append(read_sound(inside(root, record.image, "audio"), record.image, sample_rate, max_seconds))
        except SmaltoError as e:
            raise SmaltoError(f"{where}: {e}") from None
        records.append(record)
    if not records:
        raise SmaltoError(f"{root / INDEX}: no records (the dataset is empty)")
    return SoundFolder(root, records, sounds, sample_rate)


def load_clip_folder(root: str | Path, image_size: int = 32, progress: bool = False,
                     max_pixels: int | None = MAX_PIXELS) -> ClipFolder:
    """Read and validate a folder of clips; the first problem raises a SmaltoError naming its line.
    A record's frame count must match its `motion` and `frames` when it gives them."""
    root = Path(root)
    lines = _index(root)
    records, clips = [], []
    for n, line in progress_bar(lines, desc=f"reading {root}", enabled=progress, unit="clip"):
        where = f"{root / INDEX}:{n}"
        record = _parse_clip_line(line, where)
        try:
            frames = load_clip(inside(root, record.clip, "clip"), image_size, max_pixels, name=record.clip)
        except SmaltoError as e:
            raise SmaltoError(f"{where}: {e}") from None
        counts = {"motion": record.motion.frames if record.motion else None,
                  "frames": len(record.frames) if record.frames else None}
        for name, count in counts.items():
            if count is not None and count != len(frames):
                raise SmaltoError(f"{where}: the clip has {len(frames)} frames, its {name!r} says {count}")
        records.append(record)
        clips.append(frames)
    if not records:
        raise SmaltoError(f"{root / INDEX}: no records (the dataset is empty)")
    return ClipFolder(root, records, clips)


def _index(root: Path) -> list[tuple[int, str]]:
    """data.jsonl's non-empty lines, numbered from 1."""
    if not root.is_dir():
        raise SmaltoError(f"{root}: not a directory")
    if not inside(root, INDEX, "file").is_file():
        raise SmaltoError(f"{root}: no {INDEX} (expected {root}/images/*.png and {root / INDEX})")
    try:
        lines = inside(root, INDEX, "file").read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise SmaltoError(f"{root / INDEX}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    return [(n, line) for n, line in enumerate(lines, 1) if line.strip()]


def load_folder(root: str | Path, image_size: int = 32, progress: bool = False,
                max_pixels: int | None = MAX_PIXELS) -> Folder:
    """Read and validate a whole folder; the first problem raises a SmaltoError."""
    root = Path(root)
    index = root / INDEX  # as the user named it, for messages
    numbered = _index(root)
    records, images = [], []
    for n, line in progress_bar(numbered, desc=f"reading {root}", enabled=progress, unit="img"):
        where = f"{index}:{n}"
        record = _parse_line(line, where)
        try:
            path = inside(root, record.image, "image")
            images.append(load_image(path, image_size, max_pixels, name=record.image))
        except SmaltoError as e:
            raise SmaltoError(f"{where}: {e}") from None
        records.append(record)
    if not records:
        raise SmaltoError(f"{index}: no records (the dataset is empty)")
    return Folder(root, records, np.stack(images))


def write_folder(out: str | Path, items: Iterable[tuple[np.ndarray, Record]], total: int | None = None,
                 force: bool = False) -> Path:
    """Write (image, record) pairs as a folder, atomically: it appears complete or not at all."""
    out = Path(out)
    with atomic.directory(out, overwrite=force) as tmp:
        (tmp / "images").mkdir()
        lines = []
        for image, record in progress_bar(items, total=total, desc=f"writing {out}", unit="img"):
            Image.fromarray(image).save(tmp / record.image, format="PNG")
            row = {"image": record.image, "text": record.text}
            if record.qa:
                row["qa"] = record.qa
            if record.scene is not None:
                row["scene"] = record.scene.to_dict()
            if record.label is not None:
                row["label"] = record.label
            lines.append(json.dumps(row, ensure_ascii=False))
        atomic.write_text(tmp / INDEX, "\n".join(lines) + "\n")
    return out


def write_clip_folder(out: str | Path, items: Iterable[tuple[np.ndarray, ClipRecord]], total: int | None = None,
                      force: bool = False) -> Path:
    """Write (frames, record) pairs as a folder of animated GIFs, atomically."""
    out = Path(out)
    with atomic.directory(out, overwrite=force) as tmp:
        (tmp / "clips").mkdir()
        lines = []
        for frames, record in progress_bar(items, total=total, desc=f"writing {out}", unit="clip"):
            (tmp / record.clip).write_bytes(clip_bytes(frames, "GIF"))
            row = {"clip": record.clip, "text": record.text}
            if record.qa:
                row["qa"] = record.qa
            if record.motion is not None:
                row["motion"] = record.motion.to_dict()
            if record.frames is not None:
                row["frames"] = [s.to_dict() for s in record.frames]
            lines.append(json.dumps(row, ensure_ascii=False))
        atomic.write_text(tmp / INDEX, "\n".join(lines) + "\n")
    return out


def write_sound_folder(out: str | Path, items: Iterable[tuple[np.ndarray, dict]], sample_rate: int,
                       total: int | None = None, force: bool = False) -> Path:
    """Write (wave, record) pairs as a folder of sounds/*.wav (16-bit PCM), atomically; each record
    (its "text" and anything else) becomes a data.jsonl line with its "audio" path first."""
    out = Path(out)
    with atomic.directory(out, overwrite=force) as tmp:
        (tmp / "sounds").mkdir()
        lines = []
        for i, (wave, record) in enumerate(progress_bar(items, total=total, desc=f"writing {out}", unit="sound")):
            name = f"sounds/{i + 1:06d}.wav"
            write_wav(tmp / name, wave, sample_rate)
            lines.append(json.dumps({"audio": name, **record}, ensure_ascii=False))
        atomic.write_text(tmp / INDEX, "\n".join(lines) + "\n")
    return out
