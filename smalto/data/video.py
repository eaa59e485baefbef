"""Reading and writing clips: animated GIF or WebP through Pillow, or a folder of frame images.

A clip is uint8 [T, H, W, 3]. Reading distrusts the file as `smalto.data.images` does: the
declared size is checked before a pixel is decoded, the number of frames before any frame is
(at most `MAX_FRAMES`), and every frame is converted like an image (RGB, centre-crop, resize).
Frames of one clip must share a size (a folder whose frames differ is refused, naming the frame).

GIF and WebP writers (Pillow's, and most others) merge identical consecutive frames into one
shown longer, so a frame's duration says how many frames it stands for: reading expands it by its
duration over the frame time, which a clip written here records (`smalto fps=4 frames=7`, in the
GIF's comment or the WebP's XMP; WebP keeps no duration for a clip merged into one frame, hence
the count) and a foreign one is taken to be its shortest frame's.
MP4 is not read: it would need PyAV and a codec for no gain on clips of a few 32x32 frames.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from smalto import atomic
from smalto.data.gate import MAX_FRAMES, MAX_PIXELS, Budget, ClipTooLong, check_size, opened
from smalto.data.images import convert_image, load_image
from smalto.errors import SmaltoError

FORMATS = {".gif": "GIF", ".webp": "WEBP"}
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp")
TAG = "smalto "  # how a clip written here records its frame time and count


def frame_count(source: str | Path | bytes) -> int:
    """How many frames an image file holds (1 for a still image), read from its header."""
    try:
        with opened(source, "probe", None) as img:
            return int(getattr(img, "n_frames", 1))
    except SmaltoError:
        return 1  # not an animation we can read: the image reader says what is wrong with it


def is_clip(item) -> bool:
    """Whether an image-or-clip is a clip: an array [T, H, W, 3], a list of frames, a folder of
    frames, or a file or bytes holding more than one frame."""
    if isinstance(item, np.ndarray):
        return item.ndim == 4
    if isinstance(item, (list, tuple)):
        return True
    if isinstance(item, (str, Path)):
        return Path(item).is_dir() or frame_count(item) > 1
    return isinstance(item, bytes) and frame_count(item) > 1


def load_clip(source: str | Path | bytes, size: int, max_pixels: int | None = MAX_PIXELS,
              name: str | None = None, max_frames: int = MAX_FRAMES, budget: Budget | None = None) -> np.ndarray:
    """An animated GIF/WebP (path or bytes) or a folder of frames as uint8 [T, size, size, 3].

    Before a frame is decoded: the frame count against `max_frames`, the frames' declared pixels
    against `budget` (by default, one for this clip alone) and each frame's size, as its header
    is read, against `max_pixels`."""
    name = name or (str(source) if isinstance(source, (str, Path)) else "clip")
    budget = budget or Budget.for_one(max_pixels)
    if isinstance(source, (str, Path)) and Path(source).is_dir():
        return _load_folder(Path(source), size, max_pixels, max_frames, budget)
    with opened(source, name, max_pixels, "animation", "an animation Pillow can read (animated GIF or WebP)") as img:
        n = int(getattr(img, "n_frames", 1))
        if n > max_frames:
            raise ClipTooLong(name, n, max_frames)
        budget.charge(n * img.size[0] * img.size[1], name)
        frames, durations = [], []
        for i in range(n):
            img.seek(i)  # (reads the frame's header: a frame may declare itself larger than the clip)
            check_size(img, max_pixels, f"{name} frame {i}")
            img.load()
            durations.append(int(img.info.get("duration") or 0))
            frames.append(convert_image(img.convert("RGBA") if img.mode == "P" else img, size))
        repeats = _repeats(durations, img.info)
        if sum(repeats) > max_frames:
            raise ClipTooLong(name, sum(repeats), max_frames)
        return np.stack([f for f, k in zip(frames, repeats) for _ in range(k)])


def _tag(info: dict) -> dict[str, str]:
    """The `smalto fps=4 frames=7` tag of a clip written here ({} for another's)."""
    raw = info.get("comment") or info.get("xmp") or b""
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
    if not text.startswith(TAG):
        return {}
    return dict(word.split("=", 1) for word in text[len(TAG):].split() if "=" in word)


def _repeats(durations: list[int], info: dict) -> list[int]:
    """How many frames each stored frame stands for (see the module's docstring)."""
    tag = _tag(info)
    try:
        fps, frames = float(tag.get("fps", 0)), int(tag.get("frames", 0))
    except ValueError:
        fps = frames = 0
    if not 0 < fps <= 1000:  # (nan, inf, 1e308: not a frame time, the tag is ignored)
        fps = 0
    if len(durations) == 1 and 1 < frames <= MAX_FRAMES:  # a still clip, merged whole (WebP keeps no duration)
        return [frames]
    base = 1000 / fps if fps > 0 else min((d for d in durations if d > 0), default=0)
    # (capped: a frame standing for more than a whole clip is refused by the caller anyway)
    return [min(max(1, round(d / base)), MAX_FRAMES + 1) if base and d else 1 for d in durations]


def _load_folder(folder: Path, size: int, max_pixels: int | None, max_frames: int, budget: Budget) -> np.ndarray:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES and p.is_file())
    if not files:
        raise SmaltoError(f"{folder}: no frames ({', '.join(FRAME_SUFFIXES)} files, in name order)")
    if len(files) > max_frames:
        raise ClipTooLong(str(folder), len(files), max_frames)
    first = None
    for f in files:  # every header first: sizes that differ, and the budget, before any frame is decoded
        with opened(f, str(f), max_pixels) as img:
            first = first or img.size
            if img.size != first:
                raise SmaltoError(f"{f}: the frame is {img.size[0]}×{img.size[1]}, the first is "
                                  f"{first[0]}×{first[1]}: a clip's frames share one size")
    budget.charge(len(files) * first[0] * first[1], str(folder))
    return np.stack([load_image(f, size, max_pixels) for f in files])


