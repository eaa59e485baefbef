"""The decoding gate: every picture, clip and sound a user hands smalto is opened here.

Files, a folder's entries, data URLs over HTTP, uploads and lazily opened PIL images all come
through `opened`, which promises, before a pixel is decoded:

- the declared width × height is within `max_pixels` (checked again for each frame of a clip, as
  its header is read: a GIF frame may declare itself larger than the screen it sits on);
- the pixels a whole request decodes (pictures and every frame of every clip, at their declared
  size) stay within a `Budget`;

and after, that whatever the decoder raises on a hostile file (Pillow's own bomb error, a file cut
short, a corrupt header that surfaces as `struct.error` or `IndexError` deep in a plugin) is one
`SmaltoError` naming the input: a line and rc 2 in the CLI, a 400 in OpenAI's shape over HTTP.
Sounds come through `read_sound`, with the same promises: the header's duration, channels and
sample rate are checked before a sample is decoded, and a bad file is one line naming it.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from smalto.errors import SmaltoError

# 4096×4096: a 16-megapixel photo fits; reading one takes at most ~140 MB (measured for RGBA,
# the worst case; docs/safety.md), and the model sees 32×32 of it anyway.
MAX_PIXELS = 4096 * 4096
MAX_FRAMES = 64  # frames in a clip (the video tokenizer's limit too)
# What one request (or one clip read on its own) may decode in all: four pictures at the limit.
# Without it a 64-frame clip of 4096×4096 frames would pass every per-frame check and decode 1 GP.
BUDGET_PICTURES = 4
# Pillow warns from 89 MP and refuses from 179 MP; smalto refuses (by default) long before, so its
# warning would only repeat the error that follows it.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
MAX_SECONDS = 60.0  # a sound's duration (a minute at 16 kHz mono is 3.8 MB as float32)
MAX_CHANNELS = 8
SAMPLE_RATES = (4000, 192000)  # what a header may declare
# What Pillow's plugins raise on truncated or corrupt data, besides OSError.
CORRUPT = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error)


class ImageTooLarge(SmaltoError):
    def __init__(self, name: str, width: int, height: int, limit: int):
        super().__init__(f"{name}: the image is {width}×{height} = {width * height:,} pixels, over the limit of "
                         f"{limit:,} (shrink it, or raise the limit with --max-image-pixels)")
        self.width, self.height, self.limit = width, height, limit


class ClipTooLong(SmaltoError):
    def __init__(self, name: str, frames: int, limit: int):
        super().__init__(f"{name}: the clip has {frames} frames, over the limit of {limit}")
        self.frames, self.limit = frames, limit


class OverBudget(SmaltoError):
    def __init__(self, name: str, pixels: int, limit: int):
        super().__init__(f"{name}: decoding it would bring this request to {pixels:,} pixels, over the budget of "
                         f"{limit:,} (send fewer, smaller or shorter pictures and clips)")
        self.pixels, self.limit = pixels, limit


class Budget:
    """The pixels a request may decode in all (None: no limit), charged before each decode."""

    def __init__(self, pixels: int | None):
        self.limit, self.spent = pixels, 0

    @classmethod
    def for_one(cls, max_pixels: int | None) -> Budget:
        """A budget for one clip or picture read on its own, scaled with the per-picture limit."""
        return cls(None if max_pixels is None else BUDGET_PICTURES * max_pixels)

    def charge(self, pixels: int, name: str) -> None:
        if self.limit is not None and self.spent + pixels > self.limit:
            raise OverBudget(name, self.spent + pixels, self.limit)
        self.spent += pixels


def unicode_text(text: str) -> str:
    """`text`, if it is Unicode text; a SmaltoError for a lone surrogate (bytes that were not UTF-8
    on the command line, where Python keeps them as surrogates, or an escaped half pair in JSON)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise SmaltoError(f"the text is not valid UTF-8 (at character {e.start}: {text[e.start]!r})") from None
    return text


def check_size(img: Image.Image, max_pixels: int | None, name: str) -> None:
    """Refuse an image whose declared size is over `max_pixels` (None: no limit)."""
    w, h = img.size
    if max_pixels is not None and w * h > max_pixels:
        raise ImageTooLarge(name, w, h, max_pixels)