def as_clip(frames, size: int, max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """A clip given as a path, bytes, uint8 array [T, H, W, 3] or a list of frames -> [T, size, size, 3]."""
    if isinstance(frames, (str, Path, bytes)):
        return load_clip(frames, size, max_pixels)
    if isinstance(frames, np.ndarray) and frames.ndim == 4:
        frames = list(frames)
    if not isinstance(frames, (list, tuple)) or not frames:
        raise SmaltoError("a clip is a GIF/WebP file, a folder of frames, or a non-empty list of frames")
    if len(frames) > MAX_FRAMES:
        raise ClipTooLong("the clip", len(frames), MAX_FRAMES)
    arrays = [np.asarray(f) for f in frames]
    for i, a in enumerate(arrays):
        if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] not in (3, 4):
            raise SmaltoError(f"frame {i}: expected uint8 [H, W, 3], got {a.dtype} {a.shape}")
        if a.shape[:2] != arrays[0].shape[:2]:
            raise SmaltoError(f"frame {i} is {a.shape[1]}×{a.shape[0]}, the first is {arrays[0].shape[1]}×"
                              f"{arrays[0].shape[0]}: a clip's frames share one size")
    return np.stack([convert_image(Image.fromarray(a), size) for a in arrays])


def clip_bytes(frames: np.ndarray, fmt: str = "GIF", fps: float = 4.0, scale: int = 1) -> bytes:
    """An animated GIF or (lossless) WebP of uint8 frames [T, H, W, 3], looping; `scale` enlarges
    each frame (nearest neighbour) for viewing."""
    images = [Image.fromarray(f) for f in frames]
    if scale > 1:
        images = [i.resize((i.width * scale, i.height * scale), Image.Resampling.NEAREST) for i in images]
    buf = io.BytesIO()
    tag = f"{TAG}fps={fps:g} frames={len(frames)}".encode()  # identical frames get merged: see the docstring
    extra = {"lossless": True, "xmp": tag} if fmt == "WEBP" else {"optimize": False, "comment": tag}
    images[0].save(buf, format=fmt, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0,
                   **extra)
    return buf.getvalue()


def save_clip(frames: np.ndarray, path: str | Path, fps: float = 4.0, scale: int = 1) -> None:
    """Write a clip atomically as .gif or .webp (by the suffix)."""
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise SmaltoError(f"{path}: a clip is written as .gif or .webp")
    atomic.write_bytes(path, clip_bytes(frames, fmt, fps, scale))