@contextmanager
def opened(source: str | Path | bytes | Image.Image, name: str, max_pixels: int | None, what: str = "image",
           readable: str = "an image Pillow can read") -> Iterator[Image.Image]:
    """The file (a path, or its bytes) opened by Pillow with its declared size checked; any error
    the body of the `with` gets from decoding it is a SmaltoError starting with `name`. A PIL image
    the caller opened (perhaps not decoded yet: `Image.open` is lazy) is checked, and left open."""
    try:
        if isinstance(source, Image.Image):
            check_size(source, max_pixels, name)
            yield source
            return
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else Path(source)) as img:
            check_size(img, max_pixels, name)
            yield img
    except SmaltoError:
        raise
    except FileNotFoundError:
        raise SmaltoError(f"{name}: {what} file not found") from None
    except PermissionError:
        raise SmaltoError(f"{name}: no permission to read the {what} file") from None
    except IsADirectoryError:
        raise SmaltoError(f"{name}: is a directory, not an {what}") from None
    except UnidentifiedImageError:
        raise SmaltoError(f"{name}: not {readable}") from None
    except Image.DecompressionBombError:  # (Pillow's own limit, twice its warning's)
        raise SmaltoError(f"{name}: declares over {2 * Image.MAX_IMAGE_PIXELS:,} pixels, too many to open at "
                          f"all") from None
    except CORRUPT as e:
        raise SmaltoError(f"{name}: corrupt {what} ({e})") from None


SOUND_SUFFIXES = (".wav", ".flac", ".ogg", ".oga")
SOUND_MAGIC = (b"RIFF", b"fLaC", b"OggS")  # how WAV, FLAC and OGG files begin


def is_sound(item) -> bool:
    """Whether an item is a sound: a path with a sound file's suffix, the bytes of one, or a 1-D
    float array (a wave)."""
    if isinstance(item, np.ndarray):
        return item.ndim == 1 and np.issubdtype(item.dtype, np.floating)
    if isinstance(item, (str, Path)):
        return Path(item).suffix.lower() in SOUND_SUFFIXES
    return isinstance(item, bytes) and item[:4] in SOUND_MAGIC


def read_sound(source: str | Path | bytes, name: str, sample_rate: int, max_seconds: float | None = MAX_SECONDS
               ) -> np.ndarray:
    """A WAV / FLAC / OGG file (a path, or its bytes) as float32 mono [samples] at `sample_rate`:
    channels averaged, resampled (polyphase) when the file's rate differs. The header's duration,
    channels and rate are checked before decoding; every problem is a SmaltoError starting with `name`."""
    import soundfile

    if not isinstance(source, bytes):  # (libsndfile reports every one of these as "System error")
        path = Path(source)
        if not path.exists():
            raise SmaltoError(f"{name}: sound file not found")
        if path.is_dir():
            raise SmaltoError(f"{name}: is a directory, not a sound")
        if not os.access(path, os.R_OK):
            raise SmaltoError(f"{name}: no permission to read the sound file")
    try:
        with soundfile.SoundFile(io.BytesIO(source) if isinstance(source, bytes) else str(source)) as f:
            rate, channels, frames = f.samplerate, f.channels, f.frames
            if not SAMPLE_RATES[0] <= rate <= SAMPLE_RATES[1]:
                raise SmaltoError(f"{name}: declares {rate} Hz; a sound must be {SAMPLE_RATES[0]} .. "
                                  f"{SAMPLE_RATES[1]} Hz")
            if not 1 <= channels <= MAX_CHANNELS:
                raise SmaltoError(f"{name}: declares {channels} channels; at most {MAX_CHANNELS}")
            if max_seconds is not None and frames > max_seconds * rate:
                raise SmaltoError(f"{name}: {frames / rate:.1f} s long; the limit is {max_seconds:g} s")
            wave = f.read(dtype="float32", always_2d=True)
    except SmaltoError:
        raise
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError, OSError) as e:
        detail = str(e).split(":")[-1].strip() or type(e).__name__
        raise SmaltoError(f"{name}: not a sound file libsndfile can read (WAV, FLAC, OGG): {detail}") from None
    if len(wave) == 0:
        raise SmaltoError(f"{name}: holds no samples")
    mono = wave.mean(axis=1)
    if not np.isfinite(mono).all():
        raise SmaltoError(f"{name}: holds samples that are not finite numbers")
    if rate != sample_rate:
        from math import gcd

        from scipy.signal import resample_poly

        g = gcd(rate, sample_rate)
        mono = resample_poly(mono, sample_rate // g, rate // g).astype(np.float32)
    return np.clip(mono, -1.0, 1.0)
